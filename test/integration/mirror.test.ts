// The mirror against a real fake upstream over HTTP: both faces, caching, single-flight, broken downloads,
// private content and chained mirrors.
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { componentZip } from '../fakes/zips.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { get, recordSecrets, removeTempDirs, startMirror, until, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
let mirror: TestMirror;
const ZIP = componentZip('fc3', '0.1.2', { payload: randomBytes(300_000) });

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '0.1.2', zip: ZIP }, { version: '0.1.1' }, { version: 'dev.0.56' }]);
  fake.add('fc3-domain', [{ version: '0.0.9' }]);
  mirror = await startMirror(fake.v3);
});

afterEach(async () => {
  await mirror.close();
  await fake.close();
  await removeTempDirs();
});

const archiveRequests = () => fake.count(/^\/blob\//);

describe('v3 face', () => {
  it('answers release/latest in the envelope with zipball_url pointing at the mirror, then from cache', async () => {
    const first = await get(`${mirror.url}/v3/packages/fc3/release/latest`);
    expect(first.status).toBe(200);
    expect(first.headers.get('x-cache')).toBe('MISS');
    const { request_id, body } = first.json() as { request_id: string; body: Record<string, unknown> };
    expect(request_id).toMatch(/\S/);
    expect(body).toMatchObject({ name: 'fc3', tag_name: '0.1.2', description: 'fc3 component' });
    expect(body.zipball_url).toBe(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`);

    const second = await get(`${mirror.url}/v3/packages/fc3/release/latest`);
    expect(second.headers.get('x-cache')).toBe('HIT');
    expect((second.json() as { body: unknown }).body).toEqual(body);
    expect(fake.count(/release\/latest/)).toBe(1);
  });

  it('answers a pinned version and a detail page, newest first, with rewritten URLs', async () => {
    const tag = await get(`${mirror.url}/v3/packages/fc3/release/tags/0.1.1`);
    expect((tag.json() as { body: unknown }).body).toMatchObject({ tag_name: '0.1.1', zipball_url: `${mirror.url}/v3/packages/fc3/zipball/0.1.1` });

    const detail = await get(`${mirror.url}/v3/packages/fc3/release?page=1`);
    const items = (detail.json() as { body: Array<Record<string, unknown>> }).body;
    expect(items.map((i) => i.tag_name)).toEqual(['0.1.2', '0.1.1', 'dev.0.56']);
    expect(items[0]).toEqual({ platform: 'linux', tag_name: '0.1.2', created_at: expect.any(String), zipball_url: `${mirror.url}/v3/packages/fc3/zipball/0.1.2` });
  });

  it('answers the package list with the upstream filters, cached per query', async () => {
    const all = await get(`${mirror.url}/v3/packages/releases?page=1`);
    expect((all.json() as { body: Array<{ name: string }> }).body.map((p) => p.name)).toEqual(['fc3', 'fc3-domain']);
    const found = await get(`${mirror.url}/v3/packages/releases?page=1&search=domain`);
    expect((found.json() as { body: Array<{ name: string }> }).body.map((p) => p.name)).toEqual(['fc3-domain']);
    await get(`${mirror.url}/v3/packages/releases?page=1&search=domain`);
    expect(fake.count(/\/v3\/packages\/releases/)).toBe(2);
  });

  it('answers 404 in the envelope with a string body for an unknown package', async () => {
    const res = await get(`${mirror.url}/v3/packages/nope/release/latest`);
    expect(res.status).toBe(404);
    expect(typeof (res.json() as { body: unknown }).body).toBe('string');
  });

  it('serves an archive through the mirror (following the upstream 302), then from disk with ETag and Range', async () => {
    const first = await get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`);
    expect(first.status).toBe(200);
    expect(first.headers.get('x-cache')).toBe('MISS');
    expect(first.headers.get('content-length')).toBe(String(ZIP.length));
    expect(sha256(first.body)).toBe(sha256(ZIP));

    const second = await get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`);
    expect(second.headers.get('x-cache')).toBe('HIT');
    expect(second.headers.get('etag')).toBe(`"${sha256(ZIP)}"`);
    expect(sha256(second.body)).toBe(sha256(ZIP));

    const notModified = await get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`, { 'if-none-match': `"${sha256(ZIP)}"` });
    expect(notModified.status).toBe(304);
    const range = await get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`, { range: 'bytes=100-199' });
    expect(range.status).toBe(206);
    expect(range.body).toEqual(ZIP.subarray(100, 200));

    expect(archiveRequests()).toBe(1);
    expect(fake.count(/\/zipball\//)).toBe(1);
  });

  it('needs no metadata request to download a version it learnt from latest', async () => {
    await get(`${mirror.url}/v3/packages/fc3/release/latest`);
    await get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`);
    expect(fake.count(/release\/tags/)).toBe(0);
  });
});

describe('single-flight', () => {
  it('200 concurrent requests for one uncached archive make exactly 1 upstream archive request', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, () => get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`)));
    expect(results.every((r) => r.status === 200 && sha256(r.body) === sha256(ZIP))).toBe(true);
    expect(archiveRequests()).toBe(1);
    expect(fake.count(/\/zipball\//)).toBe(1);
  });

  it('200 concurrent requests for one uncached release/latest make exactly 1 upstream request', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, () => get(`${mirror.url}/v3/packages/fc3/release/latest`)));
    const bodies = new Set(results.map((r) => JSON.stringify((r.json() as { body: unknown }).body)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(bodies.size).toBe(1);
    expect(fake.count(/release\/latest/)).toBe(1);
  });
});

describe('broken downloads are never cached', () => {
  it.each(['reset-mid-body', 'short-body'] as const)('%s: the client sees a failure, nothing is cached, the next request refetches', async (kind) => {
    fake.inject(/^\/blob\//, { kind }, 1);
    await expect(get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`)).rejects.toThrow();

    const archiveDir = join(mirror.dataDir, 'archives');
    await until(async () => (await readdir(join(archiveDir, 'tmp'))).length === 0);
    expect(await readdir(join(archiveDir, 'sha256'))).toEqual([]);

    const retry = await get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`);
    expect(retry.status).toBe(200);
    expect(retry.headers.get('x-cache')).toBe('MISS');
    expect(sha256(retry.body)).toBe(sha256(ZIP));
    expect(archiveRequests()).toBe(2);
  });

  it('an upstream error before any byte is a 502 in the envelope', async () => {
    fake.inject(/^\/blob\//, { kind: 'status', status: 500 });
    const res = await get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`);
    expect(res.status).toBe(502);
    expect((res.json() as { body: string }).body).toMatch(/upstream answered 500/);
  });
});

describe('SRM face', () => {
  it('serves releases, latest and zipball as bare JSON from a v3 upstream', async () => {
    const releases = await get(`${mirror.url}/fc3/releases`);
    expect(releases.status).toBe(200);
    expect(releases.json()).toEqual([
      { tag_name: '0.1.2', created_at: expect.any(String), zipball_url: `${mirror.url}/fc3/zipball/0.1.2`, body: '' },
      expect.objectContaining({ tag_name: '0.1.1' }),
      expect.objectContaining({ tag_name: 'dev.0.56' }),
    ]);
    const latest = await get(`${mirror.url}/fc3/releases/latest`);
    expect(latest.json()).toMatchObject({ tag_name: '0.1.2' });
    const zip = await get(`${mirror.url}/fc3/zipball/0.1.2`);
    expect(sha256(zip.body)).toBe(sha256(ZIP));
  });

  it('pages releases GitHub-style with a Link header', async () => {
    const first = await get(`${mirror.url}/fc3/releases?per_page=2`);
    expect((first.json() as unknown[]).length).toBe(2);
    expect(first.headers.get('link')).toContain('rel="next"');
    const second = await get(`${mirror.url}/fc3/releases?per_page=2&page=2`);
    expect((second.json() as Array<{ tag_name: string }>).map((r) => r.tag_name)).toEqual(['dev.0.56']);
  });

  it('answers unknown packages with a JSON 404', async () => {
    const res = await get(`${mirror.url}/nope/releases/latest`);
    expect(res.status).toBe(404);
    expect(res.json()).toMatchObject({ message: expect.any(String) });
  });
});

describe('srm upstream', () => {
  it('serves owner/name packages from an SRM upstream through both faces', async () => {
    fake.add('acme/tool', [{ version: '2.0.0', zip: ZIP }, { version: '1.0.0' }]);
    const srmMirror = await startMirror(fake.srm, { 'upstream-type': 'srm' });
    try {
      const latest = await get(`${srmMirror.url}/acme/tool/releases/latest`);
      expect(latest.json()).toMatchObject({ tag_name: '2.0.0', zipball_url: `${srmMirror.url}/acme/tool/zipball/2.0.0`, body: 'release 2.0.0' });
      const zip = await get(`${srmMirror.url}/acme/tool/zipball/2.0.0`);
      expect(sha256(zip.body)).toBe(sha256(ZIP));
      const v3 = await get(`${srmMirror.url}/v3/packages/fc3/release/latest`);
      expect((v3.json() as { body: unknown }).body).toMatchObject({ name: 'fc3', tag_name: '0.1.2', zipball_url: `${srmMirror.url}/v3/packages/fc3/zipball/0.1.2` });
    } finally {
      await srmMirror.close();
    }
  });
});

describe('chained mirrors', () => {
  it.each(['serverless-v3', 'srm'] as const)('an edge mirror with a %s upstream that is another mirror serves the same packages', async (type) => {
    const edge = await startMirror(type === 'srm' ? mirror.url : `${mirror.url}/v3`, { 'upstream-type': type });
    try {
      const latest = await get(`${edge.url}/v3/packages/fc3/release/latest`);
      expect((latest.json() as { body: unknown }).body).toMatchObject({ tag_name: '0.1.2', zipball_url: `${edge.url}/v3/packages/fc3/zipball/0.1.2` });
      const releases = await get(`${edge.url}/fc3/releases`);
      expect((releases.json() as Array<{ tag_name: string }>).map((r) => r.tag_name)).toEqual(['0.1.2', '0.1.1', 'dev.0.56']);
      const zip = await get(`${edge.url}/v3/packages/fc3/zipball/0.1.1`);
      expect(zip.body).toEqual(componentZip('fc3', '0.1.1'));
      expect(archiveRequests()).toBe(1);
    } finally {
      await edge.close();
    }
  });
});

describe('private content', () => {
  beforeEach(() => {
    fake.add('secret', [{ version: '1.0.0' }], { private: true });
  });

  it('passes a credentialed read through unchanged and uncached, and never logs the credentials', async () => {
    const headers = { token: 'tok-SECRET-123', sign_code: 'sign-SECRET-456', nonce: 'abcdefghijklmno', timestamp: '1700000000' };
    recordSecrets(headers.token, headers.sign_code);
    const res = await get(`${mirror.url}/v3/packages/secret/release/latest`, headers);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-cache')).toBe('BYPASS');
    const body = (res.json() as { body: { zipball_url: string } }).body;
    expect(body.zipball_url).toBe(`${fake.v3}/packages/secret/zipball/1.0.0`); // not rewritten

    const forwarded = fake.requests.filter((r) => r.url === '/v3/packages/secret/release/latest' && r.headers.token);
    expect(forwarded).toHaveLength(1);
    expect(forwarded[0]!.headers).toMatchObject(headers);

    // not cached: an anonymous caller still gets the upstream's 404
    expect((await get(`${mirror.url}/v3/packages/secret/release/latest`)).status).toBe(404);
    expect(mirror.logs.join('\n')).not.toMatch(/SECRET/);
  });

  it('the shared cache is filled anonymously', async () => {
    await get(`${mirror.url}/v3/packages/fc3/release/latest`, { token: 'tok-SECRET' });
    const upstreamCall = fake.requests.find((r) => r.url === '/v3/packages/fc3/release/latest')!;
    expect(upstreamCall.headers.token).toBeUndefined();
  });
});

describe('the URLs the mirror hands out', () => {
  it('follow X-Forwarded-Proto/-Host only with --trust-proxy, and --public-url above all', async () => {
    const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'mirror.example.com' };
    const zipballOf = async (m: TestMirror) =>
      ((await get(`${m.url}/v3/packages/fc3/release/latest`, forwarded)).json() as { body: { zipball_url: string } }).body.zipball_url;
    expect(await zipballOf(mirror)).toBe(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`);
    const proxied = await startMirror(fake.v3, { 'trust-proxy': true });
    const fixed = await startMirror(fake.v3, { 'trust-proxy': true, 'public-url': 'https://cdn.example.com/mirror' });
    try {
      expect(await zipballOf(proxied)).toBe('https://mirror.example.com/v3/packages/fc3/zipball/0.1.2');
      expect(await zipballOf(fixed)).toBe('https://cdn.example.com/mirror/v3/packages/fc3/zipball/0.1.2');
    } finally {
      await proxied.close();
      await fixed.close();
    }
  });
});

describe('conditional metadata requests', () => {
  it('answers If-None-Match with 304 on both faces, so a downstream mirror revalidates cheaply', async () => {
    for (const path of ['/v3/packages/fc3/release/latest', '/v3/packages/fc3/release?page=1', '/fc3/releases', '/fc3/releases/latest']) {
      const first = await get(mirror.url + path);
      const etag = first.headers.get('etag')!;
      expect(etag).toMatch(/^W\/"/);
      const again = await get(mirror.url + path, { 'if-none-match': etag });
      expect([again.status, again.body.length]).toEqual([304, 0]);
      expect((await get(mirror.url + path, { 'if-none-match': 'W/"other"' })).status).toBe(200);
    }
    const edge = await startMirror(`${mirror.url}/v3`, { 'max-age': '0s' });
    try {
      await get(`${edge.url}/v3/packages/fc3/release/latest`);
      const revalidated = await get(`${edge.url}/v3/packages/fc3/release/latest`);
      expect(revalidated.headers.get('x-cache')).toBe('REVALIDATED');
    } finally {
      await edge.close();
    }
  });
});

describe('GET /-/metrics', () => {
  it('counts answers by x-cache and the upstream requests, and shows the cache and the circuit', async () => {
    await get(`${mirror.url}/v3/packages/fc3/release/latest`);
    await get(`${mirror.url}/v3/packages/fc3/release/latest`);
    await get(`${mirror.url}/v3/packages/fc3/zipball/0.1.2`);
    await get(`${mirror.url}/v3/packages/nope/release/latest`);
    await until(() => mirror.mirror.archives.status().fillsInProgress === 0);
    const res = await get(`${mirror.url}/-/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = res.body.toString();
    const value = (series: string) => Number(new RegExp(`^${series.replace(/[{}"]/g, '\\$&')} (\\d+)$`, 'm').exec(text)?.[1]);
    expect(value('srm_mirror_responses_total{cache="MISS",code="2xx"}')).toBe(2);
    expect(value('srm_mirror_responses_total{cache="HIT",code="2xx"}')).toBe(1);
    expect(value('srm_mirror_responses_total{cache="none",code="4xx"}')).toBe(1);
    expect(value('srm_mirror_response_bytes_total{cache="MISS",code="2xx"}')).toBeGreaterThan(ZIP.length);
    // The zipball's 302 to the blob is followed inside one request.
    expect(value('srm_mirror_upstream_requests_total')).toBe(fake.requests.length - fake.count(/^\/blob\//));
    expect(value('srm_mirror_upstream_circuit_open')).toBe(0);
    expect(value('srm_mirror_archives')).toBe(1);
    expect(value('srm_mirror_archive_bytes')).toBe(ZIP.length);
    expect(text).toMatch(/^# TYPE srm_mirror_responses_total counter$/m);
  });
});
