// The mirror's one way out: a keep-alive undici Agent (following redirects, since registries answer zipball
// requests with a 302 to object storage) behind one p-queue, so the upstream never sees more than `concurrency`
// requests from us, and one circuit breaker, so that a dead upstream costs no timeouts. Idempotent GETs are
// retried with jittered backoff while nothing has reached a client yet. Upstream statuses and transport failures
// become MirrorErrors here, and nowhere else.
import PQueue from 'p-queue';
import { Agent, errors, interceptors, request, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import type { Config } from '../config/config.js';
import { MirrorError } from '../model/errors.js';
import { CircuitBreaker, type CircuitStatus } from './circuit-breaker.js';

/** Connection limits, timeouts, retries and the circuit breaker's settings: the config's `upstream` section. */
export type UpstreamHttpOptions = Omit<Config['upstream'], 'url' | 'type'>;

/** Validators for a conditional GET. */
export interface Validators {
  readonly etag?: string;
  readonly lastModified?: string;
}

export type JsonAnswer =
  | { readonly notModified: true }
  | { readonly notModified?: false; readonly data: unknown; readonly headers: Headers; readonly validators: Validators };

/** Live requests go first; background work (prefetch) waits behind them. */
export type Priority = 'live' | 'background';
const PRIORITY: Record<Priority, number> = { live: 1, background: 0 };

export interface UpstreamBody {
  readonly body: Readable;
  /** From Content-Length, when the upstream sent one. */
  readonly length: number | undefined;
  /** The response's headers (e.g. a stated checksum, Content-Encoding). */
  readonly headers: Headers;
}

export type Headers = Record<string, string | string[] | undefined>;

export interface ForwardRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Headers;
  readonly body?: Readable;
}

export interface ForwardResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Readable;
}

/** Counts since start, for /-/metrics. */
export interface UpstreamCounts {
  /** HTTP requests sent (retries included). */
  sent: number;
  /** Of those, the ones that got no answer (connection error, timeout). */
  failed: number;
  /** Calls refused at once because the circuit was open. */
  refused: number;
}

interface Shared {
  readonly dispatcher: Dispatcher;
  readonly queue: PQueue;
  readonly breaker: CircuitBreaker;
  readonly counts: UpstreamCounts;
}

export class UpstreamHttp {
  private readonly dispatcher: Dispatcher;
  private readonly queue: PQueue;
  private readonly breaker: CircuitBreaker;
  readonly counts: UpstreamCounts;

  constructor(
    private readonly options: UpstreamHttpOptions,
    shared?: Shared,
    private readonly priority: Priority = 'live',
  ) {
    this.dispatcher =
      shared?.dispatcher ??
      new Agent({
        connect: { timeout: options.connectTimeoutMs },
        headersTimeout: options.headersTimeoutMs,
        bodyTimeout: options.bodyTimeoutMs,
        keepAliveTimeout: 10_000,
      }).compose(interceptors.redirect({ maxRedirections: 5 }));
    this.queue = shared?.queue ?? new PQueue({ concurrency: options.concurrency });
    this.breaker =
      shared?.breaker ?? new CircuitBreaker({ threshold: options.breakerThreshold, minBackoffMs: options.breakerMinMs, maxBackoffMs: options.breakerMaxMs });
    this.counts = shared?.counts ?? { sent: 0, failed: 0, refused: 0 };
  }

  /** The same client (connections, queue, circuit breaker) with requests of another priority. */
  withPriority(priority: Priority): UpstreamHttp {
    return new UpstreamHttp(this.options, { dispatcher: this.dispatcher, queue: this.queue, breaker: this.breaker, counts: this.counts }, priority);
  }

  get circuit(): CircuitStatus {
    return this.breaker.status();
  }

  get pending(): { running: number; waiting: number } {
    return { running: this.queue.pending, waiting: this.queue.size };
  }

  /** GETs JSON, conditionally when validators are given; non-2xx answers and bodies that are not JSON throw. */
  getJson(url: string, since?: Validators): Promise<JsonAnswer> {
    const headers: Headers = { accept: 'application/json' };
    if (since?.etag) headers['if-none-match'] = since.etag;
    if (since?.lastModified) headers['if-modified-since'] = since.lastModified;
    return this.guarded(() =>
      this.retrying(async () => {
        const res = await this.send(url, { method: 'GET', headers });
        const text = await res.body.text().catch((err: unknown) => {
          throw transportError(err, url);
        });
        if (res.statusCode === 304 && since) return { notModified: true } as const;
        let data: unknown;
        try {
          data = JSON.parse(text);
        } catch {
          if (res.statusCode < 300) throw new MirrorError('upstream-failed', `upstream answered ${redact(url)} with a body that is not JSON`);
        }
        if (res.statusCode >= 300) throw statusError(res.statusCode, url, data);
        const validators = { etag: header(res.headers, 'etag'), lastModified: header(res.headers, 'last-modified') };
        return { data, headers: res.headers, validators };
      }),
    );
  }

  /**
   * GETs a download and hands its body to `consume`; the queue slot is held until `consume` settles, so large
   * downloads count against the upstream concurrency too. Retried only until the body starts flowing.
   */
  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T> {
    return this.guarded(async () => {
      const res = await this.retrying(async () => {
        const res = await this.send(url, { method: 'GET', headers: {} });
        if (res.statusCode !== 200) {
          await res.body.dump().catch(() => {});
          throw statusError(res.statusCode, url, undefined);
        }
        return res;
      });
      const length = Number(res.headers['content-length']);
      const body = res.body as unknown as Readable;
      try {
        return await consume({ body, length: Number.isSafeInteger(length) ? length : undefined, headers: res.headers });
      } catch (err) {
        body.destroy();
        throw err instanceof errors.UndiciError ? transportError(err, url) : err;
      }
    });
  }

  /** Sends a request as the client made it, and gives back the upstream's answer unchanged. */
  forward(req: ForwardRequest): Promise<ForwardResponse> {
    return this.guarded(async () => {
      // maxRedirections 0: a redirect is the upstream's answer to pass on, not one for the mirror to follow.
      const res = await this.send(req.url, { method: req.method as Dispatcher.HttpMethod, headers: req.headers, body: req.body, maxRedirections: 0 });
      return { status: res.statusCode, headers: res.headers, body: res.body as unknown as Readable };
    });
  }

  async close(): Promise<void> {
    this.queue.clear();
    await this.dispatcher.close();
  }

  /** Through the circuit breaker (fail fast while the upstream is down), then the queue. */
  private guarded<T>(fn: () => Promise<T>): Promise<T> {
    return this.breaker.run(() => this.queue.add(fn, { priority: PRIORITY[this.priority] })).catch((err: unknown) => {
      if (err instanceof MirrorError && err.kind === 'unavailable') this.counts.refused++;
      throw err;
    });
  }

  private async retrying<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (attempt >= this.options.retries || !(err instanceof MirrorError && err.isUpstreamFailure)) throw err;
        // Full jitter: a crowd of retries does not hit a recovering upstream in step.
        await new Promise((r) => setTimeout(r, Math.random() * this.options.retryDelayMs * 2 ** attempt));
      }
    }
  }

  private async send(url: string, opts: { method: Dispatcher.HttpMethod; headers: Headers; body?: Readable; maxRedirections?: 0 }) {
    this.counts.sent++;
    try {
      return await request(url, { ...opts, dispatcher: this.dispatcher });
    } catch (err) {
      this.counts.failed++;
      throw transportError(err, url);
    }
  }
}

function header(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** A URL fit for messages and logs: pre-signed storage URLs carry credentials in the query. */
function redact(url: string): string {
  return url.split('?')[0]!;
}

function statusError(status: number, url: string, data: unknown): MirrorError {
  const detail = upstreamMessage(data);
  const says = detail ? `: ${detail}` : '';
  if (status === 404 || status === 410) return new MirrorError('not-found', `not found upstream${says}`);
  if (status === 401 || status === 403) return new MirrorError('unauthorized', `the upstream refused access (${status})${says}`);
  return new MirrorError('upstream-failed', `upstream answered ${status} for ${redact(url)}${says}`);
}

/** The upstream's own words: a v3 envelope's string body, or a GitHub-style {message}. */
function upstreamMessage(data: unknown): string | undefined {
  if (data && typeof data === 'object') {
    const { body, message } = data as { body?: unknown; message?: unknown };
    if (typeof body === 'string') return body;
    if (typeof message === 'string') return message;
  }
  return undefined;
}

function transportError(err: unknown, url: string): MirrorError {
  if (err instanceof MirrorError) return err;
  const timeout =
    err instanceof errors.HeadersTimeoutError ||
    err instanceof errors.BodyTimeoutError ||
    err instanceof errors.ConnectTimeoutError;
  const reason = err instanceof Error ? err.message : String(err);
  return new MirrorError(timeout ? 'upstream-timeout' : 'upstream-failed', `upstream request to ${redact(url)} failed: ${reason}`, {
    cause: err,
  });
}
