// Node reads a socket into a new ArrayBuffer each time (64 KiB), and only a garbage collection frees one. A download
// streaming through the mirror allocates little else, so collections are rare and the dead read buffers pile up:
// 35 MB of RSS in a cold fill's bench rows, and the old-space floor of dist/main.js's first line (which keeps full
// collections from running every few MB) lets them pile up further. Code that streams a body counts its bytes here,
// and every RECLAIM_BYTES a young-generation collection is asked for: under a millisecond, and it frees those buffers.
// Read buffers still held at such a collection (a fill waiting for the disk, a paused stream) outlive it into the old
// generation, where only a full collection frees them, and the floor puts that off: after a burst of cold fills, 10-15
// MB of them stayed for as long as the mirror then idled. So once the streams have been quiet for QUIET_MS, one full
// collection is asked for: 25-30 ms of the main thread once per burst, and the next burst reuses the memory it frees.
// It needs node's --expose-gc (also on dist/main.js's first line); without it, this does nothing.

/** Bytes streamed between two young-generation collections. */
export const RECLAIM_BYTES = 8 << 20;
/** How long no bytes are streamed before the full collection. */
export const QUIET_MS = 2000;

export class ReadBuffers {
  private since = 0;
  /** Fires QUIET_MS after the last bytes streamed (re-armed by each); none while nothing was streamed. */
  private quiet: NodeJS.Timeout | undefined;

  constructor(private readonly collect: ((options: NodeJS.GCOptions) => void) | undefined = globalThis.gc) {}

  /**
   * `bytes` more were read from a socket: asks for a young-generation collection (as a task, not now) every
   * RECLAIM_BYTES, and for a full one QUIET_MS after the last bytes.
   */
  streamed(bytes: number): void {
    const collect = this.collect;
    if (!collect) return;
    this.quiet = this.quiet?.refresh() ?? setTimeout(() => {
      this.quiet = undefined;
      collect({ type: 'major', execution: 'async' });
    }, QUIET_MS).unref();
    this.since += bytes;
    if (this.since < RECLAIM_BYTES) return;
    this.since = 0;
    collect({ type: 'minor', execution: 'async' });
  }
}

/** The process's: every stream counts toward the same collections. */
export const readBuffers = new ReadBuffers();
