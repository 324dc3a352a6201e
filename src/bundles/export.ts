// Export (issue 11): a bundle of what this mirror holds, for a mirror across an air gap to import (the format is
// manifest.ts's). In order:
//   1. a snapshot of the state: cached versions (those whose archive is stored) with the release metadata the
//      mirror holds, hosted component versions, generic files. Each cached archive is leased as it is listed, so
//      that neither eviction nor a delete takes it before it is packed (a server keeps serving and evicting);
//   2. the plan (plan.json, written first): the snapshot, the blobs to carry (with --since, those the base's state
//      lacks) and the volume of each. With it an interrupted export, run again with the same --out, keeps the
//      volumes it finished (checked against the size and sha256 recorded when each was) and writes the rest;
//   3. the volumes, each written as a .partial and renamed when whole. A blob gone meanwhile (a hosted file its
//      owner deleted) or found corrupt is left out, and so are the entries that use it, with a note: the manifest
//      never lists a blob the bundle does not carry or that the target would not have;
//   4. manifest.sig, then manifest.json, last; the mirror remembers the manifest ({dataDir}/exports/{id}.json) as
//      what a later `--since` is relative to.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, statfs, type FileHandle } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import type { ArchiveCache } from '../core/archives/archive-cache.js';
import type { GenericPackages } from '../core/hosted/generic-packages.js';
import type { HostedBlobs } from '../core/hosted/hosted-blobs.js';
import type { HostedComponents } from '../core/hosted/hosted-components.js';
import type { Registry } from '../core/registry.js';
import { MirrorError } from '../model/errors.js';
import type { StoredReader } from '../stores/archive-store.js';
import { PARTIAL, syncFolder, writeDurably } from './durable-files.js';
import { BUNDLE_ID, type ExportHistory } from './export-history.js';
import {
  BUNDLE_FORMAT,
  BundleError,
  entryId,
  MANIFEST,
  parseManifest,
  signaturesFile,
  signManifest,
  SIGNATURES,
  volumeName,
  type Entry,
  type Manifest,
} from './manifest.js';
import { ProgressMeter, type OnEvent } from './progress.js';
import { Selection } from './selection.js';
import { planVolumes, volumeBytes, writeVolume, type Blob, type VolumeWritten } from './volumes.js';

export const PLAN = 'plan.json';
/** Progress is reported at least every this many bytes packed (and at the end of each blob). */
const PROGRESS_BYTES = 8 << 20;

export interface ExportRequest {
  /** The bundle folder, on this host; not needed for a dry run. */
  readonly out?: string;
  /** NAME[@VERSION] (components, cached or hosted) and OWNER/NAME[@VERSION] (generic packages); none: everything. */
  readonly packages?: readonly string[];
  /** 'last' or a bundle id this mirror exported: carry only the blobs that bundle's state did not have. */
  readonly since?: string;
  /** Volumes at most this many bytes (a larger blob gets a volume of its own); 0 or none: one volume. */
  readonly maxVolumeBytes?: number;
  /** A PEM Ed25519 private key's path, on this host: manifest.sig is made with it. */
  readonly signKey?: string;
  /** Count what the export would write, and write nothing. */
  readonly dryRun?: boolean;
}

/** What an export reads: the mirror's content through core, and where its exports are remembered. */
export interface ExportSource {
  readonly mirror: string;
  readonly upstream: string;
  readonly archives: Pick<ArchiveCache, 'leasedEntries' | 'leaseStored' | 'openStored'>;
  readonly registry: Pick<Registry, 'storedRelease'>;
  readonly hostedComponents: Pick<HostedComponents, 'exportEntries'>;
  readonly generic: Pick<GenericPackages, 'exportEntries'>;
  readonly hostedBlobs: Pick<HostedBlobs, 'openStored'>;
  readonly history: ExportHistory;
  readonly now: () => number;
  /** Opens a volume's partial file for writing (tests make one fail). */
  readonly createFile?: (path: string) => Promise<FileHandle>;
}

/** Which store a blob is read from (a digest may be in both). */
type BlobSource = 'archives' | 'hosted';

interface PlannedBlob extends Blob {
  readonly from: BlobSource[];
}

interface PlannedVolume {
  readonly name: string;
  readonly blobs: PlannedBlob[];
  /** Set once the volume is written (renamed into place): what it must still be to be kept by a rerun. */
  done?: VolumeWritten;
}

/** plan.json: everything that makes the bundle, fixed before the first volume is written. */
interface Plan {
  readonly plan: 1;
  /** What was asked: a rerun must ask the same to continue this export. */
  readonly request: { readonly packages: string[]; readonly since: string | null; readonly maxVolumeBytes: number };
  readonly id: string;
  readonly createdAt: string;
  readonly source: Manifest['source'];
  readonly base: string | null;
  readonly entries: Entry[];
  /** Ids of the base's entries among the packages exported: those not in the final state are deletions. */
  readonly baseIds: string[];
  readonly volumes: PlannedVolume[];
}

interface Snapshot {
  readonly entries: Entry[];
  readonly from: Map<string, BlobSource[]>;
  /** A lease per cached version listed (on its archive's digest). */
  readonly leases: Array<{ readonly digest: string; readonly release: () => void }>;
}

/** An export request from JSON (POST /-/export), checked: paths must be absolute (they are the server's). */
export function exportRequestOf(body: unknown): ExportRequest {
  const o = body && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined;
  if (!o) throw new MirrorError('bad-request', 'the body must be a JSON object');
  const path = (k: string) => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !isAbsolute(v)) throw new MirrorError('bad-request', `${k} must be an absolute path on the server's host`);
    return v;
  };
  const { packages, since, maxVolumeBytes, dryRun } = o;
  if (packages !== undefined && !(Array.isArray(packages) && packages.every((p) => typeof p === 'string'))) throw new MirrorError('bad-request', 'packages must be a list of strings');
  if (since !== undefined && typeof since !== 'string') throw new MirrorError('bad-request', 'since must be a string');
  if (maxVolumeBytes !== undefined && typeof maxVolumeBytes !== 'number') throw new MirrorError('bad-request', 'maxVolumeBytes must be a number');
  if (dryRun !== undefined && typeof dryRun !== 'boolean') throw new MirrorError('bad-request', 'dryRun must be true or false');
  return { out: path('out'), packages: packages as string[] | undefined, since, maxVolumeBytes, signKey: path('signKey'), dryRun };
}

export class Exporter {
  /** Folders being exported into by this process. */
  private readonly running = new Set<string>();

  constructor(private readonly source: ExportSource) {}

  /** Runs an export; resolves with its summary (also sent as the last event). */
  async run(request: ExportRequest, onEvent: OnEvent): Promise<Record<string, unknown>> {
    const selection = new Selection(request.packages ?? []);
    const maxVolumeBytes = request.maxVolumeBytes ?? 0;
    if (!Number.isSafeInteger(maxVolumeBytes) || maxVolumeBytes < 0) throw new MirrorError('bad-request', 'maxVolumeBytes must be a size in bytes');
    if (request.since !== undefined && request.since !== 'last' && !BUNDLE_ID.test(request.since)) {
      throw new MirrorError('bad-request', `--since takes "last" or a bundle id, not ${JSON.stringify(request.since)}`);
    }
    const signer = request.signKey === undefined ? undefined : await loadSigningKey(request.signKey);
    const asked = { packages: selection.normalized, since: request.since ?? null, maxVolumeBytes };
    if (request.dryRun) return this.dryRun(selection, asked, onEvent);
    if (request.out === undefined) throw new MirrorError('bad-request', 'say where the bundle goes (--out DIR)');
    const out = resolve(request.out);
    if (this.running.has(out)) throw new MirrorError('conflict', `an export into ${out} is under way`);
    this.running.add(out);
    try {
      return await this.exportInto(out, selection, asked, signer, onEvent);
    } finally {
      this.running.delete(out);
    }
  }

  private async exportInto(out: string, selection: Selection, asked: Plan['request'], signer: Signer | undefined, onEvent: OnEvent): Promise<Record<string, unknown>> {
    const state = await folderState(out);
    if (state === 'foreign') throw new MirrorError('conflict', `${out} is not empty and holds no export: give an empty or new folder`);
    if (state === 'finished') return this.finished(out, selection, asked, onEvent);
    let plan: Plan;
    /** Leases on the cached archives to carry, by digest. */
    const leases = new Map<string, () => void>();
    try {
      if (state === 'plan') {
        plan = await readPlan(out);
        if (JSON.stringify(plan.request) !== JSON.stringify(asked)) {
          throw new MirrorError(
            'conflict',
            `${out} holds an unfinished export asked with other options (${describeRequest(plan.request)}): run it again with those to finish it, or give another folder`,
          );
        }
        onEvent({ type: 'note', message: `continuing the unfinished export ${plan.id} in ${out}` });
        // The plan was made by an earlier run: its archives are leased again; one gone since is left out (a note).
        for (const b of plan.volumes.flatMap((v) => v.blobs).filter((b) => b.from.includes('archives'))) {
          const release = await this.source.archives.leaseStored(b);
          if (release) leases.set(b.digest, release);
        }
      } else {
        const planned = await this.plan(selection, asked);
        plan = planned.plan;
        for (const l of planned.leases) {
          if (leases.has(l.digest)) l.release(); // one per digest is enough
          else leases.set(l.digest, l.release);
        }
        await mkdir(out, { recursive: true });
      }
      await removePartials(out);
      if (state !== 'plan') await writeDurably(join(out, PLAN), planText(plan));
      return await this.write(out, plan, signer, new Set(leases.keys()), onEvent);
    } finally {
      for (const release of leases.values()) release();
    }
  }

  /** The snapshot and the plan made of it; the leases of the cached archives it carries (the others are let go). */
  private async plan(selection: Selection, asked: Plan['request'], except?: string): Promise<{ plan: Plan; leases: Snapshot['leases'] }> {
    const base = await this.base(asked.since, except);
    const snap = await this.snapshot(selection);
    const unmatched = selection.unmatched();
    const inBase = new Set(base?.entries.map((e) => e.digest));
    const carried = new Map<string, PlannedBlob>();
    for (const e of snap.entries) if (!inBase.has(e.digest) && !carried.has(e.digest)) carried.set(e.digest, { digest: e.digest, size: e.size, from: snap.from.get(e.digest) ?? [] });
    if (unmatched.length) {
      for (const l of snap.leases) l.release();
      throw new MirrorError('not-found', `the mirror holds nothing of ${unmatched.join(', ')}`);
    }
    const leases: Snapshot['leases'] = [];
    for (const l of snap.leases) {
      if (carried.has(l.digest)) leases.push(l);
      else l.release();
    }
    const createdAt = new Date(this.source.now()).toISOString();
    const plan: Plan = {
      plan: 1,
      request: asked,
      id: `${createdAt.replace(/[-:]|\.\d+/g, '')}-${randomBytes(4).toString('hex')}`,
      createdAt,
      source: { mirror: this.source.mirror, upstream: this.source.upstream },
      base: base?.id ?? null,
      entries: snap.entries,
      baseIds: (base?.entries ?? []).filter((e) => selection.covers(e)).map(entryId),
      volumes: planVolumes([...carried.values()], asked.maxVolumeBytes).map((blobs, i) => ({ name: volumeName(i + 1), blobs })),
    };
    return { plan, leases };
  }

  /** Everything the selection covers, each cached archive leased. */
  private async snapshot(selection: Selection): Promise<Snapshot> {
    const { archives, registry, hostedComponents, generic } = this.source;
    const entries: Entry[] = [];
    const from = new Map<string, BlobSource[]>();
    const leases: Snapshot['leases'] = [];
    const add = (e: Entry, source: BlobSource) => {
      entries.push(e);
      const sources = from.get(e.digest) ?? [];
      if (!sources.includes(source)) from.set(e.digest, [...sources, source]);
    };
    try {
      for (const a of await archives.leasedEntries((name, version) => selection.component(name, version))) {
        leases.push({ digest: a.ref.digest, release: a.release });
        // A version with an archive but no release document (learnt from a download alone) exports all the same.
        const r = await registry.storedRelease(a.name, a.version);
        const release = { createdAt: r?.createdAt ?? '', body: r?.body ?? '', fields: r?.fields ?? {} };
        add({ kind: 'cached', name: a.name, version: a.version, digest: a.ref.digest, size: a.ref.size, release }, 'archives');
      }
      for (const h of await hostedComponents.exportEntries((name, version) => selection.component(name, version))) {
        const { name, version, digest, size, owner, publisher, createdAt, body, component } = h;
        add({ kind: 'hosted', name, version, digest, size, owner, publisher, createdAt, body, component }, 'hosted');
      }
      for (const g of await generic.exportEntries((at) => selection.generic(at))) {
        const { owner, name, version, file } = g;
        add({ kind: 'generic', owner, name, version, file: file.name, digest: file.digest, size: file.size, createdAt: file.createdAt }, 'hosted');
      }
    } catch (err) {
      for (const l of leases) l.release();
      throw err;
    }
    entries.sort((a, b) => (entryId(a) < entryId(b) ? -1 : 1));
    return { entries, from, leases };
  }

  private async base(since: string | null, except?: string): Promise<Manifest | undefined> {
    if (since === null) return undefined;
    if (since !== 'last') return this.source.history.find(since);
    const last = await this.source.history.last(except);
    if (!last) throw new MirrorError('not-found', 'this mirror has made no export yet to be incremental on (--since last): make a full one first');
    return last;
  }

  /** Writes what the plan has left to write, then the signature and the manifest. */
  private async write(out: string, plan: Plan, signer: Signer | undefined, leased: ReadonlySet<string>, onEvent: OnEvent): Promise<Record<string, unknown>> {
    const carried = plan.volumes.flatMap((v) => v.blobs);
    const meter = new ProgressMeter({ bytes: sum(carried), blobs: carried.length, volumes: plan.volumes.length }, onEvent, this.source.now);
    let kept = 0;
    for (const v of plan.volumes) {
      if (v.done && (await volumeIs(join(out, v.name), v.done))) {
        kept++;
        const packed = v.blobs.filter((b) => !v.done!.dropped.includes(b.digest));
        meter.add({ bytes: sum(packed), blobs: packed.length, volumes: 1 });
      } else v.done = undefined;
    }
    const todo = plan.volumes.filter((v) => !v.done);
    await checkSpace(out, todo);
    const entriesOf = (digest: string) => plan.entries.filter((e) => e.digest === digest).map(entryId);
    let pending = 0;
    for (const v of todo) {
      v.done = await writeVolume(join(out, v.name), v.blobs, {
        open: (b) => this.open(b as PlannedBlob, leased),
        onDropped: (digest, why) =>
          onEvent({
            type: 'note',
            message: `left out of the bundle: ${entriesOf(digest).join(', ')} (${why === 'gone' ? 'deleted from the mirror while the export ran' : `its stored bytes no longer match their sha256 ${digest}: run srm-mirror verify`})`,
          }),
        onBytes: (n) => {
          pending += n;
          if (pending >= PROGRESS_BYTES) (meter.add({ bytes: pending }), (pending = 0));
        },
        onBlob: () => (meter.add({ bytes: pending, blobs: 1 }), (pending = 0)),
        createFile: this.source.createFile,
      });
      await writeDurably(join(out, PLAN), planText(plan));
      meter.add({ volumes: 1 });
    }
    const { manifest, bytes } = manifestOf(plan);
    if (signer) await writeDurably(join(out, SIGNATURES), signaturesFile([signManifest(bytes, signer.pem)]));
    else await rm(join(out, SIGNATURES), { force: true }); // one left by an interrupted signed run
    await writeDurably(join(out, MANIFEST), bytes);
    await this.source.history.remember(manifest, bytes);
    await rm(join(out, PLAN), { force: true });
    await syncFolder(out);
    const summary = summaryOf('written', manifest, out, { keptVolumes: kept, leftOut: plan.entries.length - manifest.entries.length, signedBy: signer?.keyId ?? null });
    onEvent({ type: 'summary', summary });
    return summary;
  }

  /** A blob's bytes, from a store that has them whole (the archives only under a lease). */
  private async open(blob: PlannedBlob, leased: ReadonlySet<string>): Promise<StoredReader | undefined> {
    for (const source of blob.from) {
      const reader =
        source === 'archives' ? (leased.has(blob.digest) ? await this.source.archives.openStored(blob.digest) : undefined) : await this.source.hostedBlobs.openStored(blob.digest);
      if (reader?.stat.size === blob.size) return reader;
      reader?.close();
    }
    return undefined;
  }

  /**
   * `out` holds a finished bundle: nothing to do when it is this very export (the same state, on the same base),
   * refused otherwise. Its own id is no candidate for `--since last`: that is what it was made on.
   */
  private async finished(out: string, selection: Selection, asked: Plan['request'], onEvent: OnEvent): Promise<Record<string, unknown>> {
    const bytes = await readFile(join(out, MANIFEST));
    const there = parseManifest(bytes.toString('utf8'));
    // A plan beside the manifest: this mirror's export, interrupted between its manifest and its last steps.
    if (existsSync(join(out, PLAN)) && (await readPlan(out)).id === there.id) {
      await this.source.history.remember(there, bytes);
      await rm(join(out, PLAN), { force: true });
    }
    const { plan, leases } = await this.plan(selection, asked, there.id);
    for (const l of leases) l.release();
    const state = (entries: readonly Entry[]) => JSON.stringify(entries.map((e) => [entryId(e), e.digest]));
    if (state(plan.entries) !== state(there.entries) || (plan.base ?? undefined) !== there.base) {
      throw new MirrorError('conflict', `${out} holds the finished bundle ${there.id}, not what this export would write now: give another folder`);
    }
    onEvent({ type: 'note', message: `${out} holds this export already (bundle ${there.id}): nothing to do` });
    const summary = summaryOf('unchanged', there, out, {});
    onEvent({ type: 'summary', summary });
    return summary;
  }

  private async dryRun(selection: Selection, asked: Plan['request'], onEvent: OnEvent): Promise<Record<string, unknown>> {
    const { plan, leases } = await this.plan(selection, asked);
    for (const l of leases) l.release();
    const blobs = plan.volumes.flatMap((v) => v.blobs);
    const summary = {
      status: 'dry run',
      base: plan.base,
      entries: countByKind(plan.entries),
      deletions: plan.baseIds.filter((id) => !plan.entries.some((e) => entryId(e) === id)).length,
      blobs: blobs.length,
      bytes: sum(blobs),
      volumes: plan.volumes.length,
      volumeBytes: plan.volumes.reduce((n, v) => n + volumeBytes(v.blobs), 0),
    };
    onEvent({ type: 'summary', summary });
    return summary;
  }
}

interface Signer {
  readonly pem: string;
  readonly keyId: string;
}

async function loadSigningKey(path: string): Promise<Signer> {
  let pem: string;
  try {
    pem = await readFile(path, 'utf8');
  } catch (err) {
    throw new MirrorError('bad-request', `cannot read the signing key ${path}: ${(err as Error).message}`);
  }
  try {
    return { pem, keyId: signManifest(Buffer.alloc(0), pem).keyId };
  } catch (err) {
    const why = err instanceof BundleError ? err.message : 'it is not a PEM private key';
    throw new MirrorError('bad-request', `cannot sign with ${path}: ${why} (make one with srm-mirror keygen)`);
  }
}

/** What a folder given as --out holds. */
async function folderState(out: string): Promise<'empty' | 'plan' | 'finished' | 'foreign'> {
  let names: string[];
  try {
    names = await readdir(out);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'empty';
    throw err;
  }
  if (names.includes(MANIFEST)) return 'finished';
  if (names.includes(PLAN)) return 'plan';
  return names.every((n) => n.endsWith(PARTIAL)) ? 'empty' : 'foreign';
}

/** Files an interrupted run left half-written: written again from the start. */
async function removePartials(out: string): Promise<void> {
  for (const name of await readdir(out)) if (name.endsWith(PARTIAL)) await rm(join(out, name), { force: true });
}

function planText(plan: Plan): string {
  return `${JSON.stringify(plan, null, 1)}\n`;
}

async function readPlan(out: string): Promise<Plan> {
  const path = join(out, PLAN);
  try {
    const plan = JSON.parse(await readFile(path, 'utf8')) as Plan;
    if (plan.plan !== 1 || !Array.isArray(plan.volumes) || !Array.isArray(plan.entries)) throw new Error('not a plan');
    return plan;
  } catch {
    throw new MirrorError('conflict', `${path} is damaged: remove ${out} and export again`);
  }
}

/** Whether a finished volume is still what was written: its size, then its sha256. */
async function volumeIs(path: string, done: VolumeWritten): Promise<boolean> {
  const s = await stat(path).catch(() => undefined);
  if (s?.size !== done.size) return false;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex') === done.sha256;
}

/** Refuses at once when the volumes left cannot fit, rather than filling the disk part way. */
async function checkSpace(out: string, todo: readonly PlannedVolume[]): Promise<void> {
  const needed = todo.reduce((n, v) => n + volumeBytes(v.blobs), 0);
  const fs = await statfs(out);
  const free = fs.bavail * fs.bsize;
  if (needed > free) throw new MirrorError('unavailable', `not enough space in ${out}: the volumes need ${needed} bytes, ${free} are free`);
}

/** The manifest of a plan whose volumes are all written, and its exact bytes (checked by parsing them back). */
function manifestOf(plan: Plan): { manifest: Manifest; bytes: Buffer } {
  const dropped = new Set(plan.volumes.flatMap((v) => v.done?.dropped ?? []));
  const entries = plan.entries.filter((e) => !dropped.has(e.digest));
  const ids = new Set(entries.map(entryId));
  const doc = {
    format: BUNDLE_FORMAT,
    id: plan.id,
    createdAt: plan.createdAt,
    source: plan.source,
    base: plan.base,
    entries,
    deletions: plan.baseIds.filter((id) => !ids.has(id)),
    blobs: plan.volumes.flatMap((v) => v.blobs.filter((b) => !dropped.has(b.digest)).map((b) => ({ digest: b.digest, size: b.size, volume: v.name }))),
    volumes: plan.volumes.map((v) => ({ name: v.name, size: v.done!.size, sha256: v.done!.sha256 })),
  };
  const bytes = Buffer.from(`${JSON.stringify(doc, null, 2)}\n`);
  return { manifest: parseManifest(bytes.toString('utf8')), bytes };
}

function summaryOf(status: string, m: Manifest, out: string, more: Record<string, unknown>): Record<string, unknown> {
  return {
    status,
    bundle: m.id,
    out,
    createdAt: m.createdAt,
    base: m.base ?? null,
    entries: countByKind(m.entries),
    deletions: m.deletions.length,
    blobs: m.blobs.length,
    bytes: sum(m.blobs),
    volumes: m.volumes.length,
    ...more,
  };
}

function countByKind(entries: readonly Entry[]): Record<Entry['kind'], number> {
  const counts = { cached: 0, hosted: 0, generic: 0 };
  for (const e of entries) counts[e.kind]++;
  return counts;
}

function describeRequest(r: Plan['request']): string {
  return `packages: ${r.packages.join(', ') || 'all'}; since: ${r.since ?? 'none'}; max volume size: ${r.maxVolumeBytes || 'none'}`;
}

const sum = (blobs: readonly { size: number }[]) => blobs.reduce((n, b) => n + b.size, 0);
