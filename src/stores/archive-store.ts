// Archive storage: zip files on disk, content-addressed by sha256. A download is written to a temp file in the
// same file system, hashed and counted as it streams, and moved into place only by an explicit commit() once the
// whole body arrived and its length checked out: a partial or corrupt download never becomes an archive.
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { close, createReadStream, openSync, read, renameSync, unlinkSync } from 'node:fs';
import { mkdir, open, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ArchiveRef } from '../model/release.js';

export interface ArchiveStore {
  /** A committed archive's size and a signature that changes whenever its file does; undefined when not stored. */
  stat(digest: string): Promise<{ size: number; signature: string } | undefined>;
  /** Hashes a committed archive: true when its bytes still match its digest. */
  verify(digest: string): Promise<boolean>;
  /** File path of a committed archive (it may not exist). */
  path(digest: string): string;
  createWriter(): Promise<ArchiveWriter>;
  delete(digest: string): Promise<void>;
  /** Every committed archive. */
  list(): AsyncIterable<StoredArchive>;
  /** Temp files of downloads in progress (or left by a crash, until the store is opened again). */
  tempFiles(): Promise<string[]>;
  /** Removes a temp file by the name tempFiles() gave. */
  deleteTemp(name: string): Promise<void>;
  /** Reads a committed archive (rejects with ENOENT when it is not stored). */
  openReader(digest: string): Promise<ArchiveReader>;
}

/**
 * Reads an archive into the caller's buffers, so that a server can send a download through a couple of reused
 * buffers instead of allocating one per chunk (which, at GB/s, is what made memory climb).
 */
export interface ArchiveReader {
  /** Reads bytes at `pos` into `buf`: resolves with how many, 0 at the end. */
  read(buf: Buffer, pos: number): Promise<number>;
  close(): void;
}

export interface StoredArchive {
  readonly digest: string;
  readonly size: number;
  readonly modifiedMs: number;
}

export interface ArchiveWriter {
  /** Bytes on disk so far. */
  readonly written: number;
  write(chunk: Uint8Array): Promise<void>;
  /** Checks the expected size and digest (when given), then stores the archive; a failed check aborts. */
  commit(expected?: { size?: number; digest?: string }): Promise<ArchiveRef>;
  /** Drops the temp file; its readers fail with `reason`. Safe to call more than once or after commit. */
  abort(reason?: Error): Promise<void>;
  /**
   * Reads the bytes as they are written: a read waits for bytes not yet on disk, reads 0 only once the archive is
   * committed (the last byte is held back until then), and fails once the writer aborts.
   */
  reader(): ArchiveReader;
}

/** The bytes were not what was expected (length or digest): a problem of the download, not of the disk. */
export class ArchiveRejectedError extends Error {
  override readonly name = 'ArchiveRejectedError';
}

const DIGEST = /^[0-9a-f]{64}$/;
/** Received bytes that may wait for the disk before the writer makes its caller wait. */
const MAX_PENDING_BYTES = 4 << 20;
const readAt = promisify(read);
const READ_CHUNK = 256 * 1024;

export class FsArchiveStore implements ArchiveStore {
  private constructor(private readonly root: string) {}

  /** Opens the store; with removeTempFiles (a server starting), temp files a crash may have left go first. */
  static async open(root: string, { removeTempFiles = true } = {}): Promise<FsArchiveStore> {
    if (removeTempFiles) await rm(join(root, 'tmp'), { recursive: true, force: true });
    await mkdir(join(root, 'tmp'), { recursive: true });
    await mkdir(join(root, 'sha256'), { recursive: true });
    return new FsArchiveStore(root);
  }

  path(digest: string): string {
    if (!DIGEST.test(digest)) throw new Error(`not a sha256 digest: ${JSON.stringify(digest)}`);
    return join(this.root, 'sha256', digest.slice(0, 2), digest);
  }

  async stat(digest: string): Promise<{ size: number; signature: string } | undefined> {
    try {
      const s = await stat(this.path(digest));
      return { size: s.size, signature: `${s.ino}:${s.mtimeMs}:${s.ctimeMs}:${s.size}` };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async verify(digest: string): Promise<boolean> {
    const hash = createHash('sha256');
    try {
      await pipeline(createReadStream(this.path(digest), { highWaterMark: READ_CHUNK }), hash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    return hash.digest('hex') === digest;
  }

  async createWriter(): Promise<ArchiveWriter> {
    const tempPath = join(this.root, 'tmp', `${randomUUID()}.part`);
    return new FsArchiveWriter(this, tempPath, await open(tempPath, 'wx'));
  }

  async delete(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }

  async *list(): AsyncIterable<StoredArchive> {
    const base = join(this.root, 'sha256');
    for (const shard of await readdir(base)) {
      for (const digest of await readdir(join(base, shard))) {
        if (!DIGEST.test(digest)) continue;
        const s = await stat(join(base, shard, digest)).catch(() => undefined);
        if (s) yield { digest, size: s.size, modifiedMs: s.mtimeMs };
      }
    }
  }

  async tempFiles(): Promise<string[]> {
    return readdir(join(this.root, 'tmp'));
  }

  async openReader(digest: string): Promise<ArchiveReader> {
    const file = await open(this.path(digest), 'r');
    return {
      read: async (buf, pos) => (await file.read(buf, 0, buf.length, pos)).bytesRead,
      close: () => void file.close().catch(() => {}),
    };
  }

  async deleteTemp(name: string): Promise<void> {
    if (!/^[\w-]+\.part$/.test(name)) throw new Error(`not a temp file name: ${JSON.stringify(name)}`);
    await rm(join(this.root, 'tmp', name), { force: true });
  }
}

type WriterState = 'writing' | 'committed' | 'aborted';

class FsArchiveWriter implements ArchiveWriter {
  /** Bytes on disk. */
  written = 0;
  /** Bytes received (and hashed) but not yet on disk. */
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private flushing: Promise<void> | undefined;
  private writeError: Error | undefined;
  private state: WriterState = 'writing';
  private failure: Error | undefined;
  private readonly hash: Hash = createHash('sha256');
  /** Where the bytes are now: the temp file, then the committed file. */
  private location: string;
  private wakeups: Array<() => void> = [];

  constructor(
    private readonly store: FsArchiveStore,
    tempPath: string,
    private readonly file: FileHandle,
  ) {
    this.location = tempPath;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== 'writing') throw new Error(`archive writer is ${this.state}`);
    if (this.writeError) throw this.writeError;
    this.hash.update(chunk);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    // The disk writes run while the next chunks arrive; the caller waits only when too much is waiting.
    this.flushing ??= this.flush();
    if (this.pendingBytes >= MAX_PENDING_BYTES) await this.flushing;
    if (this.writeError) throw this.writeError;
  }

  /** Writes what is pending, a batch at a time, until nothing is. */
  private async flush(): Promise<void> {
    try {
      while (this.pending.length) {
        let batch = this.pending;
        const size = this.pendingBytes;
        [this.pending, this.pendingBytes] = [[], 0];
        // writev may write less than asked: go on from where it stopped.
        for (let left = size; left > 0; ) {
          const { bytesWritten } = await this.file.writev(batch);
          left -= bytesWritten;
          batch = skipBytes(batch, bytesWritten);
        }
        this.written += size;
        this.wake();
      }
    } catch (err) {
      this.writeError = err as Error;
    } finally {
      this.flushing = undefined;
    }
  }

  async commit(expected: { size?: number; digest?: string } = {}): Promise<ArchiveRef> {
    if (this.state !== 'writing') throw new Error(`archive writer is ${this.state}`);
    await this.flushing;
    if (this.writeError) {
      await this.abort(this.writeError);
      throw this.writeError;
    }
    const digest = this.hash.digest('hex');
    let mismatch: string | undefined;
    if (expected.size !== undefined && expected.size !== this.written) {
      mismatch = `expected ${expected.size} bytes, got ${this.written}`;
    } else if (expected.digest !== undefined && expected.digest !== digest) {
      mismatch = `expected sha256 ${expected.digest}, got ${digest}`;
    }
    if (mismatch) {
      const err = new ArchiveRejectedError(`archive rejected: ${mismatch}`);
      await this.abort(err);
      throw err;
    }
    try {
      // No fsync: a rename is atomic across a process crash, and after a power loss a torn file is caught by the
      // hash check every archive gets before it is first served (and then fetched again).
      await this.file.close();
      const target = this.store.path(digest);
      await mkdir(join(target, '..'), { recursive: true });
      const alreadyStored = (await this.store.stat(digest))?.size === this.written; // another version, or a racing fill
      // Synchronous, so that the move and `location` change together: follow() opens `location` synchronously too.
      if (alreadyStored) unlinkSync(this.location);
      else renameSync(this.location, target);
      this.location = target;
    } catch (err) {
      await this.abort(err as Error);
      throw err;
    }
    this.state = 'committed';
    this.wake();
    return { digest, size: this.written };
  }

  async abort(reason: Error = new Error('archive download aborted')): Promise<void> {
    if (this.state !== 'writing') return;
    this.state = 'aborted';
    this.failure = reason;
    this.wake();
    await this.flushing;
    await this.file.close().catch(() => {});
    await rm(this.location, { force: true });
  }

  reader(): ArchiveReader {
    if (this.state === 'aborted') return { read: () => Promise.reject(this.failure), close: () => {} };
    // Opened now, where the bytes are now (see commit), so a reader never misses the temp file's move.
    const fd = openSync(this.location, 'r');
    // The last byte is held back until commit: a client has the whole archive only once the store has it too, and
    // a commit that rejects the bytes fails the client's download instead of completing it.
    const readable = () => (this.state === 'committed' ? this.written : Math.max(0, this.written - 1));
    return {
      read: async (buf, pos) => {
        while (pos >= readable() && this.state === 'writing') await new Promise<void>((resolve) => this.wakeups.push(resolve));
        if (this.state === 'aborted') throw this.failure;
        if (pos >= readable()) return 0;
        return (await readAt(fd, buf, 0, Math.min(buf.length, readable() - pos), pos)).bytesRead;
      },
      close: () => close(fd, () => {}),
    };
  }

  private wake(): void {
    const wakeups = this.wakeups;
    this.wakeups = [];
    for (const wake of wakeups) wake();
  }
}

/** The buffers less their first n bytes. */
function skipBytes(buffers: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of buffers) {
    if (n >= b.length) n -= b.length;
    else {
      out.push(n > 0 ? b.subarray(n) : b);
      n = 0;
    }
  }
  return out;
}

/** A reader as a stream (one new buffer per chunk: for consumers that are not hot paths, like prefetch and tests). */
export function readerStream(reader: ArchiveReader, chunkSize = READ_CHUNK): Readable {
  let pos = 0;
  return new Readable({
    async read() {
      try {
        const buf = Buffer.allocUnsafe(chunkSize);
        const n = await reader.read(buf, pos);
        pos += n;
        this.push(n === 0 ? null : buf.subarray(0, n));
      } catch (err) {
        this.destroy(err as Error);
      }
    },
    destroy(err, callback) {
      reader.close();
      callback(err);
    },
  });
}
