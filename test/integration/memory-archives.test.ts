// Small hot archives held in memory (cache.memoryArchives): answered exactly as from disk, only ever verified bytes,
// within the budget, dropped with the file, and still a use for the disk quota.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { signed } from '../fakes/clients.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { get, manualClock, removeTempDirs, send, startMirror, until, type TestMirror } from '../helpers.js';

const zips = new Map(['a', 'b', 'c', 'd'].map((n) => [n, componentZip(n, '1.0.0', { payload: randomBytes(100_000) })]));
zips.set('big', componentZip('big', '1.0.0', { payload: randomBytes(150_000) }));
const zip = (n: string) => zips.get(n)!;

let fake: FakeUpstream;
const mirrors: TestMirror[] = [];

beforeEach(async () => {
  fake = await FakeUpstream.start();
  for (const [n, z] of zips) fake.add(n, [{ version: '1.0.0', zip: z }]);
});

afterEach(async () => {
  for (const m of mirrors.splice(0)) await m.close();
  await fake.close();
  await removeTempDirs();
});

async function mirrorOf(flags: Record<string, string> = {}, now?: () => number): Promise<TestMirror> {
  const m = await startMirror(fake.v3, { retries: '0', ...flags }, { now });
  mirrors.push(m);
  return m;
}

const url = (m: TestMirror, n: string) => `${m.url}/v3/packages/${n}/zipball/1.0.0`;
const memoryOf = (m: TestMirror) => m.mirror.archives.status().memory;
const fileOf = (m: TestMirror, n: string) => join(m.dataDir, 'archives', 'sha256', sha256(zip(n)).slice(0, 2), sha256(zip(n)));
/** Same size, one byte changed. */
const corrupted = (n: string) => {
  const bad = Buffer.from(zip(n));
  bad[500] = bad[500]! ^ 0xff;
  return bad;
};

/** Fill (MISS), a first disk HIT (seen once), a second one (loaded): from then on the archive is held. */
async function load(m: TestMirror, n: string): Promise<void> {
  for (let i = 0; i < 3; i++) expect(sha256((await get(url(m, n))).body)).toBe(sha256(zip(n)));
}

const headersOf = (res: Awaited<ReturnType<typeof get>>) =>
  Object.fromEntries(['x-cache', 'content-type', 'content-length', 'content-disposition', 'etag', 'cache-control', 'accept-ranges', 'content-range'].map((h) => [h, res.headers.get(h)]));

describe('memory HITs', () => {
  it('are answered with the same bytes and headers as disk HITs, and never read the file again', async () => {
    const m = await mirrorOf();
    await get(url(m, 'a')); // MISS
    const disk = await get(url(m, 'a'));
    expect(memoryOf(m).archives).toBe(0); // a first HIT is not loaded
    await get(url(m, 'a')); // loaded
    expect(memoryOf(m)).toMatchObject({ archives: 1, usedBytes: zip('a').length });
    const hitsBefore = memoryOf(m).hits;
    // The file changes behind the mirror's back: the verified copy in memory is what is served, still correct.
    await writeFile(fileOf(m, 'a'), corrupted('a'));
    const held = await get(url(m, 'a'));
    expect(held.body).toEqual(zip('a'));
    expect(headersOf(held)).toEqual(headersOf(disk));
    expect(headersOf(held)['x-cache']).toBe('HIT');
    expect(memoryOf(m).hits).toBe(hitsBefore + 1);
    expect(fake.count(/^\/blob\//)).toBe(1);
  });

  it('answer ranges, HEAD and conditional requests as disk HITs do', async () => {
    const m = await mirrorOf();
    await load(m, 'a');
    const hits = memoryOf(m).hits;
    const z = zip('a');
    const range = await get(url(m, 'a'), { range: 'bytes=100-199' });
    expect([range.status, range.headers.get('content-range'), range.headers.get('content-length'), range.body]).toEqual([206, `bytes 100-199/${z.length}`, '100', z.subarray(100, 200)]);
    const tail = await get(url(m, 'a'), { range: 'bytes=-10' });
    expect([tail.status, tail.body]).toEqual([206, z.subarray(z.length - 10)]);
    const unsatisfiable = await get(url(m, 'a'), { range: `bytes=${z.length + 10}-` });
    expect([unsatisfiable.status, unsatisfiable.headers.get('content-range')]).toEqual([416, `bytes */${z.length}`]);
    expect((await get(url(m, 'a'), { 'if-none-match': `"${sha256(z)}"` })).status).toBe(304);
    const head = await send('HEAD', url(m, 'a'), {});
    expect([head.status, head.headers['content-length'], head.headers.etag, head.headers['x-cache'], head.text]).toEqual([200, String(z.length), `"${sha256(z)}"`, 'HIT', '']);
    expect(memoryOf(m).hits).toBe(hits + 5);
  });

  it('never holds a file corrupted before it was loaded: its load hashes it, and it is fetched again', async () => {
    const m = await mirrorOf();
    await get(url(m, 'a'));
    await get(url(m, 'a')); // seen once: the next HIT loads it
    await writeFile(fileOf(m, 'a'), corrupted('a'));
    const res = await get(url(m, 'a'));
    expect([res.headers.get('x-cache'), sha256(res.body)]).toEqual(['MISS', sha256(zip('a'))]);
    expect(memoryOf(m).archives).toBe(0);
    expect(fake.count(/^\/blob\//)).toBe(2);
    for (let i = 0; i < 3; i++) expect((await get(url(m, 'a'))).body).toEqual(zip('a'));
    expect(memoryOf(m)).toMatchObject({ archives: 1, usedBytes: zip('a').length });
  });

  it('keep to the budget, least recently used out first, and never hold an archive over the largest size', async () => {
    const m = await mirrorOf({ 'memory-archives': '250KB', 'memory-archive-max-size': '120KB' });
    for (const n of ['big', 'a', 'b']) await load(m, n);
    expect(memoryOf(m)).toMatchObject({ maxBytes: 250_000, archives: 2, usedBytes: zip('a').length + zip('b').length });
    await load(m, 'c'); // a third does not fit: a, the least recently used, goes
    expect(memoryOf(m)).toMatchObject({ archives: 2, usedBytes: zip('b').length + zip('c').length });
    const before = memoryOf(m).hits;
    expect((await get(url(m, 'b'))).body).toEqual(zip('b'));
    expect((await get(url(m, 'a'))).body).toEqual(zip('a')); // from disk again
    expect(memoryOf(m).hits).toBe(before + 1);
  });

  it('are off with 0', async () => {
    const m = await mirrorOf({ 'memory-archives': '0' });
    await load(m, 'a');
    expect(memoryOf(m)).toEqual({ maxBytes: 0, usedBytes: 0, archives: 0, hits: 0, misses: 0 });
  });
});

describe('memory follows the disk', () => {
  it('a version deleted through the mirror is dropped from memory and never served from it', async () => {
    fake.add('fc3', [{ version: '1.1.0', zip: zip('a') }, { version: '1.0.0', zip: zip('b') }]);
    const m = await mirrorOf();
    for (let i = 0; i < 3; i++) await get(`${m.url}/v3/packages/fc3/zipball/1.1.0`);
    expect(memoryOf(m).archives).toBe(1);
    expect((await send('DELETE', `${m.url}/v3/packages/fc3/release/tags/1.1.0`, signed())).status).toBe(200);
    expect(memoryOf(m)).toMatchObject({ archives: 0, usedBytes: 0 });
    fake.inject(/./, { kind: 'status', status: 500 });
    expect((await get(`${m.url}/v3/packages/fc3/zipball/1.1.0`)).status).not.toBe(200);
  });

  it('quota eviction counts memory HITs as uses, and drops what it evicts from memory', async () => {
    const clock = manualClock();
    const m = await mirrorOf({ 'max-size': '350KB' }, clock.now);
    const fetch = async (n: string) => {
      clock.advance(1000);
      return get(url(m, n));
    };
    for (let i = 0; i < 3; i++) await fetch('a'); // a is held in memory
    for (let i = 0; i < 3; i++) await fetch('b'); // and b
    await fetch('c');
    expect(memoryOf(m).archives).toBe(2);
    const hits = memoryOf(m).hits;
    await fetch('a'); // served from memory only: b is now the least recently used
    expect(memoryOf(m).hits).toBe(hits + 1);
    await fetch('d');
    await until(() => m.mirror.archives.status().quota.usedBytes <= 350_000);
    expect(existsSync(fileOf(m, 'b'))).toBe(false);
    for (const n of ['a', 'c', 'd']) expect(existsSync(fileOf(m, n))).toBe(true);
    expect(memoryOf(m)).toMatchObject({ archives: 1, usedBytes: zip('a').length });
  });
});
