// Hostile clients and hostile upstreams on the transport side: nothing crashes the process, nothing waits without
// a bound, and the circuit breaker measures the upstream, not the clients.
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { componentZip } from '../fakes/zips.js';
import { bigBody, signed as signedBy } from '../fakes/clients.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { get, recordSecrets, removeTempDirs, startMirror, until, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
const mirrors: TestMirror[] = [];

async function mirrorOf(upstream: string, flags: Record<string, string | boolean> = {}): Promise<TestMirror> {
  const m = await startMirror(upstream, { retries: '0', ...flags });
  mirrors.push(m);
  return m;
}

const ZIP = componentZip('fc3', '1.2.0', { payload: randomBytes(100_000) });

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.2.0', zip: ZIP }, { version: '1.1.0' }]);
  fake.add('fc3-domain', [{ version: '0.0.9' }]);
});

afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.close()));
  await fake.close();
  await removeTempDirs();
});


describe('large anonymous uploads refused early by the upstream', () => {
  it('do not crash the server: the same server keeps answering', async () => {
    const m = await mirrorOf(fake.v3);
    fake.inject(/\/v3\/packages\/releases/, { kind: 'status-early', status: 401 });
    const uploads = Array.from({ length: 4 }, () =>
      request(`${m.url}/v3/packages/releases`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(50 << 20) },
        body: bigBody(50 << 20),
      })
        .then(async (r) => ({ status: r.statusCode, text: await r.body.text() }))
        .catch((e: unknown) => e as Error),
    );
    // Each client gets the upstream's 401, or (when it had not finished sending) a closed connection.
    for (const u of await Promise.all(uploads)) if (!(u instanceof Error)) expect(u.status).toBe(401);
    const health = await get(`${m.url}/-/health`);
    expect(health.status).toBe(200);
    expect((await get(`${m.url}/v3/packages/fc3/release/latest`)).status).toBe(200);
    expect(m.server.listening).toBe(true);
  });
});

/** Headers as a logged-in `s` client signs a request (PROTOCOL.md §1), with a fixed nonce: the same within a second. */
const signed = () => signedBy('hostile-safety-code', { nonce: 'n0nce' });

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

/**
 * A request body that sends `first` and then nothing more (until the test ends it by aborting). The form's first
 * field is whole, so the mirror knows the package is not hosted and passes the request on.
 */
function trickle(first = 'publish=Name%3A%20fc3%0A&readme='): Readable {
  return new Readable({
    read() {
      if (first) this.push(first);
      first = '';
    },
  });
}

describe('repeated slashes in the path', () => {
  it('are collapsed before routing (s set registry http://host/v3/ asks for /v3//packages/...), the query left alone', async () => {
    const m = await mirrorOf(fake.v3);
    const latest = await get(`${m.url}/v3//packages//fc3/release/latest`);
    expect([latest.status, (latest.json() as { body: { tag_name: string } }).body.tag_name]).toEqual([200, '1.2.0']);
    const zip = await get(`${m.url}//v3/packages/fc3/zipball/1.2.0`);
    expect([zip.status, sha256(zip.body)]).toEqual([200, sha256(ZIP)]);
    expect((await get(`${m.url}/v3//packages/releases?page=1&search=a//b`)).status).toBe(200);
    expect(fake.requests.some((r) => r.url === '/v3/packages/releases?page=1&search=a%2F%2Fb')).toBe(true);
  });
});

describe('private content', () => {
  it('a credentialed read of a private archive passes through with the credentials, marked private; anonymous reads get 404', async () => {
    fake.add('secret', [{ version: '1.0.0', zip: Buffer.from('private zip') }], { private: true });
    const m = await mirrorOf(fake.v3);
    expect((await get(`${m.url}/v3/packages/secret/zipball/1.0.0`)).status).toBe(404);
    const headers = signed(); // once: its timestamp is the second it was made in
    const res = await get(`${m.url}/v3/packages/secret/zipball/1.0.0`, headers);
    expect(res.status).toBe(302); // the upstream's redirect to its storage, for the client to follow
    expect([res.headers.get('x-cache'), res.headers.get('cache-control')]).toEqual(['BYPASS', 'private, no-store']);
    expect((await get(res.headers.get('location')!)).body.toString()).toBe('private zip');
    const sent = fake.requests.filter((r) => r.url === '/v3/packages/secret/zipball/1.0.0' && r.headers.token);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.headers.sign_code).toBe(headers.sign_code);
    // Any credential header makes a refused read worth passing through; the answer is the upstream's.
    const onlySign = await get(`${m.url}/v3/packages/secret/release/latest`, { sign_code: 'x' });
    expect([onlySign.status, onlySign.headers.get('x-cache'), onlySign.headers.get('cache-control')]).toEqual([404, 'BYPASS', 'private, no-store']);
  });
});

describe('the pass-through lane', () => {
  it('a Content-Length over writes.maxBodySize is answered 413 at once, the upstream never asked', async () => {
    const m = await mirrorOf(fake.v3, { 'max-body-size': '1MB' });
    const res = await request(`${m.url}/v3/packages/releases`, { method: 'POST', headers: { ...signed(), ...FORM }, body: Buffer.alloc(2_000_000, 'a') }).catch((e: unknown) => e as Error); // the 413 may come before the whole body is sent
    if (res instanceof Error) throw res;
    expect(res.statusCode).toBe(413);
    expect(await res.body.text()).toMatch(/larger than 1000000 bytes \(writes.maxBodySize\)/);
    expect(fake.openConnections).toBe(0); // never connected to
    expect((await get(`${m.url}/-/health`)).status).toBe(200);
  });

  it('a chunked body growing past writes.maxBodySize is cut, the upstream request aborted, and answered 413', async () => {
    const m = await mirrorOf(fake.v3, { 'max-body-size': '1MB' });
    let sent = 0;
    const body = new Readable({
      read() {
        sent += 64 * 1024;
        this.push(sent > 3_000_000 ? null : Buffer.alloc(64 * 1024, 'a'));
      },
    });
    const res = await request(`${m.url}/v3/packages/releases`, { method: 'POST', headers: { ...signed(), ...FORM }, body }).catch((e: unknown) => e as Error);
    if (res instanceof Error) throw res;
    expect([res.statusCode, res.headers.connection]).toEqual([413, 'close']);
    await until(() => fake.aborted === 1);
    expect(fake.requests.filter((r) => r.method === 'POST')).toHaveLength(0);
  });

  it('a client that stops sending its body is cut after writes.bodyTimeout (408), the upstream request aborted', async () => {
    const m = await mirrorOf(fake.v3, { 'write-body-timeout': '300ms' });
    const start = Date.now();
    const res = await request(`${m.url}/v3/packages/releases`, { method: 'POST', headers: { ...signed(), ...FORM }, body: trickle() });
    expect(res.statusCode).toBe(408);
    expect(await res.body.text()).toMatch(/request body stalled/);
    expect(Date.now() - start).toBeLessThan(3000);
    await until(() => fake.aborted === 1);
  });

  it('16 clients trickling publish bodies do not delay cold reads: writes have their own slots', async () => {
    const m = await mirrorOf(fake.v3); // upstream.concurrency 16, writes.concurrency 4
    const abort = new AbortController();
    const uploads = Array.from({ length: 16 }, () =>
      request(`${m.url}/v3/packages/releases`, { method: 'POST', headers: { ...signed(), ...FORM }, body: trickle(), signal: abort.signal }).catch(() => undefined),
    );
    try {
      await until(() => fake.openConnections >= 4); // the lane's 4 uploads reach the upstream; 12 wait for a slot
      const start = Date.now();
      const latest = await get(`${m.url}/v3/packages/fc3-domain/release/latest`);
      const zip = await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`);
      expect([latest.status, latest.headers.get('x-cache'), zip.status, sha256(zip.body)]).toEqual([200, 'MISS', 200, sha256(ZIP)]);
      expect(Date.now() - start).toBeLessThan(2000);
    } finally {
      abort.abort();
      await Promise.all(uploads);
    }
    await until(() => fake.aborted === 4); // clients gone: their uploads to the upstream were aborted too
  });
});

describe('a blackholed upstream', () => {
  it('holds a reader with a stale copy no longer than upstream.deadline', async () => {
    const m = await mirrorOf(fake.v3, { 'max-age': '0s', 'headers-timeout': '20s', 'upstream-deadline': '500ms', retries: '3' });
    await get(`${m.url}/v3/packages/fc3/release/latest`);
    fake.inject(/release\/latest/, { kind: 'hang' });
    const start = Date.now();
    const res = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect([res.status, res.headers.get('x-cache')]).toEqual([200, 'STALE']);
    expect(Date.now() - start).toBeLessThan(1500);
  });
});

describe('downloads only from where they belong', () => {
  it('refuses a zipball_url on another origin (502, saying why, the breaker untouched); allows it once listed in upstream.archiveHosts', async () => {
    const other = await FakeUpstream.start();
    try {
      other.add('fc3', [{ version: '1.0.0', zip: ZIP }]);
      fake.add('moved', [{ version: '1.0.0', zip: ZIP, zipballUrl: `${other.v3}/packages/fc3/zipball/1.0.0` }]);
      const m = await mirrorOf(fake.v3, { 'breaker-threshold': '1' });
      const refused = await get(`${m.url}/v3/packages/moved/zipball/1.0.0`);
      expect(refused.status).toBe(502);
      expect((refused.json() as { body: string }).body).toBe(`refused to download from ${other.url}: the host is neither the upstream nor in upstream.archiveHosts`);
      expect(other.requests).toHaveLength(0);
      expect(((await get(`${m.url}/-/status`)).json() as { upstream: { circuit: { state: string } } }).upstream.circuit.state).toBe('closed');

      const allowed = await mirrorOf(fake.v3, { 'archive-hosts': 'cdn.example.com,127.0.0.1' });
      const zip = await get(`${allowed.url}/v3/packages/moved/zipball/1.0.0`);
      expect([zip.status, sha256(zip.body)]).toEqual([200, sha256(ZIP)]);
      expect(other.count(/^\/blob\//)).toBe(1);
    } finally {
      await other.close();
    }
  });

  it.each([
    ['a private address', 'http://10.0.0.1:9/a.zip', /private address \(10.0.0.1\)/],
    ['a link-local address (cloud metadata)', 'http://169.254.169.254/latest/meta-data', /link-local address/],
    ['a scheme other than http(s)', 'file:///etc/passwd', /only http\(s\) is fetched/],
  ])('refuses a redirect to %s before connecting, even when the host is listed', async (_name, location, why) => {
    const m = await mirrorOf(fake.v3, { 'archive-hosts': '10.0.0.1,169.254.169.254', 'connect-timeout': '20s' });
    fake.inject(/zipball/, { kind: 'status', status: 302, headers: { location } });
    const start = Date.now();
    const res = await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`);
    expect(res.status).toBe(502);
    expect((res.json() as { body: string }).body).toMatch(why);
    expect(Date.now() - start).toBeLessThan(2000); // no connection was tried
  });

  it('follows at most 5 redirects', async () => {
    const m = await mirrorOf(fake.v3);
    fake.inject(/^\/loop/, { kind: 'status', status: 302, headers: { location: '/loop' } });
    fake.inject(/zipball/, { kind: 'status', status: 302, headers: { location: `${fake.url}/loop` } });
    const res = await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`);
    expect([res.status, (res.json() as { body: string }).body]).toEqual([502, expect.stringMatching(/more than 5 redirects/)]);
    expect(fake.count(/^\/loop/)).toBe(5);
  });
});

describe('ops endpoints that change something', () => {
  const token = 'admin-token-0123456789';

  it('are refused (403, naming the setting) without an admin token configured', async () => {
    const m = await mirrorOf(fake.v3);
    const res = await request(`${m.url}/-/prefetch`, { method: 'POST' });
    expect(res.statusCode).toBe(403);
    expect(JSON.parse(await res.body.text())).toMatchObject({ error: 'forbidden', message: expect.stringMatching(/adminToken setting \(--admin-token, SRM_MIRROR_ADMIN_TOKEN\)/) });
  });

  it('need Authorization: Bearer <admin token> (401 otherwise), and 50 concurrent triggers make one run', async () => {
    recordSecrets(token);
    const m = await mirrorOf(fake.v3, { 'admin-token': token, 'prefetch-packages': 'fc3,fc3-domain' });
    for (const authorization of [undefined, 'Bearer wrong-token-0123456789', `Basic ${token}`, token]) {
      const res = await request(`${m.url}/-/prefetch`, { method: 'POST', headers: authorization ? { authorization } : {} });
      expect([res.statusCode, res.headers['www-authenticate']]).toEqual([401, 'Bearer']);
      await res.body.text();
    }
    expect(fake.requests).toHaveLength(0);
    fake.inject(/./, { kind: 'delay', ms: 200 });
    const answers = await Promise.all(Array.from({ length: 50 }, () => request(`${m.url}/-/prefetch`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })));
    expect(answers.map((a) => a.statusCode)).toEqual(Array(50).fill(202));
    await until(async () => ((await get(`${m.url}/-/status`)).json() as { prefetch: { lastRun?: unknown } }).prefetch.lastRun !== undefined);
    expect(fake.count(/release\/latest/)).toBe(2); // one run: each package asked for once
    expect(fake.count(/^\/blob\//)).toBe(2);
    expect(JSON.stringify((await get(`${m.url}/-/status`)).json())).not.toContain(token);
  });

  it('srm-mirror prefetch asks the running server when it holds the data folder', async () => {
    recordSecrets(token);
    const m = await mirrorOf(fake.v3, { 'admin-token': token, 'prefetch-packages': 'fc3' });
    const port = new URL(m.url).port;
    let [stdout, stderr] = ['', ''];
    const out = { isTTY: false, write: (t: string) => void (stdout += t), error: (t: string) => void (stderr += t) };
    const base = ['prefetch', '--data', m.dataDir, '--upstream', fake.v3, '--port', port, '--log-level', 'error'];
    expect(await main(base, out)).toBe(3); // without the admin token it cannot ask, and says how
    expect(stderr).toMatch(/in use by a running srm-mirror.*--admin-token/);
    expect(await main([...base, '--admin-token', token], out)).toBe(0); // host 0.0.0.0 is reached on 127.0.0.1
    expect(stdout).toContain('asking it to prefetch');
    expect(stdout).toContain('the server started a prefetch run');
    await until(() => fake.count(/^\/blob\//) === 1);
  });
});

describe('server.maxConnections', () => {
  it('refuses connections past the limit at once', async () => {
    const m = await mirrorOf(fake.v3, { 'max-connections': '2' });
    const { port } = new URL(m.url);
    const open = () => new Promise<ReturnType<typeof connect>>((resolve) => { const s = connect(Number(port), '127.0.0.1', () => resolve(s)); });
    const held = [await open(), await open()];
    await until(() => new Promise<boolean>((resolve) => m.server.getConnections((_e, n) => resolve(n === 2))));
    const third = await open();
    await new Promise((resolve) => third.once('close', resolve)); // closed by the server, with nothing sent
    held.forEach((s) => s.destroy());
    await until(async () => (await get(`${m.url}/-/health`).catch(() => undefined))?.status === 200);
  });
});
