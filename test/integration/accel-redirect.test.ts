// nginx offload (server.accelRedirect), against a real nginx running docs/nginx.md's configuration: big cached HITs
// are answered with X-Accel-Redirect and sent by nginx from the archive store's file, with the mirror's headers; the
// rest is the mirror's. nginx's access log says which location answered each request.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureNginx, Nginx } from '../fakes/nginx.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { get, removeTempDirs, send, startMirror, until, type TestMirror } from '../helpers.js';

const tools = ensureNginx();
if ('skip' in tools) console.warn(`nginx offload tests skipped: ${tools.skip}`);

const PREFIX = '/_srm/archives/';
const big = componentZip('big', '1.0.0', { payload: Buffer.alloc(300_000, 7) });
const small = componentZip('small', '1.0.0');
const zipball = (name: string) => `/v3/packages/${name}/zipball/1.0.0`;

const FLAGS = { 'accel-redirect': PREFIX, 'accel-redirect-min-size': '200KB', 'allow-private-hosts': true, 'archive-hosts': '127.0.0.1', prefetch: 'false' };

describe.skipIf('skip' in tools)('behind nginx: X-Accel-Redirect for cached archives', () => {
  let upstream: FakeUpstream;
  let mirror: TestMirror;
  let nginx: Nginx;
  const digest = sha256(big);
  const location = `${PREFIX}${digest.slice(0, 2)}/${digest}`;

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    upstream.add('big', [{ version: '1.0.0', zip: big }]);
    upstream.add('small', [{ version: '1.0.0', zip: small }]);
    upstream.add('cold', [{ version: '1.0.0', zip: componentZip('cold', '1.0.0', { payload: Buffer.alloc(300_000, 9) }) }]);
    // Disk HITs here (archives held in memory: the last test).
    mirror = await startMirror(upstream.v3, { ...FLAGS, 'memory-archives': '0' });
    nginx = await Nginx.start((tools as { nginx: string }).nginx, Number(new URL(mirror.url).port), mirror.dataDir);
    for (const name of ['big', 'small']) expect((await get(`${mirror.url}${zipball(name)}`)).headers.get('x-cache')).toBe('MISS');
  });

  afterAll(async () => {
    nginx?.stop();
    await mirror?.close();
    await upstream?.close();
    await removeTempDirs();
  });

  /** Which location of nginx answered the nth request for `uri` (after internal redirects). */
  const servedBy = async (uri: string, nth: number) => {
    await until(() => nginx.servedBy(uri).length >= nth); // nginx logs a request once it is done
    return nginx.servedBy(uri)[nth - 1];
  };

  it('answers a big HIT, asked directly, with X-Accel-Redirect and no body, its headers moved out of an error\'s way', async () => {
    const res = await get(`${mirror.url}${zipball('big')}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-accel-redirect')).toBe(location);
    expect(res.body.length).toBe(0);
    expect(res.headers.get('etag')).toBe(`"${digest}"`);
    expect(res.headers.get('x-cache')).toBe('HIT');
    expect(res.headers.get('cache-control')).toBeNull();
    expect(res.headers.get('x-srm-cache-control')).toBe('public, max-age=31536000, immutable');
    expect(res.headers.get('x-srm-content-disposition')).toBe('attachment; filename="big-1.0.0.zip"');
  });

  it('through nginx, a big HIT is nginx\'s file with the mirror\'s headers', async () => {
    const res = await get(`${nginx.url}${zipball('big')}`);
    expect(res.status).toBe(200);
    expect(res.body.equals(big)).toBe(true);
    expect(res.headers.get('etag')).toBe(`"${digest}"`);
    expect(res.headers.get('x-cache')).toBe('HIT');
    expect(res.headers.get('content-type')).toBe('application/zip');
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="big-1.0.0.zip"');
    expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(res.headers.get('content-length')).toBe(String(big.length));
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('last-modified')).toBeNull();
    expect(res.headers.get('x-accel-redirect')).toBeNull();
    expect(await servedBy(zipball('big'), 1)).toBe(location);
  });

  it('through nginx, a Range of a big HIT is nginx\'s, and If-Range goes by the mirror\'s ETag', async () => {
    const ranged = await get(`${nginx.url}${zipball('big')}`, { range: 'bytes=100-199', 'if-range': `"${digest}"` });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get('content-range')).toBe(`bytes 100-199/${big.length}`);
    expect(ranged.body.equals(big.subarray(100, 200))).toBe(true);
    expect(ranged.headers.get('etag')).toBe(`"${digest}"`);
    const stale = await get(`${nginx.url}${zipball('big')}`, { range: 'bytes=100-199', 'if-range': '"another"' });
    expect(stale.status).toBe(200);
    expect(stale.body.equals(big)).toBe(true);
    expect(await servedBy(zipball('big'), 3)).toBe(location);
  });

  it('through nginx, HEAD of a big HIT has the headers and no body', async () => {
    const before = nginx.servedBy(zipball('big')).length;
    const res = await send('HEAD', `${nginx.url}${zipball('big')}`);
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(0);
    expect(res.headers['content-length']).toBe(String(big.length));
    expect(res.headers.etag).toBe(`"${digest}"`);
    expect(res.headers['x-cache']).toBe('HIT');
    expect(res.headers['content-disposition']).toBe('attachment; filename="big-1.0.0.zip"');
    expect(await servedBy(zipball('big'), before + 1)).toBe(location);
  });

  it('through nginx, If-None-Match is answered 304 by the mirror itself', async () => {
    const before = nginx.servedBy(zipball('big')).length;
    const res = await get(`${nginx.url}${zipball('big')}`, { 'if-none-match': `"${digest}"` });
    expect(res.status).toBe(304);
    expect(res.headers.get('etag')).toBe(`"${digest}"`);
    expect(await servedBy(zipball('big'), before + 1)).toBe(zipball('big'));
  });

  it('a MISS streams from the mirror, and so does a HIT below the threshold', async () => {
    const miss = await get(`${nginx.url}${zipball('cold')}`);
    expect(miss.status).toBe(200);
    expect(miss.headers.get('x-cache')).toBe('MISS');
    expect(miss.body.length).toBeGreaterThan(300_000);
    expect(await servedBy(zipball('cold'), 1)).toBe(zipball('cold'));

    const direct = await get(`${mirror.url}${zipball('small')}`);
    expect(direct.headers.get('x-cache')).toBe('HIT');
    expect(direct.headers.get('x-accel-redirect')).toBeNull();
    expect(direct.body.equals(small)).toBe(true);
    const proxied = await get(`${nginx.url}${zipball('small')}`);
    expect(proxied.body.equals(small)).toBe(true);
    expect(proxied.headers.get('etag')).toBe(`"${sha256(small)}"`);
    expect(await servedBy(zipball('small'), 1)).toBe(zipball('small'));
  });

  it('a file gone before nginx opens it is a 404 without the archive\'s headers (never cached for a year)', async () => {
    // The mirror's own redirecting answer, replayed by a stand-in whose file is not in the store.
    const answer = await send('GET', `${mirror.url}${zipball('big')}`);
    expect(answer.headers['x-accel-redirect']).toBe(location);
    const standIn = createServer((_req, res) => {
      for (const [name, value] of Object.entries(answer.headers)) if (!['connection', 'keep-alive', 'date'].includes(name) && value !== undefined) res.setHeader(name, value);
      res.setHeader('X-Accel-Redirect', `${PREFIX}00/${'0'.repeat(64)}`);
      res.end();
    });
    await new Promise<void>((resolve) => standIn.listen(0, '127.0.0.1', resolve));
    const front = await Nginx.start((tools as { nginx: string }).nginx, (standIn.address() as AddressInfo).port, mirror.dataDir);
    try {
      const res = await get(`${front.url}${zipball('big')}`);
      expect(res.status).toBe(404);
      for (const name of ['etag', 'x-cache', 'cache-control', 'content-disposition']) expect(res.headers.get(name)).toBeNull();
      expect(res.headers.get('content-type')).not.toBe('application/zip');
    } finally {
      front.stop();
      standIn.close();
    }
  });

  it('the internal location cannot be asked for from outside', async () => {
    const res = await get(`${nginx.url}${location}`);
    expect(res.status).toBe(404);
    expect(res.body.includes(big.subarray(0, 64))).toBe(false);
  });

  it('the memory cache (cache.memoryArchives) holds only the archives the mirror sends itself: nginx sends the rest from their files', async () => {
    const held = await startMirror(upstream.v3, { ...FLAGS, 'memory-archives': '8MB' });
    try {
      const answers = async (name: string) => {
        const all = [];
        for (let i = 0; i < 4; i++) all.push(await get(`${held.url}${zipball(name)}`));
        return all.map((a) => [a.headers.get('x-cache'), a.headers.get('x-accel-redirect') !== null, a.body.length]);
      };
      // MISS; then HITs. A small archive is loaded into memory by its second disk HIT; a big one is never loaded.
      expect(await answers('big')).toEqual([['MISS', false, big.length], ...Array(3).fill(['HIT', true, 0])]);
      expect(await answers('small')).toEqual([['MISS', false, small.length], ...Array(3).fill(['HIT', false, small.length])]);
      const status = (await get(`${held.url}/-/status`)).json() as { archives: { memory: { archives: number; usedBytes: number } } };
      expect(status.archives.memory).toMatchObject({ archives: 1, usedBytes: small.length }); // the small one alone
    } finally {
      await held.close();
    }
  });
});
