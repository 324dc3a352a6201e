// Passing requests through to the upstream untouched: writes (publish, delete, login), and reads the anonymous
// mirror may not see (private content). Method, path, query, body and the client's auth headers go up as they
// came, the body streamed, never buffered whole; the upstream's status and body come back as they are, marked
// private so that no cache on the way keeps them. Nothing of it is cached here, and no header is ever logged.
//
// A request body is bounded: one declared larger than writes.maxBodySize is answered 413 before the upstream is
// asked; one that grows past it, or on which nothing moves for writes.bodyTimeout, is cut (the upstream request
// with it) and answered 413 or 408 when the answer has not started yet.
import type { Request, Response } from 'express';
import type { IncomingMessage } from 'node:http';
import { pipeline as pipe, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ForwardResponse, UpstreamHttp } from '../upstreams/http.js';
import { isRegistryCommand } from '../upstreams/serverless-v3.js';
import { guardedBody, tooLarge, type BodyLimits } from './request-body.js';

/** Headers the `s` client signs requests with (PROTOCOL.md §1), plus standard auth. */
const CREDENTIAL_HEADERS = ['token', 'sign_code', 'nonce', 'timestamp', 'authorization'];
// Not transfer-encoding: undici frames the streamed body itself.
const FORWARDED_HEADERS = [...CREDENTIAL_HEADERS, 'accept', 'user-agent', 'content-type', 'content-length'];
const RETURNED_HEADERS = ['content-type', 'content-length', 'content-encoding', 'location', 'www-authenticate', 'retry-after'];

export function hasCredentials(req: IncomingMessage): boolean {
  return CREDENTIAL_HEADERS.some((h) => req.headers[h] !== undefined);
}

/**
 * Sends the client's request upstream; its body (if any; `body` when the request's was peeked at) flows through `tap`
 * on the way, when given.
 */
export type Forward = (req: Request, options?: { tap?: Transform; body?: Readable }) => Promise<ForwardResponse>;

/**
 * upstreamBase is where the router's mount point goes upstream, e.g. "https://api.devsapp.cn/v3" for /v3; the
 * registry commands (isRegistryCommand: list, detail, private list, publish, delete) go to commandsBase instead,
 * where the `s` client itself sends them (upstream.commandsUrl).
 */
export function forwarder(http: UpstreamHttp, upstreamBase: string, limits: BodyLimits, commandsBase = upstreamBase): Forward {
  return async (req, { tap, body: source = req } = {}) => {
    const base = isRegistryCommand(req.method, req.path) ? commandsBase : upstreamBase;
    const forward = (body?: Readable) => http.forward({ method: req.method, url: base + req.url, headers: pick(req.headers, FORWARDED_HEADERS), body });
    if (req.method === 'GET' || req.method === 'HEAD') return forward();
    const declared = Number(req.headers['content-length']);
    if (declared > limits.maxBodyBytes) {
      req.res?.setHeader('Connection', 'close'); // the body is not read: the connection cannot serve another request
      throw tooLarge(limits);
    }
    const guard = guardedBody(source, limits); // a client that goes away aborts the upstream request too
    const body = tap ? pipe(guard, tap, () => {}) : guard;
    try {
      return await forward(body);
    } catch (err) {
      if (!guard.failure) throw err;
      source.unpipe(guard);
      req.res?.setHeader('Connection', 'close');
      throw guard.failure;
    }
  };
}

/** Writes the upstream's answer to the client as it is (x-cache: BYPASS), never to be stored by a cache. */
export async function sendForwarded(res: Response, answer: ForwardResponse): Promise<void> {
  res.status(answer.status);
  for (const [k, v] of Object.entries(pick(answer.headers, RETURNED_HEADERS))) if (v !== undefined) res.setHeader(k, v);
  res.setHeader('Cache-Control', 'private, no-store');
  res.setHeader('x-cache', 'BYPASS');
  await pipeline(answer.body, res).catch(() => res.destroy());
}

function pick(headers: Record<string, string | string[] | undefined>, names: readonly string[]) {
  return Object.fromEntries(names.filter((n) => headers[n] !== undefined).map((n) => [n, headers[n]]));
}
