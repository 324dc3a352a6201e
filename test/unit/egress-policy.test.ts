// The egress policy that keeps archive downloads away from the mirror's own network (SSRF).
import type { LookupAddress } from 'node:dns';
import { describe, expect, it } from 'vitest';
import { classifyAddress, EgressPolicy, hostMatches } from '../../src/upstreams/egress-policy.js';

describe('classifyAddress', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['fd12:3456::1', 'private'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:a00:1', 'private'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['0.0.0.0', 'reserved'],
    ['::', 'reserved'],
    ['224.0.0.1', 'reserved'],
    ['255.255.255.255', 'reserved'],
    ['64:ff9b::a00:1', 'reserved'],
    ['not an address', 'reserved'],
    ['8.8.8.8', 'public'],
    ['172.32.0.1', 'public'],
    ['2606:4700::1111', 'public'],
    ['::ffff:8.8.8.8', 'public'],
  ])('%s is %s', (address, cls) => {
    expect(classifyAddress(address)).toBe(cls);
  });
});

describe('hostMatches', () => {
  it('matches exact names and "*." subdomains (any depth), case-insensitively, not the bare domain', () => {
    const list = ['cdn.example.com', '*.oss.example.net'];
    expect(hostMatches('CDN.example.com', list)).toBe(true);
    expect(hostMatches('a.b.oss.example.net', list)).toBe(true);
    expect(hostMatches('oss.example.net', list)).toBe(false);
    expect(hostMatches('evil-oss.example.net', list)).toBe(false);
    expect(hostMatches('cdn.example.com.evil.io', list)).toBe(false);
  });
});

/** A resolver answering from a table, counting lookups. */
function resolver(table: Record<string, string[]>) {
  const calls: string[] = [];
  const resolve = async (host: string): Promise<LookupAddress[]> => {
    calls.push(host);
    const addresses = table[host];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  return { resolve, calls };
}

function lookup(policy: EgressPolicy, host: string, all = true) {
  return new Promise<unknown>((resolve, reject) =>
    policy.lookup(host, { all, family: 0 }, (err: Error | null, address: unknown) => (err ? reject(err) : resolve(address))),
  );
}

describe('EgressPolicy', () => {
  const publicUpstream = { upstreamUrl: 'https://registry.example.com/v3', archiveHosts: ['*.storage.example.com'], allowPrivateHosts: false };

  it('allows the upstream origin and listed hosts over http(s) only', async () => {
    const p = new EgressPolicy({ ...publicUpstream, ...resolver({}) });
    await p.checkUrl(new URL('https://registry.example.com/v3/packages/x/zipball/1'));
    await p.checkUrl(new URL('http://eu.storage.example.com/blob'));
    await expect(p.checkUrl(new URL('http://registry.example.com/v3'))).rejects.toThrow(/neither the upstream nor in upstream.archiveHosts/); // another origin
    await expect(p.checkUrl(new URL('https://registry.example.com:8443/v3'))).rejects.toThrow(/neither the upstream/);
    await expect(p.checkUrl(new URL('https://elsewhere.example.org/a.zip'))).rejects.toThrow(/refused to download from https:\/\/elsewhere.example.org/);
    await expect(p.checkUrl(new URL('file:///etc/passwd'))).rejects.toThrow(/only http\(s\) is fetched, not file:/);
  });

  it('refuses IP literals of a private class before any connection, and names the setting that allows them', async () => {
    const p = new EgressPolicy({ ...publicUpstream, archiveHosts: ['10.0.0.1', '169.254.169.254', '[::1]'], ...resolver({ 'registry.example.com': ['93.184.216.34'] }) });
    await expect(p.checkUrl(new URL('http://10.0.0.1/x'))).rejects.toThrow(/private address \(10.0.0.1\); set upstream.allowPrivateHosts/);
    await expect(p.checkUrl(new URL('http://169.254.169.254/latest/meta-data'))).rejects.toThrow(/link-local/);
    await expect(p.checkUrl(new URL('http://[::1]:8080/x'))).rejects.toThrow(/loopback/);
  });

  it('refuses a name that resolves to a private address at connect time, and hands the checked address to the socket', async () => {
    const dns = resolver({ 'registry.example.com': ['93.184.216.34'], 'a.storage.example.com': ['203.0.113.7'], 'b.storage.example.com': ['203.0.113.8', '10.1.2.3'] });
    const p = new EgressPolicy({ ...publicUpstream, resolve: dns.resolve });
    expect(await lookup(p, 'a.storage.example.com')).toEqual([{ address: '203.0.113.7', family: 4 }]);
    expect(await lookup(p, 'a.storage.example.com', false)).toBe('203.0.113.7');
    await expect(lookup(p, 'b.storage.example.com')).rejects.toThrow(/private address \(10.1.2.3\)/); // any bad address refuses the name
    await expect(lookup(p, 'nowhere.storage.example.com')).rejects.toThrow(/ENOTFOUND/);
  });

  it('allows the class the upstream itself is on (a mirror on 127.0.0.1 may hand out loopback URLs), no other', async () => {
    const p = new EgressPolicy({ upstreamUrl: 'http://127.0.0.1:8080/v3', archiveHosts: ['localhost', '10.0.0.1'], allowPrivateHosts: false, ...resolver({ localhost: ['::1', '127.0.0.1'] }) });
    expect(await lookup(p, 'localhost')).toHaveLength(2);
    await expect(p.checkUrl(new URL('http://10.0.0.1/x'))).rejects.toThrow(/private/);
  });

  it('allowPrivateHosts lets every class through', async () => {
    const p = new EgressPolicy({ ...publicUpstream, archiveHosts: ['10.0.0.1'], allowPrivateHosts: true, ...resolver({ 'registry.example.com': ['10.9.9.9'] }) });
    await p.checkUrl(new URL('http://10.0.0.1/x'));
    expect(await lookup(p, 'registry.example.com')).toEqual([{ address: '10.9.9.9', family: 4 }]);
  });

  it('allows the commands origin (upstream.commandsUrl) like the upstream\'s', async () => {
    const p = new EgressPolicy({ ...publicUpstream, commandsUrl: 'https://commands.example.net/v3', ...resolver({}) });
    await p.checkUrl(new URL('https://commands.example.net/v3/packages/x/zipball/1'));
    await expect(p.checkUrl(new URL('https://commands.example.net:8443/x'))).rejects.toThrow(/neither the upstream/);
  });

  describe('before a request is handed to a forward proxy', () => {
    it('refuses a name that resolves here to a forbidden class, as the lookup would', async () => {
      const dns = resolver({ 'registry.example.com': ['93.184.216.34'], 'a.storage.example.com': ['203.0.113.7'], 'b.storage.example.com': ['203.0.113.8', '169.254.169.254'] });
      const p = new EgressPolicy({ ...publicUpstream, resolve: dns.resolve });
      await p.checkBeforeProxy(new URL('https://a.storage.example.com/x'));
      await expect(p.checkBeforeProxy(new URL('https://b.storage.example.com/x'))).rejects.toThrow(/link-local address \(169.254.169.254\)/);
    });

    it('leaves a name it cannot resolve to the proxy (split-horizon DNS), and IP literals to checkUrl', async () => {
      const dns = resolver({});
      const p = new EgressPolicy({ ...publicUpstream, resolve: dns.resolve });
      await p.checkBeforeProxy(new URL('https://outside.storage.example.com/x'));
      await p.checkBeforeProxy(new URL('http://10.0.0.1/x'));
      expect(dns.calls).toEqual(['outside.storage.example.com']);
    });

    it('fails on a resolver failure that is not "no such name"', async () => {
      const p = new EgressPolicy({ ...publicUpstream, resolve: async () => Promise.reject(Object.assign(new Error('resolver broke'), { code: 'ESERVFAIL' })) });
      await expect(p.checkBeforeProxy(new URL('https://a.storage.example.com/x'))).rejects.toThrow('resolver broke');
    });
  });
});
