// `srm-mirror export`, `keygen` and `bundle inspect` through the same entry point as the executable, on real data
// folders (LevelDB, archives, hosted files): on a stopped mirror, and beside a running server (POST /-/export with
// the admin token) that keeps serving and evicting while the export runs.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkBundle } from '../fakes/bundle-check.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { get, recordSecrets, removeTempDirs, runCli, startMirror, tempDir, until, type TestMirror } from '../helpers.js';

const TOKEN = 'export-admin-token-4c1d9e';
let fake: FakeUpstream;
let data: string;


const on = (...args: string[]) => [...args, '--data', data, '--upstream', fake.v3, '--log-level', 'error', '--hosted-packages', 'corp-*'];

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.1.0', zip: componentZip('fc3', '1.1.0', { payload: randomBytes(50_000) }) }, { version: '1.0.0' }]);
  fake.add('fc3-domain', [{ version: '0.0.9' }]);
  data = await tempDir();
});

afterEach(async () => {
  await fake.close();
  await removeTempDirs();
});

/** A mirror on `data` holding cached archives, a hosted component (published as `s` does) and a generic file. */
async function warm(m: TestMirror): Promise<Record<string, string>> {
  for (const path of ['/v3/packages/fc3/zipball/1.1.0', '/v3/packages/fc3-domain/zipball/0.0.9']) expect((await get(m.url + path)).status).toBe(200);
  const secret = await m.mirror.users.add('alice', 'publisher');
  const basic = { authorization: `Basic ${Buffer.from(`alice:${secret}`).toString('base64')}` };
  recordSecrets(secret, basic.authorization);
  const form = new URLSearchParams({ publish: 'Type: Component\nName: corp-a\nVersion: 1.0.0\n', version_body: 'first' }).toString();
  const step1 = await request(`${m.url}/v3/packages/releases`, { method: 'POST', headers: { ...basic, 'content-type': 'application/x-www-form-urlencoded' }, body: form });
  const { url } = ((await step1.body.json()) as { body: { url: string } }).body;
  const step2 = await request(url, { method: 'PUT', body: componentZip('corp-a', '1.0.0') });
  await step2.body.dump();
  expect(step2.statusCode).toBe(201);
  const put = await request(`${m.url}/api/packages/alice/generic/tool/1.4.2/tool-linux-amd64`, { method: 'PUT', headers: basic, body: randomBytes(30_000) });
  await put.body.dump();
  expect(put.statusCode).toBe(201);
  return basic;
}

describe('srm-mirror export on a stopped mirror', () => {
  it('writes a signed bundle of cached, hosted and generic content; inspect reports it; --since last carries only what is new', async () => {
    const m = await startMirror(fake.v3, { data, 'hosted-packages': 'corp-*' });
    const basic = await warm(m);
    await m.close();
    const keys = await tempDir();
    const kg = await runCli(['keygen', '--out', join(keys, 'site')]);
    expect(kg.code).toBe(0);
    const keyId = /key id ([0-9a-f]{16})/.exec(kg.stdout)![1]!;

    const full = join(await tempDir(), 'full');
    const r = await runCli(on('export', '--out', full, '--sign-key', join(keys, 'site.key')));
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(/status: written\n/);
    expect(r.stdout).toContain(`signedBy: ${keyId}`);
    const trusted = [await readFile(join(keys, 'site.pub'), 'utf8')];
    const m1 = await checkBundle(full, { trusted });
    expect(m1.entries.map((e) => `${e.kind}:${e.name}@${e.version}`)).toEqual(['cached:fc3-domain@0.0.9', 'cached:fc3@1.1.0', 'generic:tool@1.4.2', 'hosted:corp-a@1.0.0']);
    expect(m1.entries.find((e) => e.kind === 'hosted')).toMatchObject({ owner: 'alice', publisher: 'alice', body: 'first', component: { type: 'Component' } });
    expect(m1.entries.find((e) => e.name === 'fc3')).toMatchObject({ kind: 'cached', release: { fields: expect.any(Object) } });

    // inspect: the summary, the signature, trust.
    const trustDir = await tempDir();
    await writeFile(join(trustDir, 'site.pub'), trusted[0]!);
    const seen = await runCli(['bundle', 'inspect', full, '--trust', trustDir]);
    expect(seen.code).toBe(0);
    expect(seen.stdout).toContain(`bundle     ${m1.id}\n`);
    expect(seen.stdout).toContain('entries    2 cached, 1 hosted, 1 generic\n');
    expect(seen.stdout).toContain('volumes    1: 1 present\n');
    expect(seen.stdout).toContain(`signature  valid, by key(s) ${keyId}; trusted key ${keyId}\n`);
    const other = await tempDir();
    expect((await runCli(['keygen', '--out', join(other, 'stranger')])).code).toBe(0);
    await rm(join(other, 'stranger.key'));
    const untrusted = await runCli(['bundle', 'inspect', full, '--trust', other]);
    expect([untrusted.code, untrusted.stdout]).toEqual([1, expect.stringContaining('NOT by a trusted key')]);

    // Mirror A learns a new version and loses the generic file; the incremental carries only the new blob.
    fake.publish('fc3', { version: '1.2.0', zip: componentZip('fc3', '1.2.0', { payload: randomBytes(40_000) }) });
    const again = await startMirror(fake.v3, { data, 'hosted-packages': 'corp-*', 'max-age': '0s' });
    expect((await get(`${again.url}/v3/packages/fc3/zipball/1.2.0`)).status).toBe(200);
    const del = await request(`${again.url}/api/packages/alice/generic/tool/1.4.2`, { method: 'DELETE', headers: basic });
    await del.body.dump();
    expect(del.statusCode).toBe(204);
    await again.close();
    const dry = join(await tempDir(), 'dry');
    const d = await runCli(on('export', '--out', dry, '--since', 'last', '--dry-run', '--json'));
    expect(d.code).toBe(0);
    expect(JSON.parse(d.stdout.trim().split('\n').at(-1)!)).toMatchObject({ type: 'summary', summary: { status: 'dry run', blobs: 1, deletions: 1, base: m1.id } });
    expect(existsSync(dry)).toBe(false);
    const incr = join(await tempDir(), 'incr');
    expect((await runCli(on('export', '--out', incr, '--since', 'last'))).code).toBe(0);
    const m2 = await checkBundle(incr, { baseDigests: new Set(m1.entries.map((e) => e.digest)) });
    expect(m2.base).toBe(m1.id);
    expect(m2.blobs).toHaveLength(1);
    expect(m2.entries.find((e) => e.digest === m2.blobs[0]!.digest)).toMatchObject({ name: 'fc3', version: '1.2.0' });
    expect(m2.deletions).toEqual(['generic:alice/tool/1.4.2/tool-linux-amd64']);
    const inspected = JSON.parse((await runCli(['bundle', 'inspect', incr, '--json'])).stdout) as Record<string, unknown>;
    expect(inspected).toMatchObject({ id: m2.id, base: m1.id, blobs: 1, signature: { status: 'unsigned' }, deletions: m2.deletions });

    // A missing volume and an edited manifest, as inspect sees them.
    await rm(join(full, 'vol-0001.tar'));
    const manifest = await readFile(join(full, 'manifest.json'), 'utf8');
    await writeFile(join(full, 'manifest.json'), manifest.replace('"first"', '"forged"'));
    const tampered = await runCli(['bundle', 'inspect', full]);
    expect(tampered.code).toBe(1);
    expect(tampered.stdout).toContain('volumes    1: 0 present, 1 missing (vol-0001.tar)\n');
    expect(tampered.stdout).toMatch(/signature {2}INVALID \(key [0-9a-f]{16}\): the manifest or its signature was altered/);
  });

  it('says what is wrong with its input, with exit 2', async () => {
    const nowhere = await runCli(on('export'));
    expect([nowhere.code, nowhere.stderr]).toEqual([2, expect.stringMatching(/say where the bundle goes: --out DIR/)]);
    const size = await runCli(on('export', '--out', join(data, 'b'), '--max-volume-size', 'lots'));
    expect([size.code, size.stderr]).toEqual([2, expect.stringMatching(/--max-volume-size/)]);
    const name = await runCli(on('export', '--out', join(data, 'b'), 'a b'));
    expect([name.code, name.stderr]).toEqual([2, expect.stringMatching(/invalid package name "a b"/)]);
    const inspect = await runCli(['bundle', 'look', data]);
    expect(inspect.code).toBe(2);
    const notBundle = await runCli(['bundle', 'inspect', data]);
    expect([notBundle.code, notBundle.stderr]).toEqual([1, expect.stringMatching(/holds no manifest\.json/)]);
  });
});

describe('srm-mirror keygen', () => {
  it('writes NAME.key readable by its owner only and NAME.pub, and never overwrites them', async () => {
    const dir = await tempDir();
    const r = await runCli(['keygen', '--out', join(dir, 'site')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^key id [0-9a-f]{16}\n/);
    expect((await stat(join(dir, 'site.key'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'site.pub'))).mode & 0o777).toBe(0o644 & ~process.umask());
    expect(await readFile(join(dir, 'site.key'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const key = await readFile(join(dir, 'site.key'));
    const again = await runCli(['keygen', '--out', join(dir, 'site')]);
    expect([again.code, again.stderr]).toEqual([1, expect.stringMatching(/site\.key exists already: it is not overwritten/)]);
    expect(await readFile(join(dir, 'site.key'))).toEqual(key);
    expect((await runCli(['keygen'])).code).toBe(2);
  });
});

describe('export beside a running server', () => {
  it('goes through POST /-/export with the admin token, and stays consistent while the quota evicts', async () => {
    const zips = Array.from({ length: 16 }, (_, i) => componentZip(`p${i}`, '1.0.0', { payload: randomBytes(40_000) }));
    zips.forEach((zip, i) => fake.add(`p${i}`, [{ version: '1.0.0', zip }]));
    const m = await startMirror(fake.v3, { data, 'admin-token': TOKEN, 'max-size': '200KB', 'hosted-packages': 'corp-*' });
    try {
      await warm(m);
      for (let i = 0; i < 3; i++) expect((await get(`${m.url}/v3/packages/p${i}/zipball/1.0.0`)).status).toBe(200);
      const port = new URL(m.url).port;
      const server = ['--port', port, '--host', '127.0.0.1'];
      // Refused without the token; a relative path is refused by the server (it would be its own working folder's).
      expect((await runCli(on('export', '--out', join(data, 'x'), ...server))).code).toBe(3);
      const bad = await request(`${m.url}/-/export`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{"out":"rel"}' });
      expect([bad.statusCode, ((await bad.body.json()) as { message: string }).message]).toEqual([400, expect.stringMatching(/out must be an absolute path/)]);
      const anonymous = await request(`${m.url}/-/export`, { method: 'POST', body: '{}' });
      await anonymous.body.dump();
      expect(anonymous.statusCode).toBe(401);

      // Clients keep downloading other packages (each one evicts others) while the export runs.
      let exporting = true;
      const traffic = (async () => {
        for (let i = 3; exporting || i < 8; i++) expect((await get(`${m.url}/v3/packages/p${i % zips.length}/zipball/1.0.0`)).status).toBe(200);
      })();
      const out = join(await tempDir(), 'bundle');
      const r = await runCli(on('export', '--out', out, '--json', '--max-volume-size', '100KB', ...server, '--admin-token', TOKEN)).finally(() => (exporting = false));
      await traffic;
      expect(r.stderr).toMatch(/in use by a running srm-mirror: asking it to export/);
      expect(r.code).toBe(0);
      const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; summary?: Record<string, unknown> });
      expect(events.filter((e) => e.type === 'progress').length).toBeGreaterThan(0);
      const m1 = await checkBundle(out);
      expect(events.at(-1)).toMatchObject({ type: 'summary', summary: { status: 'written', bundle: m1.id } });
      expect(m1.volumes.length).toBeGreaterThan(1);
      expect(m1.entries.filter((e) => e.kind === 'cached').length).toBeGreaterThanOrEqual(2);
      // The server remembers it: the next export can be incremental on it.
      expect(existsSync(join(data, 'exports', `${m1.id}.json`))).toBe(true);
      // Its leases gone, the quota holds again.
      await until(async () => (await m.mirror.status()).archives.quota.usedBytes <= 200_000);
      expect(m.logs.filter((l) => l.includes('evicted least recently used')).length).toBeGreaterThan(0);
    } finally {
      await m.close();
    }
  });
});

it('keygen and inspect need no data folder', async () => {
  const dir = join(await tempDir(), 'nested');
  await mkdir(dir);
  expect((await runCli(['keygen', '--out', join(dir, 'k')])).code).toBe(0);
});
