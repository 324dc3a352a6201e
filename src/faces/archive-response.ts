// Sending an archive, for every face. A cached archive (HIT) never changes: Content-Length, a strong ETag (its
// sha256), conditional requests and byte ranges (RFC 9110), served from the reader the cache opened and checked.
// One being filled (MISS) or passed through (BYPASS) goes out as its bytes arrive; if that fails, the response is
// destroyed, so the client sees a failed download rather than a short one.
//
// A HIT held in memory is written as the Buffer it is (a range as a view of it). Other bodies are pumped through
// buffers of one pool, reused from response to response: allocating buffers per chunk or per response is what made
// the mirror's memory climb while streaming gigabytes, and its garbage collector busy (bench).
import type { IncomingMessage, ServerResponse } from 'node:http';
import parseRange from 'range-parser';
import type { ArchiveHandle } from '../core/archives/archive-cache.js';
import type { ArchiveReader } from '../stores/archive-store.js';
import { accelRedirected } from './accel-redirect.js';

export interface SendOptions {
  /** Default: application/zip (a component). */
  readonly contentType?: string;
  /** When the content was published (Last-Modified). */
  readonly lastModified?: Date;
  /** Default: public and immutable (a component version's archive never changes). */
  readonly cacheControl?: string;
}

export async function sendArchive(req: IncomingMessage, res: ServerResponse, handle: ArchiveHandle, filename: string, options: SendOptions = {}): Promise<void> {
  // The client may have gone while the archive was looked up: then 'close' has been and gone, and would never come.
  if (res.destroyed) return handle.close();
  res.once('close', handle.close);
  res.setHeader('x-cache', handle.status);
  res.setHeader('Content-Type', options.contentType ?? 'application/zip');
  res.setHeader('Content-Disposition', `attachment; filename="${filename.replace(/[^\w.@+-]/g, '_')}"`);
  if (options.lastModified) res.setHeader('Last-Modified', options.lastModified.toUTCString());
  const { ref } = handle;
  if (!ref) return send(req, res, handle, 200, 0, handle.size);
  const etag = `"${ref.digest}"`;
  res.setHeader('ETag', etag);
  res.setHeader('Cache-Control', options.cacheControl ?? 'public, max-age=31536000, immutable');
  res.setHeader('Accept-Ranges', 'bytes');
  // 304 whatever the request's Cache-Control says: no-cache asks us to check, and we did (Node's fetch sends it).
  if (matches(req.headers['if-none-match'], etag) || notModifiedSince(req.headers, options.lastModified)) {
    res.writeHead(304).end();
    return;
  }
  if (accelRedirected(res, handle)) return; // nginx sends the file (faces/accel-redirect.ts)
  const range = req.headers.range && (req.headers['if-range'] === undefined || req.headers['if-range'] === etag) ? parseRange(ref.size, req.headers.range, { combine: true }) : -2;
  if (range === -1) {
    res.setHeader('Content-Range', `bytes */${ref.size}`);
    res.writeHead(416).end();
    return;
  }
  // A malformed Range, or several ranges, is answered with the whole archive (RFC 9110 lets a server ignore Range).
  if (range !== -2 && range.type === 'bytes' && range.length === 1) {
    const { start, end } = range[0]!;
    res.setHeader('Content-Range', `bytes ${start}-${end}/${ref.size}`);
    return send(req, res, handle, 206, start, end - start + 1);
  }
  return send(req, res, handle, 200, 0, ref.size);
}

/** If-Modified-Since at or after the content's time, and no If-None-Match (which takes precedence, RFC 9110). */
function notModifiedSince(headers: IncomingMessage['headers'], lastModified: Date | undefined): boolean {
  const since = headers['if-modified-since'];
  if (!lastModified || since === undefined || headers['if-none-match'] !== undefined) return false;
  return Math.floor(lastModified.getTime() / 1000) <= Date.parse(since) / 1000;
}

/** Whether an If-None-Match header names this (strong) ETag, compared weakly as RFC 9110 says, or is "*". */
function matches(header: string | undefined, etag: string): boolean {
  return header !== undefined && header.split(',').some((tag) => ['*', etag, `W/${etag}`].includes(tag.trim()));
}

/** The archive's bytes from `start` (`length` of them, or to the end when unknown) as the body (none for HEAD). */
async function send(req: IncomingMessage, res: ServerResponse, handle: ArchiveHandle, status: number, start: number, length: number | undefined): Promise<void> {
  res.statusCode = status;
  if (length !== undefined) res.setHeader('Content-Length', length);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const { bytes } = handle;
  if (bytes) {
    // No read, no copy: the socket takes the held Buffer itself, which nothing ever writes to.
    res.end(start === 0 && (length === undefined || length === bytes.length) ? bytes : bytes.subarray(start, start + (length ?? bytes.length)));
    return;
  }
  await pump(handle.reader, res, start, length);
}

/**
 * Transfer buffers: one pool of CHUNK-sized ones, taken and given back per response. At most POOLED are lent at a
 * time; past that a download gets SMALL ones, so that thousands of slow or paused clients cost bounded memory (at
 * most 16 MB of pool, plus 32 KiB a download beyond it). 128 KiB, not 256: a long download holds two, and 20 clients
 * of a big archive then hold 5 MB rather than 10 (issue 13; the bench's big-archive rows showed no loss of MB/s).
 */
const CHUNK = 128 * 1024;
const POOLED = 128;
const SMALL = 16 * 1024;
/** A body of up to this many chunks (1 MiB) is read in one system call (readv) and written in one go. */
const BATCH = 8;
const pool: Buffer[] = [];
let lent = 0;

function takeBuffer(): Buffer {
  if (lent >= POOLED) return Buffer.allocUnsafe(SMALL);
  lent++;
  return pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
}

/**
 * Gives a pool buffer back for reuse, after a cut response too: pump has then destroyed the socket, which closes it
 * at once and cancels the writes still queued, so no later system call reads the buffer. (Letting those go instead
 * made every cut a pool's worth of garbage only a full collection frees: with 16 clients that each end mid-download,
 * 20 MB more RSS.)
 */
function giveBuffer(buf: Buffer): void {
  if (buf.length !== CHUNK) return;
  lent--;
  pool.push(buf);
}

/**
 * Copies a reader to a response. A body that fits BATCH chunks takes that many buffers, read at once and written at
 * once (one trip to the thread pool, one system call to the socket, when the reader can readv). A longer one (or one
 * of unknown length) alternates between two buffers: one is read into while the other is on its way to the socket,
 * and a buffer is reused only once its write has been flushed. Any failure destroys the response.
 */
export async function pump(reader: ArchiveReader, res: ServerResponse, start = 0, length?: number): Promise<void> {
  const end = length === undefined ? Infinity : start + length;
  const chunks = length === undefined ? Infinity : Math.max(1, Math.ceil(length / CHUNK));
  // [buffers of slot 0, buffers of slot 1]: one slot of `chunks` buffers, or two of one each.
  const slots: Buffer[][] = chunks === 1 ? [[takeBuffer()]] : chunks <= BATCH && reader.readv && lent + chunks <= POOLED ? [Array.from({ length: chunks }, takeBuffer)] : [[takeBuffer()], [takeBuffer()]];
  const flushed: Array<Promise<void>> = slots.map(() => Promise.resolve());
  // The write of each slot still waiting to be flushed fails when the response closes. (Not Promise.race against a
  // "closed" promise: every race would leave a reaction on it until the response ends, thousands per download.)
  const unflushed: Array<((err: Error) => void) | undefined> = [];
  const onClose = () => unflushed.forEach((fail) => fail?.(new Error('response closed')));
  res.once('close', onClose);
  try {
    for (let pos = start, i = 0; pos < end; i = (i + 1) % slots.length) {
      await flushed[i];
      if (res.destroyed) throw new Error('response closed');
      const bufs = fit(slots[i]!, end - pos);
      const n = bufs.length === 1 ? await reader.read(bufs[0]!, pos) : await reader.readv!(bufs, pos);
      if (n === 0) {
        if (end !== Infinity) throw new Error('archive ended before its length'); // never a short body as a whole one
        break;
      }
      pos += n;
      flushed[i] = new Promise<void>((resolve, reject) => {
        unflushed[i] = reject;
        writeAll(res, bufs, n, (err) => {
          unflushed[i] = undefined;
          if (err) reject(err);
          else resolve();
        });
      });
      flushed[i]!.catch(() => {}); // awaited in its turn
    }
    await Promise.all(flushed);
    res.end();
  } catch {
    res.destroy();
  } finally {
    res.off('close', onClose);
    for (const slot of slots) for (const buf of slot) giveBuffer(buf);
  }
}

/** The buffers as they hold no more than `left` bytes: the last one cut short (a view), those beyond it left out. */
function fit(bufs: Buffer[], left: number): Buffer[] {
  let room = 0;
  for (let j = 0; j < bufs.length; j++) {
    if (room + bufs[j]!.length >= left) return j === bufs.length - 1 && room + bufs[j]!.length === left ? bufs : [...bufs.slice(0, j), bufs[j]!.subarray(0, left - room)];
    room += bufs[j]!.length;
  }
  return bufs;
}

/** Writes the first `n` bytes of the buffers as one socket write; `flushed` is called once they all are. */
function writeAll(res: ServerResponse, bufs: Buffer[], n: number, flushed: (err?: Error | null) => void): void {
  res.cork();
  for (let j = 0; n > 0; j++) {
    const buf = bufs[j]!;
    const part = n >= buf.length ? buf : buf.subarray(0, n);
    n -= part.length;
    res.write(part, n === 0 ? flushed : undefined);
  }
  res.uncork();
}
