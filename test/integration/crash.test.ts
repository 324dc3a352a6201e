// Killing the mirror with SIGKILL in the middle of a fill leaves a cache that starts clean: the partial download
// is never served, the next request fetches again, and LevelDB opens.
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { componentZip } from '../fakes/zips.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { get, killChildren, removeTempDirs, spawnMirror, tempDir, until } from '../helpers.js';

afterEach(async () => {
  killChildren();
  await removeTempDirs();
});

const serve = (data: string, upstream: string) => spawnMirror(['--data', data, '--upstream', upstream]);

describe('crash safety', () => {
  it('SIGKILL in the middle of a fill: restart is clean, nothing partial is served, the next request refetches', async () => {
    const fake = await FakeUpstream.start();
    const zip = componentZip('big', '1.0.0', { payload: randomBytes(4 << 20) });
    fake.add('big', [{ version: '1.0.0', zip }]);
    fake.inject(/^\/blob\//, { kind: 'stall-mid-body' }, 1);
    const data = await tempDir();
    try {
      const first = await serve(data, fake.v3);
      const download = request(`${first.url}/v3/packages/big/zipball/1.0.0`).then((r) => r.body.arrayBuffer()).catch((e: unknown) => e);
      const tmp = join(data, 'archives', 'tmp');
      await until(async () => (await readdir(tmp)).length > 0 && fake.count(/^\/blob\//) === 1);
      expect(await readdir(tmp)).toHaveLength(1); // a fill is under way
      first.child.kill('SIGKILL');
      expect(await download).toBeInstanceOf(Error); // the client saw the download fail
      fake.clearFaults();

      const second = await serve(data, fake.v3); // LevelDB opens
      expect(await readdir(tmp)).toEqual([]); // the partial file is gone
      const res = await get(`${second.url}/v3/packages/big/zipball/1.0.0`);
      expect(res.status).toBe(200);
      expect(res.headers.get('x-cache')).toBe('MISS');
      expect(sha256(res.body)).toBe(sha256(zip));
      expect(fake.count(/^\/blob\//)).toBe(2);
      expect((await get(`${second.url}/v3/packages/big/zipball/1.0.0`)).headers.get('x-cache')).toBe('HIT');
    } finally {
      await fake.close();
    }
  });

  it('SIGTERM: stops accepting, lets the download under way finish, closes LevelDB and exits 0', async () => {
    const fake = await FakeUpstream.start();
    const zip = componentZip('big', '1.0.0', { payload: randomBytes(1 << 20) });
    fake.add('big', [{ version: '1.0.0', zip }]);
    fake.inject(/^\/blob\//, { kind: 'delay', ms: 500 }, 1);
    const data = await tempDir();
    try {
      const { child, url } = await serve(data, fake.v3);
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      const download = get(`${url}/v3/packages/big/zipball/1.0.0`);
      await until(async () => fake.count(/^\/blob\//) === 1);
      child.kill('SIGTERM');
      const res = await download;
      expect([res.status, sha256(res.body)]).toEqual([200, sha256(zip)]);
      expect(await exited).toBe(0);
      await expect(get(`${url}/-/health`)).rejects.toThrow();
      const again = await serve(data, fake.v3); // the lock was released
      expect((await get(`${again.url}/v3/packages/big/zipball/1.0.0`)).headers.get('x-cache')).toBe('HIT');
    } finally {
      await fake.close();
    }
  });

  it('SIGTERM with a download stalled in flight: everything is cut at shutdownGrace, and it exits 0 within it', async () => {
    const fake = await FakeUpstream.start();
    fake.add('big', [{ version: '1.0.0', zip: randomBytes(4 << 20) }]);
    fake.inject(/^\/blob\//, { kind: 'stall-mid-body' });
    const data = await tempDir();
    try {
      const { child, url } = await spawnMirror(['--data', data, '--upstream', fake.v3, '--shutdown-grace', '1s']);
      const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.on('exit', (code) => resolve({ code, at: Date.now() })));
      const download = request(`${url}/v3/packages/big/zipball/1.0.0`).then((r) => r.body.arrayBuffer()).catch((e: unknown) => e);
      const tmp = join(data, 'archives', 'tmp');
      await until(async () => (await readdir(tmp)).length > 0); // the fill has its headers and half the body
      const signalled = Date.now();
      child.kill('SIGTERM');
      const { code, at } = await exited;
      expect(code).toBe(0);
      expect(at - signalled).toBeLessThan(2000); // shutdownGrace + 1 s
      expect(await download).toBeInstanceOf(Error); // cut, never a short 200
      expect(await readdir(tmp)).toEqual([]); // the cut fill cleaned up after itself
    } finally {
      await fake.close();
    }
  });
});
