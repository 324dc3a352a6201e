// The mirror when the upstream does not cooperate: stale-if-error, revalidation, the circuit breaker, retries,
// the negative cache, offline mode, corrupt archives and an unwritable disk.
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { componentZip } from '../fakes/zips.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { get, manualClock, removeTempDirs, startMirror, tempDir, until, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
const mirrors: TestMirror[] = [];
const ZIP = componentZip('fc3', '1.2.0', { payload: randomBytes(200_000) });

async function mirrorOf(upstream: string, flags: Record<string, string | boolean> = {}, clock?: { now: () => number }): Promise<TestMirror> {
  const m = await startMirror(upstream, { retries: '0', ...flags }, { now: clock?.now });
  mirrors.push(m);
  return m;
}

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.2.0', zip: ZIP }, { version: '1.1.0' }, { version: '2.0.0-beta.1' }, { version: 'dev.0.56' }]);
  fake.add('fc3-domain', [{ version: '0.0.9' }]);
});

afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.close()));
  await fake.close();
  await removeTempDirs();
});

const body = (r: Awaited<ReturnType<typeof get>>) => (r.json() as { body: Record<string, unknown> }).body;

/** Warms a mirror with fc3 (latest, detail, list, SRM releases, and the 1.2.0 and 1.1.0 archives). */
async function warm(m: TestMirror): Promise<void> {
  for (const path of [
    '/v3/packages/fc3/release/latest',
    '/v3/packages/fc3/release?page=1',
    '/v3/packages/releases?page=1',
    '/fc3/releases',
    '/fc3/releases/latest',
    '/v3/packages/fc3/zipball/1.2.0',
    '/v3/packages/fc3/zipball/1.1.0',
  ]) {
    expect((await get(m.url + path)).status).toBe(200);
  }
  // A client has its bytes a moment before the fill has finished its bookkeeping (and told the circuit breaker).
  await until(() => m.mirror.archives.status().fillsInProgress === 0);
}

describe('stale-if-error', () => {
  it('with the upstream gone, everything cached is still served byte for byte, marked STALE', async () => {
    const m = await mirrorOf(fake.v3, { 'max-age': '0s' });
    await warm(m);
    await fake.close();

    const latest = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(latest.status).toBe(200);
    expect(latest.headers.get('x-cache')).toBe('STALE');
    expect(body(latest)).toMatchObject({ tag_name: '1.2.0', zipball_url: `${m.url}/v3/packages/fc3/zipball/1.2.0` });
    expect((await get(`${m.url}/v3/packages/fc3/release?page=1`)).headers.get('x-cache')).toBe('STALE');
    expect((await get(`${m.url}/v3/packages/releases?page=1`)).headers.get('x-cache')).toBe('STALE');
    expect((await get(`${m.url}/fc3/releases`)).headers.get('x-cache')).toBe('STALE');
    for (const path of ['/v3/packages/fc3/zipball/1.2.0', '/fc3/zipball/1.2.0']) {
      const zip = await get(m.url + path);
      expect(zip.headers.get('x-cache')).toBe('HIT');
      expect(sha256(zip.body)).toBe(sha256(ZIP));
    }
  });

  it('answers 502 in the client format with a reason when nothing is cached', async () => {
    const m = await mirrorOf(fake.v3);
    await fake.close();
    const v3 = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(v3.status).toBe(502);
    expect(typeof body(v3)).toBe('string');
    const srm = await get(`${m.url}/fc3/releases/latest`);
    expect(srm.status).toBe(502);
    expect(srm.json()).toMatchObject({ message: expect.stringMatching(/upstream/) });
  });

  it('answers 504 when the upstream times out and nothing is cached', async () => {
    const m = await mirrorOf(fake.v3, { 'headers-timeout': '300ms' });
    fake.inject(/release\/latest/, { kind: 'hang' });
    const res = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(res.status).toBe(504);
  });

  it.each([
    ['a 5xx storm', { kind: 'status', status: 503 }],
    ['429s', { kind: 'status', status: 429 }],
    ['garbled bodies', { kind: 'not-json' }],
  ] as const)('%s do not evict or replace good metadata', async (_name, fault) => {
    const m = await mirrorOf(fake.v3, { 'max-age': '0s', 'breaker-threshold': '1000' });
    await get(`${m.url}/v3/packages/fc3/release/latest`);
    fake.inject(/release\/latest/, fault);
    for (let i = 0; i < 20; i++) {
      const res = await get(`${m.url}/v3/packages/fc3/release/latest`);
      expect([res.status, res.headers.get('x-cache'), body(res).tag_name]).toEqual([200, 'STALE', '1.2.0']);
    }
    fake.clearFaults();
    const healed = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(healed.headers.get('x-cache')).toMatch(/MISS|REVALIDATED/);
  });
});

describe('revalidation', () => {
  it('a 304 keeps the cached copy and counts as fresh', async () => {
    const clock = manualClock();
    const m = await mirrorOf(fake.v3, { 'max-age': '1s' }, clock);
    await get(`${m.url}/v3/packages/fc3/release/latest`);
    clock.advance(1100);
    const revalidated = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(revalidated.headers.get('x-cache')).toBe('REVALIDATED');
    expect(body(revalidated).tag_name).toBe('1.2.0');
    const conditional = fake.requests.filter((r) => r.url === '/v3/packages/fc3/release/latest' && r.headers['if-none-match']);
    expect(conditional).toHaveLength(1);
    // ...and it counts as fresh: the next request is a HIT, with no upstream request.
    const count = fake.count(/release\/latest/);
    expect((await get(`${m.url}/v3/packages/fc3/release/latest`)).headers.get('x-cache')).toBe('HIT');
    expect(fake.count(/release\/latest/)).toBe(count);
  });

  it('a changed answer replaces the copy', async () => {
    const m = await mirrorOf(fake.v3, { 'max-age': '0s' });
    await get(`${m.url}/v3/packages/fc3/release/latest`);
    fake.publish('fc3', { version: '1.3.0' });
    const res = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect([res.headers.get('x-cache'), body(res).tag_name]).toEqual(['MISS', '1.3.0']);
  });
});

describe('circuit breaker', () => {
  it('while the upstream is down, 100 cached requests answer at once even though it hangs', async () => {
    const m = await mirrorOf(fake.v3, { 'max-age': '0s', 'breaker-threshold': '3', 'headers-timeout': '20s' });
    await warm(m);
    fake.inject(/./, { kind: 'status', status: 500 });
    for (let i = 0; i < 3; i++) await get(`${m.url}/v3/packages/fc3-domain/release/latest`);
    const status = (await get(`${m.url}/-/status`)).json() as { upstream: { circuit: { state: string } } };
    expect(status.upstream.circuit.state).toBe('open');

    fake.clearFaults();
    fake.inject(/./, { kind: 'hang' });
    const before = fake.requests.length;
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, i) => get(`${m.url}${i % 2 ? '/v3/packages/fc3/release/latest' : '/fc3/releases'}`)),
    );
    // All answered while the upstream still hangs: none of them waited for it.
    expect(answers.every((a) => a.status === 200 && a.headers.get('x-cache') === 'STALE')).toBe(true);
    expect(fake.requests.length).toBe(before);
  });

  it('fails fast with 503 for what is not cached, then probes and closes once the upstream is back', async () => {
    const clock = manualClock();
    const m = await mirrorOf(fake.v3, { 'breaker-threshold': '2', 'breaker-min-backoff': '300ms' }, clock);
    fake.inject(/./, { kind: 'status', status: 502 });
    await get(`${m.url}/v3/packages/fc3/release/latest`);
    await get(`${m.url}/v3/packages/fc3/release/latest`);
    const fast = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(fast.status).toBe(503);
    expect(body(fast)).toMatch(/upstream is down/);
    fake.clearFaults();
    clock.advance(250);
    expect((await get(`${m.url}/v3/packages/fc3/release/latest`)).status).toBe(503); // still within the backoff
    clock.advance(100);
    const probe = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(probe.status).toBe(200);
    expect(((await get(`${m.url}/-/status`)).json() as { upstream: { circuit: { state: string } } }).upstream.circuit.state).toBe('closed');
  });
});

describe('retries', () => {
  it('retries a failed GET before anything reached the client', async () => {
    const m = await mirrorOf(fake.v3, { retries: '2', 'retry-delay': '10ms' });
    fake.inject(/release\/latest/, { kind: 'status', status: 503 }, 2);
    const res = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect(res.status).toBe(200);
    expect(fake.count(/release\/latest/)).toBe(3);
    fake.inject(/^\/blob\//, { kind: 'status', status: 500 }, 1);
    const zip = await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`);
    expect(sha256(zip.body)).toBe(sha256(ZIP));
  });
});

describe('negative cache', () => {
  it('remembers an upstream 404 for notFoundTtl', async () => {
    const clock = manualClock();
    const m = await mirrorOf(fake.v3, { 'not-found-ttl': '1s' }, clock);
    for (let i = 0; i < 5; i++) expect((await get(`${m.url}/v3/packages/later/release/latest`)).status).toBe(404);
    expect(fake.count(/later/)).toBe(1);
    fake.add('later', [{ version: '1.0.0' }]);
    clock.advance(900);
    expect((await get(`${m.url}/v3/packages/later/release/latest`)).status).toBe(404); // still remembered
    clock.advance(200);
    expect((await get(`${m.url}/v3/packages/later/release/latest`)).status).toBe(200);
  });
});

describe('offline mode', () => {
  async function warmThenOffline(flags: Record<string, string | boolean> = {}): Promise<TestMirror> {
    const online = await startMirror(fake.v3);
    await warm(online);
    await online.close();
    return mirrorOf(fake.v3, { data: online.dataDir, offline: true, ...flags });
  }

  it('never contacts the upstream, and serves what is cached', async () => {
    const m = await warmThenOffline();
    const before = fake.requests.length;
    const zip = await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`);
    expect(sha256(zip.body)).toBe(sha256(ZIP));
    const latest = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect([latest.status, latest.headers.get('x-cache'), body(latest).tag_name]).toEqual([200, 'OFFLINE', '1.2.0']);
    expect(fake.requests.length).toBe(before);
  });

  it('lists only versions whose archives are cached, in detail pages and SRM releases', async () => {
    const m = await warmThenOffline();
    const detail = await get(`${m.url}/v3/packages/fc3/release?page=1`);
    expect((body(detail) as unknown as Array<{ tag_name: string }>).map((r) => r.tag_name)).toEqual(['1.2.0', '1.1.0']);
    const srm = await get(`${m.url}/fc3/releases`);
    expect((srm.json() as Array<{ tag_name: string }>).map((r) => r.tag_name)).toEqual(['1.2.0', '1.1.0']);
  });

  it('answers list and search from the packages it knows, filtered locally', async () => {
    const m = await warmThenOffline();
    const all = await get(`${m.url}/v3/packages/releases?page=1`);
    expect((body(all) as unknown as Array<{ name: string }>).map((p) => p.name).sort()).toEqual(['fc3', 'fc3-domain']);
    const found = await get(`${m.url}/v3/packages/releases?page=1&search=domain`);
    expect((body(found) as unknown as Array<{ name: string }>).map((p) => p.name)).toEqual(['fc3-domain']);
  });

  it('answers 404 saying it is offline for anything not cached', async () => {
    const m = await warmThenOffline();
    for (const path of ['/v3/packages/fc3/zipball/2.0.0-beta.1', '/v3/packages/fc3/release/tags/dev.0.56', '/v3/packages/nope/release/latest']) {
      const res = await get(m.url + path);
      expect(res.status).toBe(404);
      expect(body(res)).toMatch(/offline/);
    }
  });

  it('an upstream that was never reachable behaves the same way', async () => {
    const online = await startMirror(fake.v3);
    await get(`${online.url}/v3/packages/fc3/zipball/1.1.0`); // an archive, but no latest/detail/list documents
    await online.close();
    await fake.close();
    const m = await mirrorOf(fake.v3, { data: online.dataDir });
    const latest = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect([latest.status, body(latest).tag_name]).toEqual([200, '1.1.0']);
    const zip = await get(`${m.url}/v3/packages/fc3/zipball/1.1.0`);
    expect(zip.body).toEqual(componentZip('fc3', '1.1.0'));
  });
});

describe('archives on disk', () => {
  it('a corrupt archive file is never served: it is dropped and fetched again', async () => {
    const m = await mirrorOf(fake.v3);
    const first = await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`);
    const digest = sha256(first.body);
    const file = join(m.dataDir, 'archives', 'sha256', digest.slice(0, 2), digest);
    const corrupt = Buffer.from(ZIP);
    corrupt[1000] = corrupt[1000]! ^ 0xff;
    await writeFile(file, corrupt);

    const repaired = await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`);
    expect(sha256(repaired.body)).toBe(digest);
    expect(fake.count(/^\/blob\//)).toBe(2);
    expect(m.logs.join('')).toMatch(/corrupt archive dropped/);
    expect((await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`)).headers.get('x-cache')).toBe('HIT');
  });

  it('an unwritable data folder: downloads still succeed, /-/status reports it', async () => {
    const m = await mirrorOf(fake.v3);
    const tmp = join(m.dataDir, 'archives', 'tmp');
    await rm(tmp, { recursive: true });
    await writeFile(tmp, 'not a folder'); // creating a temp file now fails (ENOTDIR)
    for (const version of ['1.2.0', '1.2.0', '1.1.0']) {
      const res = await get(`${m.url}/v3/packages/fc3/zipball/${version}`);
      expect(res.status).toBe(200);
      expect(res.body).toEqual(version === '1.2.0' ? ZIP : componentZip('fc3', '1.1.0'));
    }
    const status = (await get(`${m.url}/-/status`)).json() as { archives: { diskProblem?: { error: string } } };
    expect(status.archives.diskProblem?.error).toMatch(/ENOTDIR/);
    expect(m.logs.filter((l) => l.includes('archive cache not usable'))).toHaveLength(1); // logged once per condition
    await rm(tmp);
    await mkdir(tmp);
  });

  it('a full disk: a download larger than the free space still reaches the client', async (ctx) => {
    const dir = await tempDir();
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'ignore' });
    } catch {
      ctx.skip('mounting a small tmpfs needs root with mount rights');
    }
    const m = await startMirror(fake.v3, { data: dir, retries: '0' });
    const diskProblem = async () =>
      ((await get(`${m.url}/-/status`)).json() as { archives: { diskProblem?: { error: string } } }).archives.diskProblem?.error;
    try {
      // The download that runs into ENOSPC fails (its fill can no longer complete); from then on downloads pass
      // through uncached.
      await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`).catch(() => undefined);
      await until(async () => (await diskProblem()) !== undefined);
      expect(await diskProblem()).toMatch(/ENOSPC/);
      for (let i = 0; i < 3; i++) {
        const res = await get(`${m.url}/v3/packages/fc3/zipball/1.2.0`);
        expect([res.status, res.headers.get('x-cache'), sha256(res.body)]).toEqual([200, 'BYPASS', sha256(ZIP)]); // uncached
      }
      expect(await readdir(join(dir, 'archives', 'tmp'))).toEqual([]);
    } finally {
      await m.close();
      execFileSync('umount', [dir]);
    }
  });
});
