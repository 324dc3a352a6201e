// Importing a bundle (the format is in manifest.ts) into the mirror's stores, in this order:
//   1. the signature, before anything of the bundle is believed: with trusted keys configured an unsigned bundle,
//      or one signed by no trusted key, is refused; a signature that does not match the manifest always is
//   2. the plan, reading only: how each entry stands against the mirror (new, unchanged, conflict), which blobs are
//      needed in which store (cached versions' in the archive store, hosted and generic ones' in the hosted store),
//      and where each comes from: the other store, a volume present, a volume still to come, or nowhere (missing:
//      refused unless allowPartial); then free space for what is to be written
//   3. the blobs: each present volume that carries a needed blob is streamed once, its size and sha256 checked on
//      the way; only entries named blobs/sha256/<hex> that the manifest lists for that volume, at their size, are
//      read, and no name from a bundle ever becomes a path; each blob is hashed while written, fsynced, and committed
//      only when it matches
//   4. the metadata, last: an entry becomes visible once its blob is stored, and never over one that differs; then
//      the deletions
// The stores say what is done (a stored blob is not read again, a version added is unchanged the next time), so a
// rerun continues wherever the last one stopped, and importing twice is importing once. What a run did is recorded
// in {dataDir}/imports/{bundle}.json, whose state a later incremental bundle's deletions are checked against.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import tar from 'tar-stream';
import { USER_NAME } from '../config/config.js';
import type { ArchiveCache } from '../core/archives/archive-cache.js';
import type { GenericPackages } from '../core/hosted/generic-packages.js';
import type { HostedBlobs } from '../core/hosted/hosted-blobs.js';
import type { HostedComponents } from '../core/hosted/hosted-components.js';
import type { Registry } from '../core/registry.js';
import { MirrorError } from '../model/errors.js';
import type { Adoption, ArchiveRef, Standing } from '../model/release.js';
import { ArchiveRejectedError, readerStream } from '../stores/archive-store.js';
import { BLOB_ENTRY, BundleError, checkSignatures, entryId, MANIFEST, parseManifest, SIGNATURES, type Entry, type Manifest } from './manifest.js';
import { formatBytes, ProgressMeter, type OnEvent } from './progress.js';

export interface ImportOptions {
  /** Public keys (PEM) a bundle must be signed by; none: any bundle is imported (a signed one is still checked). */
  readonly trustedKeys: readonly string[];
  /** Import what can be even when content the bundle's state needs is neither in it nor here (a base not imported). */
  readonly allowPartial?: boolean;
  /** Say what an import would do, and write nothing. */
  readonly dryRun?: boolean;
}

/** A store of blobs an import writes into: the cache's archives, or the hosted store. */
type BlobPort = Pick<ArchiveCache, 'hasBlob' | 'receiveBlob' | 'openStored'>;

/** The parts of the mirror an import reads and writes through. */
export interface ImportTarget {
  readonly dataDir: string;
  readonly archives: BlobPort;
  readonly hosted: Pick<HostedBlobs, 'hasBlob' | 'receiveBlob' | 'openStored'>;
  readonly registry: Pick<Registry, 'standing' | 'adoptCached' | 'hasCached' | 'deleted'>;
  readonly components: Pick<HostedComponents, 'standing' | 'importVersion' | 'removeImported'>;
  readonly generic: Pick<GenericPackages, 'standing' | 'importFile' | 'removeImported'>;
  /** Free bytes on the file system of a path (statfs; a test passes its own). */
  readonly freeBytes?: (path: string) => Promise<number>;
  readonly now?: () => number;
}

type Kind = Entry['kind'];
type Counts = Record<Kind, number>;
interface Problem {
  readonly entry: string;
  readonly reason: string;
}

/** What a run did: the summary event's contents. */
export interface ImportSummary {
  readonly bundle: string;
  readonly dryRun: false;
  /** complete: everything the bundle holds is here (or a conflict); partial: volumes to come, or blobs refused or missing. */
  readonly status: 'complete' | 'partial';
  readonly signature: string;
  /** Versions and files added, by kind. */
  readonly added: Counts;
  readonly unchanged: number;
  /** Versions here with other bytes: never overwritten. */
  readonly conflicts: readonly Problem[];
  /** Volume entries refused (their names JSON-quoted: they are the bundle's strings, not ours). */
  readonly refusedBlobs: ReadonlyArray<{ readonly volume: string; readonly entry: string; readonly reason: string }>;
  /** Entries not imported for another reason than a volume still to come: a refused or missing blob, an invalid entry. */
  readonly notImported: readonly Problem[];
  /** Entries waiting for a volume that is not here yet. */
  readonly waiting: number;
  readonly volumes: { readonly total: number; readonly read: readonly string[]; readonly pending: readonly string[]; readonly damaged: readonly string[] };
  readonly deletions: { readonly applied: number; readonly kept: readonly Problem[] };
  /** Blobs stored, and their bytes. */
  readonly blobs: number;
  readonly bytes: number;
}

/** What a run would do (nothing is written). */
export interface DryRunSummary {
  readonly bundle: string;
  readonly dryRun: true;
  /** What a run would end with. */
  readonly status: 'complete' | 'partial';
  readonly signature: string;
  /** Versions and files to be added, by kind. */
  readonly new: Counts;
  readonly unchanged: number;
  readonly conflicts: readonly Problem[];
  /** Entries that would not be imported whatever volumes come: invalid ones, and those whose blob is nowhere. */
  readonly notImported: readonly Problem[];
  readonly waiting: number;
  readonly volumes: { readonly total: number; readonly present: number; readonly pending: readonly string[] };
  /** Blobs a run would store now, and their bytes; with the margin kept free, the bytes it needs. */
  readonly blobs: number;
  readonly bytes: number;
  readonly bytesNeeded: number;
  readonly freeBytes: number;
}

/** Bytes kept free beyond what an import writes (metadata, temp files, the rest of the system), and a share of it. */
const SPACE_MARGIN_BYTES = 64 * 2 ** 20;
const SPACE_MARGIN_SHARE = 0.01;
/** Progress is reported at most once per this many bytes within a blob. */
const PROGRESS_STEP_BYTES = 2 ** 20;
/** How much of a bundle's own string a message shows. */
const SHOWN_CHARS = 200;

type Store = 'archives' | 'hosted';
const storeOf = (kind: Kind): Store => (kind === 'cached' ? 'archives' : 'hosted');

/** Where a needed blob comes from. */
type Source = { readonly from: 'copy'; readonly store: Store } | { readonly from: 'volume'; readonly volume: string } | { readonly from: 'nowhere' };

/** A blob some new entry needs in a store that lacks it. */
interface Need {
  readonly ref: ArchiveRef;
  readonly store: Store;
  readonly source: Source;
}

/** What the import record of a bundle keeps ({dataDir}/imports/{bundle}.json). */
interface ImportRecord {
  readonly bundle: string;
  readonly base: string | null;
  readonly manifestSha256: string;
  readonly status: 'complete' | 'partial';
  readonly updatedAt: string;
  /** Volumes with nothing left to read from. */
  readonly volumesDone: readonly string[];
  /** Entries present after the last run (added, or there already). */
  readonly entriesPresent: number;
  /** The bundle's state (entry id → sha256): what a later incremental bundle's deletions are checked against. */
  readonly state: Readonly<Record<string, string>>;
}

/** Imports the bundle in `dir` into `target`; resolves with the summary (also sent as the last event). */
export async function importBundle(dir: string, options: ImportOptions & { readonly target: ImportTarget }, onEvent: OnEvent): Promise<ImportSummary | DryRunSummary> {
  const { target } = options;
  const now = target.now ?? Date.now;
  const note = (message: string) => onEvent({ type: 'note', message });

  // 1. The signature, over the manifest's exact bytes, before anything in them is read.
  const manifestBytes = await readFile(join(dir, MANIFEST)).catch((err: NodeJS.ErrnoException) => {
    throw new BundleError(err.code === 'ENOENT' ? `${dir} holds no ${MANIFEST}: not a bundle, or an export still under way` : `${MANIFEST}: ${err.message}`);
  });
  const sigText = await readFile(join(dir, SIGNATURES), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  const signature = checkTrust(manifestBytes, sigText, options.trustedKeys, note);
  const manifest = parseManifest(manifestBytes.toString('utf8'));

  // 2. The plan.
  const plan = await planImport(manifest, dir, target);
  const missing = manifest.entries.filter((e) => plan.needOf(e)?.source.from === 'nowhere');
  if (missing.length > 0 && !options.allowPartial && !options.dryRun) {
    throw new BundleError(
      `content the bundle's state needs is neither in the bundle nor on this mirror${manifest.base ? ` (was its base bundle ${show(manifest.base)} imported here?)` : ''}:\n` +
        missing.map((e) => `  ${show(entryId(e))} (sha256 ${e.digest})\n`).join('') +
        'import what it is based on first, or import the rest with --allow-partial',
    );
  }
  const toWrite = plan.needs.filter((n) => n.source.from === 'copy' || (n.source.from === 'volume' && plan.present.has(n.source.volume)));
  const bytesToWrite = toWrite.reduce((sum, n) => sum + n.ref.size, 0);
  const bytesNeeded = bytesToWrite > 0 ? Math.ceil(bytesToWrite * (1 + SPACE_MARGIN_SHARE)) + SPACE_MARGIN_BYTES : 0;
  const freeBytes = await (target.freeBytes ?? freeBytesAt)(target.dataDir);
  const pending = [...new Set(plan.needs.flatMap((n) => (n.source.from === 'volume' && !plan.present.has(n.source.volume) ? [n.source.volume] : [])))].sort();

  if (options.dryRun) {
    const notImported = [...plan.invalid, ...missing.map((e) => ({ entry: entryId(e), reason: 'its blob is neither in the bundle nor on this mirror' }))];
    const waiting = plan.waiting(pending);
    const summary: DryRunSummary = {
      bundle: manifest.id,
      dryRun: true,
      status: pending.length || waiting || notImported.length ? 'partial' : 'complete',
      signature,
      new: plan.newCounts,
      unchanged: plan.unchanged,
      conflicts: plan.conflicts,
      notImported,
      waiting,
      volumes: { total: manifest.volumes.length, present: plan.present.size, pending },
      blobs: toWrite.length,
      bytes: bytesToWrite,
      bytesNeeded,
      freeBytes,
    };
    if (pending.length) note(`${pending.length} of ${manifest.volumes.length} volumes are not here: ${pending.join(', ')}`);
    if (bytesNeeded > freeBytes) note(`not enough free space: a run would need ${formatBytes(bytesNeeded)}, ${formatBytes(freeBytes)} are free`);
    onEvent({ type: 'summary', summary: { ...summary } });
    return summary;
  }
  if (bytesNeeded > freeBytes) {
    throw new BundleError(
      `not enough free space for this import in ${target.dataDir}: it writes ${formatBytes(bytesToWrite)} of blobs and keeps ` +
        `${formatBytes(bytesNeeded - bytesToWrite)} free besides, ${formatBytes(bytesNeeded)} in all, and ${formatBytes(freeBytes)} are free. ` +
        'Free some space, or import fewer volumes at a time (a later run imports the others)',
    );
  }

  const records = new ImportRecords(join(target.dataDir, 'imports'));
  const record = await records.read(manifest.id);
  const manifestSha256 = createHash('sha256').update(manifestBytes).digest('hex');
  if (record && record.manifestSha256 !== manifestSha256) note(`a different manifest with this bundle id (${show(manifest.id)}) was imported before: this one is imported as it is`);
  const state = Object.fromEntries(manifest.entries.map((e) => [entryId(e), e.digest]));
  const save = (status: 'complete' | 'partial', volumesDone: readonly string[], entriesPresent: number) =>
    records.write({ bundle: manifest.id, base: manifest.base ?? null, manifestSha256, status, updatedAt: new Date(now()).toISOString(), volumesDone, entriesPresent, state });
  await save('partial', record?.volumesDone ?? [], record?.entriesPresent ?? 0);

  // 3. The blobs, then 4. the metadata.
  const blobs = await storeBlobs(manifest, dir, toWrite, target, onEvent, now);
  const entries = await commitEntries(manifest, plan, blobs, pending, target, now);
  for (const c of entries.conflicts) note(`conflict: ${show(c.entry)}: ${c.reason}; kept as it is`);
  const deletions = await applyDeletions(manifest, target, records);
  for (const k of deletions.kept) note(`not deleted: ${show(k.entry)}: ${k.reason}`);

  const { added, unchanged, conflicts, notImported, waiting } = entries;
  const status = pending.length === 0 && waiting === 0 && notImported.length === 0 ? 'complete' : 'partial';
  const volumesDone = manifest.volumes.map((v) => v.name).filter((v) => !pending.includes(v) && !blobs.damaged.includes(v));
  await save(status, volumesDone, added.cached + added.hosted + added.generic + unchanged);
  if (pending.length) note(`${pending.length} of ${manifest.volumes.length} volumes pending: ${pending.join(', ')} (import again with them; what is here stays)`);
  const summary: ImportSummary = {
    bundle: manifest.id,
    dryRun: false,
    status,
    signature,
    added,
    unchanged,
    conflicts,
    refusedBlobs: blobs.refusedEntries,
    notImported,
    waiting,
    volumes: { total: manifest.volumes.length, read: blobs.read, pending, damaged: blobs.damaged },
    deletions,
    blobs: blobs.stored,
    bytes: blobs.bytes,
  };
  onEvent({ type: 'summary', summary: { ...summary } });
  return summary;
}

interface StoredBlobs {
  /** Blobs stored (volumes and copies) and their bytes. */
  readonly stored: number;
  readonly bytes: number;
  /** Why each refused blob was refused, by digest. */
  readonly refused: ReadonlyMap<string, string>;
  readonly refusedEntries: ReadonlyArray<{ volume: string; entry: string; reason: string }>;
  /** Volumes read, and those of them that were not intact (a blob refused, cut short, not their sha256). */
  readonly read: readonly string[];
  readonly damaged: readonly string[];
}

/**
 * Stores the blobs of `toWrite`: copies from the other store first, then each present volume that carries some,
 * read once. A blob the bundle carries for both stores is read into one and copied into the other.
 */
async function storeBlobs(manifest: Manifest, dir: string, toWrite: readonly Need[], target: ImportTarget, onEvent: OnEvent, now: () => number): Promise<StoredBlobs> {
  const note = (message: string) => onEvent({ type: 'note', message });
  const ports: Record<Store, BlobPort> = { archives: target.archives, hosted: target.hosted };
  const volumeCount = new Set(toWrite.flatMap((n) => (n.source.from === 'volume' ? [n.source.volume] : []))).size;
  const meter = new ProgressMeter({ bytes: toWrite.reduce((sum, n) => sum + n.ref.size, 0), blobs: toWrite.length, volumes: volumeCount }, onEvent, now);
  const out = { stored: 0, bytes: 0, refused: new Map<string, string>(), refusedEntries: [] as Array<{ volume: string; entry: string; reason: string }>, read: [] as string[], damaged: [] as string[] };

  /** Receives one blob into a store; resolves with why it was refused, if it was (other failures throw). */
  const receive = async (ref: ArchiveRef, into: Store, body: AsyncIterable<Uint8Array>): Promise<string | undefined> => {
    const progress = blobProgress(meter);
    try {
      await ports[into].receiveBlob(progress.count(body), ref);
    } catch (err) {
      const reason = rejection(err);
      if (reason === undefined) throw err;
      out.refused.set(ref.digest, reason);
      return reason;
    } finally {
      progress.done();
    }
    out.stored++;
    out.bytes += ref.size;
    return undefined;
  };
  const copy = async (ref: ArchiveRef, from: Store, to: Store): Promise<void> => {
    const reader = await ports[from].openStored(ref.digest);
    if (!reader) return void out.refused.set(ref.digest, `it was gone from the ${from} store before it could be copied`);
    try {
      const reason = await receive(ref, to, readerStream(reader));
      if (reason !== undefined) note(`blob ${ref.digest} was not copied from the ${from} store: ${reason}`);
    } finally {
      reader.close();
    }
  };
  for (const n of toWrite) if (n.source.from === 'copy') await copy(n.ref, n.source.store, n.store);

  for (const volume of manifest.volumes) {
    const wanted = new Map<string, Need[]>();
    for (const n of toWrite) if (n.source.from === 'volume' && n.source.volume === volume.name) wanted.set(n.ref.digest, [...(wanted.get(n.ref.digest) ?? []), n]);
    if (wanted.size === 0) continue;
    const listed = new Map(manifest.blobs.filter((b) => b.volume === volume.name).map((b) => [b.digest, b.size]));
    const outcome = await readVolume(join(dir, volume.name), listed, async (digest, body) => {
      const [first, ...others] = wanted.get(digest) ?? [];
      if (!first || (await ports[first.store].hasBlob(first.ref))) return undefined; // not needed, or stored meanwhile
      const refused = await receive(first.ref, first.store, body);
      if (refused === undefined) for (const other of others) await copy(other.ref, first.store, other.store);
      return refused;
    });
    for (const r of outcome.refused) {
      out.refusedEntries.push({ volume: volume.name, ...r });
      note(`${volume.name}: refused ${r.entry}: ${r.reason}`);
    }
    const intact = outcome.size === volume.size && outcome.sha256 === volume.sha256;
    if (outcome.error !== undefined) note(`${volume.name} could not be read to its end (${outcome.error}): the blobs before that point were checked one by one and kept`);
    else if (!intact) {
      note(`${volume.name} is ${outcome.size} bytes with sha256 ${outcome.sha256}, the manifest says ${volume.size} bytes, sha256 ${volume.sha256}: damaged or altered; its blobs were checked one by one`);
    }
    if (outcome.error !== undefined || !intact) out.damaged.push(volume.name);
    out.read.push(volume.name);
    meter.add({ volumes: 1 });
  }
  return out;
}

interface CommittedEntries {
  readonly added: Counts;
  /** Entries here already, the same (found so by the plan or at the write). */
  readonly unchanged: number;
  readonly conflicts: readonly Problem[];
  readonly notImported: readonly Problem[];
  readonly waiting: number;
}

/** Makes every new entry whose blob is stored visible, each checked again at its write; says why the others are not. */
async function commitEntries(manifest: Manifest, plan: Plan, blobs: StoredBlobs, pending: readonly string[], target: ImportTarget, now: () => number): Promise<CommittedEntries> {
  const added = counts();
  let unchanged = plan.unchanged;
  const conflicts: Problem[] = [...plan.conflicts];
  const notImported: Problem[] = [...plan.invalid];
  let waiting = 0;
  const fetchedAt = Math.min(now(), Date.parse(manifest.createdAt) || 0); // when the source last had it confirmed
  for (const e of manifest.entries) {
    if (plan.standings.get(e) !== 'new') continue;
    const ref = { digest: e.digest, size: e.size };
    let result: Adoption;
    if (e.kind === 'cached') {
      const release = { version: e.version, createdAt: e.release.createdAt, body: e.release.body, archiveUrl: '', fields: e.release.fields };
      result = await target.registry.adoptCached(e.name, e.version, release, ref, fetchedAt);
    } else if (e.kind === 'hosted') {
      result = await target.components.importVersion({ ...e, archive: ref });
    } else {
      result = await target.generic.importFile({ owner: e.owner, name: e.name, version: e.version }, e.file, ref, e.createdAt);
    }
    if (result === 'added') added[e.kind]++;
    else if (result === 'unchanged') unchanged++;
    else if (result !== 'missing') conflicts.push({ entry: entryId(e), reason: result.conflict });
    else {
      const source = plan.needOf(e)?.source;
      if (source?.from === 'volume' && pending.includes(source.volume)) waiting++;
      else notImported.push({ entry: entryId(e), reason: whyMissing(e.digest, source, blobs) });
    }
  }
  return { added, unchanged, conflicts, notImported, waiting };
}

/** Why a new entry's blob is not stored after the blobs were read (its volume is here). */
function whyMissing(digest: string, source: Source | undefined, blobs: StoredBlobs): string {
  const refused = blobs.refused.get(digest);
  if (refused !== undefined) return `its blob was refused: ${refused}`;
  if (source?.from !== 'volume') return 'its blob is neither in the bundle nor on this mirror';
  if (blobs.damaged.includes(source.volume)) return `its blob was not found in ${source.volume}, which is damaged`;
  return `its blob is listed for ${source.volume} but is not in it`;
}

/** Checks the signatures against the trusted keys; throws when the bundle is refused, else says who signed. */
function checkTrust(manifest: Buffer, sigText: string | undefined, trustedKeys: readonly string[], note: (m: string) => void): string {
  const verdict = checkSignatures(manifest, sigText, trustedKeys);
  if (verdict.status === 'invalid') {
    throw new BundleError(`the manifest was altered or its signature is broken: the signature of key ${show(verdict.keyId)} does not match ${MANIFEST}; refused`);
  }
  if (trustedKeys.length > 0) {
    if (verdict.status === 'unsigned') throw new BundleError('the bundle is unsigned, and this mirror imports only bundles signed by a trusted key (import.trustedKeys, --trust); refused');
    if (verdict.trustedBy === undefined) {
      throw new BundleError(`the bundle is not signed by a trusted key: it is signed by ${verdict.keyIds.map(show).join(', ')}, which no key of import.trustedKeys (or --trust) is; refused`);
    }
    return `signed by trusted key ${verdict.trustedBy}`;
  }
  if (verdict.status === 'unsigned') {
    note('the bundle is unsigned and no trusted keys are configured: nothing vouches for where it comes from (set import.trustedKeys, or --trust)');
    return 'unsigned (no trusted keys configured)';
  }
  note(`the bundle is signed by ${verdict.keyIds.join(', ')}; no trusted keys are configured, so only its integrity was checked`);
  return `signed by ${verdict.keyIds.join(', ')} (not checked against trusted keys: none configured)`;
}

interface Plan {
  readonly standings: Map<Entry, Standing>;
  readonly needs: readonly Need[];
  /** What a new entry needs that its store lacks (undefined: nothing, or the entry is not new). */
  needOf(e: Entry): Need | undefined;
  /** Volumes whose file is in the bundle's folder. */
  readonly present: ReadonlySet<string>;
  readonly conflicts: readonly Problem[];
  readonly invalid: readonly Problem[];
  /** Entries already here, the same. */
  readonly unchanged: number;
  /** New entries, by kind. */
  readonly newCounts: Counts;
  /** How many new entries wait for one of these volumes. */
  waiting(pending: readonly string[]): number;
}

/** How every entry stands, and what blobs the new ones need from where; reads only. */
async function planImport(manifest: Manifest, dir: string, target: ImportTarget): Promise<Plan> {
  const ports: Record<Store, BlobPort> = { archives: target.archives, hosted: target.hosted };
  const carried = new Map<string, { size: number; volume: string }>();
  for (const b of manifest.blobs) if (!carried.has(b.digest)) carried.set(b.digest, b);
  const standings = new Map<Entry, Standing>();
  const conflicts: Problem[] = [];
  const invalid: Problem[] = [];
  const needs = new Map<string, Need>();
  let unchanged = 0;
  for (const e of manifest.entries) {
    const ref = { digest: e.digest, size: e.size };
    const problem = entryProblem(e) ?? (carried.has(e.digest) && carried.get(e.digest)!.size !== e.size ? `the manifest lists its blob as ${carried.get(e.digest)!.size} bytes, the entry as ${e.size}` : undefined);
    if (problem) {
      invalid.push({ entry: entryId(e), reason: problem });
      continue;
    }
    const standing =
      e.kind === 'cached'
        ? await target.registry.standing(e.name, e.version, ref)
        : e.kind === 'hosted'
          ? await target.components.standing(e.name, e.version, ref, e.owner)
          : await target.generic.standing({ owner: e.owner, name: e.name, version: e.version }, e.file, e.digest);
    standings.set(e, standing);
    if (standing === 'unchanged') unchanged++;
    else if (standing !== 'new') conflicts.push({ entry: entryId(e), reason: standing.conflict });
    const store = storeOf(e.kind);
    if (standing !== 'new' || needs.has(`${store}:${e.digest}`) || (await ports[store].hasBlob(ref))) continue;
    const other: Store = store === 'archives' ? 'hosted' : 'archives';
    const volume = carried.get(e.digest)?.volume;
    const source: Source = (await ports[other].hasBlob(ref)) ? { from: 'copy', store: other } : volume ? { from: 'volume', volume } : { from: 'nowhere' };
    needs.set(`${store}:${e.digest}`, { ref, store, source });
  }
  const present = new Set<string>();
  for (const v of manifest.volumes) if ((await stat(join(dir, v.name)).catch(() => undefined))?.isFile()) present.add(v.name);
  const newCounts = counts();
  for (const [e, standing] of standings) if (standing === 'new') newCounts[e.kind]++;
  const needOf = (e: Entry) => (standings.get(e) === 'new' ? needs.get(`${storeOf(e.kind)}:${e.digest}`) : undefined);
  return {
    needOf,
    newCounts,
    standings,
    needs: [...needs.values()],
    present,
    conflicts,
    invalid,
    unchanged,
    waiting: (pending) =>
      manifest.entries.filter((e) => {
        const source = needOf(e)?.source;
        return source?.from === 'volume' && pending.includes(source.volume);
      }).length,
  };
}

/** Why an entry cannot be imported whatever the mirror holds (its names would not fit the mirror's keys), if so. */
function entryProblem(e: Entry): string | undefined {
  const plain = (s: string) => !/[/\\\u0000-\u001f\u007f]/.test(s) && s !== '.' && s !== '..' && s.trim() === s;
  if (e.kind === 'hosted' && !USER_NAME.test(e.owner)) return `its owner ${show(e.owner)} is not a user or group name`;
  if (e.kind !== 'generic') return undefined;
  if (!USER_NAME.test(e.owner)) return `its owner ${show(e.owner)} is not a user or group name`;
  for (const [what, value] of [['name', e.name], ['version', e.version], ['file name', e.file]] as const) {
    if (!plain(value)) return `its ${what} ${show(value)} has a slash, a control character, or is . or ..`;
  }
  return undefined;
}

/**
 * Applies the bundle's deletions. A cached version is forgotten and its archive unlinked (the upstream has it, if
 * anyone); a hosted version or generic file is removed only while it is the bytes the base bundle had, as recorded
 * when that bundle was imported here: anything else was changed here since, and is kept.
 */
async function applyDeletions(manifest: Manifest, target: ImportTarget, records: ImportRecords): Promise<{ applied: number; kept: Problem[] }> {
  const inState = new Set(manifest.entries.map(entryId));
  const baseState = manifest.base === undefined ? undefined : (await records.read(manifest.base))?.state;
  let applied = 0;
  const kept: Problem[] = [];
  for (const id of manifest.deletions) {
    if (inState.has(id)) continue;
    const d = parseEntryId(id);
    if (!d) {
      kept.push({ entry: id, reason: 'not the id of a version or file' });
      continue;
    }
    if (d.kind === 'cached') {
      if (await target.registry.hasCached(d.name, d.version)) {
        await target.registry.deleted(d.name, d.version);
        applied++;
      }
      continue;
    }
    const had = baseState?.[id];
    if (had === undefined) {
      kept.push({ entry: id, reason: manifest.base === undefined ? 'a bundle without a base deletes nothing hosted' : `the base bundle ${show(manifest.base)} was not imported here (or did not have it), so what it had is unknown` });
      continue;
    }
    const result = d.kind === 'hosted' ? await target.components.removeImported(d.name, d.version, had) : await target.generic.removeImported(d.at, d.file, had);
    if (result === 'removed') applied++;
    else if (result === 'differs') kept.push({ entry: id, reason: 'it changed here since the base bundle' });
  }
  return { applied, kept };
}

type DeletionId =
  | { readonly kind: 'cached'; readonly name: string; readonly version: string }
  | { readonly kind: 'hosted'; readonly name: string; readonly version: string }
  | { readonly kind: 'generic'; readonly at: { owner: string; name: string; version: string }; readonly file: string };

/** The parts of an entryId() string. */
function parseEntryId(id: string): DeletionId | undefined {
  const generic = /^generic:([^/]+)\/([^/]+)\/([^/]+)\/(.+)$/.exec(id);
  if (generic) return { kind: 'generic', at: { owner: generic[1]!, name: generic[2]!, version: generic[3]! }, file: generic[4]! };
  const versioned = /^(cached|hosted):(.+)@([^@]+)$/.exec(id);
  return versioned ? { kind: versioned[1] === 'cached' ? 'cached' : 'hosted', name: versioned[2]!, version: versioned[3]! } : undefined;
}

/** A blob refusal's reason (the bytes were not what the manifest says, or do not fit the hosted limits); undefined for any other failure. */
function rejection(err: unknown): string | undefined {
  if (err instanceof ArchiveRejectedError) return err.message.replace(/^archive rejected: /, '');
  if (err instanceof MirrorError && (err.kind === 'bad-request' || err.kind === 'too-large' || err.kind === 'forbidden')) return err.message.replace(/^the upload was refused: /, '');
  return undefined;
}

/** A volume ended early or is not a tar: the blobs read before are kept (each was checked), the rest is not read. */
class VolumeReadError extends Error {}

interface VolumeOutcome {
  readonly size: number;
  readonly sha256: string;
  readonly refused: ReadonlyArray<{ entry: string; reason: string }>;
  /** Why the volume could not be read to its end, if it could not. */
  readonly error: string | undefined;
}

/**
 * Streams a volume once, hashing all of it, and hands each acceptable entry's bytes to `take` (which resolves with a
 * reason to refuse them, or undefined). Acceptable: a regular file named blobs/sha256/<hex>, listed for this volume,
 * of the listed size, not seen before in it. No entry name is ever used as a path.
 */
async function readVolume(path: string, listed: ReadonlyMap<string, number>, take: (digest: string, body: AsyncIterable<Uint8Array>) => Promise<string | undefined>): Promise<VolumeOutcome> {
  const hash = createHash('sha256');
  let size = 0;
  const file = createReadStream(path);
  const extract = tar.extract();
  const feeding = (async () => {
    try {
      for await (const chunk of file as AsyncIterable<Buffer>) {
        hash.update(chunk);
        size += chunk.length;
        if (extract.destroyed) break;
        if (!extract.write(chunk)) await drainOrClose(extract);
      }
      extract.end(undefined);
    } catch (err) {
      extract.destroy(err as Error);
    }
  })();
  const refused: Array<{ entry: string; reason: string }> = [];
  const seen = new Set<string>();
  let error: string | undefined;
  let taking = false; // a failure while `take` runs is the store's (rethrown), unless it is the volume's read
  try {
    for await (const entry of extract) {
      const { name, type, size: entrySize } = entry.header;
      const body = detachable(entry);
      const digest = BLOB_ENTRY.exec(name)?.[1];
      const reason =
        type !== 'file'
          ? `a ${type ?? 'typeless'} entry: only files are read`
          : digest === undefined
            ? 'not a blobs/sha256/<64 hex> name'
            : seen.has(name)
              ? 'a second entry of that name'
              : !listed.has(digest)
                ? 'a blob the manifest does not list for this volume'
                : listed.get(digest) !== entrySize
                  ? `${entrySize} bytes, the manifest says ${listed.get(digest)}`
                  : await ((taking = true), take(digest, body.bytes));
      taking = false;
      seen.add(name);
      if (reason !== undefined) refused.push({ entry: show(name), reason });
      await body.drain();
    }
  } catch (err) {
    file.destroy();
    extract.destroy();
    if (taking && !(err instanceof VolumeReadError)) throw err;
    error = (err as Error).message;
  }
  await feeding;
  return { size, sha256: hash.digest('hex'), refused, error };
}

/** Counts a blob's bytes into the meter as they pass, a step at a time; done() adds the rest, and the blob. */
function blobProgress(meter: ProgressMeter): { count(body: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array>; done(): void } {
  let unreported = 0;
  return {
    async *count(body) {
      for await (const chunk of body) {
        unreported += chunk.length;
        if (unreported >= PROGRESS_STEP_BYTES) meter.add({ bytes: unreported }), (unreported = 0);
        yield chunk;
      }
    },
    done() {
      meter.add({ bytes: unreported, blobs: 1 });
      unreported = 0;
    },
  };
}

/** Waits until a writable stream wants more, or is gone. */
function drainOrClose(stream: tar.Extract): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/**
 * A tar entry's bytes, whose reader may stop early without destroying the entry (tar-stream ends the whole volume
 * then); what is left is drained after. A failure to read is a VolumeReadError, so that it is told from a store's.
 */
function detachable(entry: AsyncIterable<unknown>): { bytes: AsyncIterable<Uint8Array>; drain(): Promise<void> } {
  const it = entry[Symbol.asyncIterator]();
  let ended = false;
  const next = async (): Promise<IteratorResult<Uint8Array>> => {
    if (ended) return { done: true, value: undefined };
    try {
      const r = await it.next();
      if (r.done) ended = true;
      return r as IteratorResult<Uint8Array>;
    } catch (err) {
      ended = true;
      throw new VolumeReadError((err as Error).message);
    }
  };
  const bytes: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => ({ next, return: async () => ({ done: true, value: undefined }) }) };
  return {
    bytes,
    async drain() {
      while (!(await next()).done);
    },
  };
}

/** The import records of {dataDir}/imports: one JSON file per bundle, written atomically and fsynced. */
class ImportRecords {
  constructor(private readonly folder: string) {}

  /** A bundle id as a file name: as it is when it is plain, else its sha256 (a bundle's string never becomes a path). */
  private file(bundle: string): string {
    const name = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(bundle) ? bundle : `sha256-${createHash('sha256').update(bundle).digest('hex')}`;
    return join(this.folder, `${name}.json`);
  }

  async read(bundle: string): Promise<ImportRecord | undefined> {
    try {
      const doc = JSON.parse(await readFile(this.file(bundle), 'utf8')) as ImportRecord;
      return doc.bundle === bundle ? doc : undefined;
    } catch {
      return undefined; // none yet (or unreadable: the stores say what is done all the same)
    }
  }

  async write(record: ImportRecord): Promise<void> {
    await mkdir(this.folder, { recursive: true });
    const target = this.file(record.bundle);
    const temp = `${target}.partial`;
    const handle = await open(temp, 'w');
    try {
      await handle.writeFile(`${JSON.stringify(record, null, 2)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, target);
  }
}

async function freeBytesAt(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

function counts(): Counts {
  return { cached: 0, hosted: 0, generic: 0 };
}

/** A string from a bundle, for a message: quoted (no control character reaches a terminal) and cut short. */
function show(s: string): string {
  return JSON.stringify(s.length > SHOWN_CHARS ? `${s.slice(0, SHOWN_CHARS)}…` : s);
}
