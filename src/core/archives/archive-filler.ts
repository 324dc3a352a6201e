// Filling the cache from the upstream: one fill per version, however many clients ask at once. The fill downloads
// into an ArchiveWriter, and every client that asks meanwhile (the first included) reads the bytes as they land on
// disk. The fill has its own lifetime: clients that go away do not stop it. It becomes a cache entry, and its
// last byte reaches any client, only once the bytes are validated: the length the upstream promised, every digest
// it stated, and the content check (a structurally valid zip). Otherwise every reader's download fails, nothing is
// stored, and the next request fetches again.
//
// When the disk cannot be written (full, read-only), downloads are passed through to clients uncached (BYPASS)
// until a retry window has passed.
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from '../../log.js';
import { readBuffers } from '../../read-buffers.js';
import { MirrorError } from '../../model/errors.js';
import type { ArchiveRef } from '../../model/release.js';
import { ArchiveRejectedError, checkCounted, type ArchiveReader, type ArchiveStore, type ArchiveWriter, type Expected } from '../../stores/archive-store.js';
import type { Headers, UpstreamBody } from '../../upstreams/http.js';
import { unshared, type Exclusive } from '../fleet.js';
import { key } from '../../stores/keys.js';
import { deferred } from '../single-flight.js';
import type { ArchiveIndex } from './archive-index.js';
import type { ArchiveReclaimer } from './archive-reclaimer.js';
import type { ArchiveVerifier } from './archive-verifier.js';

/** A download of an archive: the upstream's answer, with the digests its release metadata states for it. */
export interface ArchiveDownload extends UpstreamBody {
  readonly statedDigests?: readonly string[];
}

/** Runs `consume` on the upstream's download of an archive. */
export type ArchiveSource = <T>(consume: (download: ArchiveDownload) => Promise<T>) => Promise<T>;

/** The bytes of an archive being filled (or passed through), for one client. */
export interface Stream {
  readonly status: 'MISS' | 'BYPASS';
  readonly size: number | undefined;
  readonly reader: ArchiveReader;
}

type FillStart = { readonly ref: ArchiveRef } | { readonly writer: ArchiveWriter; readonly size: number | undefined; readonly follow: () => () => void };

/** What every archive's content must pass (e.g. being a zip): stored whole, and as far as a stream allows. */
export interface ContentCheck {
  /** Checks a whole file before it is stored; throws to refuse it. */
  readonly file: NonNullable<Expected['check']>;
  /** Checks a stream that is passed through uncached, from its size and last KEPT_TAIL bytes; throws to refuse it. */
  readonly stream: (tail: Buffer, size: number) => Promise<void>;
}

/** How much of a passed-through download's end is kept for its content check (a zip's end records and directory). */
export const KEPT_TAIL = 1 << 20;

export interface DiskProblem {
  readonly error: string;
  readonly since: string;
}

/** An error of the store (not of the upstream): the disk is full, read-only, or otherwise failing. */
class DiskError extends Error {}

/** How long the mirror passes downloads through uncached after a disk error before it tries the disk again. */
export const DISK_RETRY_MS = 60_000;

export class ArchiveFiller {
  /** Fills under way, by version; each promise settles once the download's headers are in (or it failed). */
  private readonly fills = new Map<string, Promise<FillStart>>();
  /** Each fill until it has stored its archive or given up. */
  private readonly running = new Set<Promise<void>>();
  private disk: (DiskProblem & { readonly retryAt: number }) | undefined;
  /** Downloads refused since start (truncated, not what the upstream stated, not a zip). */
  rejected = 0;
  /** Clients that followed a fill already under way instead of starting one, since start. */
  coalesced = 0;

  constructor(
    private readonly store: ArchiveStore,
    private readonly index: ArchiveIndex,
    private readonly verifier: ArchiveVerifier,
    private readonly reclaimer: ArchiveReclaimer,
    private readonly log: Logger,
    private readonly contentCheck: ContentCheck | undefined,
    private readonly now: () => number = Date.now,
    /** Replicas on one database: one fill of a version across all of them (core/fleet.ts). */
    private readonly exclusive: Exclusive = unshared,
  ) {}

  /** The version's bytes for one client: following the fill under way or a new one; undefined once it is stored. */
  async stream(id: string, source: ArchiveSource, stored: () => Promise<boolean>): Promise<Stream | undefined> {
    if (this.disk && this.now() < this.disk.retryAt) return this.passThrough(source, id);
    try {
      const underWay = this.fills.get(id);
      if (underWay) this.coalesced++;
      let start = await (underWay ?? this.fill(id, source, stored));
      if ('writer' in start && start.writer.state === 'aborted') start = await this.fill(id, source, stored); // it failed: fetch again
      if ('ref' in start) return undefined;
      const reader = start.writer.reader();
      const unfollow = start.follow();
      return { status: 'MISS', size: start.size, reader: { read: (buf, pos) => reader.read(buf, pos), close: () => (reader.close(), unfollow()) } };
    } catch (err) {
      if (err instanceof DiskError) return this.passThrough(source, id);
      throw err;
    }
  }

  /** Waits for the fills under way to finish, for at most `ms`. */
  async drain(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
    await Promise.race([Promise.allSettled([...this.running]), timeout]);
    clearTimeout(timer);
  }

  status(): { fillsInProgress: number; rejected: number; coalesced: number; diskProblem: DiskProblem | undefined } {
    const disk = this.disk && { error: this.disk.error, since: this.disk.since };
    return { fillsInProgress: this.fills.size, rejected: this.rejected, coalesced: this.coalesced, diskProblem: disk };
  }

  private fill(id: string, source: ArchiveSource, stored: () => Promise<boolean>): Promise<FillStart> {
    const started = deferred<FillStart>();
    this.fills.set(id, started.promise);
    // A failed fill is forgotten before its readers hear of it, so that a client retrying at once starts a new one.
    const forget = () => void (this.fills.get(id) === started.promise && this.fills.delete(id));
    // Under the fleet's lock on the version: another replica's fill of it ends (committed, or not) before this looks.
    const run = () => this.exclusive(key.archive(id), async () => {
      // Looked up again: a fill that just finished (here, or on another replica) may have stored it while our caller looked.
      const ref = (await stored()) ? await this.index.get(id) : undefined;
      if (ref) return started.resolve({ ref });
      await source(async (download) => {
        refuseEncoded(download.headers);
        const writer = await this.onDisk(() => this.store.createWriter());
        // The new archive is leased while clients follow the fill, so that no eviction takes it from under them.
        const followers = new Followers();
        started.resolve({ writer, size: download.length, follow: () => followers.add() });
        try {
          await this.copy(download.body, writer);
          const expected: Expected = { size: download.length, digests: statedDigests(download), check: this.contentCheck?.file };
          let indexed: Promise<void> | undefined;
          await this.onDisk(() =>
            writer.commit(expected, (ref, stat) => {
              this.reclaimer.committed(ref.digest, ref.size);
              this.verifier.record(ref.digest, stat);
              followers.hold(this.reclaimer.lease(ref.digest));
              // From here on the archive is found in the index: later clients get a HIT, not this fill.
              indexed = this.index.put(id, ref);
              forget();
            }),
          );
          await indexed;
        } catch (err) {
          await writer.abort(err as Error);
          throw err;
        } finally {
          followers.done();
        }
      });
      if (this.disk) {
        this.log.warn('archive cache writable again', { error: this.disk.error });
        this.disk = undefined;
      }
      if (this.reclaimer.quota.overQuota) void this.reclaimer.evict().catch((err: unknown) => this.log.warn('eviction failed', { error: String(err) }));
    });
    const done = run()
      .catch((err: unknown) => {
        started.reject(err instanceof ArchiveRejectedError ? this.refused(id, err) : err);
        if (!(err instanceof ArchiveRejectedError)) this.log.warn('archive fill failed', { id, error: (err as Error).message });
      })
      .finally(() => {
        forget();
        this.running.delete(done);
      });
    this.running.add(done);
    return started.promise;
  }

  private async copy(body: Readable, writer: ArchiveWriter): Promise<void> {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      readBuffers.streamed(chunk.length);
      await this.onDisk(() => writer.write(chunk));
    }
  }

  /** A refused download: counted and logged; the error its clients see. */
  private refused(id: string, err: ArchiveRejectedError): MirrorError {
    this.rejected++;
    this.log.warn('archive refused: not stored, the next request fetches it again', { id, error: err.message });
    return new MirrorError('upstream-failed', `the upstream's archive for ${id} was refused: ${err.message}`);
  }

  /** Runs a store operation; its failure marks the disk unusable for a while. */
  private async onDisk<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof ArchiveRejectedError) throw err; // the download's fault, not the disk's
      throw this.diskFailed(err);
    }
  }

  /**
   * The store failed (full, read-only, unreadable): downloads are passed through uncached until the retry window
   * has passed. Logged once per condition; returns the error to throw.
   */
  diskFailed(err: unknown): Error {
    const error = `${(err as NodeJS.ErrnoException).code ?? 'error'}: ${(err as Error).message}`;
    if (this.disk?.error !== error) this.log.warn('archive cache not usable; passing downloads through uncached', { error });
    this.disk = { error, since: this.disk?.since ?? new Date(this.now()).toISOString(), retryAt: this.now() + DISK_RETRY_MS };
    return new DiskError(error, { cause: err });
  }

  /**
   * Streams the upstream's download straight to one client, caching nothing, checked as far as a stream can be: its
   * last chunk is held until its length, stated digests and (from its last megabyte) zip structure check out.
   */
  private passThrough(source: ArchiveSource, id: string): Promise<Stream> {
    const started = deferred<Stream>();
    source(async (download) => {
      refuseEncoded(download.headers);
      const validate = async (tail: Buffer, size: number, digest: string) => {
        try {
          checkCounted({ size: download.length, digests: statedDigests(download) }, size, digest);
          await this.contentCheck?.stream(tail, size).catch((err: unknown) => {
            throw new ArchiveRejectedError(`archive rejected: ${(err as Error).message}`);
          });
        } catch (err) {
          throw err instanceof ArchiveRejectedError ? this.refused(id, err) : err;
        }
      };
      started.resolve({ status: 'BYPASS', size: download.length, reader: heldBackReader(download.body, validate) });
      await new Promise((resolve) => download.body.once('close', resolve)); // the upstream slot is held until it is read or dropped
    }).catch((err: unknown) => started.reject(err instanceof ArchiveRejectedError ? this.refused(id, err) : err));
    return started.promise;
  }
}

/** The clients reading a fill, and the lease that keeps its archive for them once committed. */
class Followers {
  private count = 0;
  private finished = false;
  private release: (() => void) | undefined;

  add(): () => void {
    this.count++;
    let gone = false;
    return () => {
      if (gone) return;
      gone = true;
      this.count--;
      this.settle();
    };
  }

  /** Takes the lease on the committed archive (held until the last follower is gone). */
  hold(release: () => void): void {
    this.release = release;
  }

  /** The fill is over: once no follower reads, the lease goes. */
  done(): void {
    this.finished = true;
    this.settle();
  }

  private settle(): void {
    if (this.finished && this.count === 0) this.release?.();
  }
}

/** A body we did not ask to be encoded must not be stored as the archive (we send no Accept-Encoding). */
function refuseEncoded(headers: Headers): void {
  const encoding = String(headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity' && encoding !== '') throw new ArchiveRejectedError(`the upstream sent it with Content-Encoding ${encoding}`);
}

const SHA256 = /^[0-9a-f]{64}$/i;

/**
 * Every sha256 the upstream states for the bytes: an `x-checksum-sha256` header, the strong ETag of a chained
 * srm-mirror (its ETag is the archive's sha256), and the release metadata's digest.
 */
function statedDigests(download: ArchiveDownload): string[] {
  const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)?.trim();
  const header = one(download.headers['x-checksum-sha256']);
  const etag = /^"([0-9a-f]{64})"$/i.exec(one(download.headers.etag) ?? '')?.[1];
  // As stated, in either case: checkCounted compares them in lower case.
  return [header, etag, ...(download.statedDigests ?? [])].filter((d): d is string => d !== undefined && SHA256.test(d));
}

/**
 * A stream read like an archive, copying its chunks into the caller's buffers, that holds its newest chunk back
 * until the stream has ended and `validate` accepted it (given the last KEPT_TAIL bytes, the size and the sha256):
 * like a fill's last byte, the end of a download reaches the client only once it is known to be right.
 */
function heldBackReader(stream: Readable, validate: (tail: Buffer, size: number, digest: string) => Promise<void>): ArchiveReader {
  stream.on('error', () => {}); // a failure reaches the reader through the iterator; destroy() must not crash us
  const chunks = stream[Symbol.asyncIterator]();
  const hash = createHash('sha256');
  const tail: Buffer[] = [];
  let [tailBytes, size] = [0, 0];
  let held: Buffer | undefined;
  let pending: Buffer = Buffer.alloc(0);
  /** The next bytes the client may have (empty while only the held chunk came); undefined at the end. */
  const next = async (): Promise<Buffer | undefined> => {
    const { done, value } = await chunks.next();
    if (done) {
      if (held === undefined) return undefined;
      await validate(Buffer.concat(tail), size, hash.digest('hex'));
      [pending, held] = [held, undefined];
      return pending;
    }
    const chunk = value as Buffer;
    hash.update(chunk);
    size += chunk.length;
    tail.push(chunk);
    tailBytes += chunk.length;
    while (tailBytes - tail[0]!.length >= KEPT_TAIL) tailBytes -= tail.shift()!.length;
    const out = held ?? Buffer.alloc(0);
    held = chunk;
    return out;
  };
  return {
    async read(buf) {
      while (pending.length === 0) {
        const bytes = await next();
        if (bytes === undefined) return 0;
        pending = bytes;
      }
      const n = pending.copy(buf);
      pending = pending.subarray(n);
      return n;
    },
    close: () => stream.destroy(),
  };
}
