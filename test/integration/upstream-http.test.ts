// UpstreamHttp against the real fake upstream: what counts against the upstream (and is retried), the one deadline
// per call, the read queue, capped JSON, shutdown. The circuit breaker runs on an injected clock.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { MirrorError } from '../../src/model/errors.js';
import { UpstreamHttp } from '../../src/upstreams/http.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { until } from '../helpers.js';

let fake: FakeUpstream;
const clients: UpstreamHttp[] = [];
const clock = { now: 1_000_000 };
const ZIP = randomBytes(256 * 1024);

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.0.0', zip: ZIP }]);
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close(0)));
  await fake.close();
});

/** Name resolution from a table (test host names resolve nowhere else). */
const dns = (table: Record<string, string>) => async (host: string) => {
  if (!table[host]) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return [{ address: table[host], family: 4 }];
};

function client(flags: Record<string, string> = {}, resolve?: (host: string) => Promise<Array<{ address: string; family: number }>>): UpstreamHttp {
  const config = loadConfig({ flags: { upstream: fake.v3, retries: '0', 'retry-delay': '1ms', ...flags }, env: {} });
  const http = new UpstreamHttp({ ...config.upstream, writes: config.writes, now: () => clock.now, resolve });
  clients.push(http);
  return http;
}

const latest = () => `${fake.v3}/packages/fc3/release/latest`;
const blob = () => `${fake.v3}/packages/fc3/zipball/1.0.0`;

/** The error a call rejects with, and how long it took. */
async function failure(call: Promise<unknown>): Promise<{ error: MirrorError; ms: number }> {
  const start = Date.now();
  const error = await call.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: unknown) => e as MirrorError,
  );
  return { error, ms: Date.now() - start };
}

/** Starts a download whose body stalls halfway; resolves once its headers are in (the body then waits). */
function stalledDownload(http: UpstreamHttp) {
  fake.inject(/^\/blob\//, { kind: 'stall-mid-body' }, 1);
  let headersIn!: () => void;
  const headers = new Promise<void>((resolve) => (headersIn = resolve));
  const done = http
    .download(blob(), async ({ body }) => {
      headersIn();
      for await (const _ of body);
    })
    .catch((e: unknown) => e);
  return { headers, done };
}

describe('what counts against the upstream', () => {
  it('a 400 is the upstream answering: not retried, not counted', async () => {
    const http = client({ retries: '2', 'breaker-threshold': '1' });
    fake.inject(/release\/latest/, { kind: 'status', status: 400 });
    for (let i = 0; i < 3; i++) {
      const { error } = await failure(http.getJson(latest()));
      expect([error.kind, error.status]).toEqual(['bad-request', 400]);
    }
    expect(fake.count(/release\/latest/)).toBe(3);
    expect(http.circuit.state).toBe('closed');
  });

  it.each([503, 429])('a %i is the upstream failing: retried, and counted once per call', async (status) => {
    const http = client({ retries: '1', 'breaker-threshold': '2' });
    fake.inject(/release\/latest/, { kind: 'status', status });
    expect((await failure(http.getJson(latest()))).error.kind).toBe('upstream-failed');
    expect(fake.count(/release\/latest/)).toBe(2);
    expect(http.circuit).toMatchObject({ state: 'closed', consecutiveFailures: 1 });
    await failure(http.getJson(latest()));
    expect(http.circuit.state).toBe('open');
    const refused = await failure(http.getJson(latest()));
    expect([refused.error.kind, fake.count(/release\/latest/)]).toEqual(['unavailable', 4]);
  });

  it('a download the consumer gives up on (its client gone) tells the breaker nothing bad', async () => {
    const http = client({ 'breaker-threshold': '1' });
    await failure(http.download(blob(), () => Promise.reject(new Error('client went away'))));
    expect(http.circuit.state).toBe('closed');
  });

  it('writes never move the circuit, but fail fast while it is open', async () => {
    const http = client({ 'breaker-threshold': '1' });
    fake.inject(/user\/token/, { kind: 'status', status: 500 });
    for (let i = 0; i < 3; i++) {
      const res = await http.forward({ method: 'POST', url: `${fake.v3}/user/token`, headers: {} });
      expect(res.status).toBe(500);
      res.body.resume();
    }
    await fake.close(); // no answer at all
    await failure(http.forward({ method: 'POST', url: `${fake.v3}/user/token`, headers: {} }));
    expect(http.circuit.state).toBe('closed');
    await failure(http.getJson(latest())); // a read that gets no answer opens it
    const refused = await failure(http.forward({ method: 'POST', url: `${fake.v3}/user/token`, headers: {} }));
    expect([refused.error.kind, refused.error.message]).toEqual(['unavailable', expect.stringMatching(/upstream is down/)]);
  });
});

describe('download hosts resolved by the egress policy', () => {
  it('connects to the address it checked, and refuses a name that resolves to a forbidden class before connecting', async () => {
    const http = client({ 'archive-hosts': 'mirror.test,evil.test', 'breaker-threshold': '1' }, dns({ 'mirror.test': '127.0.0.1', 'evil.test': '10.0.0.7' }));
    const port = new URL(fake.url).port;
    fake.inject(/zipball/, { kind: 'status', status: 302, headers: { location: `http://mirror.test:${port}/blob/${sha256(ZIP)}` } }, 1);
    const bytes = await http.download(blob(), async ({ body }) => (await body.toArray()).reduce((n, c: Buffer) => n + c.length, 0));
    expect(bytes).toBe(ZIP.length); // mirror.test exists only in the policy's resolver: the socket used its answer
    fake.inject(/zipball/, { kind: 'status', status: 302, headers: { location: 'http://evil.test:9/a.zip' } }, 1);
    const { error, ms } = await failure(http.download(blob(), async () => undefined));
    expect(error.message).toBe('refused to download from evil.test: it is a private address (10.0.0.7); set upstream.allowPrivateHosts to allow it');
    expect(ms).toBeLessThan(1000);
    expect(http.circuit.state).toBe('closed'); // a refusal says nothing about the upstream
  });
});

describe('the half-open probe', () => {
  it('is settled by its response headers: a long download as the probe does not hold everyone else back', async () => {
    const http = client({ 'breaker-threshold': '1', 'breaker-min-backoff': '10s' });
    fake.inject(/release\/latest/, { kind: 'status', status: 500 }, 1);
    await failure(http.getJson(latest()));
    expect(http.circuit.state).toBe('open');
    expect((await failure(http.getJson(latest()))).error.kind).toBe('unavailable');
    clock.now += 10_000;
    const probe = stalledDownload(http);
    await probe.headers; // its body is still stalled
    expect(http.circuit.state).toBe('closed');
    expect(await http.getJson(latest())).toMatchObject({ data: { body: { tag_name: '1.0.0' } } });
    fake.clearFaults();
    await probe.done;
  });
});

describe('one deadline per call', () => {
  it('bounds a hanging upstream whatever the retries', async () => {
    const http = client({ retries: '5', 'headers-timeout': '20s', 'upstream-deadline': '400ms' });
    fake.inject(/release\/latest/, { kind: 'hang' });
    const { error, ms } = await failure(http.getJson(latest()));
    expect([error.kind, error.status]).toEqual(['upstream-timeout', 504]);
    expect(ms).toBeLessThan(1500);
    expect(fake.count(/release\/latest/)).toBe(1);
  });

  it('honours Retry-After as the retry delay', async () => {
    const http = client({ retries: '1' });
    fake.inject(/release\/latest/, { kind: 'status', status: 429, headers: { 'retry-after': '1' } }, 1);
    const start = Date.now();
    await http.getJson(latest());
    expect(Date.now() - start).toBeGreaterThanOrEqual(950);
    expect(fake.count(/release\/latest/)).toBe(2);
  });

  it('makes no retry that would end past the deadline', async () => {
    const http = client({ retries: '3', 'upstream-deadline': '1s' });
    fake.inject(/release\/latest/, { kind: 'status', status: 503, headers: { 'retry-after': '5' } });
    const { error, ms } = await failure(http.getJson(latest()));
    expect(error.message).toMatch(/503/);
    expect(ms).toBeLessThan(900);
    expect(fake.count(/release\/latest/)).toBe(1);
  });

  it('answers a call still waiting for a read slot at its deadline, without it reaching the upstream', async () => {
    const http = client({ 'upstream-concurrency': '1', 'upstream-deadline': '400ms' });
    const holder = stalledDownload(http);
    await holder.headers; // holds the only slot
    const { error, ms } = await failure(http.getJson(latest()));
    expect([error.kind, ms < 1500]).toEqual(['upstream-timeout', true]);
    expect(fake.count(/release\/latest/)).toBe(0);
    expect(http.pending).toEqual({ running: 1, waiting: 0 });
    fake.clearFaults();
    await holder.done;
  });
});

describe('upstream JSON is capped', () => {
  it.each([false, true])('past upstream.maxJsonSize (chunked: %s) the call fails as an upstream failure, once', async (chunked) => {
    const http = client({ 'max-json-size': '1MB', retries: '2', 'breaker-threshold': '1' });
    fake.inject(/release\/latest/, { kind: 'big-json', bytes: 3_000_000, chunked });
    const { error } = await failure(http.getJson(latest()));
    expect([error.kind, error.isUpstreamFailure]).toEqual(['upstream-failed', true]);
    expect(error.message).toMatch(/more than 1000000 bytes of JSON/);
    expect(fake.count(/release\/latest/)).toBe(1);
    expect(http.circuit.state).toBe('closed');
  });
});

describe('close()', () => {
  it('settles every call waiting for a slot ("shutting down"), refuses new ones, and cuts what still runs at the deadline', async () => {
    const http = client({ 'upstream-concurrency': '1' });
    const holder = stalledDownload(http);
    await holder.headers;
    const waiting = Array.from({ length: 3 }, () => failure(http.getJson(latest())));
    await until(() => http.pending.waiting === 3);
    const start = Date.now();
    await http.close(300);
    expect(Date.now() - start).toBeLessThan(1000);
    for (const { error } of await Promise.all(waiting)) expect([error.kind, error.message]).toEqual(['unavailable', 'the mirror is shutting down']);
    expect(await holder.done).toBeInstanceOf(Error); // the stalled download was cut
    expect((await failure(http.getJson(latest()))).error.message).toBe('the mirror is shutting down');
    expect((await failure(http.forward({ method: 'POST', url: `${fake.v3}/user/token`, headers: {}, body: Readable.from([]) }))).error.kind).toBe('unavailable');
  });
});
