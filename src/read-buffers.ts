// Node reads a socket into a new ArrayBuffer each time (64 KiB), and only a garbage collection frees one. A download
// streaming through the mirror allocates little else, so collections are rare and the dead read buffers pile up:
// 35 MB of RSS in a cold fill's bench rows, and the old-space floor of dist/main.js's first line (which keeps full
// collections from running every few MB) lets them pile up further. Code that streams a body counts its bytes here,
// and every RECLAIM_BYTES a young-generation collection is asked for: under a millisecond, and it frees those buffers.
// It needs node's --expose-gc (also on dist/main.js's first line); without it, this does nothing.

/** Bytes streamed between two young-generation collections. */
export const RECLAIM_BYTES = 8 << 20;

export class ReadBuffers {
  private since = 0;

  constructor(private readonly collect: ((options: NodeJS.GCOptions) => void) | undefined = globalThis.gc) {}

  /** `bytes` more were read from a socket; asks for a collection (as a task, not now) every RECLAIM_BYTES. */
  streamed(bytes: number): void {
    this.since += bytes;
    if (this.since < RECLAIM_BYTES || !this.collect) return;
    this.since = 0;
    this.collect({ type: 'minor', execution: 'async' });
  }
}

/** The process's: every stream counts toward the same collections. */
export const readBuffers = new ReadBuffers();
