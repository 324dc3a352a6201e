// Metadata answers are rendered once and reused while their document is unchanged (faces/json.ts RenderedAnswers):
// a refresh that brings a new version, or a write through the mirror, gives a new body and a new ETag at once on every
// face; each base URL (Host, X-Forwarded-Host) keeps its own zipball_urls; a 304 still answers a known ETag.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { signed } from '../fakes/clients.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { get, manualClock, removeTempDirs, send, startMirror, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
let mirror: TestMirror;
const clock = manualClock(Date.parse('2026-11-21T10:00:00Z'));
const MAX_AGE_MS = 60_000;

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.1.0' }, { version: '1.0.0' }]);
  mirror = await startMirror(fake.v3, { 'max-age': '60s' }, { now: clock.now });
});

afterEach(async () => {
  await mirror.close();
  await fake.close();
  await removeTempDirs();
});

/** Every metadata read, on each face (v3 on the hot path and through express, SRM, s 2.x's /simple), with how to find its releases. */
const READS: ReadonlyArray<readonly [path: string, tags: (json: unknown) => string[]]> = [
  ['/v3/packages/fc3/release/latest', (j) => [(j as { body: { tag_name: string } }).body.tag_name]],
  ['/v3/packages/fc3/release?page=1', (j) => (j as { body: Array<{ tag_name: string }> }).body.map((r) => r.tag_name)],
  ['/fc3/releases/latest', (j) => [(j as { tag_name: string }).tag_name]],
  ['/fc3/releases', (j) => (j as Array<{ tag_name: string }>).map((r) => r.tag_name)],
  ['/simple/fc3/releases/latest', (j) => [(j as { Response: { tag_name: string } }).Response.tag_name]],
  ['/simple/fc3/releases', (j) => (j as { Response: Array<{ tag_name: string }> }).Response.map((r) => r.tag_name)],
];

/** Every zipball_url of an answer, wherever it sits. */
const zipballs = (text: string) => [...text.matchAll(/"zipball_url":"([^"]+)"/g)].map((m) => m[1]!);

describe('rendered answers, reused while the document is unchanged', () => {
  it('a refresh that brings a new version gives the new body and a new ETag at once, on every face', async () => {
    const before = new Map<string, string>();
    for (const [path, tags] of READS) {
      await get(mirror.url + path); // MISS
      const hit = await get(mirror.url + path);
      expect(hit.headers.get('x-cache')).toBe('HIT');
      expect(tags(hit.json())[0]).toBe('1.1.0');
      before.set(path, hit.headers.get('etag')!);
    }
    fake.publish('fc3', { version: '1.2.0' });
    clock.advance(MAX_AGE_MS + 1);
    for (const [path, tags] of READS) {
      const refreshed = await get(mirror.url + path); // a MISS, or a HIT of the document another face's read refreshed
      expect(tags(refreshed.json())[0], path).toBe('1.2.0');
      expect(refreshed.headers.get('etag'), path).not.toBe(before.get(path));
      // The next answer, from the cache, is the new one too, with the same new ETag, and a 304 for it.
      const again = await get(mirror.url + path);
      expect([again.headers.get('x-cache'), tags(again.json())[0], again.headers.get('etag')], path).toEqual(['HIT', '1.2.0', refreshed.headers.get('etag')]);
      expect((await get(mirror.url + path, { 'if-none-match': refreshed.headers.get('etag')! })).status, path).toBe(304);
      expect((await get(mirror.url + path, { 'if-none-match': before.get(path)! })).status, path).toBe(200);
    }
  });

  it('a revalidation the upstream answers 304 keeps the body and the ETag', async () => {
    const path = '/v3/packages/fc3/release/latest';
    const first = await get(mirror.url + path);
    clock.advance(MAX_AGE_MS + 1);
    const revalidated = await get(mirror.url + path);
    expect(revalidated.headers.get('x-cache')).toBe('REVALIDATED');
    expect(revalidated.headers.get('etag')).toBe(first.headers.get('etag'));
    expect((revalidated.json() as { body: unknown }).body).toEqual((first.json() as { body: unknown }).body);
  });

  it('a delete through the mirror leaves the version out of the next answer from the cache, with a new ETag', async () => {
    const path = '/v3/packages/fc3/release?page=1';
    await get(mirror.url + path);
    const before = await get(mirror.url + path);
    expect((await send('DELETE', `${mirror.url}/v3/packages/fc3/release/tags/1.1.0`, signed())).status).toBe(200);
    const after = await get(mirror.url + path);
    expect(READS[1]![1](after.json())).toEqual(['1.0.0']);
    expect(after.headers.get('etag')).not.toBe(before.headers.get('etag'));
  });

  it('each base URL gets its own zipball_urls, on every face, the first answer and the reused ones', async () => {
    const hosts = ['mirror-a.example', 'mirror-b.example:8080', 'mirror-a.example'];
    for (const [path] of READS) {
      const etags = new Set<string>();
      for (const host of hosts) {
        for (let i = 0; i < 2; i++) {
          const answer = await get(mirror.url + path, { host });
          const prefix = path.startsWith('/simple/') ? `http://${host}/simple/fc3/zipball/` : path.startsWith('/v3/') ? `http://${host}/v3/packages/fc3/zipball/` : `http://${host}/fc3/zipball/`;
          const urls = zipballs(answer.body.toString());
          expect(urls.length, path).toBeGreaterThan(0);
          for (const url of urls) expect(url.startsWith(prefix), `${path} for ${host}: ${url}`).toBe(true);
          etags.add(answer.headers.get('etag')!);
        }
      }
      expect(etags.size, path).toBe(2); // an ETag per base URL
    }
  });

  it('behind a trusted proxy, X-Forwarded-Host and X-Forwarded-Proto name the base URL of reused answers too', async () => {
    const proxied = await startMirror(fake.v3, { 'trust-proxy': true }, { now: clock.now });
    try {
      const path = '/v3/packages/fc3/release/latest';
      for (const [host, proto] of [['one.example', 'https'], ['two.example', 'http'], ['one.example', 'http']] as const) {
        for (let i = 0; i < 2; i++) {
          const answer = await get(proxied.url + path, { 'x-forwarded-host': host, 'x-forwarded-proto': proto });
          expect(zipballs(answer.body.toString())).toEqual([`${proto}://${host}/v3/packages/fc3/zipball/1.1.0`]);
        }
      }
    } finally {
      await proxied.close();
    }
  });

  it('the v3 envelope gets a new request_id on every answer, reused or not: the request\'s own id, as in x-request-id', async () => {
    const path = '/v3/packages/fc3/release/latest';
    const ids = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const answer = await get(mirror.url + path);
      const id = (answer.json() as { request_id: string }).request_id;
      expect(answer.headers.get('x-request-id')).toBe(id); // the id the access log shows
      ids.add(id);
    }
    expect(ids.size).toBe(3);
    for (const url of [mirror.url + path, `${mirror.url}/v3/packages/nope-404/release/latest`]) {
      expect(((await get(url, { 'x-request-id': 'ci-job-7' })).json() as { request_id: string }).request_id).toBe('ci-job-7');
    }
  });
});
