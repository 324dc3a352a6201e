// hosted.anonymousRead false: hosted components are read by users only, through both the v3 and the SRM face; a
// user's answers carry signed, expiring zipball URLs (the `s` client sends no credentials with a download). Cached
// packages stay anonymous.
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { componentZip } from '../fakes/zips.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { get, manualClock, recordSecrets, removeTempDirs, startMirror, tempDir, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
let mirror: TestMirror;
let clock: ReturnType<typeof manualClock>;
let basic: Record<string, string>;
const ZIP = componentZip('corp-a', '1.0.0');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeEach(async () => {
  clock = manualClock(Date.parse('2026-11-21T10:00:00Z'));
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.0.0' }]);
  mirror = await startMirror(fake.v3, { 'hosted-packages': 'corp-*', 'hosted-anonymous-read': 'false' }, { now: clock.now });
  const secret = await mirror.mirror.users.add('alice', 'publisher');
  basic = { authorization: `Basic ${Buffer.from(`alice:${secret}`).toString('base64')}` };
  recordSecrets(secret, basic.authorization!);
  const form = new URLSearchParams({ publish: 'Type: Component\nName: corp-a\nVersion: 1.0.0\n', version_body: '' }).toString();
  const step1 = await request(`${mirror.url}/v3/packages/releases`, { method: 'POST', headers: { ...basic, 'content-type': 'application/x-www-form-urlencoded' }, body: form });
  const { url } = ((await step1.body.json()) as { body: { url: string } }).body;
  const step2 = await request(url, { method: 'PUT', body: ZIP });
  await step2.body.dump();
  expect(step2.statusCode).toBe(201);
});

afterEach(async () => {
  await mirror.close();
  await fake.close();
  await removeTempDirs();
});

const json = (body: Buffer) => JSON.parse(body.toString()) as Record<string, unknown>;

describe('hosted reads for users only', () => {
  it.each(['/v3/packages/corp-a/release/latest', '/v3/packages/corp-a/release/tags/1.0.0', '/v3/packages/corp-a/zipball/1.0.0', '/corp-a/releases', '/corp-a/releases/latest', '/corp-a/zipball/1.0.0'])(
    'anonymous GET %s → 401',
    async (path) => {
      expect((await get(mirror.url + path)).status).toBe(401);
    },
  );

  it('cached (not hosted) packages stay anonymous', async () => {
    expect((await get(`${mirror.url}/v3/packages/fc3/release/latest`)).status).toBe(200);
  });

  it("a user's v3 and SRM answers carry signed zipball URLs that anyone can download with, for an hour, for that version only", async () => {
    const v3 = json((await get(`${mirror.url}/v3/packages/corp-a/release/latest`, basic)).body).body as { zipball_url: string };
    const srm = json((await get(`${mirror.url}/corp-a/releases/latest`, basic)).body) as { zipball_url: string };
    for (const link of [v3.zipball_url, srm.zipball_url]) {
      expect(link).toMatch(/\?expires=\d+&signature=[0-9a-f]{64}$/);
      const got = await get(link);
      expect([got.status, sha256(got.body)]).toEqual([200, sha256(ZIP)]);
    }
    const tampered = v3.zipball_url.replace(/signature=./, (m) => `${m.slice(0, -1)}${m.endsWith('0') ? '1' : '0'}`);
    expect((await get(tampered)).status).toBe(401);
    expect((await get(v3.zipball_url.replace('/zipball/1.0.0', '/zipball/2.0.0'))).status).toBe(401);
    clock.advance(61 * 60_000);
    expect((await get(v3.zipball_url)).status).toBe(401);
  });

  it('with anonymous reads allowed (the default) no link is added', async () => {
    const open = await startMirror(fake.v3, { 'hosted-packages': 'corp-*', data: await tempDir() });
    try {
      expect(json((await get(`${mirror.url}/v3/packages/corp-a/release/latest`, basic)).body).body).toMatchObject({ zipball_url: expect.stringContaining('?expires=') });
      const secret = await open.mirror.users.add('carol', 'publisher');
      recordSecrets(secret);
      const form = new URLSearchParams({ publish: 'Type: Component\nName: corp-b\nVersion: 1.0.0\n' }).toString();
      const step1 = await request(`${open.url}/v3/packages/releases`, { method: 'POST', headers: { 'private-token': secret, 'content-type': 'application/x-www-form-urlencoded' }, body: form });
      const { url } = ((await step1.body.json()) as { body: { url: string } }).body;
      await (await request(url, { method: 'PUT', body: componentZip('corp-b', '1.0.0') })).body.dump();
      const latest = json((await get(`${open.url}/v3/packages/corp-b/release/latest`)).body).body as { zipball_url: string };
      expect(latest.zipball_url).toBe(`${open.url}/v3/packages/corp-b/zipball/1.0.0`);
    } finally {
      await open.close();
    }
  });
});
