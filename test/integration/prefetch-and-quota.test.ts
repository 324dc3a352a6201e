// Staying warm and staying small: prefetch runs (triggered directly, not by the clock), their priority below live
// traffic, and the disk quota's LRU eviction.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { componentZip } from '../fakes/zips.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { get, removeTempDirs, startMirror, tempDir, until, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
const mirrors: TestMirror[] = [];

async function mirrorOf(flags: Record<string, string | boolean> = {}): Promise<TestMirror> {
  const m = await startMirror(fake.v3, { retries: '0', ...flags });
  mirrors.push(m);
  return m;
}

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.1.0' }, { version: '1.0.0' }]);
  fake.add('fc3-domain', [{ version: '0.0.9' }, { version: '0.0.8' }]);
  fake.add('pinned', [{ version: '3.0.0' }, { version: '2.0.0' }]);
});

afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.close()));
  await fake.close();
  await removeTempDirs();
});

const archivePath = (m: TestMirror, zip: Buffer) => join(m.dataDir, 'archives', 'sha256', sha256(zip).slice(0, 2), sha256(zip));
const blobsOf = (name: string, version: string) => fake.packages.get(name)!.releases.find((r) => r.version === version)!.zip;

describe('prefetch', () => {
  it('warms the latest archive of every followed package: configured ones and those clients asked for', async () => {
    const m = await mirrorOf({ 'prefetch-packages': 'fc3-domain,pinned@2.0.0' });
    await get(`${m.url}/v3/packages/fc3/release/latest`); // a client asks for fc3: now it is followed
    const summary = await m.mirror.prefetchNow('test');
    expect(summary).toMatchObject({ packagesChecked: 3, archivesFetched: 3, failures: [] });
    expect(summary.bytes).toBe(blobsOf('fc3', '1.1.0').length + blobsOf('fc3-domain', '0.0.9').length + blobsOf('pinned', '2.0.0').length);

    await fake.close(); // everything now comes from the mirror
    for (const [name, version] of [['fc3', '1.1.0'], ['fc3-domain', '0.0.9'], ['pinned', '2.0.0']] as const) {
      const zip = await get(`${m.url}/v3/packages/${name}/zipball/${version}`);
      expect([zip.headers.get('x-cache'), zip.body]).toEqual(['HIT', componentZip(name, version)]);
    }
    const status = (await get(`${m.url}/-/status`)).json() as { prefetch: { lastRun: { archivesFetched: number } } };
    expect(status.prefetch.lastRun.archivesFetched).toBe(3);
  });

  it('picks up a version published upstream in the next run, and fetches nothing twice', async () => {
    const m = await mirrorOf({ 'prefetch-packages': 'fc3' });
    expect((await m.mirror.prefetchNow('test')).archivesFetched).toBe(1);
    expect((await m.mirror.prefetchNow('test')).archivesFetched).toBe(0);
    fake.publish('fc3', { version: '1.2.0' });
    const third = await m.mirror.prefetchNow('test');
    expect(third).toMatchObject({ archivesFetched: 1, archivesCached: 0 });
    fake.inject(/./, { kind: 'status', status: 500 });
    const latest = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect((latest.json() as { body: { tag_name: string } }).body.tag_name).toBe('1.2.0');
    expect((await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`)).headers.get('x-cache')).toBe('HIT');
  });

  it('keeps the N newest versions with prefetch.versions, and reports a failing package while keeping its data', async () => {
    const m = await mirrorOf({ 'prefetch-packages': 'fc3,fc3-domain', 'prefetch-versions': '2' });
    expect((await m.mirror.prefetchNow('test')).archivesFetched).toBe(4);
    fake.inject(/fc3-domain/, { kind: 'status', status: 503 });
    const failing = await m.mirror.prefetchNow('test');
    // metadata answered STALE from the cache, archives were cached: nothing lost, nothing to report
    expect(failing.failures).toEqual([]);
    fake.clearFaults();
    fake.inject(/fc3-domain/, { kind: 'status', status: 404 });
    const gone = await m.mirror.prefetchNow('test');
    expect(gone.failures.map((f) => f.target)).toEqual(['fc3-domain']);
    expect((await get(`${m.url}/v3/packages/fc3-domain/zipball/0.0.9`)).headers.get('x-cache')).toBe('HIT');
  });

  it('does not starve live traffic: a cached answer and a live miss both come while a slow prefetch runs', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `slow-${i}`);
    for (const n of names) fake.add(n, [{ version: '1.0.0' }]);
    fake.add('live', [{ version: '1.0.0' }]);
    const m = await mirrorOf({ 'prefetch-packages': names.join(','), 'upstream-concurrency': '4', 'prefetch-concurrency': '2' });
    await get(`${m.url}/v3/packages/fc3/zipball/1.1.0`); // cached before the prefetch
    fake.inject(/slow-/, { kind: 'delay', ms: 100 });

    const run = m.mirror.prefetchNow('test');
    await until(() => fake.count(/slow-/) > 0); // the prefetch is at work, its slow requests under way
    const cached = await get(`${m.url}/v3/packages/fc3/zipball/1.1.0`);
    expect(cached.headers.get('x-cache')).toBe('HIT');
    const liveMiss = await get(`${m.url}/v3/packages/live/zipball/1.0.0`);
    expect([liveMiss.headers.get('x-cache'), liveMiss.body]).toEqual(['MISS', componentZip('live', '1.0.0')]);
    // Both answered while the prefetch was still at work: neither waited behind it.
    expect(m.mirror.prefetcher.isRunning).toBe(true);
    expect((await run).archivesFetched).toBe(20);
  });

  it('never overlaps: a second trigger joins the run under way', async () => {
    const m = await mirrorOf({ 'prefetch-packages': 'fc3,fc3-domain', 'admin-token': 'admin-token-under-test' });
    fake.inject(/./, { kind: 'delay', ms: 50 });
    const [a, b] = await Promise.all([m.mirror.prefetchNow('first'), m.mirror.prefetchNow('second')]);
    expect(a).toBe(b);
    expect(fake.count(/^\/blob\//)).toBe(2);
    const trigger = await request(`${m.url}/-/prefetch`, { method: 'POST', headers: { authorization: 'Bearer admin-token-under-test' } });
    expect(trigger.statusCode).toBe(202);
  });
});

describe('disk quota', () => {
  it('a starting server removes archives nothing points at (say, a crash between commit and key)', async () => {
    const data = await tempDir();
    await (await startMirror(fake.v3, { data })).close(); // a data folder whose index is intact (a new one, with its schema record)
    const stray = Buffer.from('orphan archive');
    const dir = join(data, 'archives', 'sha256', sha256(stray).slice(0, 2));
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, sha256(stray)), stray);
    await utimes(join(dir, sha256(stray)), new Date(0), new Date(0));
    const m = await mirrorOf({ data });
    await until(() => !existsSync(join(dir, sha256(stray))));
    expect(m.mirror.archives.status().quota.archives).toBe(0);
  });

  it('evicts the least recently used archives to stay under the quota', async () => {
    for (const n of ['a', 'b', 'c', 'd']) fake.add(n, [{ version: '1.0.0', zip: componentZip(n, '1.0.0', { payload: randomBytes(100_000) }) }]);
    const m = await mirrorOf({ 'max-size': '350KB' });
    const fetch = (n: string) => get(`${m.url}/v3/packages/${n}/zipball/1.0.0`);
    for (const n of ['a', 'b', 'c']) await fetch(n);
    await fetch('a'); // a is used again: b is now the least recently used
    await fetch('d');
    await until(async () => quotaOf(m).usedBytes <= 350_000);
    expect(existsSync(archivePath(m, blobsOf('b', '1.0.0')))).toBe(false);
    for (const n of ['a', 'c', 'd']) expect(existsSync(archivePath(m, blobsOf(n, '1.0.0')))).toBe(true);
    expect((await fetch('a')).headers.get('x-cache')).toBe('HIT');
    const b = await fetch('b'); // evicted archives come back on demand
    expect([b.headers.get('x-cache'), sha256(b.body)]).toEqual(['MISS', sha256(blobsOf('b', '1.0.0'))]);
  });

  it('never removes an archive while it is being streamed to a client', async () => {
    fake.add('big', [{ version: '1.0.0', zip: componentZip('big', '1.0.0', { payload: randomBytes(8 << 20) }) }]);
    fake.add('other', [{ version: '1.0.0', zip: componentZip('other', '1.0.0', { payload: randomBytes(4 << 20) }) }]);
    fake.add('third', [{ version: '1.0.0', zip: componentZip('third', '1.0.0', { payload: randomBytes(4 << 20) }) }]);
    const m = await mirrorOf({ 'max-size': '10MB' });
    await get(`${m.url}/v3/packages/big/zipball/1.0.0`);
    // A slow client: it starts the download of big and reads nothing yet.
    const slow = await request(`${m.url}/v3/packages/big/zipball/1.0.0`);
    expect(slow.headers['x-cache']).toBe('HIT');
    await get(`${m.url}/v3/packages/other/zipball/1.0.0`); // 12 MB > 10 MB: big is the older, but it is being served
    await until(async () => quotaOf(m).usedBytes <= 10_000_000);
    expect(existsSync(archivePath(m, blobsOf('big', '1.0.0')))).toBe(true);
    expect(existsSync(archivePath(m, blobsOf('other', '1.0.0')))).toBe(false);
    expect(sha256(Buffer.from(await slow.body.arrayBuffer()))).toBe(sha256(blobsOf('big', '1.0.0')));
    // Served, it is an ordinary candidate again.
    await get(`${m.url}/v3/packages/third/zipball/1.0.0`);
    await until(async () => quotaOf(m).usedBytes <= 10_000_000);
    expect(existsSync(archivePath(m, blobsOf('big', '1.0.0')))).toBe(false);
  });
});

/** The quota's view once every download under way has been recorded (a client may finish before that). */
function quotaOf(m: TestMirror) {
  return m.mirror.archives.status().fillsInProgress === 0 ? m.mirror.archives.status().quota : { usedBytes: Infinity };
}
