// The disk quota for archives, as policy only: it knows every stored archive's size and when it was last used,
// and which archives are being served right now (leased). Past the quota it names victims, least recently used
// first, down to a low-water mark, never a leased one. Access times live in memory and are saved in batches by the
// caller, so a cache hit costs no disk write.

/** Eviction stops at this fraction of the quota, so that not every new archive sets off another round. */
const LOW_WATER = 0.9;

export class ArchiveQuota {
  private readonly archives = new Map<string, { size: number; lastAccess: number }>();
  private readonly leases = new Map<string, number>();
  private readonly unsaved = new Set<string>();
  private used = 0;

  constructor(
    /** 0: no limit. */
    readonly maxBytes: number,
    private readonly now: () => number = Date.now,
  ) {}

  get usedBytes(): number {
    return this.used;
  }

  get count(): number {
    return this.archives.size;
  }

  get overQuota(): boolean {
    return this.maxBytes > 0 && this.used > this.maxBytes;
  }

  /** An archive on disk: a new one (used now), or one found at start-up with its saved access time. */
  added(digest: string, size: number, lastAccess?: number): void {
    this.removed(digest);
    this.archives.set(digest, { size, lastAccess: lastAccess ?? this.now() });
    if (lastAccess === undefined) this.unsaved.add(digest);
    this.used += size;
  }

  /** An archive gone from disk; returns the bytes it took (0 when it was not known). */
  removed(digest: string): number {
    const entry = this.archives.get(digest);
    if (!entry) return 0;
    this.archives.delete(digest);
    this.unsaved.delete(digest);
    this.used -= entry.size;
    return entry.size;
  }

  /** Marks an archive used now and keeps it from eviction until the returned function is called. */
  lease(digest: string): () => void {
    const entry = this.archives.get(digest);
    if (entry) {
      entry.lastAccess = this.now();
      this.unsaved.add(digest);
    }
    this.leases.set(digest, (this.leases.get(digest) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.leases.get(digest) ?? 1) - 1;
      if (n > 0) this.leases.set(digest, n);
      else this.leases.delete(digest);
    };
  }

  isLeased(digest: string): boolean {
    return this.leases.has(digest);
  }

  /** What to evict to get back to the low-water mark: least recently used first, leased archives skipped. */
  victims(): string[] {
    if (!this.overQuota) return [];
    const target = this.maxBytes * LOW_WATER;
    const victims: string[] = [];
    let used = this.used;
    const byAge = [...this.archives].sort(([, a], [, b]) => a.lastAccess - b.lastAccess);
    for (const [digest, { size }] of byAge) {
      if (used <= target) break;
      if (this.leases.has(digest)) continue;
      victims.push(digest);
      used -= size;
    }
    return victims;
  }

  /** Access times changed since the last call, to be saved. */
  takeUnsaved(): Array<[digest: string, lastAccess: number]> {
    const out = [...this.unsaved].flatMap((d) => {
      const entry = this.archives.get(d);
      return entry ? [[d, entry.lastAccess] as [string, number]] : [];
    });
    this.unsaved.clear();
    return out;
  }
}
