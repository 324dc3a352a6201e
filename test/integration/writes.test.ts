// Writes and login through the mirror, over HTTP: passed through untouched, never cached, and the cache follows
// a successful publish or delete at once.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FORM_HEADERS, publishForm, signed } from '../fakes/clients.js';
import { componentZip } from '../fakes/zips.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { get, killChildren, peakRss, recordSecrets, removeTempDirs, send, spawnMirror, startMirror, tempDir, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
let mirror: TestMirror;

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.1.0' }, { version: '1.0.0' }]);
  mirror = await startMirror(fake.v3);
});

afterEach(async () => {
  killChildren();
  await mirror.close();
  await fake.close();
  await removeTempDirs();
});

const form = FORM_HEADERS;

describe('pass-through', () => {
  it('publish step 1 reaches the upstream unchanged, headers and body, and its answer comes back unchanged', async () => {
    const headers = { ...signed(), ...form, 'user-agent': 'test' };
    const body = publishForm('fc3', '1.2.0');
    const res = await send('POST', `${mirror.url}/v3/packages/releases?x=1`, headers, body);
    expect(res.status).toBe(200);
    expect(res.headers['x-cache']).toBe('BYPASS');
    expect(JSON.parse(res.text)).toMatchObject({ body: { url: expect.stringMatching(`^${fake.url}/upload/`) } });
    const got = fake.requests.find((r) => r.method === 'POST')!;
    expect(got.url).toBe('/v3/packages/releases?x=1');
    expect(got.headers).toMatchObject(headers);
    expect(got.body.toString()).toBe(body);
  });

  it('an upstream redirect is passed on, not followed', async () => {
    const elsewhere = `${fake.url}/elsewhere`;
    fake.inject(/\/v3\/user\/check/, { kind: 'status', status: 302, headers: { location: elsewhere } }, 1);
    const res = await send('GET', `${mirror.url}/v3/user/check?token=x`, {});
    expect([res.status, res.headers.location]).toEqual([302, elsewhere]);
    expect(fake.count(/elsewhere/)).toBe(0);
  });

  it('writes without credentials get the upstream 401 answer unchanged', async () => {
    const direct = await send('POST', `${fake.v3}/packages/releases`, form, publishForm('fc3', '9.9.9'));
    const via = await send('POST', `${mirror.url}/v3/packages/releases`, form, publishForm('fc3', '9.9.9'));
    expect([via.status, via.text]).toEqual([401, direct.text]);
    const del = await send('DELETE', `${mirror.url}/v3/packages/fc3/release/tags/1.0.0`, {});
    expect(del.status).toBe(401);
  });

  it('retoken, browser-login polling and the private list pass through', async () => {
    const token = await send('POST', `${mirror.url}/v3/user/token`, signed());
    expect(JSON.parse(token.text)).toMatchObject({ body: { safety_code: 'new-safety-code' } });
    recordSecrets('new-safety-code');
    const check = await send('GET', `${mirror.url}/v3/user/check?token=ready`, {});
    expect(JSON.parse(check.text)).toMatchObject({ body: { safety_code: 'sc', name: 'fake-user' } });
    expect(fake.requests.at(-1)!.url).toBe('/v3/user/check?token=ready');
    fake.add('mine', [{ version: '1.0.0' }], { private: true });
    const mine = await send('GET', `${mirror.url}/v3/package/user?page=1`, signed());
    expect((JSON.parse(mine.text) as { body: Array<{ name: string }> }).body.map((p) => p.name)).toEqual(['mine']);
    expect(fake.count(/\/v3\/package\/user/)).toBe(1);
    await send('GET', `${mirror.url}/v3/package/user?page=1`, signed());
    expect(fake.count(/\/v3\/package\/user/)).toBe(2); // never cached
  });
});

describe('the cache follows writes', () => {
  it('a publish makes the package stale: the new version shows as soon as the upstream lists it', async () => {
    expect(((await get(`${mirror.url}/v3/packages/fc3/release/latest`)).json() as { body: { tag_name: string } }).body.tag_name).toBe('1.1.0');
    const step1 = await send('POST', `${mirror.url}/v3/packages/releases`, { ...signed(), ...form }, publishForm('fc3', '1.2.0'));
    const uploadUrl = (JSON.parse(step1.text) as { body: { url: string } }).body.url;
    // A read between step 1 and the upload sees the old list, and must not pin it for max-age.
    await get(`${mirror.url}/v3/packages/fc3/release?page=1`);
    expect((await send('PUT', uploadUrl, {}, componentZip('fc3', '1.2.0'))).status).toBe(200); // step 2 goes to storage directly
    const latest = await get(`${mirror.url}/v3/packages/fc3/release/latest`);
    expect((latest.json() as { body: { tag_name: string } }).body.tag_name).toBe('1.2.0');
    const detail = await get(`${mirror.url}/v3/packages/fc3/release?page=1`);
    expect((detail.json() as { body: Array<{ tag_name: string }> }).body.map((r) => r.tag_name)).toEqual(['1.2.0', '1.1.0', '1.0.0']);
    const zip = await get(`${mirror.url}/v3/packages/fc3/zipball/1.2.0`);
    expect(zip.body).toEqual(componentZip('fc3', '1.2.0'));
  });

  it('a publish clears a remembered 404 of the package', async () => {
    expect((await get(`${mirror.url}/v3/packages/brand-new/release/latest`)).status).toBe(404);
    const step1 = await send('POST', `${mirror.url}/v3/packages/releases`, { ...signed(), ...form }, publishForm('brand-new', '0.1.0'));
    await send('PUT', (JSON.parse(step1.text) as { body: { url: string } }).body.url, {}, 'new zip');
    expect((await get(`${mirror.url}/v3/packages/brand-new/release/latest`)).status).toBe(200);
  });

  it('a delete removes the version from every cached answer at once, and unlinks its archive', async () => {
    for (const path of ['/v3/packages/fc3/release/latest', '/v3/packages/fc3/release?page=1', '/fc3/releases', '/v3/packages/fc3/zipball/1.1.0', '/v3/packages/fc3/zipball/1.0.0']) {
      await get(mirror.url + path);
    }
    const before = fake.requests.length;
    const del = await send('DELETE', `${mirror.url}/v3/packages/fc3/release/tags/1.1.0`, signed());
    expect(del.status).toBe(200);
    expect(fake.requests.length).toBe(before + 1);

    // Until the upstream is asked again, the cached answers already leave the version out.
    fake.inject(/./, { kind: 'status', status: 500 });
    const detail = await get(`${mirror.url}/v3/packages/fc3/release?page=1`);
    expect((detail.json() as { body: Array<{ tag_name: string }> }).body.map((r) => r.tag_name)).toEqual(['1.0.0']);
    const srm = await get(`${mirror.url}/fc3/releases`);
    expect((srm.json() as Array<{ tag_name: string }>).map((r) => r.tag_name)).toEqual(['1.0.0']);
    expect((await get(`${mirror.url}/v3/packages/fc3/zipball/1.1.0`)).status).not.toBe(200);
    fake.clearFaults();
    expect(((await get(`${mirror.url}/v3/packages/fc3/release/latest`)).json() as { body: { tag_name: string } }).body.tag_name).toBe('1.0.0');
    expect((await get(`${mirror.url}/v3/packages/fc3/release/tags/1.1.0`)).status).toBe(404);
    // the archive of 1.1.0 is gone from the disk; 1.0.0's stays
    const files = await readdir(join(mirror.dataDir, 'archives', 'sha256'), { recursive: true });
    expect(files.filter((f) => /[0-9a-f]{64}$/.test(f))).toHaveLength(1);
  });
});

describe('when the upstream cannot be reached', () => {
  it.each([
    ['POST', '/v3/packages/releases', 401, /needs the credentials of a user of this mirror/],
    ['DELETE', '/v3/packages/fc3/release/tags/1.0.0', 401, /needs the credentials of a user of this mirror/],
    ['POST', '/v3/user/token', 503, /offline/],
    ['GET', '/v3/user/check?token=x', 503, /offline/],
  ])('offline, %s %s answers %i at once, saying why (publish and delete are hosted: an upstream account is no user here)', async (method, path, status, why) => {
    const offline = await startMirror(fake.v3, { offline: true });
    try {
      const res = await send(method, offline.url + path, { ...signed(), ...form }, method === 'POST' ? publishForm('fc3', '2.0.0') : undefined);
      expect(res.status).toBe(status);
      expect((JSON.parse(res.text) as { body: string }).body).toMatch(why);
      expect(fake.requests).toEqual([]);
    } finally {
      await offline.close();
    }
  });

  it('with the circuit open, writes answer 503 at once (the upstream hangs meanwhile)', async () => {
    const m = await startMirror(fake.v3, { 'breaker-threshold': '2', retries: '0' });
    try {
      fake.inject(/./, { kind: 'status', status: 502 });
      await get(`${m.url}/v3/packages/fc3/release/latest`);
      await get(`${m.url}/v3/packages/fc3/release/latest`);
      fake.clearFaults();
      fake.inject(/./, { kind: 'hang' });
      const res = await send('POST', `${m.url}/v3/packages/releases`, { ...signed(), ...form }, publishForm('fc3', '2.0.0'));
      expect(res.status).toBe(503);
      expect((JSON.parse(res.text) as { body: string }).body).toMatch(/upstream is down/);
    } finally {
      await m.close();
    }
  });
});

describe('streaming', () => {
  it('20 concurrent 20 MB publishes stream through without being buffered (peak RSS stays flat), none cached', async () => {
    const data = await tempDir();
    const { child, url } = await spawnMirror(['--data', data, '--upstream', fake.v3]);
    const SIZE = 20 << 20;
    const zeros = () =>
      Readable.from(
        (function* () {
          const chunk = Buffer.alloc(64 << 10, 'a');
          for (let sent = 0; sent < SIZE; sent += chunk.length) yield chunk;
        })(),
      );
    await get(`${url}/-/health`);
    const before = peakRss(child.pid!);
    const answers = await Promise.all(Array.from({ length: 20 }, () => send('POST', `${url}/v3/packages/releases`, { ...signed(), ...form }, zeros())));
    const growth = peakRss(child.pid!) - before;
    expect(answers.every((a) => a.status === 400)).toBe(true); // the fake found no publish.yaml in 20 MB of "a"
    const posts = fake.requests.filter((r) => r.method === 'POST');
    expect(posts.map((r) => r.bodyLength)).toEqual(Array(20).fill(SIZE));
    expect(growth).toBeLessThan(100 << 20); // buffering would take 400 MB
    expect((await readdir(join(data, 'archives', 'sha256'))).length).toBe(0);
  });
});
