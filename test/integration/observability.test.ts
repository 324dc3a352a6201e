// Operations (issue 12, item 5): /-/metrics as valid Prometheus text with the families operators need, a JSON access
// log line per request with a request id, and /-/ready, which never depends on the upstream.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { get, removeTempDirs, send, startMirror, until, type TestMirror } from '../helpers.js';
import { parsePrometheusText, type MetricType, type PromFamily } from '../prometheus-text.js';

let fake: FakeUpstream;
const mirrors: TestMirror[] = [];
const ZIP = componentZip('fc3', '0.1.2', { payload: Buffer.alloc(50_000, 7) });

async function mirrorOf(upstream: string, flags: Record<string, string | boolean> = {}): Promise<TestMirror> {
  const m = await startMirror(upstream, flags);
  mirrors.push(m);
  return m;
}

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '0.1.2', zip: ZIP }, { version: '0.1.1' }]);
});

afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.close()));
  await fake.close();
  await removeTempDirs();
});

async function scrape(m: TestMirror): Promise<Map<string, PromFamily>> {
  const res = await get(`${m.url}/-/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(res.body.toString());
}

/** The value of one series (labels matched exactly), undefined when absent. */
function value(families: Map<string, PromFamily>, family: string, sample: string, labels: Record<string, string> = {}): number | undefined {
  return families.get(family)?.samples.find((s) => s.name === sample && JSON.stringify(Object.entries(s.labels).sort()) === JSON.stringify(Object.entries(labels).sort()))?.value;
}

/** Every family /-/metrics must have, with its type (docs/operations.md "Metrics"). */
const FAMILIES: Record<string, MetricType> = {
  srm_mirror_responses_total: 'counter',
  srm_mirror_response_bytes_total: 'counter',
  srm_mirror_request_duration_seconds: 'histogram',
  srm_mirror_responses_aborted_total: 'counter',
  srm_mirror_upstream_request_duration_seconds: 'histogram',
  srm_mirror_upstream_requests_total: 'counter',
  srm_mirror_upstream_failures_total: 'counter',
  srm_mirror_upstream_refused_total: 'counter',
  srm_mirror_upstream_circuit_open: 'gauge',
  srm_mirror_upstream_circuit_state: 'gauge',
  srm_mirror_upstream_consecutive_failures: 'gauge',
  srm_mirror_upstream_requests_running: 'gauge',
  srm_mirror_upstream_requests_waiting: 'gauge',
  srm_mirror_archive_fills_running: 'gauge',
  srm_mirror_archives: 'gauge',
  srm_mirror_archive_bytes: 'gauge',
  srm_mirror_archive_quota_bytes: 'gauge',
  srm_mirror_disk_problem: 'gauge',
  srm_mirror_archives_rejected_total: 'counter',
  srm_mirror_archives_corrupt_total: 'counter',
  srm_mirror_archive_evictions_total: 'counter',
  srm_mirror_archive_evicted_bytes_total: 'counter',
  srm_mirror_coalesced_requests_total: 'counter',
  srm_mirror_metadata_problem: 'gauge',
  srm_mirror_scrub_running: 'gauge',
  srm_mirror_scrub_runs_total: 'counter',
  srm_mirror_scrub_last_run_timestamp_seconds: 'gauge',
  srm_mirror_scrub_last_run_duration_seconds: 'gauge',
  srm_mirror_scrub_last_run_archives: 'gauge',
  srm_mirror_hosted_blobs: 'gauge',
  srm_mirror_hosted_bytes: 'gauge',
  srm_mirror_hosted_quota_bytes: 'gauge',
  srm_mirror_hosted_corrupt: 'gauge',
  srm_mirror_prefetch_followed_packages: 'gauge',
  srm_mirror_prefetch_running: 'gauge',
  srm_mirror_prefetch_runs_total: 'counter',
  srm_mirror_prefetch_archives_total: 'counter',
  srm_mirror_prefetch_bytes_total: 'counter',
  srm_mirror_prefetch_package_failures_total: 'counter',
  srm_mirror_prefetch_last_run_timestamp_seconds: 'gauge',
  srm_mirror_prefetch_last_run_duration_seconds: 'gauge',
  srm_mirror_prefetch_last_run_failures: 'gauge',
  srm_mirror_import_running: 'gauge',
  srm_mirror_imports_total: 'counter',
  srm_mirror_import_blobs_total: 'counter',
  srm_mirror_import_bytes_total: 'counter',
  // prom-client's defaults: the process and the event loop
  process_cpu_seconds_total: 'counter',
  process_resident_memory_bytes: 'gauge',
  nodejs_eventloop_lag_seconds: 'gauge',
  nodejs_eventloop_lag_p99_seconds: 'gauge',
  nodejs_heap_size_used_bytes: 'gauge',
  nodejs_gc_duration_seconds: 'histogram',
};

describe('GET /-/metrics', () => {
  it('is valid Prometheus text with every family, requests by route and cache result, and upstream requests by kind and outcome', async () => {
    const m = await mirrorOf(fake.v3);
    for (let i = 0; i < 2; i++) await get(`${m.url}/v3/packages/fc3/release/latest`);
    await get(`${m.url}/v3/packages/fc3/zipball/0.1.2`);
    await until(() => m.mirror.archives.status().fillsInProgress === 0);
    await get(`${m.url}/v3/packages/fc3/zipball/0.1.2`);
    await get(`${m.url}/v3/packages/releases?page=1`);
    await get(`${m.url}/fc3/releases/latest`); // the SRM face's path shape (this upstream is v3: a 200 or an error, counted as srm)
    await get(`${m.url}/api/packages/alice/generic/p/1/f.bin`);
    await get(`${m.url}/v3/packages/nope/release/latest`);
    await get(`${m.url}/-/health`);
    const families = await scrape(m);
    for (const [name, type] of Object.entries(FAMILIES)) expect([name, families.get(name)?.type]).toEqual([name, type]);
    for (const f of families.values()) if (f.name.startsWith('srm_mirror_')) expect(f.help, f.name).toMatch(/\S/);

    // The names and labels of before (issue 12): answers and bytes by x-cache and status class.
    const responses = (labels: Record<string, string>) => value(families, 'srm_mirror_responses_total', 'srm_mirror_responses_total', labels);
    expect(responses({ cache: 'MISS', code: '2xx' })).toBe(3); // release, zipball, list
    expect(responses({ cache: 'HIT', code: '2xx' })).toBe(3); // release, zipball, the SRM path's latest
    expect(responses({ cache: 'none', code: '4xx' })).toBe(2); // the generic file, nope
    expect(value(families, 'srm_mirror_response_bytes_total', 'srm_mirror_response_bytes_total', { cache: 'HIT', code: '2xx' })).toBeGreaterThan(ZIP.length);
    // Durations by route and cache result: only the fixed route labels, never a path.
    const duration = families.get('srm_mirror_request_duration_seconds')!;
    const routes = new Set(duration.samples.map((s) => s.labels.route));
    expect([...routes].sort()).toEqual(['generic', 'ops', 'srm', 'v3_list', 'v3_release', 'zipball']);
    const count = (labels: Record<string, string>) => value(families, 'srm_mirror_request_duration_seconds', 'srm_mirror_request_duration_seconds_count', labels);
    expect(count({ route: 'v3_release', cache: 'MISS' })).toBe(1);
    expect(count({ route: 'v3_release', cache: 'HIT' })).toBe(1);
    expect(count({ route: 'zipball', cache: 'MISS' })).toBe(1);
    expect(count({ route: 'zipball', cache: 'HIT' })).toBe(1);
    expect(count({ route: 'v3_list', cache: 'MISS' })).toBe(1);
    expect(count({ route: 'srm', cache: 'HIT' })).toBe(1);
    expect(count({ route: 'v3_release', cache: 'none' })).toBe(1); // nope: an error carries no x-cache
    expect(count({ route: 'ops', cache: 'none' })).toBe(1); // /-/health; this scrape is counted once it is answered
    // Upstream requests: timed by kind and outcome, and counted as before.
    const upstreamCount = (labels: Record<string, string>) => value(families, 'srm_mirror_upstream_request_duration_seconds', 'srm_mirror_upstream_request_duration_seconds_count', labels) ?? 0;
    expect(upstreamCount({ kind: 'metadata', outcome: '2xx' })).toBeGreaterThan(0);
    expect(upstreamCount({ kind: 'metadata', outcome: '4xx' })).toBe(1); // nope
    expect(upstreamCount({ kind: 'archive', outcome: '2xx' })).toBe(1);
    expect(value(families, 'srm_mirror_upstream_requests_total', 'srm_mirror_upstream_requests_total')).toBe(fake.requests.length - fake.count(/^\/blob\//));
    expect(value(families, 'srm_mirror_upstream_circuit_state', 'srm_mirror_upstream_circuit_state', { state: 'closed' })).toBe(1);
    expect(value(families, 'srm_mirror_archives', 'srm_mirror_archives')).toBe(1);
    expect(value(families, 'srm_mirror_archive_bytes', 'srm_mirror_archive_bytes')).toBe(ZIP.length);
    // Process and event-loop metrics of this process.
    expect(value(families, 'process_resident_memory_bytes', 'process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('counts the requests that joined a fetch under way (metadata and archive single-flight followers)', async () => {
    const m = await mirrorOf(fake.v3);
    fake.inject(/\/release\/latest$/, { kind: 'delay', ms: 300 }, 1);
    await Promise.all(Array.from({ length: 5 }, () => get(`${m.url}/v3/packages/fc3/release/latest`)));
    fake.inject(/^\/blob\//, { kind: 'delay', ms: 300 }, 1);
    await Promise.all(Array.from({ length: 4 }, () => get(`${m.url}/v3/packages/fc3/zipball/0.1.2`)));
    expect(fake.count(/\/release\/latest$/)).toBe(1);
    expect(fake.count(/^\/blob\//)).toBe(1);
    const families = await scrape(m);
    expect(value(families, 'srm_mirror_coalesced_requests_total', 'srm_mirror_coalesced_requests_total', { kind: 'metadata' })).toBe(4);
    // The zipball's release lookups coalesce too; the fill has three followers.
    expect(value(families, 'srm_mirror_coalesced_requests_total', 'srm_mirror_coalesced_requests_total', { kind: 'archive' })).toBe(3);
  });

  it('prefetch and scrub results', async () => {
    const m = await mirrorOf(fake.v3, { 'admin-token': 'obs-admin-token-1' });
    await get(`${m.url}/v3/packages/fc3/release/latest`); // followed from now on
    await m.mirror.prefetchNow('test');
    await m.mirror.verifyNow('test', false);
    const families = await scrape(m);
    expect(value(families, 'srm_mirror_prefetch_runs_total', 'srm_mirror_prefetch_runs_total', { result: 'ok' })).toBe(1);
    expect(value(families, 'srm_mirror_prefetch_archives_total', 'srm_mirror_prefetch_archives_total', { result: 'fetched' })).toBe(1);
    expect(value(families, 'srm_mirror_prefetch_bytes_total', 'srm_mirror_prefetch_bytes_total')).toBe(ZIP.length);
    expect(value(families, 'srm_mirror_prefetch_last_run_timestamp_seconds', 'srm_mirror_prefetch_last_run_timestamp_seconds')).toBeGreaterThan(0);
    expect(value(families, 'srm_mirror_scrub_runs_total', 'srm_mirror_scrub_runs_total', { result: 'completed' })).toBe(1);
    expect(value(families, 'srm_mirror_scrub_last_run_archives', 'srm_mirror_scrub_last_run_archives', { result: 'checked' })).toBe(1);
  });

  it('each mirror in a process has its own registry', async () => {
    const a = await mirrorOf(fake.v3);
    const b = await mirrorOf(fake.v3);
    for (let i = 0; i < 3; i++) await get(`${a.url}/v3/packages/fc3/release/latest`);
    const ofA = await scrape(a);
    const ofB = await scrape(b);
    expect(value(ofA, 'srm_mirror_responses_total', 'srm_mirror_responses_total', { cache: 'HIT', code: '2xx' })).toBe(2);
    expect(value(ofB, 'srm_mirror_responses_total', 'srm_mirror_responses_total', { cache: 'HIT', code: '2xx' })).toBeUndefined();
  });
});

describe('the access log', () => {
  const lines = (m: TestMirror) => m.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request');

  it('writes one JSON line per request at info, with the request id it returns in x-request-id', async () => {
    const m = await mirrorOf(fake.v3);
    const given = await get(`${m.url}/v3/packages/fc3/release/latest`, { 'x-request-id': 'lb-7f3a:42' });
    expect(given.headers.get('x-request-id')).toBe('lb-7f3a:42');
    const made = await get(`${m.url}/v3/packages/fc3/release/latest?x=1`);
    const id = made.headers.get('x-request-id')!;
    expect(id).toMatch(/^[0-9a-f]{12}-[0-9a-z]+$/);
    // Not taken as it came: too long, or with characters a log or a header must not get.
    const long = await get(`${m.url}/-/health`, { 'x-request-id': 'a'.repeat(129) });
    expect(long.headers.get('x-request-id')).toMatch(/^[0-9a-f]{12}-[0-9a-z]+$/);
    const odd = await get(`${m.url}/-/health`, { 'x-request-id': 'x"} {"evil":1' });
    expect(odd.headers.get('x-request-id')).toMatch(/^[0-9a-f]{12}-[0-9a-z]+$/);
    await until(() => lines(m).length === 4);
    const [first, second] = lines(m);
    expect(first).toMatchObject({ level: 'info', id: 'lb-7f3a:42', method: 'GET', route: 'v3_release', path: '/v3/packages/fc3/release/latest', status: 200, cache: 'MISS' });
    expect(first!.ms).toEqual(expect.any(Number));
    expect(first!.bytes).toBeGreaterThan(100);
    expect(first!.time).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(second).toMatchObject({ id, cache: 'HIT', path: '/v3/packages/fc3/release/latest' }); // never the query
    expect(lines(m)[2]!.id).not.toBe('a'.repeat(129));
  });

  it('a request cut before its end is logged as aborted, and counted', async () => {
    const m = await mirrorOf(fake.v3);
    fake.inject(/^\/blob\//, { kind: 'stall-mid-body' });
    const res = await fetch(`${m.url}/v3/packages/fc3/zipball/0.1.2`);
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    await until(() => lines(m).some((l) => l.aborted === true));
    fake.clearFaults();
    expect(lines(m).find((l) => l.aborted)).toMatchObject({ route: 'zipball', status: 200 });
    const families = await scrape(m);
    expect(value(families, 'srm_mirror_responses_aborted_total', 'srm_mirror_responses_aborted_total', { route: 'zipball' })).toBe(1);
  });
});

describe('GET /-/ready', () => {
  it('is 200 with the upstream up, down, and offline: it never asks the upstream', async () => {
    const m = await mirrorOf(fake.v3);
    const up = await get(`${m.url}/-/ready`);
    expect([up.status, up.json()]).toEqual([200, { status: 'ready', checks: { config: 'loaded', metadata: 'ok', dataDir: 'ok', shutdown: 'ok' } }]);
    const before = fake.requests.length;
    await fake.close();
    expect((await get(`${m.url}/-/ready`)).status).toBe(200);
    expect(fake.requests.length).toBe(before);
    const offline = await mirrorOf('http://127.0.0.1:9/v3', { offline: true });
    expect((await get(`${offline.url}/-/ready`)).status).toBe(200);
    fake = await FakeUpstream.start(); // for afterEach
  });

  it('is 503 with the reason when the data folder cannot be written', async () => {
    const m = await mirrorOf(fake.v3);
    await mkdir(join(m.dataDir, '.ready-probe')); // the probe file cannot be written where a folder is
    const res = await send('GET', `${m.url}/-/ready`);
    expect(res.status).toBe(503);
    expect(res.headers['cache-control']).toBe('no-store');
    const body = res.json() as { status: string; reasons: string[]; checks: Record<string, string> };
    expect(body.status).toBe('not ready');
    expect(body.reasons).toEqual([expect.stringMatching(/^the data folder .* is not writable \(EISDIR/)]);
    expect(body.checks).toMatchObject({ config: 'loaded', metadata: 'ok' });
    // Reads go on meanwhile: readiness is for the load balancer to decide.
    expect((await get(`${m.url}/v3/packages/fc3/release/latest`)).status).toBe(200);
  });
});
