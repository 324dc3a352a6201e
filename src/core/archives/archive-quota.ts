// The disk quota for archives, as policy only: it knows every stored archive's size and when it was last used.
// Past the quota it names victims, least recently used first, down to a low-water mark, skipping those the caller
// says are in use. Access times live in memory and are saved in batches by the caller, so a hit costs no disk write.

/** Eviction stops at this fraction of the quota, so that not every new archive sets off another round. */
const LOW_WATER = 0.9;

export class ArchiveQuota {
  private readonly archives = new Map<string, { size: number; lastAccess: number }>();
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

  /**
   * What another replica did on a shared store (issue 14): an archive it stored, or a later use it saved. Its own
   * unsaved use is kept; the newer time wins.
   */
  seen(digest: string, size: number, lastAccess: number): void {
    const entry = this.archives.get(digest);
    if (!entry) {
      this.archives.set(digest, { size, lastAccess });
      this.used += size;
    } else entry.lastAccess = Math.max(entry.lastAccess, lastAccess);
  }

  /** When an archive was last used, as far as this process knows. */
  lastAccess(digest: string): number | undefined {
    return this.archives.get(digest)?.lastAccess;
  }

  /** Every archive known. */
  digests(): string[] {
    return [...this.archives.keys()];
  }

  /** Marks an archive used now. */
  touch(digest: string): void {
    const entry = this.archives.get(digest);
    if (!entry) return;
    entry.lastAccess = this.now();
    this.unsaved.add(digest);
  }

  /** What to evict to get back to the low-water mark: least recently used first, those `inUse` skipped. */
  victims(inUse: (digest: string) => boolean): string[] {
    if (!this.overQuota) return [];
    const target = this.maxBytes * LOW_WATER;
    const victims: string[] = [];
    let used = this.used;
    const byAge = [...this.archives].sort(([, a], [, b]) => a.lastAccess - b.lastAccess);
    for (const [digest, { size }] of byAge) {
      if (used <= target) break;
      if (inUse(digest)) continue;
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
