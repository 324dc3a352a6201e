// The egress settings (docs/corporate-network.md "Deploying inside a corporate network"): where the proxy comes from,
// what is shown of it, the CA files, the upstream credentials, the commands URL, and the pieces of egress.ts that act
// on them.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, PUBLIC_V3_COMMANDS, redactUrl } from '../../src/config/config.js';
import { credentialsInterceptor, describeProxies, egressHint, proxiesOf, scrub, secretsOf, trustedCAs } from '../../src/upstreams/egress.js';
import { isRegistryCommand } from '../../src/upstreams/serverless-v3.js';
import { removeTempDirs, tempDir } from '../helpers.js';

afterAll(removeTempDirs);

/** The message of the ConfigError loadConfig throws. */
function refusal(sources: Parameters<typeof loadConfig>[0]): string {
  try {
    loadConfig(sources);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('the proxy settings', () => {
  it('goes direct by default, and takes HTTPS_PROXY/HTTP_PROXY/NO_PROXY in either case, lower case first', () => {
    expect(proxiesOf(loadConfig({ env: {} }).upstream)).toBeUndefined();
    const upper = loadConfig({ env: { HTTPS_PROXY: 'http://p1:3128', HTTP_PROXY: 'http://p2:3128', NO_PROXY: 'localhost, .corp.example.com' } }).upstream;
    expect(proxiesOf(upper)).toEqual({ https: 'http://p1:3128', http: 'http://p2:3128', noProxy: ['localhost', '.corp.example.com'] });
    const lower = loadConfig({ env: { https_proxy: 'http://lower:1', HTTPS_PROXY: 'http://upper:1', no_proxy: '*' } }).upstream;
    expect(proxiesOf(lower)).toEqual({ https: 'http://lower:1', http: undefined, noProxy: ['*'] });
  });

  it('uses HTTP_PROXY for https too when HTTPS_PROXY is unset (as undici does)', () => {
    expect(proxiesOf(loadConfig({ env: { http_proxy: 'proxy.corp:8080' } }).upstream)).toEqual({ https: 'http://proxy.corp:8080', http: 'http://proxy.corp:8080', noProxy: [] });
  });

  it('lets upstream.proxy (--upstream-proxy, SRM_MIRROR_UPSTREAM_PROXY, a config file) take precedence for both schemes', async () => {
    const env = { HTTPS_PROXY: 'http://env:1', HTTP_PROXY: 'http://env:2', NO_PROXY: 'internal.example' };
    expect(proxiesOf(loadConfig({ flags: { 'upstream-proxy': 'https://flag:443/' }, env }).upstream)).toEqual({ https: 'https://flag:443', http: 'https://flag:443', noProxy: ['internal.example'] });
    const file = join(await tempDir(), 'c.json');
    await writeFile(file, JSON.stringify({ upstream: { proxy: 'http://file:3128', noProxy: ['a.example'] } }));
    expect(proxiesOf(loadConfig({ flags: { config: file }, env: {} }).upstream)).toMatchObject({ https: 'http://file:3128', noProxy: ['a.example'] });
    expect(loadConfig({ flags: { config: file, 'no-proxy': 'b.example,c.example' }, env }).upstream.noProxy).toEqual(['b.example', 'c.example']);
  });

  it('reads HTTPS_PROXY and HTTP_PROXY from the environment only: a config file may not set them', async () => {
    const file = join(await tempDir(), 'c.json');
    await writeFile(file, JSON.stringify({ upstream: { httpsProxy: 'http://file:3128' } }));
    expect(refusal({ flags: { config: file }, env: {} })).toMatch(/"upstream.httpsProxy": expected a known setting/);
  });

  it('masks proxy credentials wherever the proxy is shown, and never repeats them in a refusal', () => {
    const upstream = loadConfig({ flags: { 'upstream-proxy': 'http://alice:s3cr%40t@proxy.corp:3128' }, env: {} }).upstream;
    expect(describeProxies(upstream)).toEqual({ https: 'http://***@proxy.corp:3128', http: 'http://***@proxy.corp:3128', noProxy: [] });
    expect(redactUrl('user:pa ss@host:1')).toBe('***@host:1');
    for (const [value, source] of [
      ['http://alice:hunter22@proxy.corp:3128/path', '--upstream-proxy'],
      ['socks5://alice:hunter22@proxy.corp:1080', '--upstream-proxy'],
      ['http://alice:hunter22@', '--upstream-proxy'],
    ] as const) {
      const message = refusal({ flags: { 'upstream-proxy': value }, env: {} });
      expect(message).toMatch(new RegExp(`"${source}": expected a proxy URL such as`));
      expect(message).not.toContain('hunter22');
    }
    const fromEnv = refusal({ env: { HTTPS_PROXY: 'ftp://bob:hunter22@x:1' } });
    expect(fromEnv).toMatch(/"HTTPS_PROXY": expected a proxy URL .* got "ftp:\/\/\*\*\*@x:1"/);
  });
});

describe('upstream.ca', () => {
  const PEM = `-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUXQhV8PZ3MKkO4YhVnIXa0oJx1zYwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJdGVzdCByb290MB4XDTI0MDEwMTAwMDAwMFoXDTM0MDEwMTAw
MDAwMFowFDESMBAGA1UEAwwJdGVzdCByb290MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAE
-----END CERTIFICATE-----`;

  it('reads each file at start-up: a missing file, or one without a certificate, stops it naming the setting', async () => {
    const dir = await tempDir();
    expect(refusal({ flags: { 'upstream-ca': join(dir, 'none.pem') }, env: {} })).toMatch(/"upstream.ca": expected readable PEM files .*none.pem \(ENOENT/);
    await writeFile(join(dir, 'empty.pem'), 'nothing here');
    expect(refusal({ env: { SRM_MIRROR_UPSTREAM_CA: join(dir, 'empty.pem') } })).toMatch(/empty.pem \(no PEM certificate in it\)/);
    await writeFile(join(dir, 'broken.pem'), PEM);
    expect(refusal({ flags: { 'upstream-ca': join(dir, 'broken.pem') }, env: {} })).toMatch(/"upstream.ca": expected PEM files of valid CA certificates/);
  });

  it('trusts Node\'s own roots (and NODE_EXTRA_CA_CERTS) besides the files, and leaves Node\'s defaults alone without them', async () => {
    const { rootCertificates } = await import('node:tls');
    expect(trustedCAs([])).toBeUndefined();
    const dir = await tempDir();
    const extra = join(dir, 'extra.pem');
    const mine = join(dir, 'mine.pem');
    await writeFile(extra, `${rootCertificates[0]}\n`);
    await writeFile(mine, `${rootCertificates[1]}\n${rootCertificates[2]}\n`);
    const cas = trustedCAs([mine], { NODE_EXTRA_CA_CERTS: extra })!;
    expect(cas.slice(-2)).toEqual([rootCertificates[1], rootCertificates[2]]);
    expect(cas.length).toBeGreaterThanOrEqual(rootCertificates.length + 2);
  });
});

describe('upstream credentials', () => {
  it('takes headers as JSON and a token, and refuses bad ones without repeating a value', () => {
    const c = loadConfig({ env: { SRM_MIRROR_UPSTREAM_HEADERS: '{"X-Api-Key": "k-123456"}', SRM_MIRROR_UPSTREAM_TOKEN: 'tok-123456' } });
    expect(c.upstream).toMatchObject({ headers: { 'x-api-key': 'k-123456' }, token: 'tok-123456' });
    for (const [env, message] of [
      [{ SRM_MIRROR_UPSTREAM_HEADERS: '{"Proxy-Authorization": "Basic c2VjcmV0LXZhbHVl"}' }, /the header name Proxy-Authorization/],
      [{ SRM_MIRROR_UPSTREAM_HEADERS: '{"x-a": "secret-value\\r\\nx-b: 1"}' }, /an unusable value for x-a/],
      [{ SRM_MIRROR_UPSTREAM_HEADERS: 'secret-value' }, /expected an object of header names to values/],
      [{ SRM_MIRROR_UPSTREAM_TOKEN: 'secret value' }, /"SRM_MIRROR_UPSTREAM_TOKEN": expected a token without spaces, got "a 12-character value"/],
      [{ SRM_MIRROR_UPSTREAM_TOKEN: 'secret-value', SRM_MIRROR_UPSTREAM_HEADERS: '{"Authorization": "Basic secret-value"}' }, /no Authorization header when upstream.token is set/],
    ] as const) {
      const got = refusal({ env });
      expect(got).toMatch(message);
      expect(got).not.toMatch(/secret|c2VjcmV0/);
    }
  });

  /** Runs a dispatch through the interceptor and says what headers reached the dispatcher below it. */
  function sent(interceptor: ReturnType<typeof credentialsInterceptor>, origin: string, headers: Record<string, string> | string[] = {}) {
    let seen: unknown;
    const dispatch = interceptor((opts) => {
      seen = opts.headers;
      return true;
    });
    dispatch({ origin, path: '/x', method: 'GET', headers }, {} as never);
    return seen;
  }

  it('adds them for the upstream\'s and the commands\' origins only, under the request\'s own headers', () => {
    const c = loadConfig({ flags: { upstream: 'https://up.example/v3', 'commands-url': 'https://cmd.example:8443/v3' }, env: { SRM_MIRROR_UPSTREAM_TOKEN: 'tok', SRM_MIRROR_UPSTREAM_HEADERS: '{"x-k": "v"}' } });
    const creds = credentialsInterceptor(c.upstream);
    expect(sent(creds, 'https://up.example', { accept: 'application/json' })).toEqual({ 'x-k': 'v', authorization: 'Bearer tok', accept: 'application/json' });
    expect(sent(creds, 'https://cmd.example:8443', ['X-K', 'own'])).toEqual({ 'x-k': 'own', authorization: 'Bearer tok' });
    expect(sent(creds, 'https://storage.example', { accept: '*/*' })).toEqual({ accept: '*/*' });
    expect(sent(creds, 'http://up.example', {})).toEqual({}); // another origin: another scheme
    expect(sent(credentialsInterceptor(loadConfig({ env: {} }).upstream), 'https://api.devsapp.cn', { a: 'b' })).toEqual({ a: 'b' });
  });

  it('scrubs the secrets, and any URL\'s user:password@, from messages', () => {
    const c = loadConfig({ flags: { 'upstream-proxy': 'http://u:p%40ssword@proxy:1' }, env: { SRM_MIRROR_UPSTREAM_TOKEN: 'tok-abcdef' } }).upstream;
    const secrets = secretsOf(c);
    expect(secrets).toEqual(expect.arrayContaining(['tok-abcdef', 'p%40ssword', 'p@ssword']));
    expect(scrub('connect to http://u:p%40ssword@proxy:1 with tok-abcdef and p@ssword failed', secrets)).toBe('connect to http://***@proxy:1 with *** and *** failed');
  });
});

describe('egress failures say what to fix', () => {
  it.each([
    [Object.assign(new Error('unable to verify the first certificate'), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }), /not trusted: add the CA that issued it to upstream.ca/],
    [new Error('x', { cause: Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }) }), /not trusted/],
    [new Error('Proxy response (407) !== 200 when HTTP Tunneling'), /the proxy refused the mirror's credentials \(407\)/],
    [new Error('Proxy Authentication Required (407)'), /refused the mirror's credentials/],
    [new Error('Proxy response (403) !== 200 when HTTP Tunneling'), /would not open a tunnel \(403\)/],
  ])('%s', (err, hint) => {
    expect(egressHint(err)).toMatch(hint);
  });

  it('has nothing to say about other failures', () => {
    expect(egressHint(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).toBeUndefined();
  });
});

describe('upstream.commandsUrl', () => {
  it('defaults to the public commands host for the public registry, else to the upstream itself', () => {
    expect(loadConfig({ env: {} }).upstream.commandsUrl).toBe(PUBLIC_V3_COMMANDS);
    expect(loadConfig({ flags: { upstream: 'https://api.devsapp.cn/v3/' }, env: {} }).upstream.commandsUrl).toBe(PUBLIC_V3_COMMANDS);
    expect(loadConfig({ flags: { upstream: 'http://central.corp:8080/v3' }, env: {} }).upstream.commandsUrl).toBe('http://central.corp:8080/v3');
    expect(loadConfig({ env: { SRM_MIRROR_COMMANDS_URL: 'https://cmd.example/v3/' } }).upstream.commandsUrl).toBe('https://cmd.example/v3');
    expect(refusal({ flags: { 'commands-url': 'https://u:p@cmd.example/v3' }, env: {} })).toMatch(/"--commands-url": expected an http\(s\) URL without query, fragment or credentials/);
  });

  it.each([
    ['GET', '/packages/releases', true],
    ['POST', '/packages/releases', true],
    ['GET', '/package/user', true],
    ['GET', '/packages/fc3/release', true],
    ['DELETE', '/packages/fc3/release/tags/1.0.0', true],
    ['GET', '/packages/fc3/release/latest', false],
    ['GET', '/packages/fc3/release/tags/1.0.0', false],
    ['GET', '/packages/fc3/zipball/1.0.0', false],
    ['POST', '/user/token', false],
    ['GET', '/user/check', false],
  ])('%s %s is a registry command: %s', (method, path, command) => {
    expect(isRegistryCommand(method, path)).toBe(command);
  });
});
