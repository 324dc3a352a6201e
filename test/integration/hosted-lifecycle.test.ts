// Hosted content beside the cache's lifecycle: the disk quota, collection, `gc`, `verify --repair`, the scrub and
// `repair` work on cached archives only. A hosted file is never evicted, collected or "repaired" away; a corrupt one
// is reported loudly (and answered 500 elsewhere), and kept for its operator to restore.
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { componentZip } from '../fakes/zips.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { get, recordSecrets, removeTempDirs, runCli, startMirror, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
const mirrors: TestMirror[] = [];
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const HOSTED = randomBytes(300_000);


/** A mirror with one hosted generic file (alice/tool/1/tool.bin); resolves with the mirror and the file's path. */
async function mirrorWithHostedFile(flags: Record<string, string> = {}): Promise<{ m: TestMirror; file: string }> {
  const m = await startMirror(fake.v3, flags);
  mirrors.push(m);
  const secret = await m.mirror.users.add('alice', 'publisher');
  recordSecrets(secret);
  const put = await request(`${m.url}/api/packages/alice/generic/tool/1/tool.bin`, { method: 'PUT', headers: { 'private-token': secret }, body: HOSTED });
  await put.body.dump();
  expect(put.statusCode).toBe(201);
  const digest = sha256(HOSTED);
  return { m, file: join(m.dataDir, 'hosted', 'sha256', digest.slice(0, 2), digest) };
}

beforeEach(async () => {
  fake = await FakeUpstream.start();
  for (let i = 0; i < 4; i++) fake.add(`fc${i}`, [{ version: '1.0.0', zip: componentZip(`fc${i}`, '1.0.0', { payload: randomBytes(200_000) }) }]);
});

afterEach(async () => {
  for (const m of mirrors.splice(0)) await m.close();
  await fake.close();
  await removeTempDirs();
});

describe('hosted content and the cache lifecycle', () => {
  it('the disk quota evicts cached archives only: a hosted file larger than the quota stays, whole', async () => {
    const { m, file } = await mirrorWithHostedFile({ 'max-size': '450KB' });
    for (let i = 0; i < 4; i++) expect((await get(`${m.url}/v3/packages/fc${i}/zipball/1.0.0`)).status).toBe(200);
    await m.mirror.archives.reclaimer.enforce();
    const status = await m.mirror.status();
    expect(status.archives.quota.usedBytes).toBeLessThanOrEqual(450_000); // the cache was held to its quota ...
    expect(status.archives.quota.archives).toBeLessThan(4);
    expect((await readFile(file)).equals(HOSTED)).toBe(true); // ... and the hosted file, alone larger than it, stayed
    expect(status.hosted.bytes).toBe(HOSTED.length);
    const got = await get(`${m.url}/api/packages/alice/generic/tool/1/tool.bin`);
    expect([got.status, sha256(got.body)]).toEqual([200, sha256(HOSTED)]);
  });

  it('gc, verify --repair and repair on the stopped mirror leave hosted files alone', async () => {
    const { m, file } = await mirrorWithHostedFile();
    await m.close();
    const on = (...args: string[]) => [...args, '--data', m.dataDir, '--upstream', fake.v3, '--log-level', 'error'];
    for (const args of [on('gc'), on('gc', '--quarantine'), on('verify', '--repair'), on('repair')]) {
      const r = await runCli(args);
      expect(r.code, `${args.join(' ')}: ${r.output}`).toBe(0);
      expect((await readFile(file)).equals(HOSTED)).toBe(true);
    }
    const again = await startMirror(fake.v3, { data: m.dataDir });
    mirrors.push(again);
    const got = await get(`${again.url}/api/packages/alice/generic/tool/1/tool.bin`);
    expect([got.status, sha256(got.body)]).toEqual([200, sha256(HOSTED)]);
  });

  it('verify reports a corrupt hosted file loudly and exits 1, with --repair too, and keeps the file', async () => {
    const { m, file } = await mirrorWithHostedFile();
    await m.close();
    const corrupt = Buffer.from(HOSTED);
    corrupt[10] = corrupt[10]! ^ 0xff;
    await writeFile(file, corrupt);
    const on = (...args: string[]) => [...args, '--data', m.dataDir, '--upstream', fake.v3, '--log-level', 'error'];
    for (const args of [on('verify'), on('verify', '--repair')]) {
      const r = await runCli(args);
      expect(r.output).toContain(`CORRUPT hosted file (kept, answered 500; restore it from a backup): ${sha256(HOSTED)}`);
      expect(r.code).toBe(1);
      expect((await readFile(file)).equals(corrupt)).toBe(true);
    }
  });

  it('the scrub of a running server audits hosted files: /-/status shows what is corrupt, the file stays', async () => {
    const { m, file } = await mirrorWithHostedFile();
    const corrupt = Buffer.from(HOSTED);
    corrupt[10] = corrupt[10]! ^ 0xff;
    await writeFile(file, corrupt);
    const hourAgo = new Date(Date.now() - 3600_000);
    await utimes(file, hourAgo, hourAgo);
    const report = await m.mirror.verifyNow('test', true);
    expect(report.hosted).toMatchObject({ checked: 1, corrupt: [sha256(HOSTED)] });
    expect((await m.mirror.status()).hosted.lastAudit?.corrupt).toEqual([sha256(HOSTED)]);
    expect(m.logs.some((l) => l.includes('a hosted file is corrupt'))).toBe(true);
    const metrics = (await get(`${m.url}/-/metrics`)).body.toString();
    expect(metrics).toMatch(/^srm_mirror_hosted_corrupt 1$/m);
    expect(metrics).toMatch(new RegExp(`^srm_mirror_hosted_bytes ${HOSTED.length}$`, 'm'));
    expect(await readdir(join(m.dataDir, 'hosted', 'sha256', sha256(HOSTED).slice(0, 2)))).toEqual([sha256(HOSTED)]);
  });
});
