// Archive storage: zip files on disk, content-addressed by sha256. A download is written to a temp file in the
// same file system, hashed and counted as it streams, and moved into place only by an explicit commit() once the
// whole body arrived and its length checked out: a partial or corrupt download never becomes an archive.
//
// A writer copies what it receives into a ring and goes to disk in batches of WRITE_BATCH (one trip to the thread
// pool per half megabyte, not per socket read), past the page cache (O_DIRECT) where it can. Its readers take the
// bytes the ring still holds from memory, and the writer waits a little for those close behind (see write): a client
// following a fill is not sent through a write and a read back of every chunk (bench: the cold path's CPU per byte).
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { close, constants, fstat, open as openFd, openSync, read, readv, renameSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { ArchiveRef } from '../model/release.js';

export interface ArchiveStore {
  /** A committed archive's size and version; undefined when it is not stored. */
  stat(digest: string): Promise<ArchiveStat | undefined>;
  /**
   * Opens a committed archive; undefined when it is not stored. The reader keeps reading the bytes it opened, even
   * if the archive is replaced or deleted meanwhile, and its stat is of those very bytes.
   */
  open(digest: string): Promise<StoredReader | undefined>;
  /** A writer for new bytes; `durable` overrides the store's own choice for this one (see FsArchiveStoreOptions). */
  createWriter(options?: { durable?: boolean }): Promise<ArchiveWriter>;
  /** Deletes a committed archive; takes effect at once, before any other code runs (like a commit's move). */
  delete(digest: string): Promise<void>;
  /** Every committed archive. */
  list(): AsyncIterable<StoredArchive>;
  /** Temp files of downloads in progress (or left by a crash, until the store is opened again). */
  tempFiles(): Promise<string[]>;
  /** Removes a temp file by the name tempFiles() gave. */
  deleteTemp(name: string): Promise<void>;
  /** Moves an archive out of the store into quarantine: kept, never served, removed only by deleteQuarantined(). */
  quarantine(digest: string): Promise<void>;
  quarantined(): Promise<StoredArchive[]>;
  deleteQuarantined(digest: string): Promise<void>;
}

/**
 * What a store says of a committed archive's bytes. `version` changes whenever the bytes may have (a new file, a
 * rewrite), except within the resolution of `changedMs`: a version is trusted only once it is older than that.
 */
export interface ArchiveStat {
  readonly size: number;
  readonly version: string;
  /** When the bytes (or the file holding them) last changed. */
  readonly changedMs: number;
}

/** Random access to bytes: reads into the caller's buffer (so a server can reuse a couple of buffers per download). */
export interface ArchiveReader {
  /** Reads bytes at `pos` into `buf`: resolves with how many, 0 at the end. */
  read(buf: Buffer, pos: number): Promise<number>;
  /** Like read, into several buffers in turn, in one system call (a reader of a stored file has it). */
  readv?(bufs: readonly Buffer[], pos: number): Promise<number>;
  close(): void;
}

/** A committed archive opened for reading, with the stat of the bytes it reads. */
export interface StoredReader extends ArchiveReader {
  readonly stat: ArchiveStat;
}

export interface StoredArchive {
  readonly digest: string;
  readonly size: number;
  readonly modifiedMs: number;
}

/** What a commit checks before the bytes become an archive; any failure rejects them. */
export interface Expected {
  readonly size?: number;
  /** sha256 digests the bytes must have (every source that stated one). */
  readonly digests?: readonly string[];
  /** A check of the whole content (e.g. that it is a zip); throws to reject. */
  readonly check?: (content: ArchiveReader, size: number) => Promise<void>;
}

export interface ArchiveWriter {
  /** Bytes on disk so far. */
  readonly written: number;
  /** Bytes taken so far (hashed; on disk, or in memory on their way there). */
  readonly received: number;
  readonly state: 'writing' | 'committed' | 'aborted';
  /** Takes a chunk (copied: the caller may reuse it); one call at a time, each awaited. */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Checks the bytes against `expected`, then moves them into place, replacing whatever the store held under that
   * digest; a failed check aborts. `moved` is called with the archive and the stat taken right after the move,
   * before any other code runs (so that bookkeeping cannot interleave with a delete of the same digest).
   */
  commit(expected?: Expected, moved?: (ref: ArchiveRef, stat: ArchiveStat) => void): Promise<{ ref: ArchiveRef; stat: ArchiveStat }>;
  /** Drops the temp file; its readers fail with `reason`. Safe to call more than once or after commit. */
  abort(reason?: Error): Promise<void>;
  /**
   * Reads the bytes as they are written: a read waits for bytes not yet received, reads 0 only once the archive is
   * committed (the last byte is held back until then), and fails once the writer aborts.
   */
  reader(): ArchiveReader;
}

/** The bytes were not what was expected (length, digest, content): a problem of the download, not of the disk. */
export class ArchiveRejectedError extends Error {
  override readonly name = 'ArchiveRejectedError';
}

/** Throws ArchiveRejectedError when `size` bytes with this sha256 are not the length and digests `expected` says. */
export function checkCounted(expected: Pick<Expected, 'size' | 'digests'>, size: number, digest: string): void {
  if (expected.size !== undefined && expected.size !== size) throw new ArchiveRejectedError(`archive rejected: expected ${expected.size} bytes, got ${size}`);
  const wrong = expected.digests?.find((d) => d.toLowerCase() !== digest);
  if (wrong !== undefined) throw new ArchiveRejectedError(`archive rejected: expected sha256 ${wrong}, got ${digest}`);
}

const DIGEST = /^[0-9a-f]{64}$/;
/**
 * Received bytes that may wait for the disk before the writer makes its caller wait: a ring the writer copies each
 * chunk into. Holding the upstream's own chunks instead kept them alive long enough to reach V8's old generation,
 * where dead ones piled up (tens of MB in a cold fill) until a full collection (issue 13); copied, they die young.
 */
const RING_BYTES = 2 << 20;
/**
 * Direct writes (O_DIRECT) go from the ring to the device at offsets, lengths and addresses that are multiples of
 * this (the largest logical block size in use; 512-byte devices accept it too). The tail of an archive that is not
 * a multiple of it is written through the page cache.
 */
const DIRECT_ALIGN = 4096;
/** Received bytes a writer gathers before it writes them out (or fewer, at commit): a write per batch, not per chunk. */
const WRITE_BATCH = 512 << 10;
const readAt = promisify(read);
const readvAt = promisify(readv);
const openFile = promisify(openFd);
const statFd = promisify(fstat);
const READ_CHUNK = 256 * 1024;

export interface FsArchiveStoreOptions {
  /** Remove temp files a crash may have left (a server starting). */
  readonly removeTempFiles?: boolean;
  /**
   * A commit resolves only once the file and its folder entry are on disk (fsync): for content that exists nowhere
   * else (hosted packages). A cache does without: a torn file is caught by its hash and fetched again.
   */
  readonly durable?: boolean;
  /**
   * Several replicas share the folder (issue 14): each writes its temp files in tmp/<replica>/ and, starting, removes
   * only its own and those of folders nobody wrote to for STALE_TEMP_MS (a dead replica's): never another replica's
   * fill in progress. Commits are renames within the one file system, atomic for every replica.
   */
  readonly replica?: string;
  /**
   * Fills write to the device directly (O_DIRECT), not through the page cache, where the file system allows it: the
   * kernel's copy into new page-cache pages was the largest part of a cold download's CPU (bench: issue 13), and an
   * archive is read back only when a client asks for it. Off: every write is buffered, as before.
   */
  readonly directWrites?: boolean;
  /**
   * How long in all a fill may wait for the clients that follow it closely (see FsArchiveWriter.write); then it runs
   * at the upstream's pace, and whoever falls behind reads from the file.
   */
  readonly followerPatienceMs?: number;
}

/** The default followerPatienceMs. */
const FOLLOWER_PATIENCE_MS = 1_000;

/** A shared store's temp folder untouched this long belongs to a replica that is gone (a fill writes all the time). */
const STALE_TEMP_MS = 3_600_000;

export class FsArchiveStore implements ArchiveStore {
  private readonly syncedShards = new Set<string>();

  private constructor(
    private readonly root: string,
    private readonly durable: boolean,
    /** Where this process's temp files go: tmp/, or tmp/<replica>/ on a shared folder. */
    private readonly temp: string,
    /** Whether writers try O_DIRECT; turned off for good by the first file system that refuses it. */
    private directWrites: boolean,
    private readonly followerPatienceMs: number,
  ) {}

  static async open(root: string, { removeTempFiles = true, durable = false, replica, directWrites = true, followerPatienceMs = FOLLOWER_PATIENCE_MS }: FsArchiveStoreOptions = {}): Promise<FsArchiveStore> {
    const temp = replica === undefined ? join(root, 'tmp') : join(root, 'tmp', replica);
    if (removeTempFiles) {
      await rm(temp, { recursive: true, force: true });
      if (replica !== undefined) await removeStaleTemp(join(root, 'tmp'), Date.now() - STALE_TEMP_MS);
    }
    for (const dir of [temp, join(root, 'sha256'), join(root, 'quarantine')]) await mkdir(dir, { recursive: true });
    return new FsArchiveStore(root, durable, temp, directWrites && constants.O_DIRECT !== undefined, followerPatienceMs);
  }

  /** Where a committed archive's file is; the digest is checked, so no other string ever becomes a path. */
  private path(digest: string): string {
    return join(this.root, 'sha256', this.location(digest));
  }

  async stat(digest: string): Promise<ArchiveStat | undefined> {
    return ifExists(async () => statOf(await stat(this.path(digest))));
  }

  async open(digest: string): Promise<StoredReader | undefined> {
    // A bare descriptor, not a FileHandle: this is every HIT's path, and a FileHandle costs more per call.
    const fd = await ifExists(() => openFile(this.path(digest), 'r'));
    if (fd === undefined) return undefined;
    const reader = fileReader(fd);
    try {
      // The stat of the open file, not of the path: it describes exactly the bytes this reader reads.
      return { ...reader, stat: statOf(await statFd(fd)) };
    } catch (err) {
      reader.close();
      throw err;
    }
  }

  async createWriter({ durable = this.durable }: { durable?: boolean } = {}): Promise<ArchiveWriter> {
    const tempPath = join(this.temp, `${randomUUID()}.part`);
    // Read and write: a commit's content check reads the temp file back.
    const file = await open(tempPath, 'wx+');
    let direct: FileHandle | undefined;
    try {
      if (this.directWrites) direct = await open(tempPath, constants.O_WRONLY | constants.O_DIRECT).catch((err: NodeJS.ErrnoException) => this.noDirectWrites(err));
    } catch (err) {
      await file.close();
      await rm(tempPath, { force: true });
      throw err;
    }
    return new FsArchiveWriter(this.path.bind(this), tempPath, file, {
      direct,
      directRefused: () => this.noDirectWrites(),
      durable,
      syncedShards: this.syncedShards,
      patienceMs: this.followerPatienceMs,
    });
  }

  /** Whether writers still try direct writes: not where the file system refused them, nor once the setting is off. */
  get writesDirect(): boolean {
    return this.directWrites;
  }

  /** The file system refuses O_DIRECT (tmpfs, some network file systems): buffered writes from now on. */
  private noDirectWrites(err?: NodeJS.ErrnoException): undefined {
    if (err && err.code !== 'EINVAL' && err.code !== 'EOPNOTSUPP') throw err;
    this.directWrites = false;
    return undefined;
  }

  async delete(digest: string): Promise<void> {
    try {
      unlinkSync(this.path(digest)); // synchronous: see the interface
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  list(): AsyncIterable<StoredArchive> {
    return listDigests(join(this.root, 'sha256'), true);
  }

  async tempFiles(): Promise<string[]> {
    return (await readdir(this.temp, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
  }

  async deleteTemp(name: string): Promise<void> {
    if (!/^[\w-]+\.part$/.test(name)) throw new Error(`not a temp file name: ${JSON.stringify(name)}`);
    await rm(join(this.temp, name), { force: true });
  }

  async quarantine(digest: string): Promise<void> {
    await rename(this.path(digest), join(this.root, 'quarantine', digest));
  }

  async quarantined(): Promise<StoredArchive[]> {
    const all: StoredArchive[] = [];
    for await (const a of listDigests(join(this.root, 'quarantine'), false)) all.push(a);
    return all;
  }

  async deleteQuarantined(digest: string): Promise<void> {
    if (!DIGEST.test(digest)) throw new Error(`not a sha256 digest: ${JSON.stringify(digest)}`);
    await rm(join(this.root, 'quarantine', digest), { force: true });
  }

  /** A committed archive's file relative to the store's sha256/ folder ("<xx>/<digest>"), for nginx (accel-redirect). */
  location(digest: string): string {
    if (!DIGEST.test(digest)) throw new Error(`not a sha256 digest: ${JSON.stringify(digest)}`);
    return `${digest.slice(0, 2)}/${digest}`;
  }
}

/** Removes the replicas' temp folders in `tmp` whose files (and the folder itself) all changed before `before`. */
async function removeStaleTemp(tmp: string, before: number): Promise<void> {
  for (const entry of await readdir(tmp, { withFileTypes: true }).catch(() => [])) {
    const dir = join(tmp, entry.name);
    if (!entry.isDirectory()) {
      // a flat temp file of the folder's days with one mirror alone
      if (((await stat(dir).catch(() => undefined))?.mtimeMs ?? 0) < before) await rm(dir, { force: true });
      continue;
    }
    const files = await readdir(dir).catch(() => []);
    const times = await Promise.all([dir, ...files.map((f) => join(dir, f))].map((p) => stat(p).then((s) => s.mtimeMs, () => 0)));
    if (Math.max(...times) < before) await rm(dir, { recursive: true, force: true });
  }
}

function statOf(s: Stats): ArchiveStat {
  return { size: s.size, version: `${s.ino}:${s.mtimeMs}:${s.ctimeMs}:${s.size}`, changedMs: Math.max(s.mtimeMs, s.ctimeMs) };
}

/** The operation's result, or undefined when the file is not there. */
async function ifExists<T>(op: () => Promise<T>): Promise<T | undefined> {
  try {
    return await op();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Reads an open file; close() closes it (once: a descriptor's number is reused), unless `owned` is false. */
function fileReader(fd: number, owned = true): Required<ArchiveReader> {
  let open = owned;
  return {
    read: async (buf, pos) => (await readAt(fd, buf, 0, buf.length, pos)).bytesRead,
    readv: async (bufs, pos) => (await readvAt(fd, bufs as Buffer[], pos)).bytesRead,
    close: () => {
      if (open) (open = false), close(fd, () => {});
    },
  };
}

/** Archive files named by their digest, in `base` (sharded by the digest's first two characters, or flat). */
async function* listDigests(base: string, sharded: boolean): AsyncIterable<StoredArchive> {
  const dirs = sharded ? (await readdir(base)).map((shard) => join(base, shard)) : [base];
  for (const dir of dirs) {
    for (const digest of await readdir(dir).catch(() => [])) {
      if (!DIGEST.test(digest)) continue;
      const s = await stat(join(dir, digest)).catch(() => undefined);
      if (s) yield { digest, size: s.size, modifiedMs: s.mtimeMs };
    }
  }
}

type WriterState = 'writing' | 'committed' | 'aborted';

interface WriterOptions {
  /** The temp file opened a second time, with O_DIRECT (FsArchiveStoreOptions.directWrites). */
  readonly direct: FileHandle | undefined;
  /** Tells the store its file system refused a direct write. */
  readonly directRefused: () => void;
  /** fsync the file and its folder entry at commit (FsArchiveStoreOptions.durable). */
  readonly durable: boolean;
  /** Shard folders whose entry in sha256/ this process has synced (durable stores). */
  readonly syncedShards: Set<string>;
  readonly patienceMs: number;
}

class FsArchiveWriter implements ArchiveWriter {
  /** Bytes on disk. */
  written = 0;
  /** Bytes received (and hashed): those past `written` wait in the ring, at their offset modulo its length. */
  received = 0;
  private ring: Buffer | undefined;
  private flushing: Promise<void> | undefined;
  /** Commit: write out what waits however little. */
  private draining = false;
  private writeError: Error | undefined;
  state: WriterState = 'writing';
  private failure: Error | undefined;
  private readonly hash: Hash = createHash('sha256');
  /** Where the bytes are now: the temp file, then the committed file. */
  private location: string;
  private wakeups: Array<() => void> = [];

  /** The same temp file opened with O_DIRECT, while direct writes work. */
  private direct: FileHandle | undefined;
  /** Readers reading from the ring: a slot is reused only once each has read it (see write). */
  private readonly followers = new Set<{ pos: number }>();
  /** What is left of the time the writer may wait for its followers (FsArchiveStoreOptions.followerPatienceMs). */
  private patienceMs: number;
  /** The writer waiting for a follower to read on. */
  private followerRead: (() => void) | undefined;

  constructor(
    private readonly pathOf: (digest: string) => string,
    tempPath: string,
    private readonly file: FileHandle,
    private readonly o: WriterOptions,
  ) {
    this.location = tempPath;
    this.direct = o.direct;
    this.patienceMs = o.patienceMs;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.mustBeWriting();
    if (this.writeError) throw this.writeError;
    this.hash.update(chunk);
    const ring = (this.ring ??= rings.take());
    for (let from = 0; from < chunk.length; ) {
      // The disk writes run while the next chunks arrive; the caller waits only when the ring is full: of bytes not
      // yet on disk, or not yet read by a client close behind. Waiting for those clients (for at most `patienceMs`
      // in all) paces a fill to them as a plain proxy would be: they never read from the file, which costs as much
      // CPU as the rest of the download (bench: the disk's reads with direct writes, page-cache copies without).
      while (this.received - this.oldestKept() === ring.length) {
        if (this.received - this.written === ring.length) await (this.flushing ??= this.flush());
        else await this.waitForFollowers();
        this.mustBeWriting(); // aborted meanwhile: the ring went back to the pool
      }
      if (this.writeError) throw this.writeError;
      const at = this.received % ring.length;
      const n = Math.min(chunk.length - from, ring.length - (this.received - this.oldestKept()), ring.length - at);
      ring.set(chunk.subarray(from, from + n), at);
      from += n;
      this.received += n;
      if (this.received - this.written >= WRITE_BATCH) this.flushing ??= this.flush();
    }
    this.wake();
  }

  /**
   * Writes what waits in the ring (one or two spans of it), a batch at a time (anything at all, once draining):
   * directly while the file offset is aligned, the unaligned rest of the last batch through the page cache.
   */
  private async flush(): Promise<void> {
    try {
      while (this.ring && this.received - this.written >= (this.draining ? 1 : WRITE_BATCH)) {
        const waiting = this.received - this.written;
        const direct = this.direct !== undefined && this.written % DIRECT_ALIGN === 0 && waiting >= DIRECT_ALIGN ? this.direct : undefined;
        const spans = this.spans(direct ? waiting - (waiting % DIRECT_ALIGN) : waiting);
        // Positioned: the two descriptors have offsets of their own. Either may write less than asked: the loop goes on.
        const { bytesWritten } = await (direct ?? this.file).writev(spans, this.written).catch((err: NodeJS.ErrnoException) => {
          if (!direct || err.code !== 'EINVAL') throw err;
          return this.stopDirect(); // refused (an alignment this device does not take): the loop goes on buffered
        });
        this.written += bytesWritten;
      }
    } catch (err) {
      this.writeError = err as Error;
    } finally {
      this.flushing = undefined;
    }
  }

  /** The `length` bytes after `written` in the ring, as one span or two (when they wrap around its end). */
  private spans(length: number): Buffer[] {
    const ring = this.ring!;
    const at = this.written % ring.length;
    const end = at + length;
    return end <= ring.length ? [ring.subarray(at, end)] : [ring.subarray(at), ring.subarray(0, end - ring.length)];
  }

  private async stopDirect(): Promise<{ bytesWritten: number }> {
    const direct = this.direct;
    this.direct = undefined;
    this.o.directRefused();
    await direct?.close().catch(() => {});
    return { bytesWritten: 0 };
  }

  async commit(expected: Expected = {}, moved?: (ref: ArchiveRef, stat: ArchiveStat) => void): Promise<{ ref: ArchiveRef; stat: ArchiveStat }> {
    this.mustBeWriting();
    this.draining = true;
    await (this.flushing ??= this.flush());
    if (this.writeError) {
      await this.abort(this.writeError);
      throw this.writeError;
    }
    const digest = this.hash.digest('hex');
    try {
      await this.check(digest, expected);
    } catch (err) {
      const rejected = err instanceof ArchiveRejectedError ? err : new ArchiveRejectedError(`archive rejected: ${(err as Error).message}`, { cause: err });
      await this.abort(rejected);
      throw rejected;
    }
    const ref = { digest, size: this.written };
    let stat: ArchiveStat;
    try {
      // A cache needs no fsync: a rename is atomic across a process crash, and after a power loss a torn file is
      // caught by the hash check every archive gets before it is first served (and then fetched again).
      await this.direct?.close();
      if (this.o.durable) await this.file.sync();
      await this.file.close();
      const target = this.pathOf(digest);
      await mkdir(join(target, '..'), { recursive: true });
      // Always our own hashed bytes over the target (an atomic replace: readers of the old file keep it), never
      // "the same size is there already": that file was never hashed by us and may be anything. Synchronous, so
      // that the move and `location` change together: reader() opens `location` synchronously too.
      renameSync(this.location, target);
      this.location = target;
      stat = statOf(statSync(target));
    } catch (err) {
      await this.abort(err as Error);
      throw err;
    }
    this.state = 'committed';
    this.releaseRing();
    moved?.(ref, stat);
    this.wake();
    if (this.o.durable) {
      // The file's entry; and once per shard and process, the shard folder's own entry (it may be new, or made by a
      // commit that crashed before it synced it).
      const shard = join(this.location, '..');
      await syncFolder(shard);
      if (!this.o.syncedShards.has(shard)) {
        await syncFolder(join(shard, '..'));
        this.o.syncedShards.add(shard);
      }
    }
    return { ref, stat };
  }

  /** Throws when the bytes are not what `expected` says. */
  private async check(digest: string, expected: Expected): Promise<void> {
    checkCounted(expected, this.written, digest);
    await expected.check?.(fileReader(this.file.fd, false), this.written);
  }

  async abort(reason: Error = new Error('archive download aborted')): Promise<void> {
    if (this.state !== 'writing') return;
    this.state = 'aborted';
    this.failure = reason;
    this.wake();
    this.followerMoved();
    await this.flushing;
    this.releaseRing();
    await this.direct?.close().catch(() => {});
    await this.file.close().catch(() => {});
    await rm(this.location, { force: true });
  }

  reader(): ArchiveReader {
    if (this.state === 'aborted') return { read: () => Promise.reject(this.failure), close: () => {} };
    // Opened now, where the bytes are now (see commit), so a reader never misses the temp file's move.
    const fd = openSync(this.location, 'r');
    // The last byte is held back until commit: a client has the whole archive only once the store has it too, and
    // a commit that rejects the bytes fails the client's download instead of completing it.
    const readable = () => (this.state === 'committed' ? this.received : Math.max(0, this.received - 1));
    // A follower from its first read out of the ring until it reads elsewhere, leaves, or the writer's patience is spent.
    const follower = { pos: 0 };
    let behind = false;
    const unfollow = () => this.followers.delete(follower) && this.followerMoved();
    return {
      read: async (buf, pos) => {
        while (pos >= readable() && this.state === 'writing') await new Promise<void>((resolve) => this.wakeups.push(resolve));
        if (this.state === 'aborted') throw this.failure;
        const want = Math.min(buf.length, readable() - pos);
        if (want <= 0) return 0;
        if (this.ring && pos >= this.received - this.ring.length) {
          const n = this.copyReceived(buf, pos, want);
          follower.pos = pos + n;
          if (!behind && this.patienceMs > 0) this.followers.add(follower);
          this.followerMoved();
          return n;
        }
        behind = true;
        unfollow();
        return (await readAt(fd, buf, 0, Math.min(want, this.written - pos), pos)).bytesRead;
      },
      close: () => {
        unfollow();
        close(fd, () => {});
      },
    };
  }

  /**
   * Copies up to `want` bytes from `pos` (among the last ring-length bytes received) out of the ring, which always
   * holds them (a slot is reused only once its byte is written, and then for the next byte received), on disk or
   * not: a client close behind the fill reads no file. Up to the ring's end.
   */
  private copyReceived(buf: Buffer, pos: number, want: number): number {
    const ring = this.ring!;
    const at = pos % ring.length;
    return ring.copy(buf, 0, at, at + Math.min(want, ring.length - at));
  }

  /** The first byte the ring must keep: the first not on disk, or not read by a follower. */
  private oldestKept(): number {
    let oldest = this.written;
    for (const f of this.followers) oldest = Math.min(oldest, f.pos);
    return oldest;
  }

  /** Until a follower reads on or goes; once the writer's patience is spent, it waits for followers no more. */
  private async waitForFollowers(): Promise<void> {
    const start = performance.now();
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.followerRead = resolve;
      timer = setTimeout(resolve, this.patienceMs);
    });
    clearTimeout(timer);
    this.followerRead = undefined;
    this.patienceMs -= performance.now() - start;
    if (this.patienceMs <= 0) this.followers.clear();
  }

  private followerMoved(): void {
    this.followerRead?.();
  }

  /** Once no write and no reader uses it (nothing is flushing, and readers look at `ring` first). */
  private releaseRing(): void {
    if (this.ring) rings.release(this.ring);
    this.ring = undefined;
  }

  private mustBeWriting(): void {
    if (this.state !== 'writing') throw new Error(`archive writer is ${this.state}`);
  }

  private wake(): void {
    const wakeups = this.wakeups;
    this.wakeups = [];
    for (const wake of wakeups) wake();
  }
}

/**
 * A buffer whose bytes start on a page boundary, as O_DIRECT wants them: the memory of a WebAssembly.Memory (V8
 * maps it whole, page-aligned), which node's own buffers are not. `size` is a multiple of 64 KiB (wasm pages).
 */
function alignedBuffer(size: number): Buffer {
  const { WebAssembly } = globalThis as unknown as WasmGlobal;
  const pages = size / 65536;
  return Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer);
}

/**
 * The writers' rings: aligned (for direct writes), and reused, a few kept while idle. A new WebAssembly.Memory for
 * every fill made V8 run full collections every few fills (it counts the address space wasm memories reserve).
 */
const rings = {
  idle: [] as Buffer[],
  take: (): Buffer => rings.idle.pop() ?? alignedBuffer(RING_BYTES),
  release(ring: Buffer): void {
    if (rings.idle.length < IDLE_RINGS) rings.idle.push(ring);
  },
};
const IDLE_RINGS = 2;

/** A global of every Node that this project's TypeScript libraries (ES2023, no DOM) declare as a type only. */
interface WasmGlobal {
  readonly WebAssembly: { readonly Memory: new (limits: { initial: number; maximum: number }) => { readonly buffer: ArrayBuffer } };
}

/** Puts a folder's entries (a rename into it) on disk. */
async function syncFolder(path: string): Promise<void> {
  const dir = await open(path, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
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
