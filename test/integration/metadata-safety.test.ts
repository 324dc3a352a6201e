// The metadata side of "nothing bad is ever served, nothing good is ever lost" and "bounded everywhere", over HTTP
// against the fake upstream: a failing or damaged database, a lost index, no invented empty lists, lists cut at the
// page limit, the bounded wait with a stale copy, and follows that stop.
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MirrorStatus } from '../../src/app.js';
import { MetadataDamagedError } from '../../src/stores/metadata-store.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { get, removeTempDirs, startMirror, until, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
const mirrors: TestMirror[] = [];

async function mirrorOf(upstream: string, flags: Record<string, string | boolean> = {}): Promise<TestMirror> {
  const m = await startMirror(upstream, { retries: '0', ...flags });
  mirrors.push(m);
  return m;
}

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.2.0' }, { version: '1.1.0' }]);
  fake.add('fc3-domain', [{ version: '0.0.9' }]);
});

afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.close()));
  await fake.close();
  await removeTempDirs();
});

const body = (r: Awaited<ReturnType<typeof get>>) => (r.json() as { body: unknown }).body;
const statusOf = async (m: TestMirror) => (await get(`${m.url}/-/status`)).json() as MirrorStatus;

describe('a damaged metadata database', () => {
  it('a corrupt block: reads it holds go to the upstream (never a 500), /-/status shows the problem', async () => {
    const first = await mirrorOf(fake.v3);
    expect((await get(`${first.url}/v3/packages/fc3/release/latest`)).status).toBe(200);
    await first.close();
    mirrors.splice(0);
    const meta = join(first.dataDir, 'meta');
    // Pad the database so that latest:fc3 sits in a block away from the schema record, write it all into a table
    // file, and break that block (it holds follow:fc3 too: start-up copes with what it cannot read).
    const db = new Level<string, unknown>(meta, { valueEncoding: 'json', compression: false });
    await db.open();
    await db.batch(Array.from({ length: 300 }, (_, i) => ({ type: 'put' as const, key: `page:pad:${1000 + i}`, value: 'p'.repeat(100) })));
    await db.batch(Array.from({ length: 300 }, (_, i) => ({ type: 'put' as const, key: `archive:pad@${1000 + i}`, value: 'p'.repeat(100) })));
    await (db as unknown as { compactRange(a: string, b: string): Promise<void> }).compactRange('\u0000', '\uffff');
    await db.close();
    const table = (await readdir(meta)).find((f) => f.endsWith('.ldb'))!;
    const bytes = await readFile(join(meta, table));
    const at = bytes.indexOf('latest:fc3');
    bytes.fill(0xff, at - 20, at + 60);
    await writeFile(join(meta, table), bytes);

    const m = await mirrorOf(fake.v3, { data: first.dataDir });
    for (let i = 0; i < 2; i++) {
      const res = await get(`${m.url}/v3/packages/fc3/release/latest`);
      expect([res.status, res.headers.get('x-cache'), (body(res) as { tag_name: string }).tag_name]).toEqual([200, 'BYPASS', '1.2.0']);
    }
    const status = await statusOf(m);
    expect(status.metadataProblem?.error).toMatch(/LEVEL_CORRUPTION/);
    expect(m.logs.filter((l) => l.includes('metadata database is failing'))).toHaveLength(1);
    // Not ready, and why (a load balancer may send its clients elsewhere while it answers through to the upstream).
    const ready = await get(`${m.url}/-/ready`);
    expect(ready.status).toBe(503);
    expect(ready.json()).toMatchObject({ status: 'not ready', reasons: [expect.stringMatching(/^the metadata database is failing since .*LEVEL_CORRUPTION/)] });
    // With the upstream down too, the answer is the upstream's failure, in the client's format.
    await fake.close();
    const down = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(down.status).toBe(502);
    expect(typeof body(down)).toBe('string');
  });

  it('meta/ without its CURRENT file: the mirror refuses to start, and leaves the files alone', async () => {
    const first = await mirrorOf(fake.v3);
    await get(`${first.url}/v3/packages/fc3/release/latest`);
    await first.close();
    mirrors.splice(0);
    const meta = join(first.dataDir, 'meta');
    await rm(join(meta, 'CURRENT'));
    const before = (await readdir(meta)).sort();
    const err = await startMirror(fake.v3, { data: first.dataDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MetadataDamagedError);
    expect((err as Error).message).toMatch(/srm-mirror repair/);
    expect((await readdir(meta)).sort()).toEqual(before);
  });

  it('meta/ deleted while archives are on disk: the index is lost, said in /-/status, and stays lost over a restart', async () => {
    const first = await mirrorOf(fake.v3);
    expect((await get(`${first.url}/v3/packages/fc3/zipball/1.2.0`)).status).toBe(200);
    await until(() => first.mirror.archives.status().fillsInProgress === 0);
    await first.close();
    mirrors.splice(0);
    await rm(join(first.dataDir, 'meta'), { recursive: true });

    const second = await mirrorOf(fake.v3, { data: first.dataDir });
    expect((await statusOf(second)).metadata.index).toBe('lost');
    expect(second.logs.join('\n')).toMatch(/archive index is lost.*srm-mirror repair/);
    await get(`${second.url}/v3/packages/fc3/release/latest`); // writes documents meanwhile
    await second.close();
    mirrors.splice(0);

    const third = await mirrorOf(fake.v3, { data: first.dataDir });
    expect(third.mirror.metadataIndex).toBe('lost');
  });

  it('a new data folder is intact', async () => {
    const m = await mirrorOf(fake.v3);
    expect((await statusOf(m)).metadata).toMatchObject({ index: 'intact' });
    expect((await statusOf(m)).metadataProblem).toBeUndefined();
  });
});

describe('no invented empty lists', () => {
  it('with the upstream down and nothing known, list and detail reads pass the failure on', async () => {
    const m = await mirrorOf(fake.v3);
    await fake.close();
    for (const path of ['/v3/packages/fc3/release?page=1', '/v3/packages/releases?page=1', '/v3/packages/releases?page=1&search=nothing', '/fc3/releases']) {
      const res = await get(m.url + path);
      expect([path, res.status]).toEqual([path, 502]);
    }
  });

  it('what the mirror has still stands in (an archive of the package, a package it knows)', async () => {
    const m = await mirrorOf(fake.v3);
    expect((await get(`${m.url}/v3/packages/fc3/zipball/1.1.0`)).status).toBe(200);
    await until(() => m.mirror.archives.status().fillsInProgress === 0);
    await fake.close();
    const detail = await get(`${m.url}/v3/packages/fc3/release?page=1`);
    expect([detail.status, detail.headers.get('x-cache')]).toEqual([200, 'STALE']);
    expect((body(detail) as Array<{ tag_name: string }>).map((r) => r.tag_name)).toEqual(['1.1.0']);
    const list = await get(`${m.url}/v3/packages/releases?page=1`);
    expect((body(list) as Array<{ name: string }>).map((p) => p.name)).toEqual(['fc3']);
  });
});

describe('lists cut at the page limit are not cached as complete', () => {
  const many = (n: number) => Array.from({ length: n }, (_, i) => ({ version: `1.0.${n - i}` }));

  it('v3 upstream: every release of a package with more pages than the mirror reads is fetched each time', async () => {
    fake.add('big', many(20 * 100 + 1));
    const m = await mirrorOf(fake.v3);
    const first = await get(`${m.url}/big/releases?per_page=100`);
    expect([first.status, first.headers.get('x-cache')]).toEqual([200, 'BYPASS']);
    const again = await get(`${m.url}/big/releases?per_page=100`);
    expect(again.headers.get('x-cache')).toBe('BYPASS');
    expect(fake.count(/^\/v3\/packages\/big\/release\?page=/)).toBe(200);
  });

  it('srm upstream: the release list is not cached, its first pages are, and an unseen version is no 404', async () => {
    fake.add('big', many(100 * 50 + 1));
    const m = await mirrorOf(fake.srm, { 'upstream-type': 'srm' });
    expect((await get(`${m.url}/big/releases`)).headers.get('x-cache')).toBe('BYPASS');
    expect((await get(`${m.url}/big/releases`)).headers.get('x-cache')).toBe('BYPASS');
    expect((await get(`${m.url}/v3/packages/big/release?page=1`)).headers.get('x-cache')).toBe('MISS');
    expect((await get(`${m.url}/v3/packages/big/release?page=1`)).headers.get('x-cache')).toBe('HIT');
    const unseen = await get(`${m.url}/v3/packages/big/release/tags/1.0.1`); // beyond the 5000 read
    expect(unseen.status).toBe(502);
  });
});

describe('stale-after', () => {
  it('a reader with a stale copy waits staleAfter for a hanging upstream, then gets the copy; the revalidation updates the cache', async () => {
    const m = await mirrorOf(fake.v3, { 'max-age': '0s', 'stale-after': '200ms', 'headers-timeout': '20s', 'breaker-threshold': '1000' });
    await get(`${m.url}/v3/packages/fc3/release/latest`);
    fake.inject(/release\/latest/, { kind: 'hang' }, 1);
    const stale = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect([stale.status, stale.headers.get('x-cache'), (body(stale) as { tag_name: string }).tag_name]).toEqual([200, 'STALE', '1.2.0']);
    fake.clearFaults(); // the hanging request is cut; nothing replaces the copy
    await until(async () => (await get(`${m.url}/v3/packages/fc3/release/latest`)).headers.get('x-cache') === 'REVALIDATED');

    // A slow answer carrying a new version: the reader gets the copy, the cache gets the new version.
    fake.publish('fc3', { version: '1.3.0' });
    fake.inject(/release\/latest/, { kind: 'delay', ms: 600 }, 1);
    const slow = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect([slow.headers.get('x-cache'), (body(slow) as { tag_name: string }).tag_name]).toEqual(['STALE', '1.2.0']);
    const asked = fake.count(/release\/latest/);
    await until(() => fake.count(/release\/latest/) === asked); // (nothing else asks meanwhile)
    fake.inject(/release\/latest/, { kind: 'hang' }); // from now on the upstream hangs: what is served is the cache
    await until(async () => (body(await get(`${m.url}/v3/packages/fc3/release/latest`)) as { tag_name: string }).tag_name === '1.3.0');
  });
});

describe('follows', () => {
  it('a package the upstream no longer has is no longer followed after a prefetch run', async () => {
    const m = await mirrorOf(fake.v3);
    await get(`${m.url}/v3/packages/fc3/release/latest`);
    await get(`${m.url}/v3/packages/fc3-domain/release/latest`);
    await until(() => m.mirror.prefetchTargets().length === 2);
    fake.packages.delete('fc3-domain');
    const run = await m.mirror.prefetchNow('test');
    expect(run.failures).toEqual([{ target: 'fc3-domain', error: expect.any(String) }]);
    expect(m.mirror.prefetchTargets().map((t) => t.name)).toEqual(['fc3']);
  });
});
