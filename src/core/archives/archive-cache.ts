// Archives, as the Registry sees them: a version's archive is served from the store when cached (HIT), otherwise
// filled from the upstream (MISS), or passed through uncached when the disk fails (BYPASS). The lifecycle is split
// into parts with one job each, wired here:
//   ArchiveIndex      which archive each version is (and the reverse), last access times
//   ArchiveFiller     one validated fill per version, followed by every client that asks meanwhile
//   ArchiveVerifier   whether stored bytes still match their digest (hash, or a trusted version of the file)
//   ArchiveReclaimer  leases, deferred deletes, the quota, collection of what nothing points at
//   ArchiveScrubber   rehashing everything at a bounded rate; the audit behind `verify`
//   ArchiveMemory     small hot archives held in memory, verified as they are loaded
//
// A HIT takes its lease before any check and serves from the file it opened and checked, so neither eviction nor
// a delete can take the bytes from under a client, and no byte is served from a file that was not verified. A HIT
// from memory needs no lease (the bytes are in hand) but counts as a use all the same.
import type { Logger } from '../../log.js';
import { MirrorError } from '../../model/errors.js';
import type { ArchiveRef } from '../../model/release.js';
import type { ArchiveReader, ArchiveStore, StoredReader } from '../../stores/archive-store.js';
import type { MetadataStore } from '../../stores/metadata-store.js';
import type { Exclusive } from '../fleet.js';
import { ArchiveFiller, type ArchiveSource, type ContentCheck, type DiskProblem } from './archive-filler.js';
import { ArchiveIndex } from './archive-index.js';
import { ArchiveMemory, bufferReader, type MemoryOptions, type MemoryStatus } from './archive-memory.js';
import { ArchiveQuota } from './archive-quota.js';
import { ArchiveReclaimer, type SharedReclaim } from './archive-reclaimer.js';
import { rebuildIndex, type RecoveryReport } from './archive-recovery.js';
import { ArchiveScrubber, realClock, type Clock, type ScrubOptions, type ScrubReport } from './archive-scrub.js';
import { ArchiveVerifier, SHARED_RACY_MS, verifyingReader } from './archive-verifier.js';

export type { ArchiveSource, ArchiveDownload, DiskProblem } from './archive-filler.js';
export type { ScrubReport } from './archive-scrub.js';

export interface ArchiveHandle {
  /** HOSTED: content this mirror owns (core/hosted), served like a HIT. */
  readonly status: 'HIT' | 'MISS' | 'BYPASS' | 'HOSTED';
  /** The stored archive, for a HIT: its digest makes a strong ETag. */
  readonly ref: ArchiveRef | undefined;
  /** Bytes in all, when known (a HIT always; a download when the upstream said). */
  readonly size: number | undefined;
  readonly reader: ArchiveReader;
  /** The whole archive, for a HIT from memory: sent as it is, with no copy (`reader` reads it too). */
  readonly bytes?: Buffer;
  /** Closes the reader and lets the archive go again: call once the response is over. Safe to call twice. */
  close(): void;
}

/** A stored archive of a version, kept (from eviction and deletes) until `release` is called. */
export interface LeasedArchive {
  readonly name: string;
  readonly version: string;
  readonly ref: ArchiveRef;
  readonly release: () => void;
}

export interface ArchiveCacheOptions {
  readonly quotaBytes: number;
  /** False while the index is lost (see stores/schema.ts): nothing is collected or evicted. */
  readonly indexIntact: boolean;
  /** Hash every whole-file HIT while it is sent, holding its last bytes until the digest matches. */
  readonly verifyOnServe: boolean;
  /** Bytes per second the scrub hashes at most (0: no limit). */
  readonly scrubRate: number;
  /** What every archive's content must pass (a zip check), stored or passed through. */
  readonly contentCheck?: ContentCheck;
  /** Small hot archives held in memory (default: none). */
  readonly memory?: MemoryOptions;
  readonly clock?: Clock;
  /** Replicas on one database: one fill of a version across all of them (default: this process alone). */
  readonly exclusive?: Exclusive;
  /**
   * The store is a folder shared by replicas on several hosts: its files' versions are trusted later (archive-verifier.ts),
   * and only the leader collects and evicts, sparing what was used within the grace period (archive-reclaimer.ts).
   */
  readonly shared?: SharedReclaim;
}

export class ArchiveCache {
  readonly index: ArchiveIndex;
  readonly reclaimer: ArchiveReclaimer;
  readonly scrubber: ArchiveScrubber;
  private readonly verifier: ArchiveVerifier;
  private readonly filler: ArchiveFiller;
  private readonly memory: ArchiveMemory;

  constructor(
    db: MetadataStore,
    private readonly store: ArchiveStore,
    private readonly log: Logger,
    private readonly options: ArchiveCacheOptions,
  ) {
    const clock = options.clock ?? realClock;
    const now = () => clock.now();
    this.index = new ArchiveIndex(db);
    this.verifier = new ArchiveVerifier(now, options.shared ? SHARED_RACY_MS : undefined);
    this.memory = new ArchiveMemory(options.memory ?? { maxBytes: 0, maxArchiveBytes: 0 });
    const forget = (digest: string) => (this.verifier.forget(digest), this.memory.drop(digest));
    this.reclaimer = new ArchiveReclaimer(store, this.index, new ArchiveQuota(options.quotaBytes, now), forget, log, options.indexIntact, now, options.shared);
    this.filler = new ArchiveFiller(store, this.index, this.verifier, this.reclaimer, log, options.contentCheck, now, options.exclusive);
    this.scrubber = new ArchiveScrubber(store, this.index, this.verifier, this.reclaimer, log, options.scrubRate, clock);
  }

  /** Reads the stored archives into the quota. */
  init(): Promise<void> {
    return this.reclaimer.init();
  }

  /** Serves from the store, or fills from `source`; with no source (offline), what is not stored is not found. */
  async open(id: string, source: ArchiveSource | undefined): Promise<ArchiveHandle> {
    const hit = await this.hit(id);
    if (hit) return hit;
    if (!source) throw new MirrorError('not-found', `the mirror is offline and does not have ${id}`);
    // Twice at most: a fill that finished between our look and our fill is found stored the second time.
    for (let attempt = 0; attempt < 2; attempt++) {
      const stream = await this.filler.stream(id, source, async () => (await this.stored(id)) !== undefined);
      if (stream) return { ...stream, ref: undefined, close: () => stream.reader.close() };
      const hit = await this.hit(id);
      if (hit) return hit;
    }
    throw new MirrorError('internal', `the archive of ${id} was stored but cannot be read`);
  }

  /** Versions of a package whose archives are stored. */
  async versions(name: string): Promise<string[]> {
    const versions: string[] = [];
    for (const [version, ref] of await this.index.versions(name)) if ((await this.store.stat(ref.digest))?.size === ref.size) versions.push(version);
    return versions;
  }

  /** When an archive was stored: its file's last change (it is written once); undefined when it is not there. */
  async storedAt(digest: string): Promise<number | undefined> {
    return (await this.store.stat(digest).catch(() => undefined))?.changedMs;
  }

  /** Names of the packages with at least one stored archive. */
  packages(): Promise<string[]> {
    return this.index.packages();
  }

  /**
   * Every version whose archive is stored (of those `include` selects), each with a lease on its archive (taken
   * before the file is looked at): an export reads them later, and neither eviction nor a delete may take them first.
   */
  async leasedEntries(include: (name: string, version: string) => boolean): Promise<LeasedArchive[]> {
    const out: LeasedArchive[] = [];
    try {
      for await (const [id, ref] of this.index.entries()) {
        const at = id.indexOf('@'); // a package name has no "@"
        const [name, version] = [id.slice(0, at), id.slice(at + 1)];
        if (!include(name, version)) continue;
        const release = await this.leaseStored(ref);
        if (release) out.push({ name, version, ref, release });
      }
    } catch (err) {
      for (const a of out) a.release(); // a failing database: no lease may outlive the listing
      throw err;
    }
    return out;
  }

  /** A lease on a stored archive (not counted as a use); undefined, and no lease, when its file is not there whole. */
  async leaseStored(ref: ArchiveRef): Promise<(() => void) | undefined> {
    const release = this.reclaimer.lease(ref.digest, { touch: false });
    const stat = await this.store.stat(ref.digest).catch(() => undefined);
    if (stat?.size === ref.size) return release;
    release();
    return undefined;
  }

  /** Whether a blob is stored whole (its bytes are checked when served, as every archive's are). */
  async hasBlob(ref: ArchiveRef): Promise<boolean> {
    return (await this.store.stat(ref.digest))?.size === ref.size;
  }

  /**
   * Stores a blob brought from elsewhere (an imported bundle), for a version to point at later (index.put). It is
   * hashed while written, passes the content check, and is committed only when its size and sha256 are `ref`'s
   * (ArchiveRejectedError otherwise); and it is fsynced, unlike a fill: on an air-gapped site there is no upstream
   * to fetch a torn file again from.
   */
  async receiveBlob(body: AsyncIterable<Uint8Array>, ref: ArchiveRef): Promise<void> {
    const writer = await this.store.createWriter({ durable: true });
    try {
      for await (const chunk of body) await writer.write(chunk);
    } catch (err) {
      await writer.abort();
      throw err;
    }
    await writer.commit({ size: ref.size, digests: [ref.digest], check: this.options.contentCheck?.file }, (r, stat) => {
      this.reclaimer.committed(r.digest, r.size);
      this.verifier.record(r.digest, stat);
    });
  }

  /**
   * Opens a stored archive's file as it is, unchecked: for a reader that hashes what it reads (an export, holding a
   * lease; an import copying it into another store); undefined when it is not stored.
   */
  openStored(digest: string): Promise<StoredReader | undefined> {
    return this.store.open(digest);
  }

  /** Forgets a version's archive (a delete through the mirror); readers under way finish. */
  unlink(id: string): Promise<void> {
    return this.reclaimer.unlink(id);
  }

  /**
   * Rebuilds the index from the stored files (`repair`); files that cannot be attributed are quarantined, and no
   * copy of them stays in memory either.
   */
  async rebuildIndex(): Promise<RecoveryReport> {
    const report = await rebuildIndex(this.store, this.index);
    for (const { digest } of report.quarantined) this.memory.drop(digest);
    return report;
  }

  /** Deletes every quarantined archive (`srm-mirror gc --quarantine`). */
  async emptyQuarantine(): Promise<{ removed: number; bytes: number }> {
    const all = await this.store.quarantined();
    for (const a of all) await this.store.deleteQuarantined(a.digest);
    return { removed: all.length, bytes: all.reduce((n, a) => n + a.size, 0) };
  }

  scrub(options: ScrubOptions): Promise<ScrubReport> {
    return this.scrubber.run(options);
  }

  /** Saves the access times of archives used since the last save (one batch, not a write per hit). */
  saveAccessTimes(): Promise<void> {
    return this.index.saveAccess(this.reclaimer.quota.takeUnsaved());
  }

  drain(ms: number): Promise<void> {
    return this.filler.drain(ms);
  }

  status(): {
    fillsInProgress: number;
    rejected: number;
    /** Clients that followed a fill under way, since start. */
    coalesced: number;
    diskProblem: DiskProblem | undefined;
    indexIntact: boolean;
    quota: { maxBytes: number; usedBytes: number; archives: number };
    memory: MemoryStatus;
    scrub: ReturnType<ArchiveScrubber['status']>;
  } {
    const { quota } = this.reclaimer;
    return {
      ...this.filler.status(),
      indexIntact: this.reclaimer.indexIntact,
      quota: { maxBytes: quota.maxBytes, usedBytes: quota.usedBytes, archives: quota.count },
      memory: this.memory.status(),
      scrub: this.scrubber.status(),
    };
  }

  /** The version's archive, when its file is there whole (false, too, when the disk cannot say). */
  private async stored(id: string): Promise<ArchiveRef | undefined> {
    const ref = await this.index.get(id);
    if (!ref) return undefined;
    const stat = await this.store.stat(ref.digest).catch((err: unknown) => void this.filler.diskFailed(err));
    return stat?.size === ref.size ? ref : undefined;
  }

  /**
   * A HIT: leased first, then opened, then checked, and served from exactly what was checked. A file the disk cannot
   * read (EACCES, EIO, ...) is no HIT: the disk is marked failing and the download is passed through instead.
   */
  private async hit(id: string): Promise<ArchiveHandle | undefined> {
    const ref = await this.index.get(id);
    if (!ref) return undefined;
    const held = this.memory.get(ref.digest);
    if (held) return this.fromMemory(ref, held);
    const release = this.reclaimer.lease(ref.digest);
    let reader: StoredReader | undefined;
    let verdict: 'serve' | 'corrupt' | 'absent' | Buffer;
    try {
      reader = await this.store.open(ref.digest);
      if (!reader) verdict = 'absent';
      else if (reader.stat.size !== ref.size) verdict = 'corrupt';
      else if (this.memory.wants(ref.digest, ref.size)) {
        // Hashed while loaded (the verifier's trust in the file's version is not enough for a copy held for long).
        const open = reader;
        verdict = (await this.memory.load(ref.digest, () => readWhole(open, ref.size))) ?? 'corrupt';
      } else verdict = (await this.verifier.check(ref.digest, reader)) ? 'serve' : 'corrupt';
    } catch (err) {
      if (typeof (err as NodeJS.ErrnoException).code !== 'string') throw err; // not the disk's: a bug, let it show
      this.filler.diskFailed(err);
      verdict = 'absent';
    }
    if (verdict === 'serve') {
      const open = reader!;
      const served = this.options.verifyOnServe ? verifyingReader(open, ref.digest, ref.size, () => void this.dropCorrupt(ref.digest, id)) : open;
      return { status: 'HIT', ref, size: ref.size, reader: served, close: once(() => (open.close(), release())) };
    }
    reader?.close();
    release();
    if (verdict instanceof Buffer) return this.fromMemory(ref, verdict);
    // Out of the index before we answer: a fill started next must not find the corrupt file still "stored".
    if (verdict === 'corrupt') await this.dropCorrupt(ref.digest, id);
    return undefined;
  }

  /** A HIT from memory: no lease (the bytes are in hand), but a use for the quota, so the file is not evicted first. */
  private fromMemory(ref: ArchiveRef, bytes: Buffer): ArchiveHandle {
    this.reclaimer.quota.touch(ref.digest);
    return { status: 'HIT', ref, size: ref.size, bytes, reader: bufferReader(bytes), close: () => {} };
  }

  /** Drops an archive whose bytes no longer match: never served again, fetched again on the next request. */
  private async dropCorrupt(digest: string, id: string): Promise<void> {
    this.log.warn('corrupt archive dropped; it will be fetched again', { id, digest });
    this.scrubber.corruptFound++;
    await this.reclaimer.remove(digest).catch((err: unknown) => this.log.warn('archive removal failed', { digest, error: String(err) }));
  }
}

/** A whole file of `size` bytes, in a Buffer of its own (one read when the disk gives it all at once). */
async function readWhole(reader: ArchiveReader, size: number): Promise<Buffer> {
  const bytes = Buffer.allocUnsafeSlow(size);
  for (let pos = 0; pos < size; ) {
    const n = await reader.read(bytes.subarray(pos), pos);
    if (n === 0) return bytes.subarray(0, pos); // cut short since its stat: it fails the hash
    pos += n;
  }
  return bytes;
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (!done) (done = true), fn();
  };
}
