// Proxy mode (issue 12, item 3) and s 2.x's /simple paths (item 4): the mirror as a forward proxy, with undici's
// ProxyAgent as the client (TLS verified against the mirror's own CA), absolute-form plain HTTP, refusals, tunnels,
// the connection cap and shutdown; and the /simple paths asked directly.
import { readFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { recordSecrets, removeTempDirs, startMirror, tempDir, until, type TestMirror } from '../helpers.js';
import { ensureProxyTools, Tinyproxy } from '../fakes/proxy.js';

const API = 'https://api.devsapp.cn';
const COMMANDS = 'https://server-serverlgistry-v-awljqvnszb.cn-hangzhou.fcapp.run';
const V2 = 'http://registry.devsapp.cn';

let fake: FakeUpstream;
let mirror: TestMirror;
let ca: string;
let agents: ProxyAgent[] = [];
const blobs = () => fake.count(/^\/blob\//);

/** A client whose proxy is the mirror: CONNECT for https (verified against `caPem`), absolute form for http. */
function viaMirror(m: TestMirror, caPem: string | null = ca): ProxyAgent {
  const agent = new ProxyAgent({ uri: m.url, requestTls: caPem === null ? {} : { ca: caPem }, proxyTunnel: false });
  agents.push(agent);
  return agent;
}

async function getVia(agent: ProxyAgent, url: string) {
  const res = await request(url, { dispatcher: agent });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body, json: () => JSON.parse(body.toString()) as Record<string, unknown> };
}

/** Sends one raw CONNECT to the mirror; resolves with everything the mirror sent until it closed (or 1 s). */
function rawConnect(m: TestMirror, target: string, hold = false): Promise<{ text: string; socket: Socket }> {
  const { hostname, port } = new URL(m.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let text = '';
    socket.on('data', (d) => {
      text += d.toString('latin1');
      if (hold && text.includes('\r\n\r\n')) resolve({ text, socket });
    });
    socket.on('error', reject);
    socket.on('close', () => resolve({ text, socket }));
    socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    setTimeout(() => resolve({ text, socket }), 1000).unref();
  });
}

beforeAll(async () => {
  fake = await FakeUpstream.start();
  fake.add('demo-comp', [{ version: '1.0.0' }, { version: '0.9.0' }]);
  fake.add('other-comp', [{ version: '2.0.0' }]);
  // The mirror listens on its own loopback address: clients reach it only as their proxy.
  mirror = await startMirror(fake.v3, { intercept: true, host: '127.0.0.9' });
  ca = await readFile(join(mirror.dataDir, 'intercept', 'ca.crt'), 'utf8');
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.close()));
  agents = [];
  await mirror.close();
  await fake.close();
  await removeTempDirs();
});

describe('proxy mode: CONNECT to an intercepted host', () => {
  it('answers https://api.devsapp.cn/v3 through CONNECT, TLS verified against the CA, and hands out URLs on that host', async () => {
    const agent = viaMirror(mirror);
    const latest = await getVia(agent, `${API}/v3/packages/demo-comp/release/latest`);
    expect(latest.status).toBe(200);
    const body = latest.json().body as Record<string, unknown>;
    expect(body).toMatchObject({ name: 'demo-comp', tag_name: '1.0.0', zipball_url: `${API}/v3/packages/demo-comp/zipball/1.0.0` });

    // The zipball URL leads back to the mirror (the client asks its proxy for api.devsapp.cn again).
    const before = blobs();
    const zip = await getVia(agent, body.zipball_url as string);
    expect(zip.status).toBe(200);
    expect(zip.body.equals(fake.packages.get('demo-comp')!.releases[0]!.zip)).toBe(true);
    const again = await getVia(agent, body.zipball_url as string);
    expect(again.headers['x-cache']).toBe('HIT');
    expect(blobs()).toBe(before + 1); // fetched once from the upstream, whatever the client believed it talked to
  });

  it('answers the registry-commands host too (s 3.1.7+ sends list, detail and publish there)', async () => {
    const list = await getVia(viaMirror(mirror), `${COMMANDS}/v3/packages/releases?page=1`);
    expect(list.status).toBe(200);
    expect((list.json().body as Array<{ name: string }>).map((p) => p.name)).toEqual(expect.arrayContaining(['demo-comp', 'other-comp']));
    const detail = await getVia(viaMirror(mirror), `${COMMANDS}/v3/packages/demo-comp/release?page=1`);
    expect((detail.json().body as Array<{ zipball_url: string }>)[0]!.zipball_url).toBe(`${COMMANDS}/v3/packages/demo-comp/zipball/1.0.0`);
  });

  it('presents a certificate of its own CA for every intercepted host; a client that verifies without the CA refuses it', async () => {
    const leaf = new X509Certificate(await readFile(join(mirror.dataDir, 'intercept', 'leaf.pem'), 'utf8'));
    expect(leaf.checkIssued(new X509Certificate(ca))).toBe(true);
    for (const host of ['api.devsapp.cn', 'server-serverlgistry-v-awljqvnszb.cn-hangzhou.fcapp.run', 'registry.devsapp.cn']) {
      expect(leaf.checkHost(host)).toBe(host);
    }
    await expect(getVia(viaMirror(mirror, null), `${API}/v3/packages/demo-comp/release/latest`)).rejects.toThrow(/certificate/i);
  });

  it('`srm-mirror ca` prints the same CA, and --out writes it', async () => {
    const out: string[] = [];
    const io = { isTTY: false, write: (t: string) => void out.push(t), error: (t: string) => void out.push(t) };
    const dataDir = await tempDir();
    // Beside a running server too: the command reads (or makes) the CA, it does not open the database.
    expect(await main(['ca', '--data', mirror.dataDir], io)).toBe(0);
    expect(out.join('')).toBe(ca);
    const file = join(dataDir, 'mirror-ca.crt');
    out.length = 0;
    expect(await main(['ca', '--data', mirror.dataDir, '--out', file], io)).toBe(0);
    expect(await readFile(file, 'utf8')).toBe(ca);
    expect(out.join('')).toContain(file);
  });

  it('with publicUrl set, intercepted answers still name the intercepted host', async () => {
    const m = await startMirror(fake.v3, { intercept: true, 'public-url': 'http://mirror.example.com:8080' });
    try {
      const caPem = await readFile(join(m.dataDir, 'intercept', 'ca.crt'), 'utf8');
      const latest = await getVia(viaMirror(m, caPem), `${API}/v3/packages/other-comp/release/latest`);
      expect((latest.json().body as { zipball_url: string }).zipball_url).toBe(`${API}/v3/packages/other-comp/zipball/2.0.0`);
      const direct = await request(`${m.url}/v3/packages/other-comp/release/latest`);
      expect(((await direct.body.json()) as { body: { zipball_url: string } }).body.zipball_url).toBe('http://mirror.example.com:8080/v3/packages/other-comp/zipball/2.0.0');
    } finally {
      await m.close();
    }
  });
});

describe('proxy mode: plain HTTP in absolute form', () => {
  it('answers s 2.x paths on http://registry.devsapp.cn/simple, with zipball URLs on that host', async () => {
    const agent = viaMirror(mirror);
    const latest = await getVia(agent, `${V2}/simple/devsapp/demo-comp/releases/latest`);
    expect(latest.status).toBe(200);
    const release = latest.json().Response as Record<string, unknown>;
    expect(release).toMatchObject({ tag_name: '1.0.0', zipball_url: `${V2}/simple/devsapp/demo-comp/zipball/1.0.0` });
    const zip = await getVia(agent, release.zipball_url as string);
    expect(zip.status).toBe(200);
    expect(zip.body.equals(fake.packages.get('demo-comp')!.releases[0]!.zip)).toBe(true);
  });

  it('answers absolute-form requests for the mirror itself as its own', async () => {
    const res = await getVia(viaMirror(mirror), `${mirror.url}/v3/packages/demo-comp/release/latest`);
    expect(res.status).toBe(200);
    expect((res.json().body as { zipball_url: string }).zipball_url).toBe(`${mirror.url}/v3/packages/demo-comp/zipball/1.0.0`);
  });

  it('refuses any other host with 403 naming intercept.hosts', async () => {
    const res = await getVia(viaMirror(mirror), 'http://example.com/some/path?token=secret');
    expect(res.status).toBe(403);
    expect(res.body.toString()).toMatch(/intercept\.hosts .*api\.devsapp\.cn.*GET http:\/\/example\.com\/\.\.\. is refused/);
    expect(mirror.logs.join('')).not.toContain('token=secret');
  });
});

describe('proxy mode: refusals and tunnels', () => {
  it('refuses CONNECT to any other host with 403 naming the settings (raw, and as undici sees it)', async () => {
    const { text } = await rawConnect(mirror, 'example.com:443');
    expect(text).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(text).toContain('intercept.hosts (api.devsapp.cn, server-serverlgistry-v-awljqvnszb.cn-hangzhou.fcapp.run, registry.devsapp.cn): CONNECT to example.com:443 is refused');
    expect(text).toContain('set intercept.tunnel');
    await expect(getVia(viaMirror(mirror), 'https://example.com/')).rejects.toThrow(/403/);
  });

  it('a client that speaks plain HTTP inside an intercepted tunnel is cut off, and the mirror goes on serving', async () => {
    const { text, socket } = await rawConnect(mirror, 'api.devsapp.cn:443', true);
    expect(text).toBe('HTTP/1.1 200 Connection Established\r\n\r\n');
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => {});
    socket.write('GET /v3/packages/demo-comp/release/latest HTTP/1.1\r\nHost: api.devsapp.cn\r\n\r\n');
    await closed;
    expect((await getVia(viaMirror(mirror), `${API}/v3/packages/demo-comp/release/latest`)).status).toBe(200);
  });

  it('refuses an intercepted host on another port, and a malformed target', async () => {
    expect((await rawConnect(mirror, 'api.devsapp.cn:8443')).text).toMatch(/^HTTP\/1\.1 403 .*port 443 only/s);
    expect((await rawConnect(mirror, 'not a target')).text).toMatch(/^HTTP\/1\.1 400 /);
  });

  it('with intercept.tunnel, passes CONNECT to another host:443 through (directly), and still refuses other ports', async () => {
    // A plain TCP echo server on the test's own loopback address, port 443.
    const echo: Server = createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => echo.listen(443, '127.0.0.9', resolve));
    const m = await startMirror(fake.v3, { intercept: true, 'intercept-tunnel': true });
    try {
      const { text, socket } = await rawConnect(m, '127.0.0.9:443', true);
      expect(text).toBe('HTTP/1.1 200 Connection Established\r\n\r\n');
      const echoed = new Promise<string>((resolve) => socket.once('data', (d) => resolve(d.toString())));
      socket.write('ping through the tunnel');
      expect(await echoed).toBe('ping through the tunnel');
      expect((await rawConnect(m, '127.0.0.9:22')).text).toMatch(/^HTTP\/1\.1 403 .*port 443 only/s);
      // Shutdown cuts open tunnels at its deadline.
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      await m.close(300);
      await closed;
    } finally {
      await new Promise<void>((resolve) => echo.close(() => resolve()));
    }
  });

  it('with upstream.proxy set, a tunnel goes through that proxy (with its credentials), as everything leaving the mirror does', async (ctx) => {
    const tools = ensureProxyTools();
    if ('skip' in tools) return ctx.skip(tools.skip);
    const auth = { user: 'tunnel', password: 'tunnel-proxy-secret' };
    recordSecrets(auth.password);
    const proxy = await Tinyproxy.start(tools.tinyproxy, { connectPorts: [443], auth });
    const echo: Server = createServer((sock) => sock.pipe(sock));
    await new Promise<void>((resolve) => echo.listen(443, '127.0.0.9', resolve));
    const m = await startMirror(fake.v3, { intercept: true, 'intercept-tunnel': true, 'upstream-proxy': proxy.url(auth) });
    try {
      const { text, socket } = await rawConnect(m, '127.0.0.9:443', true);
      expect(text).toBe('HTTP/1.1 200 Connection Established\r\n\r\n');
      const echoed = new Promise<string>((resolve) => socket.once('data', (d) => resolve(d.toString())));
      socket.write('ping through two tunnels');
      expect(await echoed).toBe('ping through two tunnels');
      socket.destroy();
      expect(proxy.connects('127.0.0.9:443')).toBe(1); // the proxy's own log: it carried the tunnel
    } finally {
      await m.close();
      await new Promise<void>((resolve) => echo.close(() => resolve()));
      proxy.stop();
    }
  });

  it('counts CONNECT sockets against server.maxConnections', async () => {
    const m = await startMirror(fake.v3, { intercept: true, 'max-connections': '2' });
    const held: Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const { text, socket } = await rawConnect(m, 'api.devsapp.cn:443', true);
        expect(text).toBe('HTTP/1.1 200 Connection Established\r\n\r\n');
        held.push(socket);
      }
      const third = await rawConnect(m, 'api.devsapp.cn:443');
      expect(third.text).toBe(''); // closed at once, unanswered
      held.pop()!.destroy();
      // Once the mirror has seen that close, a connection is accepted again.
      await until(async () => {
        const fourth = await rawConnect(m, 'api.devsapp.cn:443', true);
        held.push(fourth.socket);
        return fourth.text === 'HTTP/1.1 200 Connection Established\r\n\r\n';
      });
    } finally {
      for (const s of held) s.destroy();
      await m.close();
    }
  });

  it('without intercept.enabled, CONNECT is not answered and absolute-form requests are not served as a proxy', async () => {
    const m = await startMirror(fake.v3);
    try {
      expect((await rawConnect(m, 'api.devsapp.cn:443')).text).toBe('');
    } finally {
      await m.close();
    }
  });
});

describe('s 2.x paths (/simple), asked directly', () => {
  it('answers /simple/{name}/releases[/latest] and /simple/devsapp/{name}/... in s 2.x\'s shape, zipballs under /simple', async () => {
    const latest = (await request(`${mirror.url}/simple/demo-comp/releases/latest`)).body.json() as Promise<{ Response: Record<string, unknown> }>;
    expect((await latest).Response).toMatchObject({ tag_name: '1.0.0', zipball_url: `${mirror.url}/simple/demo-comp/zipball/1.0.0` });
    const res = await request(`${mirror.url}/simple/devsapp/demo-comp/releases`);
    const list = ((await res.body.json()) as { Response: Array<{ tag_name: string; zipball_url: string }> }).Response;
    expect(list.map((r) => r.tag_name)).toEqual(['1.0.0', '0.9.0']);
    expect(list[1]!.zipball_url).toBe(`${mirror.url}/simple/devsapp/demo-comp/zipball/0.9.0`);
    const zip = await request(list[1]!.zipball_url);
    expect(zip.statusCode).toBe(200);
    expect(Buffer.from(await zip.body.arrayBuffer()).equals(fake.packages.get('demo-comp')!.releases[1]!.zip)).toBe(true);
  });

  it('never pages the list (s 2.x looks for a pinned version in the whole of it)', async () => {
    fake.add('many-comp', Array.from({ length: 45 }, (_, i) => ({ version: `1.0.${44 - i}` })));
    const res = await request(`${mirror.url}/simple/devsapp/many-comp/releases`);
    expect(res.headers.link).toBeUndefined();
    expect(((await res.body.json()) as { Response: unknown[] }).Response).toHaveLength(45);
  });

  it('answers errors as {"Error": {"Code", "Message"}} with the status', async () => {
    const res = await request(`${mirror.url}/simple/devsapp/never-heard-of/releases/latest`);
    expect(res.statusCode).toBe(404);
    expect(await res.body.json()).toMatchObject({ Error: { Code: 'not-found', Message: expect.any(String) } });
    // The SRM face without the prefix is unchanged.
    const srm = await request(`${mirror.url}/never-heard-of/releases/latest`);
    expect(await srm.body.json()).toMatchObject({ error: 'not-found' });
  });

  it('with an SRM upstream, /simple/{provider}/{name} is the package provider/name', async () => {
    fake.add('devsapp/srm-comp', [{ version: '3.0.0' }]);
    const m = await startMirror(fake.srm, { 'upstream-type': 'srm' });
    try {
      const res = await request(`${m.url}/simple/devsapp/srm-comp/releases/latest`);
      expect(((await res.body.json()) as { Response: Record<string, unknown> }).Response).toMatchObject({
        tag_name: '3.0.0',
        zipball_url: `${m.url}/simple/devsapp/srm-comp/zipball/3.0.0`,
      });
    } finally {
      await m.close();
    }
  });
});
