// Writing JSON answers, for every face, on node's own response API (the hot path shares it).
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Cached } from '../core/metadata-cache.js';

export function sendJson(res: ServerResponse, status: number, json: string): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(json) });
  res.end(json);
}

/**
 * A metadata answer: where it came from (x-cache, Age) and a weak ETag over its content, so that a client or a
 * downstream mirror can revalidate with If-None-Match and get a 304. `frame` wraps the content's JSON (the v3
 * envelope), outside the ETag: its request_id differs every time.
 */
export function sendMetadata(req: IncomingMessage, res: ServerResponse, cached: Cached<unknown>, content: unknown, frame = (json: string) => json): void {
  const json = JSON.stringify(content);
  const etag = `W/"${createHash('sha1').update(json).digest('base64url')}"`;
  res.setHeader('x-cache', cached.status);
  res.setHeader('Age', cached.age);
  res.setHeader('ETag', etag);
  const ifNoneMatch = req.headers['if-none-match'];
  if (ifNoneMatch && ifNoneMatch.split(',').some((tag) => tag.trim() === etag || tag.trim() === '*')) {
    res.writeHead(304).end();
    return;
  }
  sendJson(res, 200, frame(json));
}
