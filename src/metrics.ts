// GET /-/metrics, with prom-client, on a registry of the mirror's own (several mirrors may run in one process: the
// tests do). Two kinds of metrics:
//   - observed as things happen: each answered request (by route, x-cache and status class) and each upstream request;
//   - read from the mirror's parts when scraped (the figures of /-/status, and the counters the parts keep), so that
//     the core needs no metrics library.
// plus prom-client's default process and event-loop metrics. docs/operations.md "Metrics" lists every family.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { accessLine, requestIdOf, type Logger } from './log.js';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { PrefetchTotals } from './jobs/prefetch.js';
import type { CircuitStatus } from './upstreams/circuit-breaker.js';
import type { UpstreamCounts, UpstreamObserver } from './upstreams/http.js';

/** The route label of a request: a small fixed set, never a raw path (a path is unbounded and may name anything). */
export type Route = 'v3_release' | 'v3_list' | 'zipball' | 'srm' | 'generic' | 'ops' | 'other';
export const ROUTES: readonly Route[] = ['v3_release', 'v3_list', 'zipball', 'srm', 'generic', 'ops', 'other'];

/** The x-cache values the mirror sets; anything else (none, or a value it did not set) is counted apart. */
const CACHE_LABELS = new Set(['HIT', 'MISS', 'REVALIDATED', 'STALE', 'OFFLINE', 'BYPASS', 'HOSTED']);
export function cacheLabel(value: unknown): string {
  return value === undefined ? 'none' : CACHE_LABELS.has(value as string) ? (value as string) : 'other';
}

const CODES = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'];
const codeLabel = (status: number) => CODES[Math.floor(status / 100)] ?? 'other';

/**
 * Which route a request is for, from its method and path (cheap: it runs on every request). Reads only: a write to
 * the same path (publish, delete) is `other`, except generic packages, whose uploads are `generic`.
 */
export function routeOf(method: string | undefined, url: string): Route {
  if (url.startsWith('/-/')) return 'ops';
  if (url.startsWith('/api/')) return 'generic';
  if (method !== 'GET' && method !== 'HEAD') return 'other';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  if (path.startsWith('/v3/packages/')) {
    const rest = path.slice('/v3/packages/'.length);
    if (rest === 'releases') return 'v3_list';
    const sub = rest.slice(rest.indexOf('/') + 1);
    if (sub === 'release' || sub.startsWith('release/')) return 'v3_release';
    if (sub.startsWith('zipball/')) return 'zipball';
    return 'other';
  }
  if (path.startsWith('/v3/')) return 'other';
  // The SRM face: {package}/releases[/latest|/tags/{tag}] and {package}/zipball/{version}, package "name" or "owner/name".
  if (/^\/[^/]+(?:\/[^/]+)?\/zipball\/[^/]+$/.test(path)) return 'zipball';
  if (/^\/[^/]+(?:\/[^/]+)?\/releases(?:\/latest|\/tags\/[^/]+)?$/.test(path)) return 'srm';
  return 'other';
}

/** Request durations: from a 1 ms metadata HIT to a multi-minute archive download. */
const REQUEST_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
/** Upstream requests, timed to their answer's headers. */
const UPSTREAM_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Import counts (since start). */
export interface ImportTotals {
  readonly runs: { complete: number; partial: number; dry_run: number; failed: number };
  readonly blobs: number;
  readonly bytes: number;
}

/** What the scrape reads from the mirror's parts. */
export interface MetricsSources {
  readonly upstream: () => { readonly counts: UpstreamCounts; readonly circuit: CircuitStatus; readonly pending: { running: number; waiting: number } };
  readonly archives: () => {
    readonly fillsInProgress: number;
    readonly rejected: number;
    readonly coalesced: number;
    readonly diskProblem: unknown;
    readonly quota: { maxBytes: number; usedBytes: number; archives: number };
    readonly scrub: {
      readonly running: boolean;
      readonly corruptFound: number;
      readonly runs: { readonly completed: number; readonly failed: number };
      readonly lastRun: { startedAt: string; durationMs: number; archives: number; corrupt: readonly unknown[]; unreferenced: readonly unknown[]; missing: readonly unknown[] } | undefined;
    };
  };
  readonly evicted: () => { readonly removed: number; readonly bytes: number };
  readonly metadata: () => { readonly coalesced: number; readonly problem: boolean };
  readonly hosted: () => { readonly blobs: number; readonly bytes: number; readonly corrupt: number; readonly quotaBytes: number };
  readonly prefetch: () => Promise<{
    readonly followed: number;
    readonly running: boolean;
    readonly totals: PrefetchTotals;
    readonly lastRun: { startedAt: string; durationMs: number; failures: readonly unknown[] } | undefined;
  }>;
  readonly imports: () => ImportTotals & { readonly running: boolean };
}

type Labels = Record<string, string>;

/**
 * The per-request figures, kept in plain maps: a request costs a few map lookups and additions. (prom-client's own
 * inc() and observe() hash their labels on every call: about 2 us of the hot path's 70 here.) The maps are nested, one
 * level per label, so that a lookup hashes only the labels' constant strings, never a key built for the request.
 * prom-client formats them when scraped, through metric objects of the shape its Registry reads (name, help, type
 * and get()).
 */
class RequestStats {
  /** By cache, then status class. */
  private readonly byCode = new Map<string, Map<string, { readonly labels: Labels; responses: number; bytes: number }>>();
  /** By route, then cache. */
  private readonly byRoute = new Map<Route, Map<string, { readonly labels: Labels; readonly buckets: Float64Array; sum: number; count: number }>>();
  private readonly cut = new Map<Route, number>();

  record(route: Route, cache: string, status: number, seconds: number, bytes: number): void {
    const code = codeLabel(status);
    const codes = within(this.byCode, cache);
    let c = codes.get(code);
    if (!c) codes.set(code, (c = { labels: { cache, code }, responses: 0, bytes: 0 }));
    c.responses++;
    c.bytes += bytes;
    const caches = within(this.byRoute, route);
    let h = caches.get(cache);
    if (!h) caches.set(cache, (h = { labels: { route, cache }, buckets: new Float64Array(REQUEST_BUCKETS.length), sum: 0, count: 0 }));
    let i = 0;
    while (i < REQUEST_BUCKETS.length && seconds > REQUEST_BUCKETS[i]!) i++;
    if (i < REQUEST_BUCKETS.length) h.buckets[i]!++;
    h.sum += seconds;
    h.count++;
  }

  aborted(route: Route): void {
    this.cut.set(route, (this.cut.get(route) ?? 0) + 1);
  }

  /** The metric objects to register. */
  metrics(): object[] {
    const metric = (name: string, help: string, type: 'counter' | 'histogram', values: () => unknown[]) => ({
      name,
      help,
      type,
      aggregator: 'sum',
      get: () => Promise.resolve({ name, help, type, aggregator: 'sum', values: values() }),
      reset: () => {},
    });
    return [
      metric('srm_mirror_responses_total', 'Answers sent, by x-cache and status class.', 'counter', () => leaves(this.byCode).map((c) => ({ labels: c.labels, value: c.responses }))),
      metric('srm_mirror_response_bytes_total', 'Bytes sent, headers included, by x-cache and status class.', 'counter', () => leaves(this.byCode).map((c) => ({ labels: c.labels, value: c.bytes }))),
      metric('srm_mirror_request_duration_seconds', 'Time from a request to the end of its answer, by route and x-cache.', 'histogram', () =>
        leaves(this.byRoute).flatMap((h) => {
          let cumulative = 0;
          const name = 'srm_mirror_request_duration_seconds';
          return [
            ...REQUEST_BUCKETS.map((le, i) => ({ metricName: `${name}_bucket`, labels: { ...h.labels, le }, value: (cumulative += h.buckets[i]!) })),
            { metricName: `${name}_bucket`, labels: { ...h.labels, le: '+Inf' }, value: h.count },
            { metricName: `${name}_sum`, labels: h.labels, value: h.sum },
            { metricName: `${name}_count`, labels: h.labels, value: h.count },
          ];
        }),
      ),
      metric('srm_mirror_responses_aborted_total', 'Answers cut before their end (the client went away, or the mirror cut a broken one), by route.', 'counter', () =>
        [...this.cut].map(([route, value]) => ({ labels: { route }, value })),
      ),
    ];
  }
}

/** The map under `key` in a map of maps, made on first use. */
function within<K, V>(maps: Map<K, Map<string, V>>, key: K): Map<string, V> {
  let inner = maps.get(key);
  if (!inner) maps.set(key, (inner = new Map()));
  return inner;
}

/** Every entry of a map of maps. */
const leaves = <K, V>(maps: Map<K, Map<string, V>>): V[] => [...maps.values()].flatMap((inner) => [...inner.values()]);

export class MirrorMetrics {
  readonly registry = new Registry();
  private readonly requests = new RequestStats();
  private readonly upstreamDuration: Histogram<'kind' | 'outcome'>;

  /** `replica`: every series carries it (replicas of one fleet scraped side by side). */
  constructor({ replica }: { replica?: string } = {}) {
    if (replica !== undefined) this.registry.setDefaultLabels({ replica });
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    for (const m of this.requests.metrics()) this.registry.registerMetric(m as Parameters<Registry['registerMetric']>[0]);
    this.upstreamDuration = new Histogram({
      name: 'srm_mirror_upstream_request_duration_seconds',
      help: "Upstream requests, timed to their answer's headers, by kind (metadata, archive, forward) and outcome (status class, error, timeout, refused).",
      labelNames: ['kind', 'outcome'],
      buckets: UPSTREAM_BUCKETS,
      registers,
    });
  }

  /** Counts one answered request (finished: its last byte went out; otherwise aborted). */
  answered(route: Route, cache: string, status: number, seconds: number, bytes: number, finished: boolean): void {
    if (finished) this.requests.record(route, cache, status, seconds, bytes);
    else this.requests.aborted(route);
  }

  /** For UpstreamHttp: each upstream request, once its headers are in or it failed. */
  readonly upstream: UpstreamObserver = (kind, outcome, seconds) => this.upstreamDuration.observe({ kind, outcome }, seconds);

  /** The metrics read from the mirror's parts when scraped. */
  watch(s: MetricsSources): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, read: () => number | Promise<number>) =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          this.set(await read());
        },
      });
    const gauges = (name: string, help: string, label: string, read: () => Array<readonly [string, number]>) =>
      new Gauge({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          this.reset();
          for (const [value, v] of read()) this.set({ [label]: value } as Labels, v);
        },
      });
    // Counters the mirror's parts keep: set to their value at each scrape.
    const counter = (name: string, help: string, read: () => number | Promise<number>) =>
      new Counter({
        name,
        help,
        registers,
        async collect() {
          this.reset();
          this.inc(await read());
        },
      });
    const counters = (name: string, help: string, label: string, read: () => Record<string, number>) =>
      new Counter({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          this.reset();
          for (const [value, v] of Object.entries(read())) this.inc({ [label]: value } as Labels, v);
        },
      });
    const seconds = (iso: string | undefined) => (iso ? Date.parse(iso) / 1000 : 0);

    // The upstream.
    counter('srm_mirror_upstream_requests_total', 'Requests sent to the upstream, retries included (a followed redirect is part of its request).', () => s.upstream().counts.sent);
    counter('srm_mirror_upstream_failures_total', 'Upstream requests that got no answer (connection error, timeout).', () => s.upstream().counts.failed);
    counter('srm_mirror_upstream_refused_total', 'Upstream calls refused at once while the circuit was open.', () => s.upstream().counts.refused);
    gauge('srm_mirror_upstream_circuit_open', '1 while the upstream is marked down (circuit open or half-open).', () => (s.upstream().circuit.state === 'closed' ? 0 : 1));
    gauges('srm_mirror_upstream_circuit_state', "The circuit breaker's state: 1 for the current one.", 'state', () => {
      const { state } = s.upstream().circuit;
      return (['closed', 'open', 'half-open'] as const).map((x) => [x, x === state ? 1 : 0] as const);
    });
    gauge('srm_mirror_upstream_consecutive_failures', 'Upstream failures in a row (the breaker opens at its threshold).', () => s.upstream().circuit.consecutiveFailures);
    gauge('srm_mirror_upstream_requests_running', 'Upstream requests under way.', () => s.upstream().pending.running);
    gauge('srm_mirror_upstream_requests_waiting', 'Upstream requests waiting for a slot.', () => s.upstream().pending.waiting);

    // Cached archives.
    gauge('srm_mirror_archive_fills_running', 'Archive downloads into the cache under way.', () => s.archives().fillsInProgress);
    gauge('srm_mirror_archives', 'Archives on disk.', () => s.archives().quota.archives);
    gauge('srm_mirror_archive_bytes', 'Bytes of archives on disk.', () => s.archives().quota.usedBytes);
    gauge('srm_mirror_archive_quota_bytes', 'The disk quota for archives (0: none).', () => s.archives().quota.maxBytes);
    gauge('srm_mirror_disk_problem', '1 while archives cannot be written (downloads pass through uncached).', () => (s.archives().diskProblem ? 1 : 0));
    counter('srm_mirror_archives_rejected_total', 'Upstream archives refused before they were stored (truncated, not the stated digest, not a zip).', () => s.archives().rejected);
    counter('srm_mirror_archives_corrupt_total', 'Stored archives found corrupt (on serve or by the scrub) and dropped.', () => s.archives().scrub.corruptFound);
    counter('srm_mirror_archive_evictions_total', 'Archives evicted (least recently used first) to keep under the quota.', () => s.evicted().removed);
    counter('srm_mirror_archive_evicted_bytes_total', 'Bytes of the archives evicted to keep under the quota.', () => s.evicted().bytes);
    counters('srm_mirror_coalesced_requests_total', 'Requests that joined an upstream fetch already under way for the same thing (single-flight followers) instead of starting one: metadata, archive fills.', 'kind', () => ({
      metadata: s.metadata().coalesced,
      archive: s.archives().coalesced,
    }));
    gauge('srm_mirror_metadata_problem', '1 while the metadata database is failing (reads and writes that fail pass through uncached).', () => (s.metadata().problem ? 1 : 0));

    // The scrub.
    gauge('srm_mirror_scrub_running', '1 while a scrub runs.', () => (s.archives().scrub.running ? 1 : 0));
    counters('srm_mirror_scrub_runs_total', 'Scrubs that ended, by result (completed, failed).', 'result', () => ({ ...s.archives().scrub.runs }));
    gauge('srm_mirror_scrub_last_run_timestamp_seconds', 'When the last scrub started (0: never since start).', () => seconds(s.archives().scrub.lastRun?.startedAt));
    gauge('srm_mirror_scrub_last_run_duration_seconds', 'How long the last scrub took.', () => (s.archives().scrub.lastRun?.durationMs ?? 0) / 1000);
    gauges('srm_mirror_scrub_last_run_archives', 'What the last scrub found: archives checked, corrupt (dropped), unreferenced, and versions whose archive is missing.', 'result', () => {
      const last = s.archives().scrub.lastRun;
      return [
        ['checked', last?.archives ?? 0],
        ['corrupt', last?.corrupt.length ?? 0],
        ['unreferenced', last?.unreferenced.length ?? 0],
        ['missing', last?.missing.length ?? 0],
      ] as const;
    });

    // Hosted content.
    gauge('srm_mirror_hosted_blobs', 'Hosted files on disk (files with the same bytes are one).', () => s.hosted().blobs);
    gauge('srm_mirror_hosted_bytes', 'Bytes of hosted files on disk.', () => s.hosted().bytes);
    gauge('srm_mirror_hosted_quota_bytes', 'The limit on hosted bytes (hosted.maxSize; 0: none).', () => s.hosted().quotaBytes);
    gauge('srm_mirror_hosted_corrupt', 'Hosted files the last audit found corrupt (kept, answered 500: restore them).', () => s.hosted().corrupt);

    // Prefetch: one read of its state per scrape (the last run is read from the metadata database).
    let prefetch: ReturnType<MetricsSources['prefetch']> | undefined;
    const p = () => (prefetch ??= s.prefetch().finally(() => setImmediate(() => (prefetch = undefined))));
    gauge('srm_mirror_prefetch_followed_packages', 'Packages prefetch keeps warm.', async () => (await p()).followed);
    gauge('srm_mirror_prefetch_running', '1 while a prefetch run is under way.', async () => ((await p()).running ? 1 : 0));
    new Counter({
      name: 'srm_mirror_prefetch_runs_total',
      help: 'Prefetch runs that ended, by result: ok (every package), failures (some packages failed), failed (the run itself).',
      labelNames: ['result'],
      registers,
      async collect() {
        this.reset();
        for (const [result, v] of Object.entries((await p()).totals.runs)) this.inc({ result }, v);
      },
    });
    new Counter({
      name: 'srm_mirror_prefetch_archives_total',
      help: 'Archives prefetch made sure of, by result: fetched (downloaded now) or cached (there already).',
      labelNames: ['result'],
      registers,
      async collect() {
        this.reset();
        const { totals } = await p();
        this.inc({ result: 'fetched' }, totals.archivesFetched);
        this.inc({ result: 'cached' }, totals.archivesCached);
      },
    });
    counter('srm_mirror_prefetch_bytes_total', 'Bytes of the archives prefetch downloaded.', async () => (await p()).totals.bytes);
    counter('srm_mirror_prefetch_package_failures_total', 'Packages a prefetch run failed on, summed over runs.', async () => (await p()).totals.packageFailures);
    gauge('srm_mirror_prefetch_last_run_timestamp_seconds', 'When the last prefetch run started (0: never).', async () => seconds((await p()).lastRun?.startedAt));
    gauge('srm_mirror_prefetch_last_run_duration_seconds', 'How long the last prefetch run took.', async () => ((await p()).lastRun?.durationMs ?? 0) / 1000);
    gauge('srm_mirror_prefetch_last_run_failures', 'Packages the last prefetch run failed on.', async () => (await p()).lastRun?.failures.length ?? 0);

    // Bundle imports.
    gauge('srm_mirror_import_running', '1 while a bundle import runs.', () => (s.imports().running ? 1 : 0));
    counters('srm_mirror_imports_total', 'Bundle imports that ended, by result: complete, partial (volumes to come, or entries not imported), dry_run, failed.', 'result', () => ({ ...s.imports().runs }));
    counter('srm_mirror_import_blobs_total', 'Blobs bundle imports stored.', () => s.imports().blobs);
    counter('srm_mirror_import_bytes_total', 'Bytes bundle imports stored.', () => s.imports().bytes);
  }

  /** The metrics in Prometheus's text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/**
 * Watches each request: gives it a request id (its valid x-request-id, else a new one), returned in the x-request-id
 * header; once it is answered (or cut), counts it in `metrics` and writes its access-log line at info (unless
 * accessLog is false).
 */
export function requestObserver(metrics: MirrorMetrics, log: Logger, { accessLog = true }: { accessLog?: boolean } = {}): (req: IncomingMessage, res: ServerResponse) => void {
  const logged = accessLog && log.enabled('info');
  return (req, res) => {
    const id = requestIdOf(req);
    res.setHeader('x-request-id', id);
    const url = req.url ?? '';
    const route = routeOf(req.method, url);
    const started = performance.now();
    // The socket is captured now: by 'finish', node may have detached it from the request (an answer sent before
    // the request body was read, e.g. an upstream 401 to a large upload), and req.socket is then null.
    const socket = req.socket;
    const before = socket.bytesWritten;
    const end = (finished: boolean) => {
      const seconds = (performance.now() - started) / 1000;
      const cache = cacheLabel(res.getHeader('x-cache'));
      const bytes = socket.bytesWritten - before;
      metrics.answered(route, cache, res.statusCode, seconds, bytes, finished);
      if (logged) accessLine(log, req, url, res, id, { route, cache, seconds, bytes, aborted: !finished });
    };
    // 'finish' as the last byte is handed to the socket (before a pipelined next answer writes to it); 'close' alone
    // for an answer cut before its end. (`on`, not `once`: each is emitted once, and `once` costs a wrapper.)
    res.on('finish', () => end(true));
    res.on('close', () => void (res.writableFinished || end(false)));
  };
}
