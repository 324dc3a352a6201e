// The bytes of hosted content (published components, generic-package files): content-addressed files in their own
// durable store, apart from the cache's archives, so that no quota, collection, scrub or repair of the cache ever
// sees them. Content that exists nowhere else must survive a SIGKILL or a power cut the moment the client hears
// 201, so a change is: the file fsynced and moved into place, then its records written in one fsynced batch.
//
// Files are shared: two files with the same bytes are one blob, with a reference per user of it
// (hosted:blob:{digest}:{ref}). Changes run one at a time (they are short: the upload itself streams before), so
// a blob is deleted only when its last reference went in a change that nothing can interleave with.
import { Readable } from 'node:stream';
import type { Logger } from '../../log.js';
import { MirrorError } from '../../model/errors.js';
import { readBuffers } from '../../read-buffers.js';
import type { ArchiveRef } from '../../model/release.js';
import { ArchiveRejectedError, type ArchiveStore, type ArchiveWriter, type Expected, type StoredReader } from '../../stores/archive-store.js';
import { key, prefix } from '../../stores/keys.js';
import { hasKeys, type MetadataStore } from '../../stores/metadata-store.js';
import type { ArchiveHandle } from '../archives/archive-cache.js';
import { ArchiveVerifier, sha256Of, type Throttle } from '../archives/archive-verifier.js';
import { SingleFlight } from '../single-flight.js';

/** What the last audit of hosted blobs found. */
export interface HostedAudit {
  readonly startedAt: string;
  readonly checked: number;
  /** Blobs whose bytes no longer match their digest (kept; answered 500). */
  readonly corrupt: readonly string[];
}

export interface HostedBlobsOptions {
  /** Largest file (413 past it). */
  readonly maxFileBytes: number;
  /** All blobs together at most (403 past it, as Gitea answers); 0: no limit. */
  readonly maxTotalBytes: number;
  readonly now?: () => number;
}

/** An upload received into a temp file: hashed and counted, not yet content (see HostedChange.keep). */
export class Upload {
  constructor(
    readonly size: number,
    /** For HostedBlobs only. */
    readonly writer: ArchiveWriter,
  ) {}

  /** Drops the temp file (an upload that was refused). Safe after it was kept. */
  discard(): Promise<void> {
    return this.writer.abort();
  }
}

/** One change of hosted content: its writes become durable together when the change ends without throwing. */
export interface HostedChange {
  /** Makes an upload a blob (checked against `expected` first: a failure is a 400 with the reason) used by `ref`. */
  keep(upload: Upload, ref: string, expected?: Expected): Promise<ArchiveRef>;
  /** Makes `ref` use a blob already stored (receiveBlob); throws 404 when it is not there whole. */
  reference(blob: ArchiveRef, ref: string): Promise<void>;
  /** `ref` no longer uses the blob; the blob goes when nothing else does. */
  release(digest: string, ref: string): void;
  put(k: string, value: unknown): void;
  del(k: string): void;
}

export class HostedBlobs {
  private readonly verifier: ArchiveVerifier;
  /** Bytes of each stored blob (for hosted.maxSize and the status), and their sum. */
  private readonly sizes = new Map<string, number>();
  private usedBytes = 0;
  private lastAudit: HostedAudit | undefined;
  private readonly auditing = new SingleFlight<HostedAudit>();
  /** The change under way: the next waits for it. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: MetadataStore,
    private readonly store: ArchiveStore,
    private readonly log: Logger,
    private readonly options: HostedBlobsOptions,
  ) {
    this.verifier = new ArchiveVerifier(options.now);
  }

  async init(): Promise<void> {
    for await (const blob of this.store.list()) this.setSize(blob.digest, blob.size);
  }

  status(): { blobs: number; bytes: number; lastAudit: HostedAudit | undefined } {
    return { blobs: this.sizes.size, bytes: this.usedBytes, lastAudit: this.lastAudit };
  }

  // The sum is kept rather than added up: hosted.maxSize is checked on every chunk of every upload.
  private setSize(digest: string, size: number): void {
    this.usedBytes += size - (this.sizes.get(digest) ?? 0);
    this.sizes.set(digest, size);
  }

  private dropSize(digest: string): void {
    this.usedBytes -= this.sizes.get(digest) ?? 0;
    this.sizes.delete(digest);
  }

  /**
   * Streams a request body into a temp file. Refused (and nothing kept) past hosted.maxFileSize (413, at once when
   * the declared length says so) or when it would take the hosted bytes past hosted.maxSize (403).
   */
  async receive(body: Readable, declaredSize?: number): Promise<Upload> {
    this.checkRoom(declaredSize ?? 0);
    const writer = await this.store.createWriter();
    // Counted here, not by writer.written: that is what is on disk so far, and the disk writes trail behind.
    let received = 0;
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        received += chunk.length;
        readBuffers.streamed(chunk.length);
        this.checkRoom(received);
        await writer.write(chunk);
      }
    } catch (err) {
      await writer.abort();
      throw err;
    }
    if (declaredSize !== undefined && received !== declaredSize) {
      await writer.abort();
      throw new MirrorError('bad-request', `the upload ended after ${received} of the ${declaredSize} bytes its Content-Length declared`);
    }
    return new Upload(received, writer);
  }

  private checkRoom(size: number): void {
    const { maxFileBytes, maxTotalBytes } = this.options;
    if (size > maxFileBytes) throw new MirrorError('too-large', `the file is larger than ${maxFileBytes} bytes (hosted.maxFileSize)`);
    if (maxTotalBytes > 0 && this.usedBytes + size > maxTotalBytes) {
      throw new MirrorError('forbidden', `hosted storage is full: ${this.usedBytes} of ${maxTotalBytes} bytes used (hosted.maxSize)`);
    }
  }

  /**
   * Runs one change, alone. Its puts and deletes are applied in one fsynced batch after `fn` resolves, and only then
   * are blobs nothing uses any more deleted; if `fn` throws, nothing is written and blobs it kept for nobody go.
   */
  change<T>(fn: (change: HostedChange) => Promise<T>): Promise<T> {
    const run = this.tail.then(() => this.runChange(fn));
    this.tail = run.catch(() => {});
    return run;
  }

  private async runChange<T>(fn: (change: HostedChange) => Promise<T>): Promise<T> {
    const put: Array<[string, unknown]> = [];
    const del: string[] = [];
    const touched = new Set<string>();
    const change: HostedChange = {
      keep: async (upload, ref, expected) => {
        const kept = await this.commit(upload, expected);
        touched.add(kept.digest);
        put.push([key.hostedBlob(kept.digest, ref), 1]);
        return kept;
      },
      reference: async (blob, ref) => {
        if (!(await this.hasBlob(blob))) throw new MirrorError('not-found', `the hosted blob ${blob.digest} is not stored`);
        touched.add(blob.digest);
        put.push([key.hostedBlob(blob.digest, ref), 1]);
      },
      release: (digest, ref) => {
        touched.add(digest);
        del.push(key.hostedBlob(digest, ref));
      },
      put: (k, value) => void put.push([k, value]),
      del: (k) => void del.push(k),
    };
    let result: T;
    try {
      result = await fn(change);
      if (put.length || del.length) await this.db.apply({ put, del }, { durable: true });
    } catch (err) {
      await this.deleteUnused(touched);
      throw err;
    }
    await this.deleteUnused(touched);
    return result;
  }

  /** Moves an upload into the store, checked against `expected` (a failure is a 400 with the reason). */
  private async commit(upload: Upload, expected?: Expected): Promise<ArchiveRef> {
    let kept: ArchiveRef;
    try {
      kept = (await upload.writer.commit(expected, (r, stat) => this.verifier.record(r.digest, stat))).ref;
    } catch (err) {
      if (err instanceof ArchiveRejectedError) throw new MirrorError('bad-request', err.message.replace(/^archive rejected: /, 'the upload was refused: '));
      throw err;
    }
    this.setSize(kept.digest, kept.size);
    return kept;
  }

  /** Whether a blob is stored whole. */
  async hasBlob(ref: ArchiveRef): Promise<boolean> {
    return (await this.store.stat(ref.digest))?.size === ref.size;
  }

  /**
   * Stores a blob brought from elsewhere (an imported bundle), within the hosted limits, durably, and only when its
   * size and sha256 are `ref`'s (a 400 otherwise). Nothing uses it until a change references it; it is committed in
   * the queue of changes, so that no change deleting an unused blob of the same digest can interleave.
   */
  async receiveBlob(body: AsyncIterable<Uint8Array>, ref: ArchiveRef): Promise<void> {
    const upload = await this.receive(Readable.from(body, { objectMode: false }), ref.size);
    try {
      await this.change(() => this.commit(upload, { size: ref.size, digests: [ref.digest] }));
    } finally {
      await upload.discard(); // nothing once committed
    }
  }

  /** Deletes the blobs among `digests` that no reference uses. */
  private async deleteUnused(digests: Iterable<string>): Promise<void> {
    for (const digest of digests) {
      try {
        if (await this.isUsed(digest)) continue;
        this.dropSize(digest);
        this.verifier.forget(digest);
        await this.store.delete(digest);
      } catch (err) {
        this.log.warn('a hosted blob nothing uses could not be deleted', { digest, error: String(err) });
      }
    }
  }

  private isUsed(digest: string): Promise<boolean> {
    return hasKeys(this.db, prefix.hostedBlob(digest));
  }

  /**
   * Opens a blob to serve, checked first (hashed unless a verified version of the file vouches for it). A missing
   * or corrupt blob is never served and never removed: it is logged as an error and answered 500 with the reason,
   * for an operator to restore it from a backup.
   */
  async open(ref: ArchiveRef, what: string): Promise<ArchiveHandle> {
    const reader = await this.store.open(ref.digest);
    if (!reader) throw this.damaged(what, ref, 'its file is missing from the hosted store');
    if (reader.stat.size !== ref.size || !(await this.verifier.check(ref.digest, reader))) {
      reader.close();
      throw this.damaged(what, ref, `its bytes no longer match their sha256 ${ref.digest}`);
    }
    return { status: 'HOSTED', ref, size: ref.size, reader, close: () => reader.close() };
  }

  /**
   * Opens a blob as it is, unchecked, or undefined when it is gone (its last user deleted it): for a reader that hashes
   * what it reads (an export; an import copying it into another store). The reader keeps its bytes even if the blob
   * is deleted meanwhile.
   */
  openStored(digest: string): Promise<StoredReader | undefined> {
    return this.store.open(digest);
  }

  /**
   * Rehashes every blob (at the scrub's rate, with `throttle`); reports the ones whose bytes do not match their name,
   * loudly, and never removes them: a hosted file exists nowhere else, so only its operator may decide.
   */
  audit(throttle?: Throttle): Promise<HostedAudit> {
    return this.auditing.run('audit', () => this.runAudit(throttle));
  }

  private async runAudit(throttle?: Throttle): Promise<HostedAudit> {
    const startedAt = new Date(this.options.now?.() ?? Date.now()).toISOString();
    const corrupt: string[] = [];
    let checked = 0;
    for await (const blob of this.store.list()) {
      const reader = await this.store.open(blob.digest);
      if (!reader) continue;
      try {
        checked++;
        if ((await sha256Of(reader, throttle)) !== blob.digest) corrupt.push(blob.digest);
      } finally {
        reader.close();
      }
    }
    for (const digest of corrupt) this.log.error('a hosted file is corrupt: it is kept and answered 500; restore it from a backup', { digest });
    this.lastAudit = { startedAt, checked, corrupt };
    return this.lastAudit;
  }

  private damaged(what: string, ref: ArchiveRef, why: string): MirrorError {
    this.log.error('hosted content is damaged and is not served; restore it from a backup', { what, digest: ref.digest, why });
    return new MirrorError('internal', `${what} is damaged and is not served (${why}); the mirror's operator must restore it`);
  }
}
