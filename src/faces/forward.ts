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
import { pipeline as pipe, Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../config/config.js';
import { MirrorError } from '../model/errors.js';
import type { ForwardResponse, UpstreamHttp } from '../upstreams/http.js';

/** Headers the `s` client signs requests with (PROTOCOL.md §1), plus standard auth. */
const CREDENTIAL_HEADERS = ['token', 'sign_code', 'nonce', 'timestamp', 'authorization'];
// Not transfer-encoding: undici frames the streamed body itself.
const FORWARDED_HEADERS = [...CREDENTIAL_HEADERS, 'accept', 'user-agent', 'content-type', 'content-length'];
const RETURNED_HEADERS = ['content-type', 'content-length', 'content-encoding', 'location', 'www-authenticate', 'retry-after'];

export function hasCredentials(req: IncomingMessage): boolean {
  return CREDENTIAL_HEADERS.some((h) => req.headers[h] !== undefined);
}

/** Sends the client's request upstream; its body (if any) flows through `tap` on the way, when given. */
export type Forward = (req: Request, tap?: Transform) => Promise<ForwardResponse>;

export type BodyLimits = Pick<Config['writes'], 'maxBodyBytes' | 'bodyTimeoutMs'>;

/** upstreamBase is where the router's mount point goes upstream, e.g. "https://api.devsapp.cn/v3" for /v3. */
export function forwarder(http: UpstreamHttp, upstreamBase: string, limits: BodyLimits): Forward {
  return async (req, tap) => {
    const forward = (body?: Readable) => http.forward({ method: req.method, url: upstreamBase + req.url, headers: pick(req.headers, FORWARDED_HEADERS), body });
    if (req.method === 'GET' || req.method === 'HEAD') return forward();
    const declared = Number(req.headers['content-length']);
    if (declared > limits.maxBodyBytes) {
      req.res?.setHeader('Connection', 'close'); // the body is not read: the connection cannot serve another request
      throw tooLarge(limits.maxBodyBytes);
    }
    const guard = new BodyGuard(limits);
    // Not pipeline(req, ...): a failed guard must not destroy the request, whose socket still has to carry the 413.
    req.pipe(guard);
    req.once('error', (err) => guard.destroy(err)); // the client went away: abort the upstream request too
    const body = tap ? pipe(guard, tap, () => {}) : guard;
    try {
      return await forward(body);
    } catch (err) {
      if (!guard.failure) throw err;
      req.unpipe(guard);
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

/**
 * A request body's first `limit` bytes, kept while the body passes through unchanged, so that a url-encoded form
 * field near the start (publish step 1 sends `publish`, the publish.yaml, first) can be read without buffering.
 */
export function sniffForm(limit = 64 * 1024): { stream: Transform; field: (name: string) => string | undefined } {
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
  return { stream, field: (name) => new URLSearchParams(Buffer.concat(head).toString('utf8')).get(name) ?? undefined };
}

/**
 * Passes a request body on while counting it and timing it: past maxBodyBytes, or when the reader wants more and
 * nothing arrives for bodyTimeoutMs (the clock runs only while the reader is flowing, so neither time waiting for
 * a slot nor the upstream's own backpressure is held against the client), it fails with the reason in `failure`.
 */
class BodyGuard extends Transform {
  failure: MirrorError | undefined;
  private size = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly limits: BodyLimits) {
    super();
    this.on('resume', () => this.touch());
    this.on('pause', () => this.stopTimer());
    this.once('error', () => this.stopTimer()); // also keeps a failure from being an uncaught 'error'
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.size += chunk.length;
    if (this.size > this.limits.maxBodyBytes) return done(this.fail(tooLarge(this.limits.maxBodyBytes)));
    if (this.readableFlowing) this.touch();
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    this.stopTimer();
    done();
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    this.stopTimer();
    done(err);
  }

  private touch(): void {
    this.stopTimer();
    if (this.writableEnded) return; // the client has sent it all: nothing more to wait for
    const ms = this.limits.bodyTimeoutMs;
    this.timer = setTimeout(() => this.destroy(this.fail(new MirrorError('client-timeout', `the request body stalled: nothing arrived for ${ms / 1000}s (writes.bodyTimeout)`))), ms);
    this.timer.unref();
  }

  private stopTimer(): void {
    clearTimeout(this.timer);
  }

  private fail(err: MirrorError): MirrorError {
    this.failure ??= err;
    return err;
  }
}

function tooLarge(max: number): MirrorError {
  return new MirrorError('too-large', `the request body is larger than ${max} bytes (writes.maxBodySize)`);
}

function pick(headers: Record<string, string | string[] | undefined>, names: readonly string[]) {
  return Object.fromEntries(names.filter((n) => headers[n] !== undefined).map((n) => [n, headers[n]]));
}
