// Passing requests through to the upstream untouched: writes (publish, delete, login), and reads the anonymous
// mirror may not see (private content). Method, path, query, body and the client's auth headers go up as they
// came, the body streamed, never buffered whole; the upstream's status and body come back as they are. Nothing of
// it is cached, and no header is ever logged.
import type { Request, Response } from 'express';
import type { IncomingMessage } from 'node:http';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ForwardResponse, UpstreamHttp } from '../upstreams/http.js';

/** Headers the `s` client signs requests with (PROTOCOL.md §1), plus standard auth. */
const CREDENTIAL_HEADERS = ['token', 'sign_code', 'nonce', 'timestamp', 'authorization'];
// Not transfer-encoding: undici frames the streamed body itself.
const FORWARDED_HEADERS = [...CREDENTIAL_HEADERS, 'accept', 'user-agent', 'content-type', 'content-length'];
const RETURNED_HEADERS = ['content-type', 'content-length', 'content-encoding', 'location', 'www-authenticate', 'retry-after'];

export function hasCredentials(req: IncomingMessage): boolean {
  return req.headers.token !== undefined || req.headers.authorization !== undefined;
}

/** Sends the client's request upstream (with `body` in place of the request's own stream, when given). */
export type Forward = (req: Request, body?: Readable) => Promise<ForwardResponse>;

/** upstreamBase is where the router's mount point goes upstream, e.g. "https://api.devsapp.cn/v3" for /v3. */
export function forwarder(http: UpstreamHttp, upstreamBase: string): Forward {
  return (req, body) =>
    http.forward({
      method: req.method,
      url: upstreamBase + req.url,
      headers: pick(req.headers, FORWARDED_HEADERS),
      body: req.method === 'GET' || req.method === 'HEAD' ? undefined : (body ?? req),
    });
}

/** Writes the upstream's answer to the client as it is (x-cache: BYPASS). */
export async function sendForwarded(res: Response, answer: ForwardResponse): Promise<void> {
  res.status(answer.status);
  for (const [k, v] of Object.entries(pick(answer.headers, RETURNED_HEADERS))) if (v !== undefined) res.setHeader(k, v);
  res.setHeader('x-cache', 'BYPASS');
  await pipeline(answer.body, res).catch(() => res.destroy());
}

/**
 * The request body, passed through unchanged while its first `limit` bytes are kept, so that a url-encoded form
 * field near the start (publish step 1 sends `publish`, the publish.yaml, first) can be read without buffering.
 */
export function sniffForm(req: Request, limit = 64 * 1024): { body: Readable; field: (name: string) => string | undefined } {
  const head: Buffer[] = [];
  let kept = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (kept < limit) {
        head.push(chunk.subarray(0, limit - kept));
        kept += Math.min(chunk.length, limit - kept);
      }
      done(null, chunk);
    },
  });
  pipeline(req, stream).catch(() => {}); // a failed upload destroys `stream`, which aborts the upstream request
  return { body: stream, field: (name) => new URLSearchParams(Buffer.concat(head).toString('utf8')).get(name) ?? undefined };
}

function pick(headers: Record<string, string | string[] | undefined>, names: readonly string[]) {
  return Object.fromEntries(names.filter((n) => headers[n] !== undefined).map((n) => [n, headers[n]]));
}
