// The hot path (faces/hot-path.ts) answers the v3 reads exactly as express does: the same request through both — the
// path as clients send it (the hot path), and the same path with a trailing slash or another letter case (which only
// express matches) — gets the same status, headers and body: valid reads, zipballs (MISS, HIT, Range, 304), HEAD,
// invalid names and versions, unknown packages, bad queries, and hosted packages without a user or with a download
// link. Requests with credentials are left to express, which passes private content through.
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { get, manualClock, recordSecrets, removeTempDirs, send, startMirror, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
let mirror: TestMirror;
let basic: Record<string, string>;
const clock = manualClock(Date.parse('2026-11-21T10:00:00Z'));

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '0.1.2' }, { version: '0.1.1' }]);
  mirror = await startMirror(fake.v3, { 'hosted-packages': 'corp-*', 'hosted-anonymous-read': 'false' }, { now: clock.now });
  const secret = await mirror.mirror.users.add('alice', 'publisher');
  basic = { authorization: `Basic ${Buffer.from(`alice:${secret}`).toString('base64')}` };
  recordSecrets(secret, basic.authorization!);
  const form = new URLSearchParams({ publish: 'Type: Component\nName: corp-a\nVersion: 1.0.0\n', version_body: '' }).toString();
  const step1 = await send('POST', `${mirror.url}/v3/packages/releases`, { ...basic, 'content-type': 'application/x-www-form-urlencoded' }, form);
  const { url } = (step1.json() as { body: { url: string } }).body;
  expect((await send('PUT', url, {}, componentZip('corp-a', '1.0.0'))).status).toBe(201);
});

afterEach(async () => {
  await mirror.close();
  await fake.close();
  await removeTempDirs();
});

/**
 * An answer as compared: status, headers (less those that differ on every answer), body (the envelope's request_id,
 * the request's own, left out: its length too, from content-length).
 */
async function answer(method: string, path: string, headers: Record<string, string> = {}) {
  const res = await request(mirror.url + path, { method: method as 'GET', headers });
  const raw = Buffer.from(await res.body.arrayBuffer()).toString('latin1');
  const id = /^\{"request_id":"([^"]+)",/.exec(raw)?.[1];
  const body = id === undefined ? raw : raw.replace(`"${id}"`, '"-"');
  const { date: _d, 'x-request-id': _id, ...rest } = res.headers;
  if (id !== undefined && rest['content-length'] !== undefined) rest['content-length'] = String(Number(rest['content-length']) - id.length + 1);
  return { status: res.statusCode, headers: rest, body };
}

/** What express alone answers for a path: with a trailing slash, or the mount's letter case changed. */
const expressOnly = (path: string) => {
  const [p, q] = path.split('?');
  return [`${p}/${q === undefined ? '' : `?${q}`}`, path.replace('/v3/packages/', '/V3/Packages/')];
};

async function sameAnswers(method: string, path: string, headers: Record<string, string> = {}) {
  const hot = await answer(method, path, headers);
  for (const other of expressOnly(path)) expect(await answer(method, other, headers), `${method} ${other}`).toEqual(hot);
  return hot;
}

describe('the hot path answers as express does', () => {
  it('valid reads: releases, pages, lists, zipballs (MISS then HIT, Range, 304) and HEAD', async () => {
    const zip = '/v3/packages/fc3/zipball/0.1.2';
    await get(mirror.url + zip); // MISS (the archive is then cached: each later answer is a HIT)
    for (const path of [
      '/v3/packages/fc3/release/latest',
      '/v3/packages/fc3/release/tags/0.1.1',
      '/v3/packages/fc3/release?page=1',
      '/v3/packages/releases?page=1&search=fc',
      zip,
    ]) {
      await get(mirror.url + path); // cached
      const hot = await sameAnswers('GET', path);
      expect(hot.status, path).toBe(200);
      expect([hot.headers['x-cache'], path]).toEqual(['HIT', path]);
      await sameAnswers('HEAD', path);
      await sameAnswers('GET', path, { 'if-none-match': hot.headers.etag as string });
    }
    const range = await sameAnswers('GET', zip, { range: 'bytes=0-9' });
    expect([range.status, range.body.length]).toEqual([206, 10]);
    expect((await sameAnswers('GET', zip, { 'if-none-match': `"${createHash('sha256').update(await (await get(mirror.url + zip)).body).digest('hex')}"` })).status).toBe(304);
  });

  it('invalid and unknown: 400 and 404 with their reasons, in the envelope', async () => {
    for (const [path, status] of [
      ['/v3/packages/bad%20name/release/latest', 400],
      ['/v3/packages/fc3/release/tags/bad%20version', 400],
      ['/v3/packages/fc3/zipball/-x', 400],
      ['/v3/packages/fc3/release?page=abc', 400],
      ['/v3/packages/releases?page=0x', 400],
      ['/v3/packages/nope/release/latest', 404],
      ['/v3/packages/fc3/release/tags/9.9.9', 404],
      ['/v3/packages/nope/zipball/1.0.0', 404],
    ] as const) {
      const hot = await sameAnswers('GET', path);
      expect([path, hot.status]).toEqual([path, status]);
      expect(typeof (JSON.parse(hot.body) as { body: unknown }).body).toBe('string');
    }
  });

  it('hosted packages: 401 without a user, and the zipball with a download link, as express answers them', async () => {
    for (const path of ['/v3/packages/corp-a/release/latest', '/v3/packages/corp-a/release/tags/1.0.0', '/v3/packages/corp-a/zipball/1.0.0', '/v3/packages/corp-a/release?page=1']) {
      expect([path, (await sameAnswers('GET', path)).status]).toEqual([path, 401]);
    }
    const latest = (await get(`${mirror.url}/v3/packages/corp-a/release/latest`, basic)).json() as { body: { zipball_url: string } };
    const link = new URL(latest.body.zipball_url);
    expect(link.search).toMatch(/signature=/);
    const download = await sameAnswers('GET', link.pathname + link.search);
    expect([download.status, download.headers['x-cache']]).toEqual([200, 'HOSTED']);
  });

  it('a request with credentials goes through express: private content is passed through with them', async () => {
    fake.add('secret', [{ version: '1.0.0' }], { private: true });
    const headers = { token: 'tok-HOT-1', sign_code: 'sign-HOT-2', nonce: 'abcdefghijklmno', timestamp: '1700000000' };
    recordSecrets(headers.token, headers.sign_code);
    expect((await get(`${mirror.url}/v3/packages/secret/release/latest`)).status).toBe(404);
    const mine = await get(`${mirror.url}/v3/packages/secret/release/latest`, headers);
    expect([mine.status, mine.headers.get('x-cache')]).toEqual([200, 'BYPASS']);
  });
});
