// The mirror's one way out, and the one place where upstream statuses and transport failures become MirrorErrors.
//
// Reads (metadata, archive downloads) go through one p-queue, so the upstream never sees more than `concurrency`
// of them from us, and one circuit breaker, so that a dead upstream costs no timeouts. Pass-through requests
// (publish, delete, retoken, private reads) have a lane of their own: a slow upload never takes a read's slot.
//
// Every call is bounded: it gets its answer's headers within `deadline` (time waiting for a slot and retries
// included) or fails with 'upstream-timeout', so a blackholed upstream never holds a caller longer than that. Only
// the upstream's own failures (no answer, a timeout, 5xx, 429) count against it and are retried, with jittered
// backoff or the delay its Retry-After asks for, while the next try still fits in the deadline; a 4xx is an answer.
//
// Archive downloads follow redirects themselves, every hop checked by the egress policy (no SSRF), through an Agent
// whose lookup only connects to addresses the policy allows. JSON answers are read up to `maxJsonSize`.
//
// Every request goes out through egress.ts: a forward proxy when one is configured (the policy then checks a
// download's host before the proxy is asked), the CAs of upstream.ca, and the mirror's own upstream credentials on
// its own reads and downloads to the upstream's origins, never on a client's request passed through.
import PQueue from 'p-queue';
import { errors, interceptors, request, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config } from '../config/config.js';
import { MirrorError } from '../model/errors.js';
import { CircuitBreaker, type CircuitStatus, type Ticket } from './circuit-breaker.js';
import { credentialsInterceptor, egressDispatcher, egressHint, proxiesOf, scrub, secretsOf } from './egress.js';
import { EgressPolicy, EgressRefusedError, type EgressPolicyOptions } from './egress-policy.js';

/** The config's `upstream` section (less the protocol type), the writes lane's concurrency, and test seams. */
export interface UpstreamHttpOptions extends Omit<Config['upstream'], 'type'> {
  readonly writes: Pick<Config['writes'], 'concurrency'>;
  /** The circuit breaker's clock. */
  readonly now?: () => number;
  /** Name resolution of download hosts (dns.lookup by default). */
  readonly resolve?: EgressPolicyOptions['resolve'];
}

/**
 * Told of each HTTP request sent upstream (each try, each redirect hop of a download) once its answer's headers are
 * in or it failed: its kind, its outcome (the status class, or error, timeout, refused) and how long that took.
 */
export type UpstreamObserver = (kind: 'metadata' | 'archive' | 'forward', outcome: string, seconds: number) => void;

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
  /** HTTP requests sent (retries and redirect hops included). */
  sent: number;
  /** Of those, the ones that got no answer (connection error, timeout). */
  failed: number;
  /** Calls refused at once because the circuit was open. */
  refused: number;
}

/** Redirects a download follows, each hop checked by the egress policy. */
const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** The longest Retry-After honoured (the deadline usually cuts it shorter). */
const MAX_RETRY_AFTER_MS = 60_000;

/** What UpstreamHttp objects of every priority share: connections, lanes, breaker, counts, and shutdown. */
interface Shared {
  /** Metadata reads (following redirects), with the mirror's upstream credentials. */
  readonly dispatcher: Dispatcher;
  /** Pass-through requests (told not to follow redirects): the same connections, without the mirror's credentials. */
  readonly passThrough: Dispatcher;
  /** Archive downloads: redirects followed by hand, connections only to addresses the egress policy allows. */
  readonly downloads: Dispatcher;
  /** What dispatcher, passThrough and downloads are built on, to destroy at close. */
  readonly agents: readonly Dispatcher[];
  /** Downloads go through a forward proxy (for some hosts at least): each host is checked before it is asked. */
  readonly proxied: boolean;
  /** Values no error message may repeat (egress credentials). */
  readonly secrets: readonly string[];
  readonly reads: PQueue;
  readonly writes: PQueue;
  readonly breaker: CircuitBreaker;
  readonly policy: EgressPolicy;
  readonly counts: UpstreamCounts;
  /** Told of every request sent (observeWith). */
  observe?: UpstreamObserver;
  /** Cancels a call still waiting for a slot, by its cancel function. */
  readonly waiting: Set<(reason: MirrorError) => void>;
  closing: boolean;
  closed?: Promise<void>;
}

/**
 * A try that did not give the caller what it wanted, and what it says about the upstream: 'failure' (its own:
 * counted by the breaker, retried), 'answered' (it answered, e.g. a 4xx: it is up), or 'none' (nothing: a refused
 * URL, a shutdown).
 */
class Failed extends Error {
  constructor(
    readonly error: MirrorError,
    readonly verdict: 'failure' | 'answered' | 'none',
    readonly retryAfterMs?: number,
  ) {
    super(error.message);
  }
}

interface Deadline {
  readonly signal: AbortSignal;
  /** Epoch ms. */
  readonly at: number;
  /** The call has what the deadline bounds (its answer's headers): stop the clock. */
  done(): void;
}

export class UpstreamHttp {
  private readonly shared: Shared;
  readonly counts: UpstreamCounts;

  constructor(
    private readonly options: UpstreamHttpOptions,
    shared?: Shared,
    private readonly priority: Priority = 'live',
  ) {
    this.shared = shared ?? UpstreamHttp.share(options);
    this.counts = this.shared.counts;
  }

  private static share(options: UpstreamHttpOptions): Shared {
    const policy = new EgressPolicy({
      upstreamUrl: options.url,
      commandsUrl: options.commandsUrl,
      archiveHosts: options.archiveHosts,
      allowPrivateHosts: options.allowPrivateHosts,
      resolve: options.resolve,
    });
    const agent = egressDispatcher(options);
    const downloads = egressDispatcher(options, { lookup: policy.lookup });
    const credentials = credentialsInterceptor(options);
    const redirects = interceptors.redirect({ maxRedirections: 5 });
    return {
      // The credentials below the redirects: each hop gets them only when it is on one of the upstream's origins.
      dispatcher: agent.compose(credentials).compose(redirects),
      passThrough: agent.compose(redirects),
      downloads: downloads.compose(credentials),
      agents: [agent, downloads],
      proxied: proxiesOf(options) !== undefined,
      secrets: secretsOf(options),
      reads: new PQueue({ concurrency: options.concurrency }),
      writes: new PQueue({ concurrency: options.writes.concurrency }),
      breaker: new CircuitBreaker({ threshold: options.breakerThreshold, minBackoffMs: options.breakerMinMs, maxBackoffMs: options.breakerMaxMs, now: options.now }),
      policy,
      counts: { sent: 0, failed: 0, refused: 0 },
      waiting: new Set(),
      closing: false,
    };
  }

  /** Tells `observer` of every request sent upstream from now on, by this client and those sharing its connections. */
  observeWith(observer: UpstreamObserver): void {
    this.shared.observe = observer;
  }

  /** The same client (connections, queues, circuit breaker) with requests of another priority. */
  withPriority(priority: Priority): UpstreamHttp {
    return new UpstreamHttp(this.options, this.shared, priority);
  }

  get circuit(): CircuitStatus {
    return this.shared.breaker.status();
  }

  /** Reads under way and waiting for a slot. */
  get pending(): { running: number; waiting: number } {
    return { running: this.shared.reads.pending, waiting: this.shared.reads.size };
  }

  /** GETs JSON, conditionally when validators are given; non-2xx answers and bodies that are not JSON throw. */
  getJson(url: string, since?: Validators): Promise<JsonAnswer> {
    const headers: Headers = { accept: 'application/json' };
    if (since?.etag) headers['if-none-match'] = since.etag;
    if (since?.lastModified) headers['if-modified-since'] = since.lastModified;
    const attempt = async (signal: AbortSignal): Promise<JsonAnswer> => {
      const res = await this.send(this.shared.dispatcher, url, { method: 'GET', headers, signal });
      const text = await readCapped(res, this.options.maxJsonBytes, url, signal);
      if (res.statusCode === 304 && since) return { notModified: true };
      let data: unknown;
      try {
        data = JSON.parse(text);
      } catch {
        if (res.statusCode < 300) throw new Failed(new MirrorError('upstream-failed', `upstream answered ${redact(url)} with a body that is not JSON`), 'failure');
      }
      if (res.statusCode >= 300) throw statusFailure(res.statusCode, url, data, res.headers);
      return { data, headers: res.headers, validators: { etag: header(res.headers, 'etag'), lastModified: header(res.headers, 'last-modified') } };
    };
    return this.read(attempt, async (answer) => answer);
  }

  /**
   * GETs a download (redirects followed, each hop checked) and hands its body to `consume`. The deadline and the
   * circuit breaker see the call up to the answer's headers; the read slot is held until `consume` settles, so
   * large downloads count against the upstream concurrency too. Retried only until the body starts flowing.
   */
  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T> {
    return this.read(
      (signal) => this.fetchArchive(url, signal),
      async (res) => {
        const body = res.body as unknown as Readable;
        body.on('error', () => {}); // a body the consumer drops without reading must not throw an uncaught 'error'
        const length = Number(res.headers['content-length']);
        try {
          return await consume({ body, length: Number.isSafeInteger(length) ? length : undefined, headers: res.headers });
        } catch (err) {
          body.destroy();
          throw err instanceof errors.UndiciError ? transportError(err, url) : err;
        }
      },
    );
  }

  /**
   * Sends a request as the client made it, and gives back the upstream's answer unchanged (a redirect is the
   * upstream's answer to pass on, not one to follow). In the pass-through lane: the deadline bounds only its wait
   * for a slot (an upload may rightly take longer; the body guard and undici's timeouts bound it), and the breaker
   * only refuses it while the upstream is down: its outcome tells the breaker nothing.
   */
  forward(req: ForwardRequest): Promise<ForwardResponse> {
    try {
      this.gate(() => this.shared.breaker.check());
    } catch (err) {
      return Promise.reject(err);
    }
    const deadline = this.deadline();
    return this.queued(this.shared.writes, deadline, async () => {
      deadline.done();
      try {
        const method = req.method as Dispatcher.HttpMethod;
        // The client's credentials or none: the mirror's own (upstream.token, upstream.headers) would let any client
        // write, or read private content, as the mirror.
        const res = await this.send(this.shared.passThrough, req.url, { method, headers: req.headers, body: req.body, maxRedirections: 0 });
        const body = res.body as unknown as Readable;
        body.on('error', () => {}); // the face may never get to read it (its client gone)
        return { status: res.statusCode, headers: res.headers, body };
      } catch (err) {
        throw err instanceof Failed ? err.error : err;
      }
    });
  }

  /**
   * Shuts down: new calls and calls still waiting for a slot are refused ('unavailable', shutting down) at once;
   * calls under way (and `alsoWaitFor`, e.g. the server's connections) get up to graceMs to finish, then every
   * connection is destroyed. (Not dispatcher.close(): undici's destroy() after a pending close() leaves the bodies
   * in flight hanging instead of failing them.)
   */
  close(graceMs: number, alsoWaitFor?: Promise<unknown>): Promise<void> {
    this.shared.closed ??= (async () => {
      this.shared.closing = true;
      for (const cancel of [...this.shared.waiting]) cancel(shuttingDown());
      const timer = new AbortController();
      await Promise.race([
        Promise.all([this.shared.reads.onIdle(), this.shared.writes.onIdle(), alsoWaitFor]),
        sleep(graceMs, undefined, { signal: timer.signal }).catch(() => {}),
      ]);
      timer.abort();
      await Promise.all(this.shared.agents.map((a) => a.destroy()));
    })();
    return this.shared.closed;
  }

  /**
   * One read: admitted by the breaker, given a deadline, queued, tried (and retried) up to its answer's headers,
   * which settle the breaker's ticket; then `then` runs on the answer, still holding the read slot.
   */
  private read<R, T>(attempt: (signal: AbortSignal) => Promise<R>, then: (r: R) => Promise<T>): Promise<T> {
    let ticket: Ticket;
    try {
      ticket = this.gate(() => this.shared.breaker.admit());
    } catch (err) {
      return Promise.reject(err);
    }
    const deadline = this.deadline();
    const task = async () => {
      let answer: R;
      try {
        answer = await this.retrying(attempt, deadline);
      } catch (err) {
        if (!(err instanceof Failed)) throw err;
        if (err.verdict === 'failure') ticket.failed(err.error);
        else if (err.verdict === 'answered') ticket.succeeded();
        throw err.error;
      } finally {
        deadline.done();
      }
      ticket.succeeded();
      return then(answer);
    };
    return this.queued(this.shared.reads, deadline, task).finally(() => ticket.abandoned()); // a no-op once reported
  }

  /** Lets a call in through the breaker's `pass` (counting its refusals), or refuses it while shutting down. */
  private gate<T>(pass: () => T): T {
    if (this.shared.closing) throw shuttingDown();
    try {
      return pass();
    } catch (err) {
      this.counts.refused++;
      throw err;
    }
  }

  private deadline(): Deadline {
    const controller = new AbortController();
    const ms = this.options.deadlineMs;
    const reason = () => new MirrorError('upstream-timeout', `the upstream did not answer within ${ms / 1000}s`);
    const timer = setTimeout(() => controller.abort(reason()), ms);
    timer.unref();
    return { signal: controller.signal, at: Date.now() + ms, done: () => clearTimeout(timer) };
  }

  /**
   * Runs `task` in a lane. While it waits for a slot, the deadline or a shutdown rejects it (and takes it out of the
   * queue); once it runs, the queue is no longer told, since p-queue would give up the slot of a task still running.
   */
  private queued<T>(queue: PQueue, deadline: Deadline, task: () => Promise<T>): Promise<T> {
    const waiting = new AbortController();
    const cancel = (reason: MirrorError) => waiting.abort(reason);
    const onDeadline = () => cancel(deadline.signal.reason as MirrorError);
    const started = () => {
      deadline.signal.removeEventListener('abort', onDeadline);
      this.shared.waiting.delete(cancel);
    };
    deadline.signal.addEventListener('abort', onDeadline, { once: true });
    this.shared.waiting.add(cancel);
    const run = () => {
      started();
      return task();
    };
    return queue
      .add(run, { priority: PRIORITY[this.priority], signal: waiting.signal })
      .finally(() => {
        started();
        deadline.done(); // a call refused while waiting stops its clock too
      });
  }

  /** Tries again after the upstream's own failures, while tries remain and the next one fits in the deadline. */
  private async retrying<T>(attempt: (signal: AbortSignal) => Promise<T>, deadline: Deadline): Promise<T> {
    for (let n = 0; ; n++) {
      try {
        return await attempt(deadline.signal);
      } catch (err) {
        if (!(err instanceof Failed) || err.verdict !== 'failure' || n >= this.options.retries || deadline.signal.aborted || this.shared.closing) throw err;
        // Full jitter: a crowd of retries does not hit a recovering upstream in step.
        const delay = err.retryAfterMs ?? Math.random() * this.options.retryDelayMs * 2 ** n;
        if (Date.now() + delay >= deadline.at) throw err;
        await sleep(delay, undefined, { signal: deadline.signal }).catch(() => {
          throw new Failed(deadline.signal.reason as MirrorError, 'failure');
        });
      }
    }
  }

  /** GETs an archive, following up to MAX_REDIRECTS redirects, each target checked by the egress policy first. */
  private async fetchArchive(url: string, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    let target = new URL(url);
    for (let hops = 0; ; hops++) {
      await this.shared.policy.checkUrl(target).catch((err: unknown) => {
        throw new Failed(transportError(err, target.href), 'none');
      });
      if (this.shared.proxied) {
        await this.shared.policy.checkBeforeProxy(target).catch((err: unknown) => {
          throw new Failed(transportError(err, target.href), 'none');
        });
      }
      const res = await this.send(this.shared.downloads, target.href, { method: 'GET', headers: {}, signal, hop: hops > 0 });
      const location = header(res.headers, 'location');
      if (REDIRECT_STATUSES.has(res.statusCode) && location) {
        await res.body.dump().catch(() => {});
        if (hops >= MAX_REDIRECTS) throw new Failed(new MirrorError('upstream-failed', `more than ${MAX_REDIRECTS} redirects for ${redact(url)}`), 'answered');
        target = new URL(location, target);
        continue;
      }
      if (res.statusCode !== 200) {
        await res.body.dump().catch(() => {});
        throw statusFailure(res.statusCode, url, undefined, res.headers);
      }
      return res;
    }
  }

  private async send(
    dispatcher: Dispatcher,
    url: string,
    { hop, ...opts }: { method: Dispatcher.HttpMethod; headers: Headers; body?: Readable; maxRedirections?: 0; signal?: AbortSignal; hop?: boolean },
  ): Promise<Dispatcher.ResponseData> {
    if (!hop) this.counts.sent++; // a followed redirect is part of its request, as for the redirect interceptor
    const started = performance.now();
    const observed = (outcome: string) =>
      this.shared.observe?.(dispatcher === this.shared.downloads ? 'archive' : opts.maxRedirections === 0 ? 'forward' : 'metadata', outcome, (performance.now() - started) / 1000);
    try {
      const res = await request(url, { ...opts, dispatcher });
      observed(`${Math.floor(res.statusCode / 100)}xx`);
      return res;
    } catch (err) {
      if (opts.signal?.aborted) {
        observed('timeout');
        throw new Failed(opts.signal.reason as MirrorError, 'failure'); // the deadline passed
      }
      const refused = refusal(err);
      observed(refused ? 'refused' : transportError(err, url).kind === 'upstream-timeout' ? 'timeout' : 'error');
      if (refused) throw new Failed(refused, 'none');
      this.counts.failed++;
      throw new Failed(transportError(err, url, this.shared.secrets), this.shared.closing ? 'none' : 'failure');
    }
  }
}

/** Reads a body as text, failing once it is larger than `max` (by its Content-Length, or as it streams). */
async function readCapped(res: Dispatcher.ResponseData, max: number, url: string, signal: AbortSignal): Promise<string> {
  const tooLarge = () => {
    res.body.destroy();
    return new Failed(new MirrorError('upstream-failed', `upstream answered ${redact(url)} with more than ${max} bytes of JSON`), 'answered');
  };
  if (Number(res.headers['content-length']) > max) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > max) throw tooLarge();
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (err instanceof Failed) throw err;
    if (signal.aborted) throw new Failed(signal.reason as MirrorError, 'failure');
    throw new Failed(transportError(err, url), 'failure');
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The delay a Retry-After header asks for (seconds, or an HTTP date), capped; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const ms = /^\s*\d+\s*$/.test(value) ? Number(value) * 1000 : Date.parse(value) - now;
  return Number.isFinite(ms) ? Math.min(Math.max(0, ms), MAX_RETRY_AFTER_MS) : undefined;
}

function header(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** A URL fit for messages and logs: pre-signed storage URLs carry credentials in the query. */
function redact(url: string): string {
  return url.split('?')[0]!;
}

/** An upstream status as a failed try: 5xx and 429 are the upstream's failures; any other status is an answer. */
function statusFailure(status: number, url: string, data: unknown, headers: Headers): Failed {
  const error = statusError(status, url, data);
  if (status >= 500 || status === 429) return new Failed(error, 'failure', parseRetryAfter(header(headers, 'retry-after')));
  return new Failed(error, 'answered');
}

function statusError(status: number, url: string, data: unknown): MirrorError {
  const detail = upstreamMessage(data);
  const says = detail ? `: ${detail}` : '';
  if (status === 404 || status === 410) return new MirrorError('not-found', `not found upstream${says}`);
  if (status === 401 || status === 403) return new MirrorError('unauthorized', `the upstream refused access (${status})${says}`);
  // The upstream rejects what was asked (e.g. a name it does not accept): the client's answer, not a failure.
  if (status === 400) return new MirrorError('bad-request', `the upstream rejected the request (400)${says}`);
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

/** The egress policy's refusal, when that is what stopped a connection (it may come back wrapped). */
function refusal(err: unknown): EgressRefusedError | undefined {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) if (e instanceof EgressRefusedError) return e;
  return undefined;
}

function shuttingDown(): MirrorError {
  return new MirrorError('unavailable', 'the mirror is shutting down');
}

function transportError(err: unknown, url: string, secrets: readonly string[] = []): MirrorError {
  if (err instanceof MirrorError) return err;
  const timeout =
    err instanceof errors.HeadersTimeoutError ||
    err instanceof errors.BodyTimeoutError ||
    err instanceof errors.ConnectTimeoutError;
  const hint = egressHint(err);
  const reason = scrub(err instanceof Error ? err.message : String(err), secrets) + (hint ? ` (${hint})` : '');
  return new MirrorError(timeout ? 'upstream-timeout' : 'upstream-failed', `upstream request to ${redact(url)} failed: ${reason}`, {
    cause: err,
  });
}
