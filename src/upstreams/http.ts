// The mirror's one way out: a keep-alive undici Agent (following redirects, since registries answer zipball
// requests with a 302 to object storage) behind one p-queue, so the upstream never sees more than `concurrency`
// requests from us. Upstream statuses and transport failures become MirrorErrors here, and nowhere else.
import PQueue from 'p-queue';
import { Agent, errors, interceptors, request, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { MirrorError } from '../model/errors.js';

export interface UpstreamHttpOptions {
  readonly concurrency: number;
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
}

export interface UpstreamBody {
  readonly body: Readable;
  /** From Content-Length, when the upstream sent one. */
  readonly length: number | undefined;
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

export class UpstreamHttp {
  private readonly dispatcher: Dispatcher;
  private readonly queue: PQueue;

  constructor(options: UpstreamHttpOptions) {
    this.dispatcher = new Agent({
      connect: { timeout: options.connectTimeoutMs },
      headersTimeout: options.headersTimeoutMs,
      bodyTimeout: options.bodyTimeoutMs,
      keepAliveTimeout: 10_000,
    }).compose(interceptors.redirect({ maxRedirections: 5 }));
    this.queue = new PQueue({ concurrency: options.concurrency });
  }

  /** GETs JSON; a non-2xx answer or a body that is not JSON becomes a MirrorError. */
  getJson(url: string): Promise<{ data: unknown; headers: Headers }> {
    return this.queue.add(async () => {
      const res = await this.send(url, { method: 'GET', headers: { accept: 'application/json' } });
      const text = await res.body.text().catch((err: unknown) => {
        throw transportError(err, url);
      });
      let data: unknown;
      try {
        data = JSON.parse(text);
      } catch {
        if (res.statusCode < 300) throw new MirrorError('upstream-failed', `upstream answered ${redact(url)} with a body that is not JSON`);
      }
      if (res.statusCode >= 300) throw statusError(res.statusCode, url, data);
      return { data, headers: res.headers };
    });
  }

  /**
   * GETs a download and hands its body to `consume`; the queue slot is held until `consume` settles, so large
   * downloads count against the upstream concurrency too.
   */
  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T> {
    return this.queue.add(async () => {
      const res = await this.send(url, { method: 'GET', headers: {} });
      if (res.statusCode !== 200) {
        await res.body.dump().catch(() => {});
        throw statusError(res.statusCode, url, undefined);
      }
      const length = Number(res.headers['content-length']);
      const body = res.body as unknown as Readable;
      try {
        return await consume({ body, length: Number.isSafeInteger(length) ? length : undefined });
      } catch (err) {
        body.destroy();
        throw err instanceof errors.UndiciError ? transportError(err, url) : err;
      }
    });
  }

  /** Sends a request as the client made it, and gives back the upstream's answer unchanged. */
  forward(req: ForwardRequest): Promise<ForwardResponse> {
    return this.queue.add(async () => {
      const res = await this.send(req.url, { method: req.method as Dispatcher.HttpMethod, headers: req.headers, body: req.body });
      return { status: res.statusCode, headers: res.headers, body: res.body as unknown as Readable };
    });
  }

  async close(): Promise<void> {
    this.queue.clear();
    await this.dispatcher.close();
  }

  private async send(url: string, opts: { method: Dispatcher.HttpMethod; headers: Headers; body?: Readable }) {
    try {
      return await request(url, { ...opts, dispatcher: this.dispatcher });
    } catch (err) {
      throw transportError(err, url);
    }
  }
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
