// Sending an archive, for every face. A cached archive (HIT) never changes: Content-Length, a strong ETag (its
// sha256), conditional requests and byte ranges (RFC 9110), served from the reader the cache opened and checked.
// One being filled (MISS) or passed through (BYPASS) goes out as its bytes arrive; if that fails, the response is
// destroyed, so the client sees a failed download rather than a short one.
//
// Bodies are pumped through two buffers reused for the whole response: allocating a fresh buffer per chunk is what
// made the mirror's memory climb while streaming gigabytes (bench).
import type { Request, Response } from 'express';
import type { ServerResponse } from 'node:http';
import parseRange from 'range-parser';
import type { ArchiveHandle } from '../core/archives/archive-cache.js';
import type { ArchiveReader } from '../stores/archive-store.js';
import { accelRedirected } from './accel-redirect.js';

const CHUNK = 256 * 1024;

export interface SendOptions {
  /** Default: application/zip (a component). */
  readonly contentType?: string;
  /** When the content was published (Last-Modified). */
  readonly lastModified?: Date;
  /** Default: public and immutable (a component version's archive never changes). */
  readonly cacheControl?: string;
}

export async function sendArchive(req: Request, res: Response, handle: ArchiveHandle, filename: string, options: SendOptions = {}): Promise<void> {
  // The client may have gone while the archive was looked up: then 'close' has been and gone, and would never come.
  if (res.destroyed) return handle.close();
  res.once('close', handle.close);
  res.setHeader('x-cache', handle.status);
  res.setHeader('Content-Type', options.contentType ?? 'application/zip');
  res.setHeader('Content-Disposition', `attachment; filename="${filename.replace(/[^\w.@+-]/g, '_')}"`);
  if (options.lastModified) res.setHeader('Last-Modified', options.lastModified.toUTCString());
  const { ref, reader } = handle;
  if (!ref) return send(req, res, reader, 200, 0, handle.size);
  const etag = `"${ref.digest}"`;
  res.setHeader('ETag', etag);
  res.setHeader('Cache-Control', options.cacheControl ?? 'public, max-age=31536000, immutable');
  res.setHeader('Accept-Ranges', 'bytes');
  // 304 whatever the request's Cache-Control says: no-cache asks us to check, and we did (Node's fetch sends it).
  if (matches(req.headers['if-none-match'], etag) || notModifiedSince(req.headers, options.lastModified)) {
    res.status(304).end();
    return;
  }
  if (accelRedirected(res, handle)) return; // nginx sends the file (faces/accel-redirect.ts)
  const range = req.headers.range && (req.headers['if-range'] === undefined || req.headers['if-range'] === etag) ? parseRange(ref.size, req.headers.range, { combine: true }) : -2;
  if (range === -1) {
    res.setHeader('Content-Range', `bytes */${ref.size}`);
    res.status(416).end();
    return;
  }
  // A malformed Range, or several ranges, is answered with the whole archive (RFC 9110 lets a server ignore Range).
  if (range !== -2 && range.type === 'bytes' && range.length === 1) {
    const { start, end } = range[0]!;
    res.setHeader('Content-Range', `bytes ${start}-${end}/${ref.size}`);
    return send(req, res, reader, 206, start, end - start + 1);
  }
  return send(req, res, reader, 200, 0, ref.size);
}

/** If-Modified-Since at or after the content's time, and no If-None-Match (which takes precedence, RFC 9110). */
function notModifiedSince(headers: Request['headers'], lastModified: Date | undefined): boolean {
  const since = headers['if-modified-since'];
  if (!lastModified || since === undefined || headers['if-none-match'] !== undefined) return false;
  return Math.floor(lastModified.getTime() / 1000) <= Date.parse(since) / 1000;
}

/** Whether an If-None-Match header names this (strong) ETag, compared weakly as RFC 9110 says, or is "*". */
function matches(header: string | undefined, etag: string): boolean {
  return header !== undefined && header.split(',').some((tag) => ['*', etag, `W/${etag}`].includes(tag.trim()));
}

/** The reader's bytes from `start` (`length` of them, or to the end when unknown) as the body (none for HEAD). */
async function send(req: Request, res: Response, reader: ArchiveReader, status: number, start: number, length: number | undefined): Promise<void> {
  res.status(status);
  if (length !== undefined) res.setHeader('Content-Length', length);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  await pump(reader, res, start, length);
}

/**
 * Download buffers. Each download pumps through two, held while its socket drains: the 256 KiB ones come from a
 * pool of at most POOLED, and past that a download gets small ones, so that thousands of slow or paused clients
 * cost bounded memory (at most 32 MB of pool, plus 32 KiB a download beyond it) at full speed for the first 64.
 */
const POOLED = 128;
const SMALL = 16 * 1024;
const pool: Buffer[] = [];
let lent = 0;

function takeBuffer(size: number): Buffer {
  if (size < CHUNK) return Buffer.allocUnsafe(size); // a small archive needs no more
  if (lent >= POOLED) return Buffer.allocUnsafe(SMALL);
  lent++;
  return pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
}

/** Gives a pool buffer back: for reuse once every write of it has flushed, otherwise (a cut response) let go. */
function giveBuffer(buf: Buffer, flushed: boolean): void {
  if (buf.length !== CHUNK) return;
  lent--;
  if (flushed) pool.push(buf);
}

/**
 * Copies a reader to a response through two buffers: one is read into while the other is on its way to the
 * socket, and a buffer is reused only once its write has been flushed. Any failure destroys the response.
 */
export async function pump(reader: ArchiveReader, res: ServerResponse, start = 0, length?: number): Promise<void> {
  const end = length === undefined ? Infinity : start + length;
  const buffers = [takeBuffer(length ?? CHUNK), takeBuffer(length ?? CHUNK)];
  let done = false;
  const flushed: Array<Promise<void>> = [Promise.resolve(), Promise.resolve()];
  // Writes still waiting to be flushed fail when the response closes. (Not Promise.race against a "closed"
  // promise: every race would leave a reaction on it until the response ends, thousands per download.)
  const unflushed = new Set<(err: Error) => void>();
  const onClose = () => unflushed.forEach((fail) => fail(new Error('response closed')));
  res.once('close', onClose);
  const write = (chunk: Buffer) =>
    new Promise<void>((resolve, reject) => {
      unflushed.add(reject);
      res.write(chunk, (err) => {
        unflushed.delete(reject);
        if (err) reject(err);
        else resolve();
      });
    });
  try {
    for (let pos = start, i = 0; pos < end; i = 1 - i) {
      await flushed[i];
      if (res.destroyed) throw new Error('response closed');
      const buf = buffers[i]!;
      const n = await reader.read(end - pos < buf.length ? buf.subarray(0, end - pos) : buf, pos);
      if (n === 0) {
        if (end !== Infinity) throw new Error('archive ended before its length'); // never a short body as a whole one
        break;
      }
      pos += n;
      flushed[i] = write(buffers[i]!.subarray(0, n));
      flushed[i]!.catch(() => {}); // awaited in its turn
    }
    await Promise.all(flushed);
    done = true;
    res.end();
  } catch {
    res.destroy();
  } finally {
    res.off('close', onClose);
    for (const buf of buffers) giveBuffer(buf, done);
  }
}
