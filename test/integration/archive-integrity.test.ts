// Nothing bad is ever served: an upstream body that is not the archive it should be never reaches a client complete
// and never becomes a cache entry; a file that changed on disk is never served; ranges and conditional requests of
// cached archives follow RFC 9110.
import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream, sha256, type FaultKind } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { get, removeTempDirs, startMirror, until, type TestMirror } from '../helpers.js';

const ZIP = componentZip('fc3', '1.0.0', { payload: randomBytes(100_000) });

let fake: FakeUpstream;
const mirrors: TestMirror[] = [];

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.0.0', zip: ZIP }]);
});

afterEach(async () => {
  for (const m of mirrors.splice(0)) await m.close();
  await fake.close();
  await removeTempDirs();
});

async function mirrorOf(flags: Record<string, string> = {}): Promise<TestMirror> {
  const m = await startMirror(fake.v3, { retries: '0', ...flags });
  mirrors.push(m);
  return m;
}

const archiveFile = (m: TestMirror, zip: Buffer) => join(m.dataDir, 'archives', 'sha256', sha256(zip).slice(0, 2), sha256(zip));
const storedFiles = async (m: TestMirror) => (await readdir(join(m.dataDir, 'archives', 'sha256'), { recursive: true })).filter((f) => /[0-9a-f]{64}$/.test(f));

/** A copy of a zip whose end record says the central directory starts past the end of the file. */
function centralDirectoryOutside(zip: Buffer): Buffer {
  const bad = Buffer.from(zip);
  bad.writeUInt32LE(zip.length + 1000, zip.length - 22 + 16);
  return bad;
}

const bad: Array<[string, FaultKind]> = [
  ['truncated, without Content-Length', { kind: 'body', body: ZIP.subarray(0, ZIP.length >> 1), chunked: true }],
  ['truncated, with a Content-Length that matches the short body', { kind: 'body', body: ZIP.subarray(0, ZIP.length - 30) }],
  ['an HTML error page answered 200', { kind: 'body', body: Buffer.from('<html><body>502 Bad Gateway</body></html>'), headers: { 'content-type': 'text/html' } }],
  ['random bytes', { kind: 'body', body: randomBytes(ZIP.length) }],
  ['a zip whose central directory points outside the file', { kind: 'body', body: centralDirectoryOutside(ZIP) }],
  ['the right zip under a wrong x-checksum-sha256', { kind: 'body', body: ZIP, headers: { 'x-checksum-sha256': 'ab'.repeat(32) } }],
  ['a Content-Encoding the mirror did not ask for', { kind: 'body', body: gzipSync(ZIP), headers: { 'content-encoding': 'gzip' } }],
];

describe('validated before commit', () => {
  it.each(bad)('%s: no client gets it complete, nothing is cached, and the next good answer is', async (_case, fault) => {
    const m = await mirrorOf();
    const url = `${m.url}/v3/packages/fc3/zipball/1.0.0`;
    fake.inject(/^\/blob\//, fault, 2);
    for (let i = 0; i < 2; i++) {
      const res = await get(url).catch((err: unknown) => err as Error);
      // A failed download (cut connection, or an error status): never a 200 with all of its bytes.
      if (!(res instanceof Error)) expect(res.status).toBeGreaterThanOrEqual(500);
    }
    expect(fake.count(/^\/blob\//)).toBe(2); // nothing was cached: the second request fetched again
    expect(await storedFiles(m)).toEqual([]);
    await until(async () => (await readdir(join(m.dataDir, 'archives', 'tmp'))).length === 0); // the aborted temp files go
    const metrics = (await get(`${m.url}/-/metrics`)).body.toString();
    expect(metrics).toMatch(/^srm_mirror_archives_rejected_total 2$/m);

    const good = await get(url);
    expect([good.status, good.headers.get('x-cache'), sha256(good.body)]).toEqual([200, 'MISS', sha256(ZIP)]);
    expect((await get(url)).headers.get('x-cache')).toBe('HIT');
  });

  it('a sha256 stated in the release metadata must match', async () => {
    fake.add('stated', [{ version: '1.0.0', zip: componentZip('stated', '1.0.0'), fields: { sha256: sha256(ZIP) } }]);
    fake.add('right', [{ version: '1.0.0', zip: componentZip('right', '1.0.0'), fields: { digest: `sha256:${sha256(componentZip('right', '1.0.0'))}` } }]);
    const m = await mirrorOf();
    const wrong = await get(`${m.url}/v3/packages/stated/zipball/1.0.0`).catch((err: unknown) => err as Error);
    if (!(wrong instanceof Error)) expect(wrong.status).toBeGreaterThanOrEqual(500);
    await until(() => /archive refused.*expected sha256/.test(m.logs.join('')));
    const right = await get(`${m.url}/v3/packages/right/zipball/1.0.0`);
    expect([right.status, right.body]).toEqual([200, componentZip('right', '1.0.0')]);
  });
});

describe('never serves bytes it has not verified', () => {
  it('two versions with the same bytes: the second fill replaces a corrupt file instead of trusting its size', async () => {
    fake.add('twin', [{ version: '2.0.0', zip: ZIP }, { version: '1.0.0', zip: ZIP }]);
    const m = await mirrorOf();
    expect((await get(`${m.url}/v3/packages/twin/zipball/1.0.0`)).body).toEqual(ZIP);
    const corrupt = Buffer.from(ZIP);
    corrupt[500] = corrupt[500]! ^ 0xff;
    await writeFile(archiveFile(m, ZIP), corrupt); // same size, other bytes
    const second = await get(`${m.url}/v3/packages/twin/zipball/2.0.0`);
    expect([second.headers.get('x-cache'), sha256(second.body)]).toEqual(['MISS', sha256(ZIP)]);
    expect(await readFile(archiveFile(m, ZIP))).toEqual(ZIP);
    for (const v of ['1.0.0', '2.0.0']) {
      const hit = await get(`${m.url}/v3/packages/twin/zipball/${v}`);
      expect([hit.headers.get('x-cache'), sha256(hit.body), hit.headers.get('etag')]).toEqual(['HIT', sha256(ZIP), `"${sha256(ZIP)}"`]);
    }
  });

  it('after a restart, a file changed while the mirror was down is hashed before it is served', async () => {
    const first = await mirrorOf();
    await get(`${first.url}/v3/packages/fc3/zipball/1.0.0`);
    await first.close();
    mirrors.splice(mirrors.indexOf(first), 1);
    const corrupt = Buffer.from(ZIP);
    corrupt[ZIP.length - 100] = corrupt[ZIP.length - 100]! ^ 1;
    await writeFile(archiveFile(first, ZIP), corrupt);
    const m = await mirrorOf({ data: first.dataDir });
    const res = await get(`${m.url}/v3/packages/fc3/zipball/1.0.0`);
    expect([res.headers.get('x-cache'), sha256(res.body)]).toEqual(['MISS', sha256(ZIP)]);
    expect(fake.count(/^\/blob\//)).toBe(2);
  });
});

describe('ranges and conditional requests of cached archives (RFC 9110)', () => {
  async function cached(): Promise<string> {
    const m = await mirrorOf();
    const url = `${m.url}/v3/packages/fc3/zipball/1.0.0`;
    await get(url);
    return url;
  }

  it('answers a byte range with 206 and exactly those bytes', async () => {
    const url = await cached();
    const res = await get(url, { range: 'bytes=100-199' });
    expect([res.status, res.headers.get('content-range'), res.body]).toEqual([206, `bytes 100-199/${ZIP.length}`, ZIP.subarray(100, 200)]);
    const tail = await get(url, { range: 'bytes=-10' });
    expect([tail.status, tail.body]).toEqual([206, ZIP.subarray(ZIP.length - 10)]);
  });

  it('answers an unsatisfiable range with 416 and the size', async () => {
    const url = await cached();
    const res = await get(url, { range: `bytes=${ZIP.length + 10}-` });
    expect([res.status, res.headers.get('content-range')]).toEqual([416, `bytes */${ZIP.length}`]);
  });

  it('ignores a range whose If-Range names another version, and a malformed one', async () => {
    const url = await cached();
    for (const headers of [{ range: 'bytes=0-9', 'if-range': '"other"' }, { range: 'lines=1-2' }] as Array<Record<string, string>>) {
      const res = await get(url, headers);
      expect([res.status, res.body.length]).toEqual([200, ZIP.length]);
    }
  });

  it('answers If-None-Match with 304 whatever the request\'s Cache-Control says', async () => {
    const url = await cached();
    for (const extra of [{}, { 'cache-control': 'no-cache' }, { 'cache-control': 'max-age=0', pragma: 'no-cache' }] as Array<Record<string, string>>) {
      const res = await get(url, { 'if-none-match': `"${sha256(ZIP)}"`, ...extra });
      expect(res.status).toBe(304);
    }
    expect((await get(url, { 'if-none-match': '"something-else"' })).status).toBe(200);
  });

  it('answers HEAD with the headers only', async () => {
    const url = await cached();
    const { request } = await import('undici');
    const res = await request(url, { method: 'HEAD' });
    expect([res.statusCode, res.headers['content-length'], res.headers.etag]).toEqual([200, String(ZIP.length), `"${sha256(ZIP)}"`]);
    await res.body.dump();
  });
});
