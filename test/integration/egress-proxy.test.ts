// Egress inside a corporate network, against a real forward proxy (tinyproxy) and an upstream over TLS with a
// certificate from a test CA. The upstream takes connections from the proxy's outgoing address only, so whatever it
// answered went through the proxy; the proxy's own log shows a CONNECT for every connection the upstream saw.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { UpstreamHttp } from '../../src/upstreams/http.js';
import { ensureProxyTools, PROXY_ADDRESS, testCertificates, Tinyproxy, type TestCertificates } from '../fakes/proxy.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { get, recordSecrets, removeTempDirs, send, startMirror, type TestMirror } from '../helpers.js';

const tools = ensureProxyTools();
if ('skip' in tools) console.warn(`egress proxy tests skipped: ${tools.skip}`);

const AUTH = { user: 'mirror-egress', password: 'proxy-pass-5b1e9c' };
const TOKEN = 'upstream-token-7d2f4a9e';
const API_KEY = 'api-key-value-c3e8b1';
recordSecrets(AUTH.password, TOKEN, API_KEY, 'wrong-pass-0a9f');

describe.skipIf('skip' in tools)('egress through a forward proxy (tinyproxy)', () => {
  let certs: TestCertificates;
  let upstream: FakeUpstream; // TLS, reachable from the proxy only
  let archive: FakeUpstream; // TLS, another origin (object storage), from the proxy only
  let plain: FakeUpstream; // plain http, from anywhere
  let proxy: Tinyproxy;
  const mirrors: TestMirror[] = [];
  const clients: UpstreamHttp[] = [];
  const hostPort = (fake: FakeUpstream) => new URL(fake.url).host;

  beforeAll(async () => {
    const { tinyproxy, openssl } = tools as { tinyproxy: string; openssl: string };
    certs = await testCertificates(openssl);
    upstream = await FakeUpstream.start({ tls: certs, host: 'localhost', onlyFrom: PROXY_ADDRESS });
    archive = await FakeUpstream.start({ tls: certs, onlyFrom: PROXY_ADDRESS }); // https://127.0.0.1:port
    plain = await FakeUpstream.start();
    for (const fake of [upstream, archive, plain]) fake.add('fc3', [{ version: '1.0.1' }, { version: '1.0.0' }]);
    const ports = [upstream, archive].map((f) => Number(new URL(f.url).port));
    proxy = await Tinyproxy.start(tinyproxy, { connectPorts: ports, auth: AUTH });
  });

  afterEach(async () => {
    await Promise.all(mirrors.splice(0).map((m) => m.close()));
    await Promise.all(clients.splice(0).map((c) => c.close(0)));
    for (const fake of [upstream, archive, plain]) {
      fake.requests.splice(0);
      fake.connectionsFrom.splice(0);
      fake.clearFaults();
    }
  });

  afterAll(async () => {
    proxy?.stop();
    await Promise.all([upstream, archive, plain].map((f) => f?.close()));
    await removeTempDirs();
  });

  const mirror = async (flags: Record<string, string>, env?: NodeJS.ProcessEnv) => {
    const m = await startMirror(upstream.v3, { retries: '0', 'archive-hosts': '127.0.0.1', ...flags }, { env });
    mirrors.push(m);
    return m;
  };
  const proxied = { 'upstream-proxy': '', 'upstream-ca': '' };
  beforeAll(() => {
    proxied['upstream-proxy'] = proxy.url(AUTH);
    proxied['upstream-ca'] = certs.caFile;
  });

  it('serves cold and cached reads and a download from an upstream it reaches only through the proxy', async () => {
    const m = await mirror(proxied);
    const before = proxy.connects(hostPort(upstream));
    const latest = `${m.url}/v3/packages/fc3/release/latest`;
    const cold = await get(latest);
    expect([cold.status, cold.headers.get('x-cache')]).toEqual([200, 'MISS']);
    expect(((await get(latest)).headers.get('x-cache'))).toBe('HIT');
    const zip = await get(`${m.url}/v3/packages/fc3/zipball/1.0.1`);
    expect(zip.status).toBe(200);
    expect(sha256(zip.body)).toBe(sha256(upstream.packages.get('fc3')!.releases[0]!.zip));
    expect((await get(`${m.url}/v3/packages/fc3/zipball/1.0.1`)).headers.get('x-cache')).toBe('HIT');
    expect((await get(`${m.url}/v3/packages/releases?page=1`)).status).toBe(200);

    expect(upstream.count(/release\/latest/)).toBe(1); // the cached read did not go out
    expect(upstream.count(/^\/blob\//)).toBe(1);
    // Every request the upstream answered came over a connection from the proxy; none came directly.
    expect(upstream.requests.map((r) => r.remoteAddress)).toEqual(upstream.requests.map(() => PROXY_ADDRESS));
    expect(upstream.refusedConnections).toBe(0);
    // ...and the proxy's log has a CONNECT for each of those connections.
    expect(upstream.connectionsFrom.length).toBeGreaterThan(0);
    expect(proxy.connects(hostPort(upstream)) - before).toBe(upstream.connectionsFrom.length);

    const status = (await get(`${m.url}/-/status`)).body.toString();
    expect(JSON.parse(status).upstream.proxy).toEqual({ https: `http://***@127.0.0.1:${proxy.port}`, http: `http://***@127.0.0.1:${proxy.port}`, noProxy: [] });
    expect(status).not.toContain(AUTH.password);
    expect(m.logs.join('\n')).not.toContain(AUTH.password);
  });

  it('fails with a clear certificate error without upstream.ca (the test CA is not trusted)', async () => {
    const m = await mirror({ 'upstream-proxy': proxy.url(AUTH) });
    const before = proxy.connects(hostPort(upstream));
    const res = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(res.status).toBe(502);
    expect(res.body.toString()).toMatch(/unable to verify the first certificate \(the upstream's TLS certificate is not trusted: add the CA that issued it to upstream.ca \(or NODE_EXTRA_CA_CERTS\)\)/);
    expect(proxy.connects(hostPort(upstream))).toBe(before + 1); // it got as far as the upstream, through the proxy
    expect(upstream.requests).toHaveLength(0);
  });

  it('refuses wrong proxy credentials with a message that says so, and shows no credential anywhere', async () => {
    const wrong = { ...AUTH, password: 'wrong-pass-0a9f' };
    const m = await mirror({ ...proxied, 'upstream-proxy': proxy.url(wrong) });
    const res = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(res.status).toBe(502);
    expect(res.body.toString()).toMatch(/the proxy refused the mirror's credentials \(40[17]\): check user:password in upstream.proxy/);
    expect(res.body.toString()).not.toContain(wrong.password);
    expect(upstream.requests).toHaveLength(0);
    expect(m.logs.join('\n')).not.toContain(wrong.password); // and the suite-wide check looks at every log line
  });

  it('sends upstream.token and upstream.headers to the upstream, not to archive storage on another origin, nor with a client\'s request', async () => {
    const m = await mirror(proxied, { SRM_MIRROR_UPSTREAM_TOKEN: TOKEN, SRM_MIRROR_UPSTREAM_HEADERS: JSON.stringify({ 'X-Api-Key': API_KEY }) });
    const zip = upstream.packages.get('fc3')!.releases[0]!.zip;
    upstream.inject(/zipball/, { kind: 'status', status: 302, headers: { location: `${archive.url}/blob/${sha256(zip)}` } }, 1);
    expect((await get(`${m.url}/v3/packages/fc3/release/latest`)).status).toBe(200);
    const download = await get(`${m.url}/v3/packages/fc3/zipball/1.0.1`);
    expect([download.status, sha256(download.body)]).toEqual([200, sha256(zip)]);

    for (const r of upstream.requests) expect([r.url, r.headers.authorization, r.headers['x-api-key']]).toEqual([r.url, `Bearer ${TOKEN}`, API_KEY]);
    expect(upstream.count(/zipball/)).toBe(1);
    expect(archive.requests).toHaveLength(1); // the redirect target, through the proxy too
    expect(archive.requests[0]).toMatchObject({ remoteAddress: PROXY_ADDRESS });
    expect([archive.requests[0]!.headers.authorization, archive.requests[0]!.headers['x-api-key']]).toEqual([undefined, undefined]);

    // Passed through: the client's credentials, or none; never the mirror's.
    const signed = { token: 'c'.repeat(32), sign_code: 's'.repeat(64), nonce: 'n'.repeat(15), timestamp: '1700000000' };
    await send('POST', `${m.url}/v3/user/token`, signed);
    await send('GET', `${m.url}/v3/user/check?token=ready`);
    const passed = upstream.requests.filter((r) => r.url.includes('/user/'));
    expect(passed.map((r) => [r.url, r.headers.token, r.headers.authorization, r.headers['x-api-key']])).toEqual([
      ['/v3/user/token', signed.token, undefined, undefined],
      ['/v3/user/check?token=ready', undefined, undefined, undefined],
    ]);
    expect(JSON.stringify(JSON.parse((await get(`${m.url}/-/status`)).body.toString()))).not.toMatch(new RegExp(`${TOKEN}|${API_KEY}`));
  });

  it('HTTPS_PROXY/HTTP_PROXY from the environment: an http upstream goes through as absolute-form requests, one log line each', async () => {
    const m = await startMirror(plain.v3, { retries: '0' }, { env: { HTTP_PROXY: proxy.url(AUTH) } });
    mirrors.push(m);
    expect((await get(`${m.url}/v3/packages/fc3/release/latest`)).status).toBe(200);
    expect((await get(`${m.url}/v3/packages/fc3/zipball/1.0.0`)).status).toBe(200);
    expect(plain.requests.map((r) => r.remoteAddress)).toEqual(plain.requests.map(() => PROXY_ADDRESS));
    const logged = proxy.requests().filter((r) => r.includes(new URL(plain.url).host));
    expect(logged).toEqual(plain.requests.map((r) => `${r.method} ${plain.url}${r.url}`));
  });

  it('NO_PROXY bypasses the proxy', async () => {
    const before = proxy.requests().length;
    const m = await startMirror(plain.v3, { retries: '0' }, { env: { https_proxy: proxy.url(AUTH), HTTP_PROXY: proxy.url(AUTH), NO_PROXY: 'localhost,127.0.0.1' } });
    mirrors.push(m);
    expect((await get(`${m.url}/v3/packages/fc3/release/latest`)).status).toBe(200);
    expect((await get(`${m.url}/v3/packages/fc3/zipball/1.0.0`)).status).toBe(200);
    expect(plain.requests.length).toBeGreaterThan(0);
    expect(plain.requests.every((r) => r.remoteAddress === '127.0.0.1')).toBe(true);
    expect(proxy.requests().length).toBe(before);
  });

  it('checks a download host before asking the proxy: a private address is refused, a name only the proxy may resolve is left to it', async () => {
    const dns = async (host: string) => {
      const table: Record<string, string> = { localhost: '127.0.0.1', 'evil.test': '10.0.0.7' };
      if (!table[host]) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      return [{ address: table[host], family: 4 }];
    };
    const config = loadConfig({ flags: { upstream: upstream.v3, retries: '0', 'archive-hosts': 'evil.test,outside.test', ...proxied }, env: {} });
    const http = new UpstreamHttp({ ...config.upstream, writes: config.writes, resolve: dns });
    clients.push(http);
    const port = new URL(upstream.url).port;
    const download = () => http.download(`${upstream.v3}/packages/fc3/zipball/1.0.1`, async ({ body }) => body.resume());

    upstream.inject(/zipball/, { kind: 'status', status: 302, headers: { location: `https://evil.test:${port}/a.zip` } }, 1);
    await expect(download()).rejects.toThrow('refused to download from evil.test: it is a private address (10.0.0.7); set upstream.allowPrivateHosts to allow it');
    expect(proxy.log()).not.toContain('evil.test');

    upstream.inject(/zipball/, { kind: 'status', status: 302, headers: { location: `https://outside.test:${port}/a.zip` } }, 1);
    await expect(download()).rejects.toThrow(/upstream request to https:\/\/outside.test:\d+\/a.zip failed: .*the proxy would not open a tunnel/);
    expect(proxy.connects(`outside.test:${port}`)).toBe(1); // this host could not resolve it: the proxy was asked (and could not either)
  });
});
