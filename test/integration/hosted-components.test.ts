// Components hosted on the mirror, published over the v3 API as `s registry publish` does it (PROTOCOL.md §1), over
// HTTP to a real mirror (real LevelDB and files, injected clock): the two publish steps, reads on every face,
// immutable versions, refusals, delete, retoken, the private list, anonymous reads turned off, offline publishing,
// and a SIGKILL right after a 201. A hosted name never reaches the upstream, even one the upstream has.
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { zipSync } from 'fflate';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Users } from '../../src/core/hosted/users.js';
import { FORM_HEADERS, publishForm, signed, type PublishFormOptions } from '../fakes/clients.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { killChildren, manualClock, recordSecrets, removeTempDirs, send, spawnMirror, startMirror, tempDir, type Answer, type TestMirror } from '../helpers.js';

const START = Date.parse('2026-11-21T10:00:00Z');
const MINUTE = 60_000;
let clock: ReturnType<typeof manualClock>;
let fake: FakeUpstream;
let mirror: TestMirror;
const started: TestMirror[] = [];
/** Secrets by user name (see addUser). */
const secrets: Record<string, string> = {};

async function open(flags: Record<string, string | boolean> = {}): Promise<TestMirror> {
  const m = await startMirror(fake.v3, { 'hosted-packages': 'corp-*', ...flags }, { now: clock.now });
  started.push(m);
  return m;
}

async function close(m: TestMirror): Promise<void> {
  started.splice(started.indexOf(m), 1);
  await m.close();
}

async function addUser(m: TestMirror, name: string, role: 'reader' | 'publisher' | 'admin'): Promise<string> {
  const secret = await m.mirror.users.add(name, role);
  recordSecrets(secret, Buffer.from(`${name}:${secret}`).toString('base64'));
  secrets[name] = secret;
  return secret;
}

/** A user's signed headers (a fresh nonce each time), at the mirror's clock unless `now` says otherwise. */
const as = (user: string, o: { now?: number; nonce?: string } = {}) => signed(secrets[user], { now: clock.now(), ...o });
const basic = (user: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${secrets[user]}`).toString('base64')}` });
/** The signed headers of an account of the upstream registry: its token names no user of the mirror. */
const upstreamAccount = () => signed('an-upstream-safety-code', { now: clock.now() });

/** Publish, step 1. */
const begin = (m: TestMirror, headers: Record<string, string>, form: string) => send('POST', `${m.url}/v3/packages/releases`, { ...headers, ...FORM_HEADERS }, form);
/** Step 1's upload URL; its token is a credential (whoever has it may upload the version), kept out of every log. */
function uploadUrl(a: Answer): string {
  const { url } = (a.json() as { body: { url: string } }).body;
  recordSecrets(url.slice(url.lastIndexOf('/') + 1));
  return url;
}
const bodyOf = (a: Answer) => (a.json() as { body: unknown }).body;

/** An error answer: the status, and its body is a string (as the `s` client shows it). */
function refusal(a: Answer, status: number): string {
  const body = bodyOf(a);
  expect([a.status, typeof body], a.text).toEqual([status, 'string']);
  return body as string;
}

/** Both publish steps; resolves with the zip that was published. */
async function publish(m: TestMirror, user: string, name: string, version: string, o: { zip?: Buffer; form?: PublishFormOptions } = {}): Promise<Buffer> {
  const zip = o.zip ?? componentZip(name, version, { files: { 'src/index.js': new TextEncoder().encode(`// ${name}@${version}\n`) } });
  const step1 = await begin(m, as(user), publishForm(name, version, o.form));
  expect(step1.status, step1.text).toBe(200);
  const step2 = await send('PUT', uploadUrl(step1), {}, zip);
  expect(step2.status, step2.text).toBe(201);
  return zip;
}

const get = (m: TestMirror, path: string, headers: Record<string, string> = {}) => send('GET', m.url + path, headers);
const tags = (a: Answer) => (bodyOf(a) as Array<{ tag_name: string }>).map((r) => r.tag_name);
const names = (a: Answer) => (bodyOf(a) as Array<{ name: string }>).map((p) => p.name);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const blobsOn = async (m: TestMirror) => (await readdir(join(m.dataDir, 'hosted', 'sha256'), { recursive: true })).filter((f) => /[0-9a-f]{64}$/.test(f)).map((f) => f.slice(-64));
const tempsOn = (m: TestMirror) => readdir(join(m.dataDir, 'hosted', 'tmp'));
/** Requests the upstream got that name a package, in their URL or their body. */
const upstreamSaw = (name: string) => fake.requests.filter((r) => `${r.url}\n${r.body.toString()}`.toLowerCase().includes(name.toLowerCase()));

/** Nothing of `name` is stored: no version, no blob but those given, no temp file left. */
async function nothingStored(m: TestMirror, name: string, blobs: string[] = []): Promise<void> {
  expect((await get(m, `/v3/packages/${name}/release/latest`)).status).toBe(404);
  expect(tags(await get(m, `/v3/packages/${name}/release?page=1`))).toEqual([]);
  expect(names(await get(m, '/v3/packages/releases?page=1'))).not.toContain(name);
  expect(await blobsOn(m)).toEqual(blobs);
  expect(await tempsOn(m)).toEqual([]);
}

beforeEach(async () => {
  clock = manualClock(START);
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.1.0' }, { version: '1.0.0' }]);
  // The upstream has a package whose name is hosted here: the mirror must never ask for it.
  fake.add('corp-shadow', [{ version: '9.9.9' }]);
  mirror = await open();
  await addUser(mirror, 'alice', 'publisher');
});

afterEach(async () => {
  killChildren();
  for (const m of started.splice(0)) await m.close();
  await fake.close();
  await removeTempDirs();
});

describe('publishing', () => {
  it('two steps store a version; every read and download serves it (x-cache HOSTED) on both faces', async () => {
    const first = componentZip('corp-app', '1.0.0', { topFolder: true, files: { 'src/index.js': randomBytes(3000) } });
    const step1 = await begin(mirror, as('alice'), publishForm('corp-app', '1.0.0', { description: 'The app', versionBody: 'first release' }));
    expect(step1.status).toBe(200);
    expect(step1.json()).toEqual({ request_id: expect.any(String), body: { url: expect.stringMatching(`^${mirror.url}/v3/uploads/[\\w-]{20,}$`) } });
    const step2 = await send('PUT', uploadUrl(step1), {}, first); // no credentials, as the client sends it
    expect([step2.status, bodyOf(step2)]).toEqual([201, { name: 'corp-app', tag_name: '1.0.0' }]);
    const second = await publish(mirror, 'alice', 'corp-app', '1.1.0', { form: { description: 'The app, again', versionBody: 'second release' } });

    const latest = await get(mirror, '/v3/packages/corp-app/release/latest');
    expect([latest.status, latest.headers['x-cache']]).toEqual([200, 'HOSTED']);
    expect(bodyOf(latest)).toEqual({
      name: 'corp-app',
      tag_name: '1.1.0',
      created_at: new Date(START).toISOString(),
      zipball_url: `${mirror.url}/v3/packages/corp-app/zipball/1.1.0`,
      description: 'The app, again',
      sha256: sha256(second),
    });
    const pinned = await get(mirror, '/v3/packages/corp-app/release/tags/1.0.0');
    expect(bodyOf(pinned)).toMatchObject({ name: 'corp-app', tag_name: '1.0.0', description: 'The app', sha256: sha256(first) });
    const detail = await get(mirror, '/v3/packages/corp-app/release?page=1');
    expect([detail.headers['x-cache'], tags(detail)]).toEqual(['HOSTED', ['1.1.0', '1.0.0']]);

    // `s registry list`: the hosted package first, then the upstream's own entries
    const list = await get(mirror, '/v3/packages/releases?page=1');
    expect(list.status).toBe(200);
    expect(names(list)[0]).toBe('corp-app');
    expect(names(list)).toContain('fc3');
    expect((bodyOf(list) as unknown[])[0]).toMatchObject({
      name: 'corp-app',
      type: 'Component',
      description: 'The app, again',
      user: { username: 'alice' },
      provider: ['阿里云'],
      category: { name: '基础云服务' },
    });
    expect(names(await get(mirror, '/v3/packages/releases?page=1&search=fc'))).toEqual(['fc3']);
    expect(names(await get(mirror, '/v3/packages/releases?page=2'))).toEqual([]);

    // the SRM face: the version notes are each release's body
    const srm = await get(mirror, '/corp-app/releases');
    expect(srm.headers['x-cache']).toBe('HOSTED');
    expect(srm.json()).toEqual([
      { tag_name: '1.1.0', created_at: new Date(START).toISOString(), zipball_url: `${mirror.url}/corp-app/zipball/1.1.0`, body: 'second release' },
      { tag_name: '1.0.0', created_at: new Date(START).toISOString(), zipball_url: `${mirror.url}/corp-app/zipball/1.0.0`, body: 'first release' },
    ]);
    expect((await get(mirror, '/corp-app/releases/latest')).json()).toMatchObject({ tag_name: '1.1.0' });

    for (const [url, bytes] of [
      [(bodyOf(latest) as { zipball_url: string }).zipball_url, second],
      [(bodyOf(pinned) as { zipball_url: string }).zipball_url, first],
      [`${mirror.url}/corp-app/zipball/1.0.0`, first],
    ] as const) {
      const zip = await send('GET', url);
      expect([zip.status, zip.headers['x-cache']]).toEqual([200, 'HOSTED']);
      expect(zip.body.equals(bytes)).toBe(true);
    }
    expect(await blobsOn(mirror)).toEqual(expect.arrayContaining([sha256(first), sha256(second)]));
    expect(await tempsOn(mirror)).toEqual([]);
    expect(upstreamSaw('corp-app')).toEqual([]);
  });

  it('latest is the highest stable version, whatever the order of publishing; release pages list them newest first', async () => {
    for (const v of ['1.10.0', '2.0.0-beta.1', '1.9.0']) await publish(mirror, 'alice', 'corp-app', v);
    expect(bodyOf(await get(mirror, '/v3/packages/corp-app/release/latest'))).toMatchObject({ tag_name: '1.10.0' });
    expect(tags(await get(mirror, '/v3/packages/corp-app/release?page=1'))).toEqual(['1.10.0', '1.9.0', '2.0.0-beta.1']);
    expect(tags(await get(mirror, '/v3/packages/corp-app/release?page=2'))).toEqual([]);
    expect(bodyOf(await get(mirror, '/v3/packages/corp-app/release/tags/2.0.0-beta.1'))).toMatchObject({ tag_name: '2.0.0-beta.1' });
  });

  it('versions are immutable: the same version again is refused at step 1', async () => {
    const zip = await publish(mirror, 'alice', 'corp-app', '1.0.0');
    const again = await begin(mirror, as('alice'), publishForm('corp-app', '1.0.0'));
    expect(refusal(again, 409)).toMatch(/corp-app@1\.0\.0 is already published: versions are immutable/);
    expect((await get(mirror, '/v3/packages/corp-app/zipball/1.0.0')).body.equals(zip)).toBe(true);
  });

  it('two uploads of the same version race: one 201, one 409, one version stored (the winner\'s bytes)', async () => {
    const urls = await Promise.all([1, 2].map(async () => uploadUrl(await begin(mirror, as('alice'), publishForm('corp-app', '2.0.0')))));
    const zips = [1, 2].map((i) => componentZip('corp-app', '2.0.0', { payload: randomBytes(200_000 * i) }));
    const answers = await Promise.all(urls.map((url, i) => send('PUT', url, {}, zips[i])));
    expect(answers.map((a) => a.status).sort()).toEqual([201, 409]);
    expect(refusal(answers.find((a) => a.status === 409)!, 409)).toMatch(/already published/);
    const winner = zips[answers.findIndex((a) => a.status === 201)]!;
    expect(tags(await get(mirror, '/v3/packages/corp-app/release?page=1'))).toEqual(['2.0.0']);
    expect(bodyOf(await get(mirror, '/v3/packages/corp-app/release/latest'))).toMatchObject({ sha256: sha256(winner) });
    expect((await get(mirror, '/v3/packages/corp-app/zipball/2.0.0')).body.equals(winner)).toBe(true);
    expect(await blobsOn(mirror)).toEqual([sha256(winner)]);
    expect(await tempsOn(mirror)).toEqual([]);
  });

  it('a publish by another publisher is checked again at step 2: whoever stored first owns the name', async () => {
    await addUser(mirror, 'bob', 'publisher');
    const bobs = uploadUrl(await begin(mirror, as('bob'), publishForm('corp-app', '1.1.0'))); // nobody owns it yet
    await publish(mirror, 'alice', 'corp-app', '1.0.0');
    const late = await send('PUT', bobs, {}, componentZip('corp-app', '1.1.0'));
    expect(refusal(late, 403)).toMatch(/bob may not write as alice/);
    expect(tags(await get(mirror, '/v3/packages/corp-app/release?page=1'))).toEqual(['1.0.0']);
  });
});

describe('a hosted name never reaches the upstream', () => {
  it('reads, downloads, publish and delete of a hosted name the upstream also has are answered here only', async () => {
    // nothing published yet: 404s and empty lists, also for a caller with upstream credentials (no pass-through)
    for (const headers of [{}, upstreamAccount()]) {
      for (const path of ['/v3/packages/corp-shadow/release/latest', '/v3/packages/corp-shadow/release/tags/9.9.9', '/v3/packages/corp-shadow/zipball/9.9.9', '/corp-shadow/releases/latest', '/corp-shadow/zipball/9.9.9']) {
        const res = await get(mirror, path, headers);
        expect(res.status, path).toBe(404);
      }
      expect(refusal(await get(mirror, '/v3/packages/corp-shadow/release/latest', headers), 404)).toMatch(/is not published on this mirror \(corp-shadow is hosted here\)/);
      expect(bodyOf(await get(mirror, '/v3/packages/corp-shadow/release?page=1', headers))).toEqual([]);
      expect((await get(mirror, '/corp-shadow/releases', headers)).json()).toEqual([]);
    }
    expect((await get(mirror, '/v3/packages/CORP-Shadow/release/latest')).status).toBe(404); // patterns ignore case

    const fromUpstreamAccount = await begin(mirror, upstreamAccount(), publishForm('corp-shadow', '1.0.0'));
    expect(refusal(fromUpstreamAccount, 401)).toMatch(/needs the credentials of a user of this mirror/);
    const zip = await publish(mirror, 'alice', 'corp-shadow', '1.0.0');
    expect(bodyOf(await get(mirror, '/v3/packages/corp-shadow/release/latest', upstreamAccount()))).toMatchObject({ tag_name: '1.0.0' });
    expect((await get(mirror, '/v3/packages/corp-shadow/zipball/1.0.0')).body.equals(zip)).toBe(true);
    expect((await get(mirror, '/v3/packages/corp-shadow/zipball/9.9.9')).status).toBe(404);
    expect(refusal(await send('DELETE', `${mirror.url}/v3/packages/corp-shadow/release/tags/1.0.0`, upstreamAccount()), 401)).toMatch(/needs the credentials/);
    expect(refusal(await send('DELETE', `${mirror.url}/v3/packages/corp-shadow/release/tags/9.9.9`, as('alice')), 404)).toMatch(/not published on this mirror/);
    expect((await send('DELETE', `${mirror.url}/v3/packages/corp-shadow/release/tags/1.0.0`, as('alice'))).status).toBe(200);
    expect(fake.requests).toEqual([]);
  });

  it('the package list leaves out upstream entries whose name is hosted here (their reads would not reach them)', async () => {
    const list = await get(mirror, '/v3/packages/releases?page=1');
    expect(names(list)).toEqual(['fc3']);
  });

  it('a publish of a name not hosted, by an account of the upstream, is passed through; one of a hosted name is not', async () => {
    const form = publishForm('fc3', '1.2.0');
    const through = await begin(mirror, upstreamAccount(), form);
    expect([through.status, through.headers['x-cache']]).toEqual([200, 'BYPASS']);
    expect(uploadUrl(through).startsWith(`${fake.url}/upload/`)).toBe(true);
    expect(fake.requests.map((r) => [r.method, r.url, r.body.toString()])).toEqual([['POST', '/v3/packages/releases', form]]);

    // however publish.yaml spells the name, a hosted one is seen
    for (const yaml of ['Type: Component\nName: corp-x\nVersion: 1.0.0\n', 'Type: Component\nName: "corp-x"\nVersion: 1.0.0\n', 'Type: Component\nName: >-\n  corp-x\nVersion: 1.0.0\n', '{Type: Component, Name: corp-x, Version: 1.0.0}\n']) {
      const hosted = await begin(mirror, upstreamAccount(), publishForm('corp-x', '1.0.0', { yaml }));
      expect(refusal(hosted, 401), yaml).toMatch(/needs the credentials of a user of this mirror/);
    }
    // a Name given twice is no YAML: refused here, whichever of them the upstream would take
    const twice = await begin(mirror, upstreamAccount(), publishForm('fc3', '1.0.0', { yaml: 'Type: Component\nName: fc3\nName: corp-x\nVersion: 1.0.0\n' }));
    expect(refusal(twice, 400)).toMatch(/not valid YAML/);
    expect(upstreamSaw('corp-x')).toEqual([]);
  });
});

describe('credentials of users of this mirror never go to the upstream', () => {
  it('a read the shared cache cannot answer is passed through with an upstream account\'s headers, never with a user\'s', async () => {
    fake.add('private-thing', [{ version: '1.0.0' }], { private: true });
    for (const path of ['/v3/packages/private-thing/release/latest', '/v3/packages/private-thing/release?page=1', '/v3/packages/private-thing/zipball/1.0.0']) {
      expect((await get(mirror, path, as('alice'))).status, path).toBe(404);
      expect((await get(mirror, path, basic('alice'))).status, path).toBe(404);
    }
    expect(fake.requests.filter((r) => r.headers.token !== undefined || r.headers.authorization !== undefined)).toEqual([]);
    const theirs = await get(mirror, '/v3/packages/private-thing/release/latest', upstreamAccount());
    expect([theirs.status, theirs.headers['x-cache']]).toEqual([200, 'BYPASS']);
  });

  it('a delete of a name not hosted is refused here (403)', async () => {
    const del = await send('DELETE', `${mirror.url}/v3/packages/fc3/release/tags/1.0.0`, as('alice'));
    expect(refusal(del, 403)).toMatch(/fc3 is not hosted on this mirror/);
    expect(fake.requests).toEqual([]);
  });
});

describe('refusals say why, and store nothing', () => {
  const form = publishForm('corp-x', '1.0.0');

  it('without credentials: 401', async () => {
    expect(refusal(await begin(mirror, {}, form), 401)).toMatch(/publishing corp-x@1\.0\.0 needs the credentials of a user of this mirror/);
    await nothingStored(mirror, 'corp-x');
    expect(upstreamSaw('corp-x')).toEqual([]);
  });

  it('a wrong signature, a replayed nonce, a timestamp 6 minutes away: 401', async () => {
    expect(refusal(await begin(mirror, { ...as('alice'), sign_code: 'f'.repeat(64) }, form), 401)).toMatch(/bad signature/);
    expect(refusal(await begin(mirror, as('alice', { now: clock.now() - 6 * MINUTE }), form), 401)).toMatch(/more than 5 minutes away/);
    expect(refusal(await begin(mirror, as('alice', { now: clock.now() + 6 * MINUTE }), form), 401)).toMatch(/more than 5 minutes away/);
    const headers = as('alice');
    expect((await begin(mirror, headers, form)).status).toBe(200); // step 1 only
    expect(refusal(await begin(mirror, headers, form), 401)).toMatch(/nonce already used/);
    await nothingStored(mirror, 'corp-x');
    expect(upstreamSaw('corp-x')).toEqual([]);
  });

  it('a reader: 403; another publisher, for a version of alice\'s component: 403', async () => {
    await addUser(mirror, 'rita', 'reader');
    await addUser(mirror, 'bob', 'publisher');
    expect(refusal(await begin(mirror, as('rita'), form), 403)).toMatch(/rita may only read \(role reader\)/);
    await nothingStored(mirror, 'corp-x');
    const zip = await publish(mirror, 'alice', 'corp-x', '1.0.0');
    expect(refusal(await begin(mirror, as('bob'), publishForm('corp-x', '1.1.0')), 403)).toMatch(/bob may not write as alice: publishing corp-x belongs to alice/);
    expect(tags(await get(mirror, '/v3/packages/corp-x/release?page=1'))).toEqual(['1.0.0']);
    expect(await blobsOn(mirror)).toEqual([sha256(zip)]);
  });

  it('a name that is not hosted, while online: 403, and the upstream hears nothing', async () => {
    expect(refusal(await begin(mirror, as('alice'), publishForm('fc3', '9.0.0')), 403)).toMatch(/fc3 is not hosted on this mirror \(hosted.packages\)/);
    expect(fake.requests).toEqual([]);
  });

  it.each([
    ['a Type that is no component type', { yaml: 'Type: Application\nName: corp-x\nVersion: 1.0.0\n' }, /Type must be one of Component, Plugin, Project, got "Application"/],
    ['no Name', { yaml: 'Type: Component\nVersion: 1.0.0\n' }, /publish.yaml has no Name/],
    ['no Version', { yaml: 'Type: Component\nName: corp-x\n' }, /publish.yaml has no Version/],
    ['not YAML', { yaml: 'Type: Component\nName: [corp-x\n' }, /publish.yaml is not valid YAML/],
    ['an empty publish.yaml', { yaml: '' }, /no publish.yaml/],
    ['an invalid name', { yaml: 'Type: Component\nName: corp-x/../y\nVersion: 1.0.0\n' }, /invalid package name/i],
  ])('an invalid publish.yaml (%s): 400', async (_, o, why) => {
    expect(refusal(await begin(mirror, as('alice'), publishForm('corp-x', '1.0.0', o)), 400)).toMatch(why);
    await nothingStored(mirror, 'corp-x');
  });

  it.each([
    ['names another version', componentZip('corp-x', '2.0.0'), /the zip's publish.yaml names corp-x@2\.0\.0, not corp-x@1\.0\.0/],
    ['names another component', componentZip('corp-y', '1.0.0', { topFolder: true }), /names corp-y@1\.0\.0, not corp-x@1\.0\.0/],
    ['is not a zip', Buffer.from('this is not a zip file at all'), /the upload was refused/],
  ])('an upload that %s: 400', async (_, zip, why) => {
    const url = uploadUrl(await begin(mirror, as('alice'), form));
    expect(refusal(await send('PUT', url, {}, zip), 400)).toMatch(why);
    await nothingStored(mirror, 'corp-x');
    expect(refusal(await send('PUT', url, {}, componentZip('corp-x', '1.0.0')), 404)).toMatch(/unknown, used or expired/); // used once, whatever the outcome
    await nothingStored(mirror, 'corp-x');
  });

  it('an unknown or used upload URL: 404; an expired one (16 minutes later): 404', async () => {
    expect(refusal(await send('PUT', `${mirror.url}/v3/uploads/no-such-token`, {}, componentZip('corp-x', '1.0.0')), 404)).toMatch(/unknown, used or expired/);
    const used = uploadUrl(await begin(mirror, as('alice'), form));
    const zip = componentZip('corp-x', '1.0.0');
    expect((await send('PUT', used, {}, zip)).status).toBe(201);
    expect(refusal(await send('PUT', used, {}, componentZip('corp-x', '1.0.0')), 404)).toMatch(/unknown, used or expired/);

    const late = uploadUrl(await begin(mirror, as('alice'), publishForm('corp-late', '1.0.0')));
    clock.advance(16 * MINUTE);
    expect(refusal(await send('PUT', late, {}, componentZip('corp-late', '1.0.0')), 404)).toMatch(/unknown, used or expired/);
    await nothingStored(mirror, 'corp-late', [sha256(zip)]);
  });

  it('an upload within 15 minutes is taken', async () => {
    const url = uploadUrl(await begin(mirror, as('alice'), form));
    clock.advance(14 * MINUTE);
    expect((await send('PUT', url, {}, componentZip('corp-x', '1.0.0'))).status).toBe(201);
  });

  it('a zip larger than --hosted-max-file-size: 413, declared or streamed', async () => {
    const small = await open({ 'hosted-max-file-size': '64KB' });
    await addUser(small, 'alice', 'publisher');
    const big = componentZip('corp-x', '1.0.0', { payload: randomBytes(100_000) });
    const declared = await send('PUT', uploadUrl(await begin(small, as('alice'), form)), {}, big);
    expect(refusal(declared, 413)).toMatch(/larger than 64000 bytes \(hosted.maxFileSize\)/);
    const streamed = await send('PUT', uploadUrl(await begin(small, as('alice'), form)), {}, Readable.from([big.subarray(0, 50_000), big.subarray(50_000)]));
    expect(refusal(streamed, 413)).toMatch(/hosted.maxFileSize/);
    await nothingStored(small, 'corp-x');
    expect((await send('PUT', uploadUrl(await begin(small, as('alice'), form)), {}, componentZip('corp-x', '1.0.0'))).status).toBe(201); // a small one fits
  });
});

describe('offline', () => {
  it('every publish is hosted; reads work offline; online after a restart the name is still hosted', async () => {
    fake.add('anything', [{ version: '5.0.0' }]);
    const offline = await open({ offline: true, 'hosted-packages': '' });
    await addUser(offline, 'alice', 'publisher');
    const zip = await publish(offline, 'alice', 'anything', '1.0.0');
    const latest = await get(offline, '/v3/packages/anything/release/latest');
    expect([latest.status, latest.headers['x-cache'], bodyOf(latest)]).toEqual([200, 'HOSTED', expect.objectContaining({ tag_name: '1.0.0', sha256: sha256(zip) })]);
    expect((await get(offline, '/v3/packages/anything/zipball/1.0.0')).body.equals(zip)).toBe(true);
    expect(names(await get(offline, '/v3/packages/releases?page=1'))).toEqual(['anything']);
    await close(offline);

    const online = await open({ data: offline.dataDir, 'hosted-packages': '' });
    const again = await get(online, '/v3/packages/anything/release/latest');
    expect([again.status, again.headers['x-cache'], bodyOf(again)]).toMatchObject([200, 'HOSTED', { tag_name: '1.0.0' }]); // not the upstream's 5.0.0
    expect((await get(online, '/v3/packages/anything/zipball/1.0.0')).body.equals(zip)).toBe(true);
    expect((await get(online, '/v3/packages/anything/zipball/5.0.0')).status).toBe(404);
    await publish(online, 'alice', 'anything', '1.1.0'); // and it takes new versions online
    expect(refusal(await begin(online, upstreamAccount(), publishForm('anything', '1.2.0')), 401)).toMatch(/needs the credentials/);
    expect(upstreamSaw('anything')).toEqual([]);
    expect(names(await get(online, '/v3/packages/releases?page=1'))).toEqual(['anything', 'fc3', 'corp-shadow']);
    // Names are compared case-insensitively: another spelling is hosted too, never asked of the upstream.
    expect((await get(online, '/v3/packages/ANYTHING/release/latest')).status).toBe(404);
    expect(upstreamSaw('anything')).toEqual([]);
  });

  it('offline, a publish may not take over an upstream package the mirror has cached (unless hosted.packages names it)', async () => {
    const warm = await open({ 'hosted-packages': '' });
    expect((await get(warm, '/v3/packages/fc3/zipball/1.1.0')).status).toBe(200);
    await close(warm);
    const offline = await open({ data: warm.dataDir, offline: true, 'hosted-packages': '' });
    await addUser(offline, 'alice', 'publisher');
    expect(refusal(await begin(offline, as('alice'), publishForm('fc3', '9.0.0')), 403)).toMatch(/fc3 is a package of the upstream registry cached here: publishing it would shadow it/);
    await close(offline);
    const claimed = await open({ data: warm.dataDir, offline: true, 'hosted-packages': 'fc3' });
    await publish(claimed, 'alice', 'fc3', '9.0.0');
    expect(bodyOf(await get(claimed, '/v3/packages/fc3/release/latest'))).toMatchObject({ tag_name: '9.0.0' });
  });
});

describe('delete, the private list, retoken', () => {
  it('the owner deletes (200; gone from every answer, its blob removed); another publisher may not (403); an admin may', async () => {
    await addUser(mirror, 'bob', 'publisher');
    await addUser(mirror, 'root', 'admin');
    const v1 = await publish(mirror, 'alice', 'corp-app', '1.0.0');
    const v2 = await publish(mirror, 'alice', 'corp-app', '1.1.0');
    const del = (user: string, version: string) => send('DELETE', `${mirror.url}/v3/packages/corp-app/release/tags/${version}`, as(user));

    expect(refusal(await del('bob', '1.1.0'), 403)).toMatch(/bob may not write as alice: deleting corp-app@1\.1\.0 belongs to alice/);
    expect(refusal(await send('DELETE', `${mirror.url}/v3/packages/corp-app/release/tags/1.1.0`), 401)).toMatch(/needs the credentials/);
    expect(tags(await get(mirror, '/v3/packages/corp-app/release?page=1'))).toEqual(['1.1.0', '1.0.0']);

    const deleted = await del('alice', '1.1.0');
    expect([deleted.status, bodyOf(deleted)]).toEqual([200, { name: 'corp-app', tag_name: '1.1.0' }]);
    expect(bodyOf(await get(mirror, '/v3/packages/corp-app/release/latest'))).toMatchObject({ tag_name: '1.0.0' });
    expect((await get(mirror, '/v3/packages/corp-app/release/tags/1.1.0')).status).toBe(404);
    expect((await get(mirror, '/v3/packages/corp-app/zipball/1.1.0')).status).toBe(404);
    expect(tags(await get(mirror, '/v3/packages/corp-app/release?page=1'))).toEqual(['1.0.0']);
    expect((await get(mirror, '/corp-app/releases')).json()).toMatchObject([{ tag_name: '1.0.0' }]);
    expect(await blobsOn(mirror)).toEqual([sha256(v1)]);
    expect(refusal(await del('alice', '1.1.0'), 404)).toMatch(/not published on this mirror/);
    expect(sha256(v2)).not.toBe(sha256(v1));

    expect((await del('root', '1.0.0')).status).toBe(200);
    expect((await get(mirror, '/v3/packages/corp-app/release/latest')).status).toBe(404);
    expect(names(await get(mirror, '/v3/packages/releases?page=1'))).not.toContain('corp-app');
    expect(await blobsOn(mirror)).toEqual([]);
    // the name stays alice's
    expect(refusal(await begin(mirror, as('bob'), publishForm('corp-app', '2.0.0')), 403)).toMatch(/belongs to alice/);
  });

  it('a blob two versions share stays until the last of them is deleted', async () => {
    const bare = Buffer.from(zipSync({ 'index.js': new TextEncoder().encode('shared') })); // no publish.yaml: the same bytes fit both
    await publish(mirror, 'alice', 'corp-a', '1.0.0', { zip: bare });
    await publish(mirror, 'alice', 'corp-b', '1.0.0', { zip: bare });
    expect(await blobsOn(mirror)).toEqual([sha256(bare)]);
    expect((await send('DELETE', `${mirror.url}/v3/packages/corp-a/release/tags/1.0.0`, as('alice'))).status).toBe(200);
    expect(await blobsOn(mirror)).toEqual([sha256(bare)]);
    expect((await get(mirror, '/v3/packages/corp-b/zipball/1.0.0')).body.equals(bare)).toBe(true);
    expect((await send('DELETE', `${mirror.url}/v3/packages/corp-b/release/tags/1.0.0`, as('alice'))).status).toBe(200);
    expect(await blobsOn(mirror)).toEqual([]);
  });

  it('GET /v3/package/user lists only the caller\'s hosted packages, never asking the upstream', async () => {
    await addUser(mirror, 'bob', 'publisher');
    await publish(mirror, 'alice', 'corp-a', '1.0.0', { form: { description: 'A' } });
    await publish(mirror, 'bob', 'corp-bob', '1.0.0');
    await publish(mirror, 'alice', 'corp-c', '1.0.0');
    const mine = await get(mirror, '/v3/package/user?page=1', as('alice'));
    expect(mine.status).toBe(200);
    expect(names(mine).sort()).toEqual(['corp-a', 'corp-c']);
    expect((bodyOf(mine) as unknown[]).find((p) => (p as { name: string }).name === 'corp-a')).toMatchObject({ description: 'A', user: { username: 'alice' } });
    expect(names(await get(mirror, '/v3/package/user?page=1', basic('bob')))).toEqual(['corp-bob']);
    expect(names(await get(mirror, '/v3/package/user?page=2', as('alice')))).toEqual([]);
    expect(fake.requests).toEqual([]);
  });

  it('POST /v3/user/token gives a new secret; the old one stops working at once', async () => {
    const answer = await send('POST', `${mirror.url}/v3/user/token`, as('alice'));
    const { safety_code: fresh } = bodyOf(answer) as { safety_code: string };
    recordSecrets(fresh);
    expect(answer.status).toBe(200);
    expect(fresh).toMatch(/^[A-Za-z0-9][\w-]{31}$/);
    expect(fresh).not.toBe(secrets.alice);
    const old = as('alice');
    expect(refusal(await begin(mirror, old, publishForm('corp-x', '1.0.0')), 401)).toMatch(/needs the credentials of a user of this mirror/); // its token names nobody now
    secrets.alice = fresh;
    await publish(mirror, 'alice', 'corp-x', '1.0.0');
    expect(fake.requests).toEqual([]);
  });
});

describe('--hosted-anonymous-read false', () => {
  it('anonymous reads of hosted content are 401 on every route; a user\'s signed headers or Basic read it', async () => {
    const closed = await open({ 'hosted-anonymous-read': 'false' });
    await addUser(closed, 'alice', 'publisher');
    await addUser(closed, 'rita', 'reader');
    const zip = await publish(closed, 'alice', 'corp-app', '1.0.0', { form: { description: 'secret plans' } });
    const paths = [
      '/v3/packages/corp-app/release/latest', // the hot path
      '/v3/packages/corp-app/release/tags/1.0.0',
      '/v3/packages/corp-app/release/latest?x=1', // not the hot path
      '/v3/packages/corp-app/release?page=1',
      '/v3/packages/corp-app/zipball/1.0.0',
      '/corp-app/releases',
      '/corp-app/releases/latest',
      '/corp-app/zipball/1.0.0',
    ];
    for (const path of paths) {
      for (const headers of [{}, upstreamAccount()]) {
        const res = await get(closed, path, headers);
        expect(res.status, path).toBe(401);
        expect(res.text, path).toMatch(/reading hosted packages needs the credentials of a user of this mirror/);
      }
      for (const headers of [as('alice'), basic('alice'), as('rita')]) expect((await get(closed, path, headers)).status, path).toBe(200);
    }
    expect((await get(closed, '/v3/packages/corp-app/zipball/1.0.0', basic('rita'))).body.equals(zip)).toBe(true);
    // the package list does not show hosted packages to anonymous callers either
    const anonymousList = await get(closed, '/v3/packages/releases?page=1');
    expect(names(anonymousList)).toEqual(['fc3']);
    expect(anonymousList.text).not.toContain('secret plans');
    expect(names(await get(closed, '/v3/packages/releases?page=1', basic('rita')))).toEqual(['corp-app', 'fc3']);
    // content of the upstream stays anonymous
    expect((await get(closed, '/v3/packages/fc3/release/latest')).status).toBe(200);
  });
});

describe('durability', () => {
  it('a 201 survives a SIGKILL right after it: the restarted mirror serves the version and its bytes', async () => {
    const data = await tempDir();
    const secret = await (await Users.open(data)).add('alice', 'publisher');
    recordSecrets(secret);
    const args = ['--data', data, '--upstream', fake.v3, '--hosted-packages', 'corp-*'];
    const first = await spawnMirror(args);
    const zip = componentZip('corp-app', '1.0.0', { payload: randomBytes(3 << 20) });
    const step1 = await send('POST', `${first.url}/v3/packages/releases`, { ...signed(secret), ...FORM_HEADERS }, publishForm('corp-app', '1.0.0'));
    expect(step1.status, step1.text).toBe(200);
    const put = await send('PUT', uploadUrl(step1), {}, zip);
    expect(put.status).toBe(201);
    const exited = new Promise((resolve) => first.child.once('exit', resolve));
    first.child.kill('SIGKILL');
    await exited;

    const second = await spawnMirror(args);
    const latest = await send('GET', `${second.url}/v3/packages/corp-app/release/latest`);
    expect([latest.status, latest.headers['x-cache']]).toEqual([200, 'HOSTED']);
    expect(bodyOf(latest)).toMatchObject({ tag_name: '1.0.0', sha256: sha256(zip) });
    const got = await send('GET', (bodyOf(latest) as { zipball_url: string }).zipball_url);
    expect([got.status, got.headers['x-cache']]).toEqual([200, 'HOSTED']);
    expect(got.body.equals(zip)).toBe(true);
    expect(upstreamSaw('corp-app')).toEqual([]);
  });
});
