// Generic packages hosted on the mirror, over HTTP to a real mirror (real LevelDB and files, injected clock): the
// Gitea API (its own integration test's walk, step by step), the GitLab API, one storage under both, access rules,
// limits, shared blobs, damage and durability. None of it ever reaches the upstream.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Users } from '../../src/core/hosted/users.js';
import { bigBody, rawRequest } from '../fakes/clients.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { killChildren, manualClock, recordSecrets, removeTempDirs, send, spawnMirror, startMirror, tempDir, until, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
let mirror: TestMirror;
const started: TestMirror[] = [];
const START = Date.parse('2026-11-21T10:00:00Z');
let clock: ReturnType<typeof manualClock>;
/** Credentials by user name (see addUser). */
const auth: Record<string, Record<string, string>> = {};

async function open(flags: Record<string, string> = {}): Promise<TestMirror> {
  const m = await startMirror(fake.v3, flags, { now: clock.now });
  started.push(m);
  return m;
}

/** Adds a user to a mirror and keeps its Basic credentials in `auth`; resolves with its secret. */
async function addUser(m: TestMirror, name: string, role: 'reader' | 'publisher' | 'admin'): Promise<string> {
  const secret = await m.mirror.users.add(name, role);
  recordSecrets(secret, Buffer.from(`${name}:${secret}`).toString('base64'));
  auth[name] = { authorization: `Basic ${Buffer.from(`${name}:${secret}`).toString('base64')}` };
  return secret;
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const blobsOn = async (m: TestMirror) => (await readdir(join(m.dataDir, 'hosted', 'sha256'), { recursive: true })).filter((f) => /[0-9a-f]{64}$/.test(f));
const tempsOn = (m: TestMirror) => readdir(join(m.dataDir, 'hosted', 'tmp'));

beforeEach(async () => {
  clock = manualClock(START);
  fake = await FakeUpstream.start();
  mirror = await open();
  await addUser(mirror, 'alice', 'publisher');
});

afterEach(async () => {
  killChildren();
  for (const m of started.splice(0)) await m.close();
  expect(fake.requests).toEqual([]); // hosted content never touches the upstream
  await fake.close();
  await removeTempDirs();
});

describe('Gitea API', () => {
  it("passes Gitea's own integration walk, step by step", async () => {
    const base = `${mirror.url}/api/packages/alice/generic/test-package/1.0.0`;
    const content = randomBytes(5000);
    const second = Buffer.from('second file');
    const put = (url: string, body: Buffer = content) => send('PUT', url, auth.alice, body);

    const uploaded = await put(`${base}/file.bin`);
    expect([uploaded.status, uploaded.text]).toEqual([201, '']);
    const again = await put(`${base}/file.bin`);
    expect([again.status, again.text]).toEqual([409, 'package file already exists']);
    expect((await put(`${base}/FILE.bin`)).status).toBe(409); // names compare case-insensitively
    expect((await put(`${base}/second.txt`, second)).status).toBe(201);

    const invalidName = await put(`${mirror.url}/api/packages/alice/generic/invalid%20package%20name/1.0.0/file.bin`);
    expect([invalidName.status, invalidName.text, invalidName.headers['content-type']]).toEqual([400, 'invalid package name', 'text/plain; charset=utf-8']);
    const invalidVersion = await put(`${mirror.url}/api/packages/alice/generic/test-package/%20test%20/file.bin`);
    expect([invalidVersion.status, invalidVersion.text]).toEqual([400, 'invalid package version']);
    const invalidFile = await put(`${base}/inva%7Cid.name`);
    expect([invalidFile.status, invalidFile.text]).toEqual([400, 'invalid filename']);

    const got = await send('GET', `${base}/file.bin`);
    expect(got.status).toBe(200);
    expect(got.body.equals(content)).toBe(true);
    expect(got.headers['content-type']).toBe('application/octet-stream');
    expect(got.headers['content-disposition']).toBe('attachment; filename="file.bin"');
    expect((await send('GET', `${base}/second.txt`)).body.equals(second)).toBe(true);
    expect((await send('GET', `${base}/missing.bin`)).status).toBe(404);

    const anonymous = await send('DELETE', `${base}/file.bin`);
    expect([anonymous.status, anonymous.headers['www-authenticate']]).toEqual([401, 'Basic realm="srm-mirror"']);
    expect((await send('DELETE', `${base}/file.bin`, auth.alice)).status).toBe(204);
    expect((await send('GET', `${base}/file.bin`)).status).toBe(404);
    expect((await send('DELETE', `${base}/file.bin`, auth.alice)).status).toBe(404);
    expect((await send('DELETE', `${base}/second.txt`, auth.alice)).status).toBe(204);
    const version = `${mirror.url}/api/v1/packages/alice/generic/test-package/1.0.0`;
    expect((await send('GET', version)).status).toBe(404); // the last file took the version along

    expect((await put(`${base}/file.bin`)).status).toBe(201);
    expect((await send('DELETE', base, auth.alice)).status).toBe(204);
    expect((await send('GET', `${base}/file.bin`)).status).toBe(404);
    expect((await send('DELETE', base, auth.alice)).status).toBe(404);
    expect(await blobsOn(mirror)).toEqual([]);
  });

  it("validates names, files and versions exactly as Gitea does (PROTOCOL.md §3)", async () => {
    const at = (name: string, version: string, file: string) =>
      send('PUT', `${mirror.url}/api/packages/alice/generic/${encodeURIComponent(name)}/${encodeURIComponent(version)}/${encodeURIComponent(file)}`, auth.alice, 'x');
    const cases: Array<[string, string, string, number]> = [
      ['a', '1', 'f', 201],
      ['A.b+c_d-9', '1.0.3-te st', 'a b(1)[x]{y}~!@#$%^&=;:.txt', 201],
      ['_', '1', 'f', 400],
      ['a/b', '1', 'f', 400],
      ['n', '1', ' lead', 400],
      ['n', '1', 'trail ', 400],
      ['n', '1', 'a/b', 400],
      ['n', '1', 'a"b', 400],
      ['n', ' 1', 'f', 400],
      ['n', '1\t', 'f', 400],
    ];
    for (const [name, version, file, status] of cases) expect([name, version, file, (await at(name, version, file)).status]).toEqual([name, version, file, status]);
    // an empty segment is no name either (it is not collapsed into another path)
    expect((await send('PUT', `${mirror.url}/api/packages/alice/generic/n//f`, auth.alice, 'x')).status).toBe(400);
    // "." and "..", sent as they are (URL parsers would resolve them away)
    const raw = (path: string) =>
      rawRequest(mirror.url, `PUT /api/packages/alice/generic/${path} HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth.alice!.authorization}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`);
    for (const [path, message] of [['../1/f', 'invalid package name'], ['n/1/.', 'invalid filename'], ['n/1/..', 'invalid filename']] as const) {
      const res = await raw(path);
      expect([path, res.status, res.text.endsWith(message)]).toEqual([path, 400, true]);
    }
  });

  it('serves with Last-Modified, ranges (206/416) and conditional requests (304); HEAD and 304 are no downloads', async () => {
    const url = `${mirror.url}/api/packages/alice/generic/tool/2.0/data.bin`;
    const bytes = randomBytes(1000);
    expect((await send('PUT', url, auth.alice, bytes)).status).toBe(201);
    clock.advance(60_000);
    const whole = await send('GET', url);
    expect(whole.headers['last-modified']).toBe(new Date(START).toUTCString());
    expect(whole.headers['etag']).toBe(`"${sha256(bytes)}"`);
    expect(whole.headers['cache-control']).toBe('no-cache'); // the bytes under a URL can change: always revalidate
    const part = await send('GET', url, { range: 'bytes=10-19' });
    expect([part.status, part.headers['content-range']]).toEqual([206, 'bytes 10-19/1000']);
    expect(part.body.equals(bytes.subarray(10, 20))).toBe(true);
    const beyond = await send('GET', url, { range: 'bytes=5000-' });
    expect([beyond.status, beyond.headers['content-range']]).toEqual([416, 'bytes */1000']);
    expect((await send('GET', url, { 'if-none-match': whole.headers['etag'] as string })).status).toBe(304);
    expect((await send('GET', url, { 'if-modified-since': new Date(START + 1000).toUTCString() })).status).toBe(304);
    expect((await send('GET', url, { 'if-modified-since': new Date(START - 5000).toUTCString() })).status).toBe(200);
    const head = await send('HEAD', url);
    expect([head.status, head.headers['content-length'], head.body.length]).toEqual([200, '1000', 0]);
    expect((await send('GET', url, auth.alice)).headers['cache-control']).toBe('private, no-cache');

    // Counted: the 200s (three) and the range from byte 0; not the HEAD, the 304s, the 416 or a range further in.
    await send('GET', url, { range: 'bytes=0-9' });
    const pkg = (await send('GET', `${mirror.url}/api/v1/packages/alice/generic/tool/2.0`)).json();
    expect(pkg).toMatchObject({ type: 'generic', name: 'tool', version: '2.0', owner: { login: 'alice' }, created_at: new Date(START).toISOString(), download_count: 4 });
    expect((pkg as { files: unknown[] }).files).toEqual([{ id: expect.any(Number), size: 1000, name: 'data.bin', sha256: sha256(bytes) }]);
    const files = (await send('GET', `${mirror.url}/api/v1/packages/alice/generic/tool/2.0/files`)).json();
    expect(files).toEqual((pkg as { files: unknown[] }).files);
  });

  it('download counts are per version and start again with a recreated version', async () => {
    const v1 = `${mirror.url}/api/packages/alice/generic/tool/1/a`;
    const v2 = `${mirror.url}/api/packages/alice/generic/tool/2/a`;
    const count = async (v: string) => ((await send('GET', `${mirror.url}/api/v1/packages/alice/generic/tool/${v}`)).json() as { download_count: number }).download_count;
    await send('PUT', v1, auth.alice, 'one');
    await send('PUT', v2, auth.alice, 'two');
    await send('GET', v1);
    await send('GET', v1);
    await send('GET', v2);
    expect([await count('1'), await count('2')]).toEqual([2, 1]);
    await send('DELETE', v1, auth.alice);
    await send('PUT', v1, auth.alice, 'one');
    expect(await count('1')).toBe(0);
  });
});

describe('who may read and write', () => {
  it('a group member writes to the group, a non-member is refused, an admin writes anywhere, a reader only reads', async () => {
    const dir = await tempDir();
    const config = join(dir, 'config.json');
    await writeFile(config, JSON.stringify({ hosted: { groups: { team: ['alice'] } } }));
    const m = await open({ config });
    await addUser(m, 'alice', 'publisher');
    await addUser(m, 'bob', 'publisher');
    await addUser(m, 'root', 'admin');
    await addUser(m, 'rita', 'reader');
    const gitea = (owner: string, who: string) => send('PUT', `${m.url}/api/packages/${owner}/generic/p/1/${who}.txt`, auth[who], who);
    const gitlab = (owner: string, who: string) => send('PUT', `${m.url}/api/v4/projects/${owner}/packages/generic/p/1/${who}-gl.txt`, auth[who], who);

    expect((await gitea('team', 'alice')).status).toBe(201);
    expect((await gitlab('team', 'alice')).status).toBe(201);
    expect((await gitea('alice', 'alice')).status).toBe(201);
    // Gitea answers a signed-in user without the permission 401 with a challenge, as it does anonymous callers
    const bob = await gitea('team', 'bob');
    expect([bob.status, bob.headers['www-authenticate']]).toEqual([401, 'Basic realm="srm-mirror"']);
    expect(bob.text).toMatch(/bob may not write as team/);
    // GitLab answers it 403
    const bobGl = await gitlab('team', 'bob');
    expect([bobGl.status, (bobGl.json() as { message: string }).message]).toEqual([403, expect.stringMatching(/^403 Forbidden - bob may not write as team/)]);
    expect((await gitea('alice', 'bob')).status).toBe(401);
    expect((await gitea('team', 'root')).status).toBe(201);
    expect((await gitea('nobody-yet', 'root')).status).toBe(201);
    expect((await gitlab('bob', 'root')).status).toBe(201);
    expect((await gitea('rita', 'rita')).status).toBe(401);
    expect((await gitlab('rita', 'rita')).status).toBe(403);
    // deletes follow the same rules
    expect((await send('DELETE', `${m.url}/api/packages/team/generic/p/1/alice.txt`, auth.bob)).status).toBe(401);
    expect((await send('DELETE', `${m.url}/api/packages/team/generic/p/1/alice.txt`, auth.rita)).status).toBe(401);
    expect((await send('GET', `${m.url}/api/packages/team/generic/p/1/alice.txt`, auth.rita)).text).toBe('alice');
    expect((await send('DELETE', `${m.url}/api/packages/team/generic/p/1/alice.txt`, auth.root)).status).toBe(204);
    expect((await send('GET', `${m.url}/api/packages/team/generic/p/1/alice.txt`)).status).toBe(404);
  });

  it('with hosted.anonymousRead false, reads need a user (any role); wrong credentials are refused everywhere', async () => {
    const m = await open({ 'hosted-anonymous-read': 'false' });
    await addUser(m, 'alice', 'publisher');
    await addUser(m, 'rita', 'reader');
    const gitea = `${m.url}/api/packages/alice/generic/p/1/f.txt`;
    const gitlab = `${m.url}/api/v4/projects/alice/packages/generic/p/1/f.txt`;
    expect((await send('PUT', gitea, auth.alice, 'secret stuff')).status).toBe(201);

    const anonymous = await send('GET', gitea);
    expect([anonymous.status, anonymous.headers['www-authenticate']]).toEqual([401, 'Basic realm="srm-mirror"']);
    expect([(await send('GET', gitlab)).status, (await send('GET', gitlab)).json()]).toEqual([401, { message: '401 Unauthorized' }]);
    expect((await send('GET', `${m.url}/api/v1/packages/alice/generic/p/1`)).status).toBe(401);
    const reader = await send('GET', gitea, auth.rita);
    expect([reader.status, reader.text, reader.headers['cache-control']]).toEqual([200, 'secret stuff', 'private, no-cache']);
    expect((await send('GET', gitlab, { 'private-token': /Basic (.*)/.exec(auth.rita!.authorization!)![1]! })).status).toBe(401); // not a token

    const wrong = { authorization: `Basic ${Buffer.from('rita:wrong-secret').toString('base64')}` };
    expect((await send('GET', `${mirror.url}/api/packages/alice/generic/p/1/f.txt`, wrong)).status).toBe(401); // anonymous reads or not
    expect((await send('GET', gitlab, wrong)).json()).toEqual({ message: '401 Unauthorized' });
  });
});

describe('GitLab API', () => {
  const gl = (path: string) => `${mirror.url}/api/v4/projects/alice/packages/generic/${path}`;

  it('PUT answers 201 {"message":"201 Created"}; PRIVATE-TOKEN, JOB-TOKEN, Deploy-Token and Basic all authenticate', async () => {
    const secret = await mirror.mirror.users.add('ci', 'publisher');
    recordSecrets(secret);
    const ways: Array<Record<string, string>> = [{ 'private-token': secret }, { 'job-token': secret }, { 'deploy-token': secret }, auth.alice!];
    for (const [i, headers] of ways.entries()) {
      const owner = i < 3 ? 'ci' : 'alice';
      const res = await send('PUT', `${mirror.url}/api/v4/projects/${owner}/packages/generic/pkg/1.0.0/file${i}.tgz`, headers, `bytes ${i}`);
      expect([res.status, res.headers['content-type'], res.json()]).toEqual([201, 'application/json; charset=utf-8', { message: '201 Created' }]);
      expect((await send('GET', `${mirror.url}/api/v4/projects/${owner}/packages/generic/pkg/1.0.0/file${i}.tgz`, headers)).text).toBe(`bytes ${i}`);
    }
    const anonymous = await send('PUT', gl('pkg/1.0.0/x'), {}, 'x');
    expect([anonymous.status, anonymous.json()]).toEqual([401, { message: '401 Unauthorized' }]);
    const wrongToken = await send('PUT', gl('pkg/1.0.0/x'), { 'private-token': 'not-a-token' }, 'x');
    expect([wrongToken.status, wrongToken.json()]).toEqual([401, { message: '401 Unauthorized' }]);
  });

  it('duplicates are kept and the newest is served, with X-Checksum-SHA256', async () => {
    expect((await send('PUT', gl('pkg/1/a.bin'), auth.alice, 'old')).status).toBe(201);
    clock.advance(1000);
    expect((await send('PUT', gl('pkg/1/a.bin'), auth.alice, 'new')).status).toBe(201);
    const got = await send('GET', gl('pkg/1/a.bin'));
    expect([got.status, got.text, got.headers['x-checksum-sha256'], got.headers['content-disposition']]).toEqual([200, 'new', sha256('new'), 'attachment; filename="a.bin"']);
    expect(got.headers['last-modified']).toBe(new Date(START + 1000).toUTCString());
    const head = await send('HEAD', gl('pkg/1/a.bin'));
    expect([head.status, head.headers['x-checksum-sha256']]).toEqual([200, sha256('new')]);
    const missing = await send('GET', gl('pkg/1/b.bin'));
    expect([missing.status, missing.json()]).toEqual([404, { message: '404 Not found' }]);
    expect((await send('GET', gl('pkg/2/a.bin'))).status).toBe(404);
  });

  it('with hosted.rejectDuplicates, a second file of a name is refused as GitLab refuses it', async () => {
    const m = await open({ 'hosted-reject-duplicates': 'true' });
    await addUser(m, 'alice', 'publisher');
    const url = `${m.url}/api/v4/projects/alice/packages/generic/pkg/1/a.bin`;
    expect((await send('PUT', url, auth.alice, 'first')).status).toBe(201);
    const again = await send('PUT', url, auth.alice, 'second');
    expect([again.status, again.json()]).toEqual([400, { message: '400 Bad request - Duplicate package is not allowed' }]);
    expect((await send('GET', url)).text).toBe('first');
    expect(await tempsOn(m)).toEqual([]);
    expect(await blobsOn(m)).toHaveLength(1);
  });

  it('?select=package_file answers the file record (200), as GitLab does', async () => {
    const res = await send('PUT', `${gl('pkg/1.2.3/app.tar.gz')}?select=package_file`, auth.alice, 'archive bytes');
    expect(res.status).toBe(200);
    const record = res.json() as Record<string, unknown>;
    expect(record).toEqual({
      id: expect.any(Number),
      package_id: expect.any(Number),
      created_at: new Date(START).toISOString(),
      file_name: 'app.tar.gz',
      size: 13,
      file_md5: null,
      file_sha1: null,
      file_sha256: sha256('archive bytes'),
    });
    expect(record.id).not.toBe(record.package_id);
    const pkg = (await send('GET', `${mirror.url}/api/v1/packages/alice/generic/pkg/1.2.3`)).json() as { id: number; files: Array<{ id: number }> };
    expect([pkg.id, pkg.files[0]!.id]).toEqual([record.package_id, record.id]);
    expect((await send('PUT', `${gl('pkg/1.2.3/b')}?select=other`, auth.alice, 'x')).json()).toEqual({ error: 'select does not have a valid value' });
    expect((await send('PUT', `${gl('pkg/1.2.3/b')}?status=hidden`, auth.alice, 'x')).status).toBe(201);
  });

  it("answers 400 for path traversal and for GitLab's own name, version and file rules", async () => {
    const put = (path: string) => send('PUT', gl(path), auth.alice, 'x');
    const cases: Array<[string, number, unknown]> = [
      ['my-package%2f%2e%2e%2f/1.0.0/f', 400, { error: 'package_name should be a valid file path' }],
      ['pkg/1.0.0/%2e%2e%2f.ssh%2fauthorized_keys', 400, { error: 'file_name should be a valid file path' }],
      ['pkg/1.0.0/..%2F.ssh%2Fauthorized_keys', 400, { error: 'file_name should be a valid file path' }],
      ['pkg/..1.2.3/f', 400, { error: 'package_version is invalid' }],
      ['pkg/1.2.3-4%2F..%2F..%2F/f', 400, { error: 'package_version is invalid' }],
      ['pkg/%2e%2e%2f1.2.3/f', 400, { error: 'package_version is invalid' }],
      ['my%20pkg/1/f', 400, { error: 'package_name is invalid' }],
      ['pkg/1/~f', 400, { error: 'file_name is invalid' }],
      ['pkg/1/f@', 400, { error: 'file_name is invalid' }],
      ['pkg/1/my%20file', 400, { error: 'file_name is invalid' }],
      ['pkg/v1.2.4-build/my~file@1.1.tar.gz', 201, { message: '201 Created' }],
      ['pkg/d50d836eb3de6177ce6c7a5482f27f9c2c84b672/my+file.tar.gz', 201, { message: '201 Created' }],
    ];
    for (const [path, status, body] of cases) {
      const res = await put(path);
      expect([path, res.status, res.json()]).toEqual([path, status, body]);
    }
    // GETs are checked the same way
    expect((await send('GET', gl('my-package%2f%2e%2e%2f/1.0.0/f'))).status).toBe(400);
    expect((await send('GET', gl('pkg/1.0.0/%2e%2e%2f.ssh%2fauthorized_keys'))).status).toBe(400);
    // "my-package/../" sent as it is (a client that does not normalize the path) is traversal, not another route
    for (const method of ['GET', 'PUT']) {
      const raw = await rawRequest(
        mirror.url,
        `${method} /api/v4/projects/alice/packages/generic/my-package/../1.0.0/f HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth.alice!.authorization}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`,
      );
      expect([method, raw.status]).toEqual([method, 400]);
    }
    expect(await blobsOn(mirror)).toHaveLength(1); // the two that were valid, with the same bytes
  });

  it('a namespaced project path names no owner here: 404, as for a project GitLab does not have', async () => {
    const res = await send('PUT', `${mirror.url}/api/v4/projects/alice%2Ftools/packages/generic/p/1/f`, auth.alice, 'x');
    expect([res.status, res.json()]).toEqual([404, { message: '404 Project Not Found' }]);
    expect((await send('GET', `${mirror.url}/api/v4/projects/alice%2Ftools/packages/generic/p/1/f`)).status).toBe(404);
  });
});

it('one storage: what GitLab put Gitea serves, and the other way round', async () => {
  const fromGitlab = randomBytes(3000);
  const fromGitea = randomBytes(2000);
  expect((await send('PUT', `${mirror.url}/api/v4/projects/alice/packages/generic/shared/1.0/gl.bin`, auth.alice, fromGitlab)).status).toBe(201);
  expect((await send('PUT', `${mirror.url}/api/packages/alice/generic/shared/1.0/gt.bin`, auth.alice, fromGitea)).status).toBe(201);
  expect((await send('GET', `${mirror.url}/api/packages/alice/generic/shared/1.0/gl.bin`)).body.equals(fromGitlab)).toBe(true);
  const viaGitlab = await send('GET', `${mirror.url}/api/v4/projects/alice/packages/generic/shared/1.0/gt.bin`);
  expect([viaGitlab.body.equals(fromGitea), viaGitlab.headers['x-checksum-sha256']]).toEqual([true, sha256(fromGitea)]);
  // Gitea refuses a name GitLab put there; a Gitea delete is seen by GitLab
  expect((await send('PUT', `${mirror.url}/api/packages/alice/generic/shared/1.0/GL.bin`, auth.alice, 'x')).status).toBe(409);
  expect((await send('DELETE', `${mirror.url}/api/packages/alice/generic/shared/1.0/gl.bin`, auth.alice)).status).toBe(204);
  expect((await send('GET', `${mirror.url}/api/v4/projects/alice/packages/generic/shared/1.0/gl.bin`)).status).toBe(404);
  const status = (await send('GET', `${mirror.url}/-/status`)).json() as { hosted: { blobs: number; bytes: number; generic: unknown } };
  expect(status.hosted).toMatchObject({ blobs: 1, bytes: 2000, components: { packages: 0, versions: 0, bytes: 0 }, generic: { packages: 1, versions: 1, files: 1, bytes: 2000 } });
});

describe('blobs on disk', () => {
  it('the same bytes twice are one blob; deleting one file keeps the other\'s bytes', async () => {
    const bytes = randomBytes(4000);
    const a = `${mirror.url}/api/packages/alice/generic/one/1/a.bin`;
    const b = `${mirror.url}/api/v4/projects/alice/packages/generic/two/1/b.bin`;
    expect((await send('PUT', a, auth.alice, bytes)).status).toBe(201);
    expect((await send('PUT', b, auth.alice, bytes)).status).toBe(201);
    expect(await blobsOn(mirror)).toEqual([join(sha256(bytes).slice(0, 2), sha256(bytes))]);
    expect((await send('DELETE', a, auth.alice)).status).toBe(204);
    expect((await send('GET', b)).body.equals(bytes)).toBe(true);
    expect(await blobsOn(mirror)).toHaveLength(1);
    expect((await send('DELETE', `${mirror.url}/api/packages/alice/generic/two/1`, auth.alice)).status).toBe(204);
    expect(await blobsOn(mirror)).toEqual([]);
  });

  it('20 parallel uploads of different files into a new version: all 201, all listed, all downloadable', async () => {
    const files = Array.from({ length: 20 }, (_, i) => [`f${i}.bin`, randomBytes(10_000 + i)] as const);
    const base = `${mirror.url}/api/packages/alice/generic/burst/1.0.0`;
    const answers = await Promise.all(files.map(([name, bytes], i) => (i % 2 ? send('PUT', `${base}/${name}`, auth.alice, bytes) : send('PUT', `${mirror.url}/api/v4/projects/alice/packages/generic/burst/1.0.0/${name}`, auth.alice, bytes))));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(201));
    const listed = (await send('GET', `${mirror.url}/api/v1/packages/alice/generic/burst/1.0.0/files`)).json() as Array<{ name: string }>;
    expect(listed.map((f) => f.name).sort()).toEqual(files.map(([name]) => name).sort());
    for (const [name, bytes] of files) expect((await send('GET', `${base}/${name}`)).body.equals(bytes)).toBe(true);
  });
});

describe('limits', () => {
  it('past hosted.maxFileSize: 413 (at once when declared, or when a chunked body grows past it), nothing left behind', async () => {
    const m = await open({ 'hosted-max-file-size': '100KB' });
    await addUser(m, 'alice', 'publisher');
    const url = `${m.url}/api/packages/alice/generic/big/1/f.bin`;
    const declared = await send('PUT', url, auth.alice, Buffer.alloc(200_000));
    expect([declared.status, declared.headers['connection']]).toEqual([413, 'close']);
    expect(declared.text).toMatch(/larger than 100000 bytes \(hosted.maxFileSize\)/);
    const chunked = await send('PUT', `${m.url}/api/v4/projects/alice/packages/generic/big/1/f.bin`, auth.alice, bigBody(1_000_000));
    expect([chunked.status, chunked.headers['connection'], chunked.json()]).toEqual([413, 'close', { message: expect.stringMatching(/^413 Payload Too Large - .*hosted.maxFileSize/) }]);
    expect((await send('GET', url)).status).toBe(404);
    expect(await tempsOn(m)).toEqual([]);
    expect(await blobsOn(m)).toEqual([]);
    expect((await send('PUT', url, auth.alice, Buffer.alloc(100_000))).status).toBe(201); // the limit itself is allowed
  });

  it('past hosted.maxSize: 403, nothing left behind', async () => {
    const m = await open({ 'hosted-max-size': '300KB' });
    await addUser(m, 'alice', 'publisher');
    const base = `${m.url}/api/packages/alice/generic/full/1`;
    expect((await send('PUT', `${base}/a`, auth.alice, randomBytes(200_000))).status).toBe(201);
    const refused = await send('PUT', `${base}/b`, auth.alice, randomBytes(200_000));
    expect([refused.status, refused.headers['connection']]).toEqual([403, 'close']); // refused unread
    expect(refused.text).toMatch(/hosted storage is full.*hosted.maxSize/);
    const chunked = await send('PUT', `${base}/c`, auth.alice, Readable.from([randomBytes(80_000), randomBytes(80_000)]));
    expect(chunked.status).toBe(403);
    expect((await send('GET', `${base}/b`)).status).toBe(404);
    expect(((await send('GET', `${m.url}/api/v1/packages/alice/generic/full/1/files`)).json() as unknown[]).length).toBe(1);
    expect(await tempsOn(m)).toEqual([]);
    expect(await blobsOn(m)).toHaveLength(1);
  });
});

it('a refused upload is answered before its body is read, on a connection then closed', async () => {
  const big = () => bigBody(5_000_000);
  const gitea = `${mirror.url}/api/packages/alice/generic/p/1/f.bin`;
  for (const [url, headers] of [
    [gitea, {}],
    [`${mirror.url}/api/v4/projects/alice/packages/generic/p/1/f.bin`, {}],
    [`${mirror.url}/api/packages/alice/generic/p%7C/1/f.bin`, auth.alice!],
  ] as const) {
    const res = await send('PUT', url, headers, big());
    expect([res.status >= 400, res.headers['connection']]).toEqual([true, 'close']);
  }
  expect((await send('PUT', gitea, auth.alice, 'first')).status).toBe(201);
  const conflict = await send('PUT', gitea, auth.alice, big());
  expect([conflict.status, conflict.headers['connection']]).toEqual([409, 'close']);
  expect(await tempsOn(mirror)).toEqual([]);
});

it('a client gone mid-upload leaves nothing behind and is no error of the mirror', async () => {
  const { hostname, port } = new URL(mirror.url);
  const socket = connect(Number(port), hostname);
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  socket.write(`PUT /api/packages/alice/generic/p/1/f.bin HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth.alice!.authorization}\r\nContent-Length: 100000\r\n\r\n`);
  socket.write(Buffer.alloc(10_000));
  await until(async () => (await tempsOn(mirror)).length === 1);
  socket.destroy();
  await until(async () => (await tempsOn(mirror)).length === 0);
  await until(() => mirror.logs.some((l) => l.includes('"path":"/api/packages/alice/generic/p/1/f.bin"')));
  expect(mirror.logs.filter((l) => /"level":"(error|warn)"/.test(l))).toEqual([]);
  expect((await send('GET', `${mirror.url}/api/packages/alice/generic/p/1/f.bin`)).status).toBe(404);
});

it('a corrupted blob answers 500 with the reason, and is still there afterwards', async () => {
  const bytes = randomBytes(5000);
  const url = `${mirror.url}/api/packages/alice/generic/tool/1/f.bin`;
  expect((await send('PUT', url, auth.alice, bytes)).status).toBe(201);
  const digest = sha256(bytes);
  const file = join(mirror.dataDir, 'hosted', 'sha256', digest.slice(0, 2), digest);
  const corrupt = Buffer.from(bytes);
  corrupt[100] = corrupt[100]! ^ 0xff;
  await writeFile(file, corrupt);
  const hourAgo = new Date(Date.now() - 3600_000);
  await utimes(file, hourAgo, hourAgo); // so that no verified version of the file can vouch for it
  const gitea = await send('GET', url);
  expect([gitea.status, gitea.text]).toEqual([500, expect.stringMatching(/file f.bin of alice\/tool 1 is damaged .*no longer match their sha256/)]);
  const gitlab = await send('GET', `${mirror.url}/api/v4/projects/alice/packages/generic/tool/1/f.bin`);
  expect([gitlab.status, (gitlab.json() as { message: string }).message]).toEqual([500, expect.stringMatching(/^500 Internal Server Error - file f.bin .* is damaged/)]);
  expect(existsSync(file)).toBe(true);
  expect((await readFile(file)).equals(corrupt)).toBe(true);
  expect(mirror.logs.some((l) => l.includes('hosted content is damaged'))).toBe(true);
});

it('a 201 survives a SIGKILL right after it: the restarted mirror serves the whole file', async () => {
  const data = await tempDir();
  const users = await Users.open(data);
  const secret = await users.add('alice', 'publisher');
  recordSecrets(secret);
  const bytes = randomBytes(3 << 20);
  const first = await spawnMirror(['--data', data, '--upstream', fake.v3]);
  const put = await send('PUT', `${first.url}/api/packages/alice/generic/tool/1/big.bin`, { 'private-token': secret }, bytes);
  expect(put.status).toBe(201);
  const exited = new Promise((resolve) => first.child.once('exit', resolve));
  first.child.kill('SIGKILL');
  await exited;
  const second = await spawnMirror(['--data', data, '--upstream', fake.v3]);
  const got = await send('GET', `${second.url}/api/packages/alice/generic/tool/1/big.bin`);
  expect(got.status).toBe(200);
  expect(got.body.equals(bytes)).toBe(true);
});
