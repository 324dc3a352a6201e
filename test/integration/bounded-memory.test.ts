// Bounded memory: hundreds of clients that start a download and stop reading (slow, paused, or hostile) hold the
// mirror's download buffers while their sockets do not drain. Those buffers come from a bounded pool, so the
// mirror's memory does not grow with the number of such clients (it used to, by half a megabyte each).
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { get, killChildren, removeTempDirs, spawnMirror, tempDir } from '../helpers.js';

const CLIENTS = 500;

afterEach(async () => {
  killChildren();
  await removeTempDirs();
});

/** A process's resident memory now, in bytes (VmRSS). */
function rss(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024;
}

/** Opens a download and stops reading once the first bytes arrived. */
function pausedDownload(url: URL, path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => socket.write(`GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\n\r\n`));
    socket.once('data', () => {
      socket.pause();
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

describe('paused downloads', () => {
  it(`${CLIENTS} clients that stop reading a cached archive cost bounded memory`, async () => {
    const fake = await FakeUpstream.start();
    fake.add('big', [{ version: '1.0.0', zip: componentZip('big', '1.0.0', { payload: randomBytes(16 << 20) }) }]);
    const sockets: Socket[] = [];
    try {
      const { child, url } = await spawnMirror(['--data', await tempDir(), '--upstream', fake.v3]);
      const path = '/v3/packages/big/zipball/1.0.0';
      expect((await get(url + path)).status).toBe(200); // cached now
      const before = rss(child.pid!);
      for (let i = 0; i < CLIENTS; i++) sockets.push(await pausedDownload(new URL(url), path));
      // Each response now waits on a full socket, holding its buffers; let the writes settle (bounded polling).
      let last = 0;
      for (let i = 0; i < 50 && Math.abs(rss(child.pid!) - last) > 1 << 20; i++) {
        last = rss(child.pid!);
        await new Promise((r) => setTimeout(r, 100));
      }
      const grown = rss(child.pid!) - before;
      // Two 128 KiB buffers a download would be 125 MB here (measured: ~108 MB grown without the cap); the pool caps
      // them at 16 MB plus 32 KiB a download (measured: ~40 MB grown, sockets included).
      expect(grown).toBeLessThan(75 << 20);
      expect((await get(`${url}/-/health`)).status).toBe(200); // and it still answers
    } finally {
      for (const s of sockets) s.destroy();
      await fake.close();
    }
  });
});
