// Taking disk space back, and never from under a reader. Every reader of an archive holds a lease on it; removing
// an archive takes it out of the index at once (no new reader finds it) but deletes its file only when the last
// lease is released. Past the quota the least recently used archives are evicted; archives nothing points at are
// collected, but only while the index is known to be intact: with a lost index every archive looks unreferenced,
// and on an air-gapped site those files may be the only copies.
import type { Logger } from '../../log.js';
import type { ArchiveStore } from '../../stores/archive-store.js';
import { SingleFlight } from '../single-flight.js';
import type { ArchiveIndex } from './archive-index.js';
import type { ArchiveQuota } from './archive-quota.js';

/** An archive younger than this is not collected as unreferenced: its fill may be between commit and index write. */
const COLLECT_MIN_AGE_MS = 60_000;

/**
 * Replicas sharing one archive folder (issue 14): only the leader collects and evicts, from what the folder and the
 * database say (every replica saves its access times there in batches); and it never evicts an archive used within
 * graceMs, which another replica may be serving right now (its lease is in its own memory, out of our sight).
 */
export interface SharedReclaim {
  readonly leads: () => boolean;
  readonly graceMs: number;
}

export interface Reclaimed {
  readonly removed: number;
  readonly bytes: number;
}

export class ArchiveReclaimer {
  private readonly leases = new Map<string, number>();
  /** Archives removed while leased: their files go when the last lease does. */
  private readonly doomed = new Set<string>();
  private readonly collecting = new SingleFlight<Reclaimed>();
  /** The eviction under way, and the one asked for meanwhile (see evict). */
  private evicting: Promise<Reclaimed> | undefined;
  private evictAfter: Promise<Reclaimed> | undefined;
  /** Archives evicted for the quota since start, and their bytes (for /-/metrics). */
  readonly evictedTotal = { removed: 0, bytes: 0 };

  constructor(
    private readonly store: ArchiveStore,
    private readonly index: ArchiveIndex,
    readonly quota: ArchiveQuota,
    /** Lets go of what else is known of an archive's bytes (the verifier's trust, a memory copy) once it is removed. */
    private readonly forget: (digest: string) => void,
    private readonly log: Logger,
    /** False while the index is lost: nothing is collected or evicted until it is repaired. */
    readonly indexIntact: boolean,
    private readonly now: () => number = Date.now,
    private readonly shared?: SharedReclaim,
  ) {}

  /** Reads the stored archives and their last access times into the quota. */
  async init(): Promise<void> {
    // An unreadable access time (a damaged database) is no reason not to start: the file's own time stands in.
    for await (const a of this.store.list()) this.quota.added(a.digest, a.size, (await this.index.lastAccess(a.digest).catch(() => undefined)) ?? a.modifiedMs);
  }

  /**
   * Keeps an archive's file until the returned function is called (once; later calls do nothing). A lease counts as
   * a use for the quota unless `touch` is false: an export reads every archive, and must not make them all look fresh.
   */
  lease(digest: string, { touch = true }: { touch?: boolean } = {}): () => void {
    this.leases.set(digest, (this.leases.get(digest) ?? 0) + 1);
    if (touch) this.quota.touch(digest);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.leases.get(digest) ?? 1) - 1;
      if (n > 0) return void this.leases.set(digest, n);
      this.leases.delete(digest);
      const failed = (err: unknown) => this.log.warn('archive removal failed', { digest, error: String(err) });
      if (this.doomed.has(digest)) void this.deleteFile(digest).catch(failed);
      else if (this.quota.overQuota) void this.evict().catch(failed); // it may have been the one archive in the way
    };
  }

  isLeased(digest: string): boolean {
    return this.leases.has(digest);
  }

  /** A new file was committed under this digest (replacing any old one, which its readers keep): it stays. */
  committed(digest: string, size: number): void {
    this.doomed.delete(digest);
    this.quota.added(digest, size);
  }

  /** Removes an archive: out of the index now, its file once no reader holds it. Resolves with the bytes it took. */
  async remove(digest: string): Promise<number> {
    for (const id of await this.index.versionsOf(digest)) await this.index.remove(id);
    return this.deleteFile(digest);
  }

  /** Forgets a version's archive; the file goes too when no other version points at it. */
  async unlink(id: string): Promise<void> {
    const ref = await this.index.remove(id);
    if (ref && (await this.index.versionsOf(ref.digest)).length === 0) await this.deleteFile(ref.digest);
  }

  /** Removes archives nothing points at, then evicts the least recently used down to the quota's low-water mark. */
  async enforce(): Promise<{ unreferenced: Reclaimed; evicted: Reclaimed }> {
    const unreferenced = await this.collecting.run('collect', () => this.collect());
    if (unreferenced.removed) this.log.warn('removed archives nothing points at', { ...unreferenced });
    return { unreferenced, evicted: await this.evict() };
  }

  /**
   * Evicts the least recently used archives (none in use) down to the quota's low-water mark. Asked while a run is
   * under way, it runs once more after it (one run for every call meanwhile): the run under way may have passed over
   * an archive released since, and a release asks for its eviction only once.
   */
  evict(): Promise<Reclaimed> {
    if (!this.evicting) return (this.evicting = this.evictNow().finally(() => (this.evicting = undefined)));
    return (this.evictAfter ??= this.evicting
      .catch(() => {})
      .then(() => {
        this.evictAfter = undefined;
        return this.evict();
      }));
  }

  private async evictNow(): Promise<Reclaimed> {
    const evicted = { removed: 0, bytes: 0 };
    if (!this.indexIntact || (this.shared && !this.shared.leads())) return evicted;
    let inUse = (d: string) => this.isLeased(d);
    if (this.shared) {
      await this.rescan();
      const since = this.now() - this.shared.graceMs;
      inUse = (d) => this.isLeased(d) || (this.quota.lastAccess(d) ?? 0) >= since;
    }
    for (const digest of this.quota.victims(inUse)) {
      const bytes = await this.remove(digest);
      evicted.bytes += bytes;
      evicted.removed++;
      this.evictedTotal.bytes += bytes;
      this.evictedTotal.removed++;
    }
    if (evicted.removed) this.log.warn('disk quota: evicted least recently used archives', { ...evicted, usedBytes: this.quota.usedBytes });
    return evicted;
  }

  /** The shared folder's archives and the fleet's saved access times into the quota (others' fills, uses, removals). */
  private async rescan(): Promise<void> {
    const listed = new Set<string>();
    for await (const a of this.store.list()) {
      listed.add(a.digest);
      this.quota.seen(a.digest, a.size, (await this.index.lastAccess(a.digest).catch(() => undefined)) ?? a.modifiedMs);
    }
    for (const digest of this.quota.digests()) if (!listed.has(digest) && !this.isLeased(digest)) this.quota.removed(digest);
  }

  /** Removes archives no version points at (none while the index is not known to be intact). */
  private async collect(): Promise<Reclaimed> {
    const out = { removed: 0, bytes: 0 };
    if (!this.indexIntact || (this.shared && !this.shared.leads())) return out;
    for await (const a of this.store.list()) {
      if (this.isLeased(a.digest) || this.now() - a.modifiedMs < COLLECT_MIN_AGE_MS) continue;
      if ((await this.index.versionsOf(a.digest)).length > 0) continue;
      out.bytes += await this.deleteFile(a.digest);
      out.removed++;
    }
    return out;
  }

  /** Deletes an archive's file now, or marks it to go with its last lease; resolves with the bytes freed now. */
  private async deleteFile(digest: string): Promise<number> {
    this.forget(digest); // at once, even while leased: it is out of the index already
    if (this.isLeased(digest)) {
      this.doomed.add(digest);
      return 0;
    }
    this.doomed.delete(digest);
    // The quota and the disk change together, with nothing in between (the store's delete takes effect at once, as
    // a commit's move does), so the byte count stays exact whatever fill commits the same digest meanwhile.
    const freed = this.quota.removed(digest);
    await this.store.delete(digest);
    await this.index.forgetAccess(digest);
    return freed;
  }
}
