// Hostile paths and parameters, sent byte for byte over a raw socket (an HTTP client would normalize "..").
// Each is answered 400 with a JSON reason (or 404 where no route matches), never reaches the upstream, and
// writes nothing to the disk.
import { connect } from 'node:net';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../fakes/upstream.js';
import { removeTempDirs, startMirror, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
let mirror: TestMirror;

beforeAll(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.0.0' }]);
  mirror = await startMirror(fake.v3);
});

afterAll(async () => {
  await mirror.close();
  await fake.close();
  await removeTempDirs();
});

/** Sends the request target exactly as given. */
function rawGet(base: string, target: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.end(`GET ${target} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nConnection: close\r\n\r\n`));
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
  });
}

const long = 'a'.repeat(200);

const HOSTILE: Array<[target: string, status: number]> = [
  ['/v3/packages/..%2f..%2fetc%2fpasswd/release/latest', 400],
  ['/v3/packages/%2e%2e/release/latest', 400],
  ['/v3/packages/%2E%2E%2F%2E%2E/release/latest', 400],
  ['/v3/packages/..%5c..%5cwindows/release/latest', 400],
  ['/v3/packages/fc3%00/release/latest', 400],
  ['/v3/packages/fc3%0d%0aX-Injected:%201/release/latest', 400],
  ['/v3/packages/%zz/release/latest', 400],
  ['/v3/packages/-fc3/release/latest', 400],
  ['/v3/packages/.hidden/release/latest', 400],
  [`/v3/packages/${long}/release/latest`, 400],
  ['/v3/packages/fc3/release/tags/..%2f..%2fx', 400],
  ['/v3/packages/fc3/release/tags/%2e%2e', 400],
  ['/v3/packages/fc3/release/tags/1.0.0%00', 400],
  ['/v3/packages/fc3/release/tags/1.0.0%09', 400],
  ['/v3/packages/fc3/zipball/..%2f..%2f..%2fetc%2fpasswd', 400],
  ['/v3/packages/fc3/zipball/%2e%2e%2f%2e%2e%2fx', 400],
  ['/v3/packages/fc3/zipball/1.0.0%5c..%5c', 400],
  ['/v3/packages/fc3/zipball/%20', 400],
  ['/v3/packages/fc3/zipball/1..0', 400],
  ['/v3/packages/fc3/release?page=abc', 400],
  ['/v3/packages/fc3/release?page=0', 400],
  ['/v3/packages/fc3/release?page=1e9', 400],
  ['/v3/packages/fc3/release?page=-5', 400],
  ['/v3/packages/fc3/release?page=1&page=2', 400],
  ['/v3/packages/releases?page=1&search=%00', 400],
  [`/v3/packages/releases?page=1&search=${long}`, 400],
  ['/v3/packages/releases?page=1&tag=a%0ab', 400],
  ['/v3/packages/releases?category=1&category=2', 400],
  ['/..%2f..%2fetc/releases', 400],
  ['/%2e%2e/releases', 400],
  ['/fc3/zipball/..%2f..%2fpasswd', 400],
  ['/owner/%2e%2e/releases/latest', 400],
  ['/a%2fb%2fc/releases', 400],
  ['/fc3/releases?per_page=abc', 400],
  ['/fc3/releases?page=0', 400],
  ['/fc3/releases/tags/%00', 400],
  ['/fc3%5c..%5c/releases', 400],
  ['/a/b/c/releases', 404],
  ['/v3/packages/fc3/unknown', 404],
  ['/../../etc/passwd', 404],
  ['/v3/../../etc/passwd', 404],
  ['/-/../../etc/passwd', 404],
];

describe('hostile input', () => {
  it.each(HOSTILE)('GET %s → %i with a JSON reason', async (target, status) => {
    const res = await rawGet(mirror.url, target);
    expect(res.status).toBe(status);
    const json = JSON.parse(res.body) as { body?: unknown; message?: unknown };
    expect(typeof (json.body ?? json.message)).toBe('string');
    expect(res.body).not.toMatch(/at .*\.(ts|js):\d+/); // no stack trace
  });

  it('none of them reached the upstream or wrote to the disk', async () => {
    expect(HOSTILE.length).toBeGreaterThanOrEqual(30);
    expect(fake.requests).toEqual([]);
    for (const store of ['archives', 'hosted']) {
      expect([...(await readdir(join(mirror.dataDir, store, 'sha256'))), ...(await readdir(join(mirror.dataDir, store, 'tmp')))]).toEqual([]);
    }
    expect((await readdir(mirror.dataDir)).sort()).toEqual(['archives', 'hosted', 'meta']);
  });
});
