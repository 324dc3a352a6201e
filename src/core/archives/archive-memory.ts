// Small hot archives held in memory (cache.memoryArchives), so that a HIT on one costs no file open, read or close:
// the response writes the held Buffer itself. Keyed by digest (content-addressed, so never stale), least recently
// used out first by bytes, and only ever bytes hashed against their digest while loaded: a memory copy never
// carries a corruption of the file it came from. Which version points at which digest stays the index's business,
// so a version deleted through the mirror is never served from here; an archive removed from the store (evicted,
// deleted, dropped as corrupt, quarantined) is dropped here too, so that memory follows the disk.
//
// An archive is loaded on its second disk HIT within the last GHOSTS ones, not its first: a one-off download (or
// prefetch checking every followed archive) would otherwise push the hot archives out.
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { ArchiveReader } from '../../stores/archive-store.js';
import { SingleFlight } from '../single-flight.js';

/** Digests of recent disk HITs remembered for admission (64 hex characters each: about 0.5 MB at most). */
const GHOSTS = 4096;

export interface MemoryOptions {
  /** Bytes held at most (0: none, the cache is off). */
  readonly maxBytes: number;
  /** Archives larger than this are never held. */
  readonly maxArchiveBytes: number;
}

export interface MemoryStatus {
  readonly maxBytes: number;
  readonly usedBytes: number;
  readonly archives: number;
  readonly hits: number;
  readonly misses: number;
}

export class ArchiveMemory {
  private readonly held: LRUCache<string, Buffer> | undefined;
  private readonly seen = new LRUCache<string, true>({ max: GHOSTS });
  private readonly loading = new SingleFlight<Buffer | undefined>();
  /** Digests dropped while being loaded: their load must not put them back. */
  private readonly droppedWhileLoading = new Set<string>();
  private hits = 0;
  private misses = 0;

  constructor(private readonly options: MemoryOptions) {
    // lru-cache wants a positive size for every entry; an archive (a zip) is never empty anyway.
    if (options.maxBytes > 0) this.held = new LRUCache({ maxSize: options.maxBytes, sizeCalculation: (b) => Math.max(1, b.length) });
  }

  /** The archive's verified bytes, when held. */
  get(digest: string): Buffer | undefined {
    if (!this.held) return undefined;
    const bytes = this.held.get(digest);
    if (bytes) this.hits++;
    else this.misses++;
    return bytes;
  }

  /** Whether a disk HIT of this archive should load it: small enough, and hit recently already. */
  wants(digest: string, size: number): boolean {
    if (!this.held || size > this.options.maxArchiveBytes || size > this.options.maxBytes) return false;
    if (this.seen.has(digest)) return true;
    this.seen.set(digest, true);
    return false;
  }

  /**
   * Loads an archive with `read` (its whole content) once for concurrent callers; holds it only if its sha256 is
   * `digest`. Resolves with the verified bytes, or undefined when they do not match (the file is corrupt).
   */
  load(digest: string, read: () => Promise<Buffer>): Promise<Buffer | undefined> {
    return this.loading.run(digest, async () => {
      try {
        const bytes = await read();
        if (createHash('sha256').update(bytes).digest('hex') !== digest) return undefined;
        if (!this.droppedWhileLoading.has(digest)) this.held?.set(digest, bytes);
        return bytes;
      } finally {
        this.droppedWhileLoading.delete(digest);
      }
    });
  }

  /** The archive left the store: let its bytes go (responses under way keep theirs). */
  drop(digest: string): void {
    this.held?.delete(digest);
    this.seen.delete(digest);
    if (this.loading.has(digest)) this.droppedWhileLoading.add(digest);
  }

  status(): MemoryStatus {
    return { maxBytes: this.options.maxBytes, usedBytes: this.held?.calculatedSize ?? 0, archives: this.held?.size ?? 0, hits: this.hits, misses: this.misses };
  }
}

/** A reader of bytes in memory, for the consumers of a HIT that read rather than send (prefetch, tests). */
export function bufferReader(bytes: Buffer): ArchiveReader {
  return { read: async (buf, pos) => (pos < bytes.length ? bytes.copy(buf, 0, pos) : 0), close: () => {} };
}
