// Archives: served from the store when cached (HIT); otherwise one fill per (package, version) downloads from the
// upstream into an ArchiveWriter, and every client that asks meanwhile, the first included, reads the bytes as they
// land on disk (MISS). The fill has its own lifetime: clients that go away do not stop it, and when it fails every
// reader's stream fails with it, so no client takes a short body for a whole one.
//
// A cached file is hashed before it is first served (and again whenever the file changes on disk); one whose
// bytes no longer match its digest is dropped and fetched again. When the disk cannot be written (full,
// read-only), downloads are passed through to clients uncached until a retry window has passed. Past the disk
// quota, the least recently used archives are evicted (never one being served), after every new archive.
import type { Readable } from 'node:stream';
import { MirrorError } from '../model/errors.js';
import type { Logger } from '../log.js';
import type { ArchiveRef } from '../model/release.js';
import { ArchiveRejectedError, type ArchiveReader, type ArchiveStore, type ArchiveWriter } from '../stores/archive-store.js';
import { key } from '../stores/keys.js';
import type { MetadataStore } from '../stores/metadata-store.js';
import type { UpstreamBody } from '../upstreams/http.js';
import type { ArchiveQuota } from './archive-quota.js';
import { deferred, SingleFlight } from './single-flight.js';

export type ArchiveHandle =
  /** `release` must be called once the file has been sent: until then it cannot be evicted. */
  | { readonly status: 'HIT'; readonly ref: ArchiveRef; readonly path: string; open(): Promise<ArchiveReader>; release(): void }
  /** The reader must be closed once read. */
  | { readonly status: 'MISS'; readonly size: number | undefined; readonly reader: ArchiveReader };

/** Runs `consume` on the upstream's download of an archive. */
export type ArchiveSource = <T>(consume: (res: UpstreamBody) => Promise<T>) => Promise<T>;

export interface DiskProblem {
  readonly error: string;
  readonly since: string;
}

export interface AuditReport {
  readonly archives: number;
  readonly bytes: number;
  /** Digests whose files no longer match. */
  readonly corrupt: string[];
  /** Digests no package version points at. */
  readonly unreferenced: string[];
  /** package@version keys whose archive file is gone. */
  readonly missing: string[];
  readonly tempFiles: string[];
}

type FillStart = { readonly ref: ArchiveRef } | { readonly writer: ArchiveWriter; readonly size: number | undefined };

/** An error of the store (not of the upstream): the disk is full, read-only, or otherwise failing. */
class DiskError extends Error {}

/** How long the mirror passes downloads through uncached after a disk error before it tries the disk again. */
const DISK_RETRY_MS = 60_000;

export class ArchiveCache {
  /** Fills under way, by key; each promise settles once the download's headers are in (or it failed). */
  private readonly fills = new Map<string, Promise<FillStart>>();
  /** Each fill until it has stored its archive or given up. */
  private readonly running = new Set<Promise<void>>();
  /** Digests whose files were hashed and matched, with the file's signature at the time. */
  private readonly verified = new Map<string, string>();
  private readonly verifying = new SingleFlight<boolean>();
  private disk: (DiskProblem & { readonly retryAt: number }) | undefined;
  private readonly enforcing = new SingleFlight<{ evicted: number; bytes: number }>();

  constructor(
    private readonly refs: MetadataStore,
    private readonly store: ArchiveStore,
    private readonly quota: ArchiveQuota,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Reads the stored archives and their last access times into the quota. */
  async init(): Promise<void> {
    for await (const a of this.store.list()) {
      this.quota.added(a.digest, a.size, (await this.refs.get<number>(accessKey(a.digest))) ?? a.modifiedMs);
    }
  }

  /** Saves the access times of archives used since the last save (one batch, not a write per hit). */
  async saveAccessTimes(): Promise<void> {
    const unsaved = this.quota.takeUnsaved();
    if (unsaved.length) await this.refs.putMany(unsaved.map(([digest, at]) => [accessKey(digest), at] as const));
  }

  /**
   * Removes archives nothing points at, then evicts least recently used archives until usage is back under the
   * quota's low-water mark; counts the evicted ones.
   */
  enforceQuota(): Promise<{ evicted: number; bytes: number }> {
    return this.enforcing.run('quota', async () => {
      const byDigest = await this.keysByDigest();
      const unreferenced = await this.removeUnreferenced(byDigest);
      if (unreferenced.removed) this.log.warn('removed archives nothing points at', { ...unreferenced });
      let [evicted, bytes] = [0, 0];
      for (const digest of this.quota.victims()) {
        if (this.quota.isLeased(digest)) continue; // leased while the unreferenced ones were removed
        bytes += await this.remove(digest, byDigest.get(digest) ?? []);
        evicted++;
      }
      if (evicted) this.log.warn('disk quota: evicted least recently used archives', { evicted, bytes, usedBytes: this.quota.usedBytes });
      return { evicted, bytes };
    });
  }

  /** Removes archives no key points at (older than a minute, so a fill between commit and ref is left alone). */
  async removeUnreferenced(byDigest?: Map<string, string[]>): Promise<{ removed: number; bytes: number }> {
    byDigest ??= await this.keysByDigest();
    let removed = 0;
    let bytes = 0;
    for await (const a of this.store.list()) {
      if (byDigest.has(a.digest) || this.quota.isLeased(a.digest) || this.now() - a.modifiedMs < 60_000) continue;
      await this.remove(a.digest, []);
      removed++;
      bytes += a.size;
    }
    return { removed, bytes };
  }

  /**
   * Rehashes every archive and checks every key against its file: corrupt archives, files no key points at, keys
   * whose file is missing, and leftover temp files. With repair, all of them are removed.
   */
  async audit(repair: boolean): Promise<AuditReport> {
    const byDigest = await this.keysByDigest();
    const report = { archives: 0, bytes: 0, corrupt: [] as string[], unreferenced: [] as string[], missing: [] as string[], tempFiles: await this.store.tempFiles() };
    const present = new Set<string>();
    for await (const a of this.store.list()) {
      present.add(a.digest);
      report.archives++;
      report.bytes += a.size;
      if (!(await this.store.verify(a.digest))) report.corrupt.push(a.digest);
      else if (!byDigest.has(a.digest)) report.unreferenced.push(a.digest);
    }
    for (const [digest, keys] of byDigest) if (!present.has(digest)) report.missing.push(...keys.map((k) => k.slice(refKey('').length)));
    if (repair) {
      for (const digest of [...report.corrupt, ...report.unreferenced]) await this.remove(digest, byDigest.get(digest) ?? []);
      for (const key of report.missing) await this.refs.del(refKey(key));
      for (const name of report.tempFiles) await this.store.deleteTemp(name);
    }
    return report;
  }

  quotaStatus(): { maxBytes: number; usedBytes: number; archives: number } {
    return { maxBytes: this.quota.maxBytes, usedBytes: this.quota.usedBytes, archives: this.quota.count };
  }

  /** Serves from the store, or fills from `source`; with no source (offline), what is not stored is not found. */
  async open(key: string, source: ArchiveSource | undefined): Promise<ArchiveHandle> {
    const ref = await this.lookup(key);
    if (ref) return this.hit(ref);
    if (!source) throw new MirrorError('not-found', `the mirror is offline and does not have ${key}`);
    if (this.disk && this.now() < this.disk.retryAt) return this.passThrough(source);
    try {
      const start = await (this.fills.get(key) ?? this.fill(key, source));
      if ('ref' in start) return this.hit(start.ref);
      return { status: 'MISS', size: start.size, reader: start.writer.reader() };
    } catch (err) {
      if (err instanceof DiskError) return this.passThrough(source);
      throw err;
    }
  }

  /** The archive a key points at, if its file is there whole and its bytes match the digest. */
  async lookup(key: string): Promise<ArchiveRef | undefined> {
    const ref = await this.refs.get<ArchiveRef>(refKey(key));
    if (!ref) return undefined;
    const stat = await this.store.stat(ref.digest);
    if (stat?.size !== ref.size) return undefined;
    if (this.verified.get(ref.digest) === stat.signature) return ref;
    if (await this.verifying.run(ref.digest, () => this.store.verify(ref.digest))) {
      this.verified.set(ref.digest, stat.signature);
      return ref;
    }
    this.log.warn('corrupt archive dropped; it will be fetched again', { key, digest: ref.digest });
    await this.remove(ref.digest, (await this.keysByDigest()).get(ref.digest) ?? [refKey(key)]);
    return undefined;
  }

  /** Forgets which archive a key points at; the file goes too when no other key points at it. */
  async unlink(key: string): Promise<void> {
    const ref = await this.refs.get<ArchiveRef>(refKey(key));
    if (!ref) return;
    await this.refs.del(refKey(key));
    if (!(await this.keysByDigest()).has(ref.digest)) await this.remove(ref.digest, []);
  }

  /** Versions of a package whose archives are stored. */
  async versions(name: string): Promise<string[]> {
    const versions: string[] = [];
    const prefix = refKey(`${name}@`);
    for await (const k of this.refs.keys(prefix)) {
      const ref = await this.refs.get<ArchiveRef>(k);
      if (ref && (await this.store.stat(ref.digest))?.size === ref.size) versions.push(k.slice(prefix.length));
    }
    return versions;
  }

  /** Names of the packages with at least one stored archive. */
  async packages(): Promise<string[]> {
    const names = new Set<string>();
    for await (const k of this.refs.keys(refKey(''))) names.add(k.slice(refKey('').length).split('@')[0]!);
    return [...names];
  }

  /** Waits for the fills under way to finish, for at most `ms`. */
  async drain(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
    await Promise.race([Promise.allSettled([...this.running]), timeout]);
    clearTimeout(timer);
  }

  status(): { fillsInProgress: number; diskProblem: DiskProblem | undefined } {
    const disk = this.disk && { error: this.disk.error, since: this.disk.since };
    return { fillsInProgress: this.fills.size, diskProblem: disk };
  }

  private hit(ref: ArchiveRef): ArchiveHandle {
    return {
      status: 'HIT',
      ref,
      path: this.store.path(ref.digest),
      open: () => this.store.openReader(ref.digest),
      release: this.quota.lease(ref.digest),
    };
  }

  /** Every key pointing at each stored digest. */
  private async keysByDigest(): Promise<Map<string, string[]>> {
    const map = new Map<string, string[]>();
    for await (const k of this.refs.keys(refKey(''))) {
      const ref = await this.refs.get<ArchiveRef>(k);
      if (ref) map.set(ref.digest, [...(map.get(ref.digest) ?? []), k]);
    }
    return map;
  }

  /** Deletes an archive's file and the keys that point at it; returns the bytes freed. */
  private async remove(digest: string, keys: readonly string[]): Promise<number> {
    // The file first: a key left pointing at a missing file is harmless (lookup checks), and the quota follows the disk.
    await this.store.delete(digest);
    this.verified.delete(digest);
    const freed = this.quota.removed(digest);
    for (const k of keys) await this.refs.del(k);
    await this.refs.del(accessKey(digest));
    return freed;
  }

  private fill(key: string, source: ArchiveSource): Promise<FillStart> {
    const started = deferred<FillStart>();
    this.fills.set(key, started.promise);
    const run = async () => {
      // Looked up again: a fill that just finished may have stored it while our caller looked.
      const ref = await this.lookup(key);
      if (ref) return started.resolve({ ref });
      await source(async ({ body, length }) => {
        const writer = await this.onDisk(() => this.store.createWriter());
        started.resolve({ writer, size: length });
        try {
          for await (const chunk of body) await this.onDisk(() => writer.write(chunk as Buffer));
          const ref = await this.onDisk(() => writer.commit({ size: length }));
          await this.refs.put(refKey(key), ref);
          const stat = await this.store.stat(ref.digest);
          if (stat) this.verified.set(ref.digest, stat.signature); // hashed while it was written
          this.quota.added(ref.digest, ref.size);
        } catch (err) {
          await writer.abort(err as Error);
          throw err;
        }
      });
      if (this.disk) {
        this.log.warn('archive cache writable again', { error: this.disk.error });
        this.disk = undefined;
      }
      if (this.quota.overQuota) void this.enforceQuota().catch((err: unknown) => this.log.warn('eviction failed', { error: String(err) }));
    };
    const done = run()
      .catch((err: unknown) => {
        started.reject(err);
        this.log.warn('archive fill failed', { key, error: (err as Error).message });
      })
      .finally(() => {
        this.fills.delete(key);
        this.running.delete(done);
      });
    this.running.add(done);
    return started.promise;
  }

  /** Runs a store operation; its failure marks the disk unusable for a while (logged once per condition). */
  private async onDisk<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof ArchiveRejectedError) throw err; // the download's fault, not the disk's
      const error = `${(err as NodeJS.ErrnoException).code ?? 'error'}: ${(err as Error).message}`;
      if (this.disk?.error !== error) this.log.warn('archive cache not writable; passing downloads through uncached', { error });
      this.disk = { error, since: this.disk?.since ?? new Date(this.now()).toISOString(), retryAt: this.now() + DISK_RETRY_MS };
      throw new DiskError(error, { cause: err });
    }
  }

  /** Streams the upstream's download straight to one client, caching nothing. */
  private passThrough(source: ArchiveSource): Promise<ArchiveHandle> {
    const started = deferred<ArchiveHandle>();
    source(async ({ body, length }) => {
      started.resolve({ status: 'MISS', size: length, reader: streamReader(body) });
      await new Promise((resolve) => body.once('close', resolve)); // the upstream slot is held until it is read or dropped
    }).catch((err: unknown) => started.reject(err));
    return started.promise;
  }
}

const refKey = key.archive;
const accessKey = key.access;

/** A stream read like an archive, copying its chunks into the caller's buffers. */
function streamReader(stream: Readable): ArchiveReader {
  const chunks = stream[Symbol.asyncIterator]();
  let pending: Buffer = Buffer.alloc(0);
  return {
    async read(buf) {
      if (pending.length === 0) {
        const next = await chunks.next();
        if (next.done) return 0;
        pending = next.value as Buffer;
      }
      const n = pending.copy(buf);
      pending = pending.subarray(n);
      return n;
    },
    close: () => stream.destroy(),
  };
}
