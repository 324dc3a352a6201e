// Sending an archive, for every face. A cached archive is an immutable file: Content-Length, a strong ETag (its
// sha256), Range and conditional requests. One being filled goes out as its bytes arrive; if the fill fails, the
// response is destroyed, so the client sees a failed download rather than a short one.
//
// Whole bodies are pumped through two buffers reused for the whole response: allocating a fresh buffer per chunk
// is what made the mirror's memory climb while streaming gigabytes (bench). Ranges and conditional requests of
// cached files go through express's sendFile, which knows their rules.
import type { Request, Response } from 'express';
import type { ServerResponse } from 'node:http';
import type { ArchiveHandle } from '../core/archive-cache.js';
import type { ArchiveReader } from '../stores/archive-store.js';

const CHUNK = 256 * 1024;

export async function sendArchive(req: Request, res: Response, handle: ArchiveHandle, filename: string): Promise<void> {
  res.setHeader('x-cache', handle.status);
  res.setHeader('Content-Type', 'application/zip');
  res.setHeader('Content-Disposition', `attachment; filename="${filename.replace(/[^\w.@+-]/g, '_')}"`);
  if (handle.status === 'MISS') {
    if (handle.size !== undefined) res.setHeader('Content-Length', handle.size);
    return send(req, res, handle.reader, handle.size);
  }
  res.once('close', handle.release);
  res.setHeader('ETag', `"${handle.ref.digest}"`);
  res.setHeader('Cache-Control', 'public, max-age=31536000, immutable'); // a version's archive never changes
  if (req.headers.range || req.headers['if-none-match'] || req.headers['if-modified-since'] || req.method === 'HEAD') {
    await new Promise<void>((resolve, reject) => {
      const options = { etag: false, lastModified: false, cacheControl: false, dotfiles: 'allow' as const, highWaterMark: CHUNK };
      res.sendFile(handle.path, options, (err: NodeJS.ErrnoException | undefined) =>
        // A client that went away is no error of ours.
        err && !res.headersSent && !req.destroyed && err.code !== 'ECONNABORTED' ? reject(err) : resolve(),
      );
    });
    return;
  }
  res.setHeader('Content-Length', handle.ref.size);
  return send(req, res, await handle.open(), handle.ref.size);
}

/** A 200 with the reader's bytes as the body (none for HEAD). */
async function send(req: Request, res: Response, reader: ArchiveReader, size: number | undefined): Promise<void> {
  res.status(200);
  if (req.method === 'HEAD') {
    reader.close();
    res.end();
    return;
  }
  await pump(reader, res, size);
}

/**
 * Copies a reader to a response through two buffers: one is read into while the other is on its way to the
 * socket, and a buffer is reused only once its write has been flushed. Any failure destroys the response.
 */
export async function pump(reader: ArchiveReader, res: ServerResponse, size?: number): Promise<void> {
  const chunk = Math.max(1, Math.min(CHUNK, size ?? CHUNK)); // no 256 KiB buffers for a small archive
  const buffers = [Buffer.allocUnsafe(chunk), Buffer.allocUnsafe(chunk)];
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
    for (let pos = 0, i = 0; ; i = 1 - i) {
      await flushed[i];
      if (res.destroyed) throw new Error('response closed');
      const n = await reader.read(buffers[i]!, pos);
      if (n === 0) break;
      pos += n;
      flushed[i] = write(buffers[i]!.subarray(0, n));
      flushed[i]!.catch(() => {}); // awaited in its turn
    }
    await Promise.all(flushed);
    res.end();
  } catch {
    res.destroy();
  } finally {
    res.off('close', onClose);
    reader.close();
  }
}
