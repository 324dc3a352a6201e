// Importing beside a running server: POST /-/import (admin token, NDJSON events) and `srm-mirror import` asking the
// server, whose answers include the imported content at once; an online mirror serves imported cached versions
// from its cache and revalidates their metadata with the upstream as usual.
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newKeyPair } from '../../src/bundles/manifest.js';
import type { BundleEvent } from '../../src/bundles/progress.js';
import { main } from '../../src/cli.js';
import { cached, generic, hosted, writeBundle } from '../fakes/bundles.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { get, recordSecrets, removeTempDirs, startMirror, tempDir, type TestMirror } from '../helpers.js';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const DEAD_UPSTREAM = 'http://127.0.0.1:9/v3';
const TOKEN = 'import-admin-token-0123456789';
const FC3 = componentZip('fc3', '1.0.0', { payload: randomBytes(20_000) });
const CORP = componentZip('corp-tool', '1.0.0', { payload: randomBytes(10_000) });
const TOOL = randomBytes(5_000);

let work: string;
let mirror: TestMirror | undefined;

beforeEach(async () => {
  work = await tempDir();
  recordSecrets(TOKEN);
});

afterEach(async () => {
  await mirror?.close();
  mirror = undefined;
  await removeTempDirs();
});

const items = () => [cached('fc3', '1.0.0', FC3), hosted('corp-tool', '1.0.0', CORP), generic('alice', 'tool', '1.0.0', 'tool.bin', TOOL)];
const body = (res: { body: Buffer }) => (JSON.parse(res.body.toString()) as { body: Record<string, unknown> }).body;

async function postImport(url: string, payload: unknown, token: string | null = TOKEN) {
  const res = await request(`${url}/-/import`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(payload),
  });
  const text = await res.body.text();
  return { status: res.statusCode, type: res.headers['content-type'], text };
}

describe('beside a running server', () => {
  it('POST /-/import streams the events, and the offline server answers with the imported versions at once', async () => {
    mirror = await startMirror(DEAD_UPSTREAM, { offline: true, 'admin-token': TOKEN });
    expect((await get(`${mirror.url}/v3/packages/fc3/release/latest`)).status).toBe(404);
    const bundle = await writeBundle(join(work, 'b'), { id: 'live', items: items() });

    const res = await postImport(mirror.url, { dir: bundle.dir });
    expect([res.status, res.type]).toEqual([200, 'application/x-ndjson']);
    const events = res.text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as BundleEvent);
    expect(events.at(-1)).toMatchObject({ type: 'summary', summary: { bundle: 'live', status: 'complete', added: { cached: 1, hosted: 1, generic: 1 } } });
    expect(events.some((e) => e.type === 'progress')).toBe(true);

    const latest = await get(`${mirror.url}/v3/packages/fc3/release/latest`);
    expect([latest.status, latest.headers.get('x-cache'), body(latest).tag_name]).toEqual([200, 'OFFLINE', '1.0.0']);
    expect(sha256((await get(`${mirror.url}/v3/packages/fc3/zipball/1.0.0`)).body)).toBe(sha256(FC3));
    expect((await get(`${mirror.url}/v3/packages/corp-tool/release/latest`)).headers.get('x-cache')).toBe('HOSTED');
    expect(sha256((await get(`${mirror.url}/api/packages/alice/generic/tool/1.0.0/tool.bin`)).body)).toBe(sha256(TOOL));
    const status = JSON.parse((await get(`${mirror.url}/-/status`)).body.toString()) as { hosted: { components: { versions: number }; generic: { files: number } } };
    expect([status.hosted.components.versions, status.hosted.generic.files]).toEqual([1, 1]);
  });

  it('refusals: no token 401, a relative folder or a bad key 400, a refused bundle as the last event', async () => {
    mirror = await startMirror(DEAD_UPSTREAM, { offline: true, 'admin-token': TOKEN });
    const bundle = await writeBundle(join(work, 'b'), { items: items() });
    expect((await postImport(mirror.url, { dir: bundle.dir }, null)).status).toBe(401);
    expect((await postImport(mirror.url, { dir: bundle.dir }, 'wrong-token-0123456789')).status).toBe(401);
    const relative = await postImport(mirror.url, { dir: 'b' });
    expect([relative.status, JSON.parse(relative.text)]).toEqual([400, { message: expect.stringMatching(/"dir" must be the absolute path/), error: 'bad-request' }]);
    expect((await postImport(mirror.url, { dir: bundle.dir, trustedKeys: ['not a key'] })).status).toBe(400);
    expect((await postImport(mirror.url, { dir: bundle.dir, trustedKeys: [] })).status).toBe(400); // no way to turn trust off
    expect((await postImport(mirror.url, { dir: bundle.dir, dryRun: 'yes' })).status).toBe(400);
    const unsigned = await postImport(mirror.url, { dir: bundle.dir, trustedKeys: [newKeyPair().publicPem] });
    expect(unsigned.status).toBe(200);
    expect(JSON.parse(unsigned.text.trim().split('\n').at(-1)!)).toMatchObject({ type: 'error', message: expect.stringMatching(/the bundle is unsigned/) });
  });

  it('srm-mirror import asks the server holding the data folder (with the admin token), and says so', async () => {
    const data = await tempDir();
    mirror = await startMirror(DEAD_UPSTREAM, { data, offline: true, 'admin-token': TOKEN });
    const bundle = await writeBundle(join(work, 'b'), { items: items() });
    const port = new URL(mirror.url).port;
    let stdout = '';
    let stderr = '';
    const out = { isTTY: false, write: (t: string) => void (stdout += t), error: (t: string) => void (stderr += t) };
    const args = ['import', bundle.dir, '--data', data, '--offline', '--host', '127.0.0.1', '--port', port, '--log-level', 'error'];
    expect(await main(args, out)).toBe(3);
    expect(stderr).toMatch(/in use by a running srm-mirror.*To have the running server import instead, give this command its --admin-token/);
    expect(await main([...args, '--admin-token', TOKEN], out)).toBe(0);
    expect(stdout).toMatch(/a server holds the data folder: asking it to import\n/);
    expect(stdout).toMatch(/^status: complete$/m);
    expect(sha256((await get(`${mirror.url}/v3/packages/fc3/zipball/1.0.0`)).body)).toBe(sha256(FC3));
    // A refusal by the server is a refusal here: exit 1, with the server's reason.
    stderr = '';
    await writeFile(join(bundle.dir, 'manifest.json'), '{"format": 7}');
    expect(await main([...args, '--admin-token', TOKEN], out)).toBe(1);
    expect(stderr).toMatch(/the server failed: unknown bundle format 7/);
  });
});

describe('into an online mirror', () => {
  it('imported cached versions are served from the cache; their metadata is revalidated with the upstream as usual, and stands in when it fails', async () => {
    const fake = await FakeUpstream.start();
    try {
      fake.add('fc3', [{ version: '1.0.0', zip: FC3 }]);
      mirror = await startMirror(fake.v3, { 'max-age': '10m' });
      const bundle = await writeBundle(join(work, 'b'), { items: [cached('fc3', '1.0.0', FC3, { description: 'from the bundle' })] });
      expect(await mirror.mirror.importBundle(bundle.dir, {}, () => {})).toMatchObject({ status: 'complete' });

      const zip = await get(`${mirror.url}/v3/packages/fc3/zipball/1.0.0`);
      expect([zip.headers.get('x-cache'), sha256(zip.body)]).toEqual(['HIT', sha256(FC3)]);
      expect(fake.count(/zipball|\/blob\//)).toBe(0);

      // The seeded document is as old as the bundle: the first read asks the upstream, whose answer replaces it.
      fake.inject(/release\/tags\/1\.0\.0/, { kind: 'status', status: 503 });
      const stale = await get(`${mirror.url}/v3/packages/fc3/release/tags/1.0.0`);
      expect([stale.status, stale.headers.get('x-cache'), body(stale).description]).toEqual([200, 'STALE', 'from the bundle']);
      fake.clearFaults();
      const fresh = await get(`${mirror.url}/v3/packages/fc3/release/tags/1.0.0`);
      expect([fresh.status, fresh.headers.get('x-cache')]).toEqual([200, 'MISS']);
      expect(body(fresh).description).not.toBe('from the bundle');
    } finally {
      await fake.close();
    }
  });
});
