// Volumes of a bundle: which blob goes in which volume, and writing one. A volume is a plain tar (tar-stream's
// pack) of `blobs/sha256/<hex>` entries and nothing else, with fixed headers (mtime 0, mode 0644), so the same
// blobs always make the same bytes. It is written as NAME.partial, hashed and counted as it is written, fsynced,
// and renamed only when whole.
import { createHash } from 'node:crypto';
import { open, rm, type FileHandle } from 'node:fs/promises';
import type { Pack } from 'tar-stream';
import type { StoredReader } from '../stores/archive-store.js';
import { commitPartial, PARTIAL, writeAll } from './durable-files.js';
import { blobEntry } from './manifest.js';

const BLOCK = 512;
/** Bytes a blob takes in a volume: a header block, then its bytes padded to whole blocks. */
export const entryBytes = (size: number) => BLOCK + Math.ceil(size / BLOCK) * BLOCK;
/** The end-of-archive marker every volume ends with. */
export const END_BYTES = 2 * BLOCK;
const READ_CHUNK = 256 * 1024;

export interface Blob {
  readonly digest: string;
  readonly size: number;
}

/**
 * Blobs into volumes, in the order given, each volume filled up to maxBytes (its tar bytes, end marker included);
 * a blob too large for any volume gets one of its own. No limit (0): one volume.
 */
export function planVolumes<B extends Blob>(blobs: readonly B[], maxBytes: number): B[][] {
  const volumes: B[][] = [];
  let current: B[] = [];
  let bytes = END_BYTES;
  for (const b of blobs) {
    if (current.length > 0 && maxBytes > 0 && bytes + entryBytes(b.size) > maxBytes) {
      volumes.push(current);
      [current, bytes] = [[], END_BYTES];
    }
    current.push(b);
    bytes += entryBytes(b.size);
  }
  if (current.length) volumes.push(current);
  return volumes;
}

/** The bytes a volume of these blobs takes. */
export const volumeBytes = (blobs: readonly Blob[]) => blobs.reduce((n, b) => n + entryBytes(b.size), END_BYTES);

/** A blob whose bytes are not its sha256 (or not its size): the volume is written again without it. */
export class CorruptBlobError extends Error {
  override readonly name = 'CorruptBlobError';
  constructor(readonly digest: string) {
    super(`the bytes of blob ${digest} do not match its sha256`);
  }
}

export interface VolumeWritten {
  readonly size: number;
  readonly sha256: string;
  /** Blobs left out: gone from the mirror, or corrupt. */
  readonly dropped: readonly string[];
}

export interface WriteVolumeOptions {
  /** Opens a blob; undefined when the mirror no longer has it. */
  readonly open: (blob: Blob) => Promise<StoredReader | undefined>;
  /** Blobs already known to be gone. */
  readonly skip?: ReadonlySet<string>;
  /** Told of each blob left out, and why. */
  readonly onDropped?: (digest: string, why: 'gone' | 'corrupt') => void;
  /** Bytes of blobs packed so far (called as they are read). */
  readonly onBytes?: (n: number) => void;
  /** Called with each blob once it is packed. */
  readonly onBlob?: (blob: Blob) => void;
  /** Opens the partial file for writing (tests make it fail). */
  readonly createFile?: (path: string) => Promise<FileHandle>;
}

/**
 * Writes a volume of these blobs at `path`; a blob found corrupt is left out (the volume is written again without
 * it), as is one the mirror no longer has. Resolves with the volume's size and sha256.
 */
export async function writeVolume(path: string, blobs: readonly Blob[], options: WriteVolumeOptions): Promise<VolumeWritten> {
  const dropped = new Set(options.skip);
  for (;;) {
    try {
      const written = await writeOnce(path, blobs, dropped, options);
      return { ...written, dropped: blobs.filter((b) => dropped.has(b.digest)).map((b) => b.digest) };
    } catch (err) {
      if (!(err instanceof CorruptBlobError)) throw err;
      dropped.add(err.digest);
      options.onDropped?.(err.digest, 'corrupt');
    }
  }
}

async function writeOnce(path: string, blobs: readonly Blob[], dropped: Set<string>, options: WriteVolumeOptions): Promise<{ size: number; sha256: string }> {
  const partial = path + PARTIAL;
  const { pack: tarPack } = await import('tar-stream'); // here, not at start: a serving mirror rarely exports
  const file = await (options.createFile ?? ((p) => open(p, 'w')))(partial);
  const pack = tarPack();
  const hash = createHash('sha256');
  let size = 0;
  // The tar's bytes go to the file as the entries are fed in; a failure to write fails the feeding too.
  const sink = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) {
      hash.update(chunk);
      await writeAll(file, chunk);
      size += chunk.length;
    }
  })();
  const sinkFailed = sink.then(
    () => new Promise<never>(() => {}),
    (err: unknown) => Promise.reject(err),
  );
  sinkFailed.catch(() => {}); // observed through the races below
  const orSinkFailure = <T>(p: Promise<T>) => Promise.race([p, sinkFailed]);
  try {
    for (const blob of blobs) {
      if (dropped.has(blob.digest)) continue;
      const reader = await options.open(blob);
      if (!reader || reader.stat.size !== blob.size) {
        reader?.close();
        dropped.add(blob.digest);
        options.onDropped?.(blob.digest, 'gone');
        continue;
      }
      try {
        await orSinkFailure(packBlob(pack, blob, reader, options.onBytes));
      } finally {
        reader.close();
      }
      options.onBlob?.(blob);
    }
    pack.finalize();
    await sink;
    await file.sync();
  } catch (err) {
    pack.destroy();
    await sink.catch(() => {});
    await file.close().catch(() => {});
    await rm(partial, { force: true });
    throw err;
  }
  await file.close();
  await commitPartial(path);
  return { size, sha256: hash.digest('hex') };
}

/** One blob as one entry, hashed as it is read: bytes that are not its digest throw CorruptBlobError. */
async function packBlob(pack: Pack, blob: Blob, reader: StoredReader, onBytes?: (n: number) => void): Promise<void> {
  let finish!: (err?: Error | null) => void;
  const done = new Promise<void>((resolve, reject) => (finish = (err) => (err ? reject(err) : resolve())));
  done.catch(() => {}); // a failed entry fails the pack too, which the caller sees
  const entry = pack.entry({ name: blobEntry(blob.digest), size: blob.size, mode: 0o644, mtime: new Date(0), type: 'file' }, (err) => finish(err));
  const hash = createHash('sha256');
  let pos = 0;
  for (;;) {
    const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, Math.max(1, blob.size - pos)));
    const n = pos < blob.size ? await reader.read(buf, pos) : 0;
    if (n === 0) break;
    const chunk = buf.subarray(0, n);
    hash.update(chunk);
    pos += n;
    onBytes?.(n);
    if (!entry.write(chunk)) await new Promise<void>((resolve) => entry.once('drain', () => resolve()));
  }
  // A short file would make a torn entry: the volume is written again without the blob.
  if (pos !== blob.size || hash.digest('hex') !== blob.digest) throw new CorruptBlobError(blob.digest);
  entry.end(null);
  await done;
}
