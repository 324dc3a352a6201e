// Proxy mode's settings and certificates (src/intercept): defaults, validation naming the setting, the CA made once
// and kept, the leaf issued again when the hosts change, an operator's certificate checked.
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { interceptIdentity, loadOrCreateCa } from '../../src/intercept/certificates.js';
import { parseAuthority } from '../../src/intercept/intercept.js';
import { removeTempDirs, tempDir } from '../helpers.js';

afterAll(removeTempDirs);

const DEFAULT_HOSTS = ['api.devsapp.cn', 'server-serverlgistry-v-awljqvnszb.cn-hangzhou.fcapp.run', 'registry.devsapp.cn'];

describe('intercept settings', () => {
  it('are off by default, with the three registry hosts and no tunnel', () => {
    expect(loadConfig({ env: {} }).intercept).toEqual({ enabled: false, hosts: DEFAULT_HOSTS, tunnel: false, cert: undefined, key: undefined });
  });

  it('are read from flags and the environment', () => {
    const c = loadConfig({ flags: { intercept: true, 'intercept-hosts': 'a.example.com,*.b.example.com' }, env: { SRM_MIRROR_INTERCEPT_TUNNEL: 'true' } });
    expect(c.intercept).toMatchObject({ enabled: true, hosts: ['a.example.com', '*.b.example.com'], tunnel: true });
  });

  it('refuse a cert without a key, IP addresses, and a certificate that does not cover the hosts', async () => {
    expect(() => loadConfig({ flags: { 'intercept-cert': '/x.pem' }, env: {} })).toThrow(/"intercept.key": expected both intercept.cert and intercept.key/);
    expect(() => loadConfig({ flags: { 'intercept-hosts': '[::1]' }, env: {} })).toThrow(/"intercept.hosts": expected host names/);
    // A certificate the mirror's CA issued for other hosts, given as the operator's.
    const dir = await tempDir();
    const other = await interceptIdentity(dir, ['other.example.com']);
    await writeFile(join(dir, 'c.pem'), other.cert);
    await writeFile(join(dir, 'k.pem'), other.key);
    expect(() => loadConfig({ flags: { 'intercept-cert': join(dir, 'c.pem'), 'intercept-key': join(dir, 'k.pem') }, env: {} })).toThrow(
      /"intercept.cert".*not valid for api\.devsapp\.cn, server-serverlgistry-v-awljqvnszb\.cn-hangzhou\.fcapp\.run, registry\.devsapp\.cn/,
    );
    const ok = loadConfig({ flags: { 'intercept-cert': join(dir, 'c.pem'), 'intercept-key': join(dir, 'k.pem'), 'intercept-hosts': 'other.example.com' }, env: {} });
    expect(ok.intercept.cert).toBe(join(dir, 'c.pem'));
    // A key that is not the certificate's.
    const third = await interceptIdentity(await tempDir(), ['other.example.com']);
    await writeFile(join(dir, 'k2.pem'), third.key);
    expect(() => loadConfig({ flags: { 'intercept-cert': join(dir, 'c.pem'), 'intercept-key': join(dir, 'k2.pem'), 'intercept-hosts': 'other.example.com' }, env: {} })).toThrow(
      /is not the key of the certificate/,
    );
  });
});

describe('proxy mode certificates', () => {
  it('makes the CA once and keeps it; issues a leaf for the hosts, and a new one when the hosts change', async () => {
    const dir = await tempDir();
    const first = await interceptIdentity(dir, ['api.devsapp.cn', '*.fcapp.run']);
    const ca = new X509Certificate(first.ca!);
    expect(ca.ca).toBe(true);
    const leaf = new X509Certificate(first.cert);
    expect(leaf.checkIssued(ca) && leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.checkHost('api.devsapp.cn')).toBe('api.devsapp.cn');
    expect(leaf.checkHost('x.fcapp.run')).toBeTruthy();
    expect(first.cert.endsWith(first.ca!)).toBe(true); // the chain: leaf, then the CA

    const same = await interceptIdentity(dir, ['api.devsapp.cn', '*.fcapp.run']);
    expect(same).toEqual(first);
    const more = await interceptIdentity(dir, ['api.devsapp.cn', '*.fcapp.run', 'registry.devsapp.cn']);
    expect(more.ca).toBe(first.ca);
    expect(more.cert).not.toBe(first.cert);
    expect(new X509Certificate(more.cert).checkHost('registry.devsapp.cn')).toBe('registry.devsapp.cn');
    expect((await loadOrCreateCa(dir)).cert).toBe(first.ca);
    expect(await readFile(join(dir, 'intercept', 'ca.crt'), 'utf8')).toBe(first.ca);
  });

  it('two processes asking for the CA at once get the same one', async () => {
    const dir = await tempDir();
    const [a, b] = await Promise.all([loadOrCreateCa(dir), loadOrCreateCa(dir)]);
    expect(a).toEqual(b);
  });
});

describe('CONNECT targets', () => {
  it.each([
    ['api.devsapp.cn:443', { host: 'api.devsapp.cn', port: 443 }],
    ['API.devsapp.cn.:443', { host: 'api.devsapp.cn', port: 443 }],
    ['[::1]:8443', { host: '[::1]', port: 8443 }],
    ['api.devsapp.cn', undefined],
    ['api.devsapp.cn:0', undefined],
    ['api.devsapp.cn:99999', undefined],
    ['a b:443', undefined],
    ['user@host:443', undefined],
  ])('%s', (authority, expected) => {
    expect(parseAuthority(authority)).toEqual(expected);
  });
});
