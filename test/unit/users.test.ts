// Users and authentication, on real users files with an injected clock: every credential form accepted and
// refused, the `s` signature's window and replays, and a server's Users seeing what the CLI's Users wrote.
import { createHash } from 'node:crypto';
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NonceMemory, readCredential, verifySigned, type SignedCredential } from '../../src/core/hosted/credentials.js';
import { Users } from '../../src/core/hosted/users.js';
import { createLogger } from '../../src/log.js';
import { MirrorError } from '../../src/model/errors.js';
import { keepLog, manualClock, recordSecrets, removeTempDirs, tempDir } from '../helpers.js';

const START = Date.UTC(2025, 0, 1, 12);
let data: string;
let clock: ReturnType<typeof manualClock>;
let logs: string[];
let users: Users;

const open = () => Users.open(data, { now: clock.now, log: createLogger('debug', { write: (l) => void (logs.push(l), keepLog(l)) }) });

beforeEach(async () => {
  data = await tempDir();
  clock = manualClock(START);
  logs = [];
  users = await open();
});

afterEach(removeTempDirs);

async function add(name: string, role: 'reader' | 'publisher' | 'admin' = 'publisher', on = users): Promise<string> {
  const secret = await on.add(name, role);
  recordSecrets(secret);
  return secret;
}

let nonces = 0;

/** What the `s` client sends (see src/core/hosted/credentials.ts), written out again here from its code. */
function signed(secret: string, { at = clock.now(), nonce = `n${String(++nonces).padStart(14, '0')}` } = {}): IncomingHttpHeaders {
  const timestamp = `${Math.floor(at / 1000)}`;
  return {
    token: createHash('md5').update(secret).digest('hex'),
    nonce,
    timestamp,
    sign_code: createHash('sha256').update(`${secret}${nonce}${timestamp}`).digest('hex'),
  };
}

const basic = (name: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${name}:${secret}`).toString('base64')}` });

/** The reason authenticate() refused with, or what it resolved with. */
async function refusal(headers: IncomingHttpHeaders, on = users): Promise<string> {
  try {
    return `accepted: ${JSON.stringify(await on.authenticate(headers))}`;
  } catch (err) {
    expect(err).toBeInstanceOf(MirrorError);
    expect((err as MirrorError).kind).toBe('unauthorized');
    return (err as MirrorError).message;
  }
}

describe('adding and listing users', () => {
  it('gives each user a random URL-safe secret of 32 characters, kept in a 0600 file written atomically', async () => {
    const alice = await add('alice', 'admin');
    clock.advance(1000);
    const bob = await add('bob.ci-1', 'reader');
    expect(alice).toMatch(/^[A-Za-z0-9][A-Za-z0-9_-]{31}$/);
    expect(bob).not.toBe(alice);
    expect(await users.list()).toEqual([
      { name: 'alice', role: 'admin', createdAt: new Date(START).toISOString() },
      { name: 'bob.ci-1', role: 'reader', createdAt: new Date(START + 1000).toISOString() },
    ]);
    const file = join(data, 'users.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({
      version: 1,
      users: { alice: { role: 'admin', secret: alice, createdAt: new Date(START).toISOString() }, 'bob.ci-1': { role: 'reader', secret: bob, createdAt: new Date(START + 1000).toISOString() } },
    });
    expect(await readdir(data)).toEqual(['users.json']); // no temp file left behind
  });

  it('refuses an invalid name or role (bad-request) and an existing name (conflict)', async () => {
    await add('alice');
    await expect(users.add('-alice', 'reader')).rejects.toMatchObject({ kind: 'bad-request', message: expect.stringMatching(/invalid user name "-alice"/) });
    await expect(users.add('a'.repeat(65), 'reader')).rejects.toMatchObject({ kind: 'bad-request' });
    await expect(users.add('carol', 'owner' as 'admin')).rejects.toMatchObject({ kind: 'bad-request', message: expect.stringMatching(/invalid role "owner"/) });
    await expect(users.add('alice', 'reader')).rejects.toMatchObject({ kind: 'conflict', status: 409, message: expect.stringMatching(/user alice exists already/) });
  });

  it('serialises the writes of one process: concurrent adds all land', async () => {
    const secrets = await Promise.all(Array.from({ length: 20 }, (_, i) => add(`user${i}`)));
    expect(new Set(secrets).size).toBe(20);
    expect((await users.list()).map((u) => u.name)).toHaveLength(20);
    await expect((await open()).list()).resolves.toHaveLength(20);
  });
});

describe('the s client\'s signed headers', () => {
  it('name the user whose secret signed them', async () => {
    const secret = await add('alice');
    expect(await users.authenticate(signed(secret))).toEqual({ name: 'alice', role: 'publisher' });
  });

  it('are refused with a wrong signature, or when incomplete', async () => {
    const secret = await add('alice');
    const h = signed(secret);
    expect(await refusal({ ...h, sign_code: createHash('sha256').update(`${secret}x${h.nonce}${h.timestamp}`).digest('hex') })).toMatch(/bad signature/);
    expect(await refusal({ ...signed(secret), timestamp: `${Number(h.timestamp) + 1}` })).toMatch(/bad signature/);
    const { sign_code: _, ...unsigned } = signed(secret);
    expect(await refusal(unsigned)).toMatch(/incomplete signed request/);
  });

  it('are accepted within 5 minutes of the mirror\'s clock either way, refused beyond', async () => {
    const secret = await add('alice');
    expect(await refusal(signed(secret, { at: START - 5 * 60_000 }))).toMatch(/^accepted/);
    expect(await refusal(signed(secret, { at: START + 5 * 60_000 }))).toMatch(/^accepted/);
    expect(await refusal(signed(secret, { at: START - 5 * 60_000 - 1000 }))).toMatch(/more than 5 minutes away/);
    expect(await refusal(signed(secret, { at: START + 5 * 60_000 + 1000 }))).toMatch(/more than 5 minutes away/);
  });

  it('refuse a replayed nonce while a new one works, and take the nonce again once the window is over', async () => {
    const secret = await add('alice');
    const first = signed(secret, { nonce: 'aB3dE6gH9jK2mN5' });
    expect(await refusal(first)).toMatch(/^accepted/);
    expect(await refusal(first)).toMatch(/nonce already used/);
    clock.advance(4 * 60_000);
    expect(await refusal(first)).toMatch(/nonce already used/);
    expect(await refusal(signed(secret, { nonce: 'aB3dE6gH9jK2mN5', at: clock.now() }))).toMatch(/nonce already used/);
    expect(await refusal(signed(secret))).toMatch(/^accepted/);
    clock.advance(60_000 + 1000); // 5 min 1 s after the first request
    expect(await refusal(first)).toMatch(/more than 5 minutes away/);
    expect(await refusal(signed(secret, { nonce: 'aB3dE6gH9jK2mN5' }))).toMatch(/^accepted/);
  });

  it('of an account of the upstream (a token naming nobody here) pass as anonymous, as do the client\'s masked download headers', async () => {
    await add('alice');
    expect(await users.authenticate(signed('an-upstream-safety-code-0123456789'))).toBeUndefined();
    const masked = signed('an-upstream-safety-code-0123456789');
    const mask = (v: string) => `${v.slice(0, 3)}${'*'.repeat(v.length - 6)}${v.slice(-3)}`;
    expect(await users.authenticate({ ...masked, token: mask(masked.token as string), sign_code: mask(masked.sign_code as string) })).toBeUndefined();
  });
});

describe('Basic, token, Bearer and GitLab token headers', () => {
  it('name the user whose secret they carry', async () => {
    const secret = await add('ci-bot', 'reader');
    const bot = { name: 'ci-bot', role: 'reader' };
    expect(await users.authenticate(basic('ci-bot', secret))).toEqual(bot);
    for (const authorization of [`token ${secret}`, `Bearer ${secret}`, `bearer ${secret}`]) expect(await users.authenticate({ authorization })).toEqual(bot);
    for (const name of ['private-token', 'job-token', 'deploy-token']) expect(await users.authenticate({ [name]: secret })).toEqual(bot);
  });

  it('are refused when wrong or unknown, naming no user', async () => {
    const secret = await add('ci-bot');
    await add('alice');
    expect(await refusal(basic('ci-bot', `${secret}x`))).toBe('wrong user name or secret');
    expect(await refusal(basic('alice', secret))).toBe('wrong user name or secret'); // another user's secret
    expect(await refusal(basic('nobody', secret))).toBe('wrong user name or secret');
    expect(await refusal({ authorization: 'Basic bm8tY29sb24=' })).toMatch(/malformed Basic/);
    expect(await refusal({ authorization: `Bearer ${secret}x` })).toBe('unknown token');
    expect(await refusal({ authorization: 'token nope' })).toBe('unknown token');
    expect(await refusal({ 'private-token': 'nope' })).toBe('unknown token');
  });

  it('leave a request without credentials of ours anonymous', async () => {
    await add('alice');
    expect(await users.authenticate({})).toBeUndefined();
    expect(await users.authenticate({ authorization: 'Digest username="alice"' })).toBeUndefined();
  });
});

describe('changing users', () => {
  it('reset gives a new secret and the old one stops working at once, in every form', async () => {
    const old = await add('alice');
    expect(await users.authenticate({ authorization: `Bearer ${old}` })).toBeDefined();
    const fresh = await users.reset('alice');
    recordSecrets(fresh);
    expect(fresh).not.toBe(old);
    expect(await refusal({ authorization: `Bearer ${old}` })).toBe('unknown token');
    expect(await refusal(basic('alice', old))).toBe('wrong user name or secret');
    expect(await users.authenticate(signed(old))).toBeUndefined();
    expect(await users.authenticate(signed(fresh))).toEqual({ name: 'alice', role: 'publisher' });
    expect((await users.list())[0]!.createdAt).toBe(new Date(START).toISOString());
    await expect(users.reset('nobody')).rejects.toMatchObject({ kind: 'not-found' });
  });

  it('remove takes the user away; removing it again says there was none', async () => {
    const secret = await add('alice');
    await add('bob');
    expect(await users.remove('alice')).toBe(true);
    expect(await users.remove('alice')).toBe(false);
    expect((await users.list()).map((u) => u.name)).toEqual(['bob']);
    expect(await refusal(basic('alice', secret))).toBe('wrong user name or secret');
    expect(await users.authenticate(signed(secret))).toBeUndefined();
  });

  it('another Users on the same folder (the CLI) is seen by a running one without restart', async () => {
    expect(await refusal({ authorization: 'Bearer not-yet-a-user-secret' })).toBe('unknown token');
    const cli = await open();
    const secret = await add('alice', 'admin', cli);
    expect(await users.authenticate({ authorization: `Bearer ${secret}` })).toEqual({ name: 'alice', role: 'admin' });
    await (await open()).remove('alice');
    expect(await refusal({ authorization: `Bearer ${secret}` })).toBe('unknown token');
    const again = await add('alice', 'reader', await open());
    expect(await users.authenticate(basic('alice', again))).toEqual({ name: 'alice', role: 'reader' });
  });
});

describe('a damaged or loose users file', () => {
  it('is refused, naming the file, and never replaced', async () => {
    const secret = await add('alice');
    const file = join(data, 'users.json');
    const damaged = (await readFile(file, 'utf8')).replace('"role"', 'role');
    await writeFile(file, damaged);
    const refused = await open().then(() => 'opened', (err: Error) => err.message);
    expect(refused).toContain(file);
    expect(refused).toMatch(/damaged \(not valid JSON\)/);
    expect(refused).not.toContain(secret);
    await expect(users.add('bob', 'reader')).rejects.toThrow(file);
    expect(await readFile(file, 'utf8')).toBe(damaged);
    // A running server refuses credentials (500: its fault, not the client's) and says why in its log, once.
    for (let i = 0; i < 2; i++) await expect(users.authenticate({ authorization: `Bearer ${secret}` })).rejects.toMatchObject({ kind: 'internal' });
    expect(await users.authenticate({})).toBeUndefined(); // anonymous requests do not need the file
    expect(logs.filter((l) => l.includes('their file is damaged') && l.includes(file))).toHaveLength(1);
  });

  it('names what is wrong with a file that is JSON but not a users file', async () => {
    const file = join(data, 'users.json');
    const cases: Array<[unknown, RegExp]> = [
      [[], /not a JSON object/],
      [{ version: 2, users: {} }, /"version" is 2, expected 1/],
      [{ version: 1, users: { '../x': { role: 'reader', secret: 'a'.repeat(32), createdAt: '' } } }, /invalid user name/],
      [{ version: 1, users: { a: { role: 'root', secret: 'a'.repeat(32), createdAt: '' } } }, /user a has role "root"/],
      [{ version: 1, users: { a: { role: 'reader', secret: 'short', createdAt: '' } } }, /user a has no valid secret/],
      [{ version: 1, users: { a: { role: 'reader', secret: 'a'.repeat(32), createdAt: '' }, b: { role: 'admin', secret: 'a'.repeat(32), createdAt: '' } } }, /user b has the secret of another user/],
    ];
    for (const [content, problem] of cases) {
      await writeFile(file, JSON.stringify(content));
      await expect(open()).rejects.toThrow(problem);
    }
  });

  it('warns once when the file can be read by others', async () => {
    await add('alice');
    await chmod(join(data, 'users.json'), 0o644);
    const server = await open();
    await chmod(join(data, 'users.json'), 0o640); // a change, so the next request reloads the file
    await expect(server.authenticate({ authorization: 'Bearer x' })).rejects.toThrow('unknown token');
    expect(logs.filter((l) => l.includes('can be read by others'))).toHaveLength(1);
    expect(JSON.parse(logs.find((l) => l.includes('can be read by others'))!)).toMatchObject({ level: 'warn', mode: '644' });
  });
});

describe('NonceMemory', () => {
  it('keeps at most its capacity of unexpired nonces, refusing rather than growing, and frees expired ones', () => {
    const memory = new NonceMemory(3);
    expect(['a', 'b', 'c'].map((k, i) => memory.record(k, 1000 + i, 0))).toEqual(['recorded', 'recorded', 'recorded']);
    expect(memory.record('d', 2000, 500)).toBe('full');
    expect(memory.record('a', 2000, 500)).toBe('replayed');
    expect(memory.size).toBe(3);
    expect(memory.record('d', 2000, 1001)).toBe('recorded'); // a expired at 1000
    expect(memory.record('e', 2000, 1001)).toBe('full'); // b lives until 1001, inclusive
    expect(memory.record('e', 2000, 1002)).toBe('recorded');
    expect(memory.size).toBe(3);
  });

  it('when full, refuses a signed request with a reason saying so', () => {
    const secret = 'a-secret-of-thirty-two-characters';
    const memory = new NonceMemory(1);
    const check = () => verifySigned(readCredential(signed(secret)) as SignedCredential, { name: 'alice', secret }, clock.now(), memory);
    check();
    expect(check).toThrow(/too many signed requests in the last 5 minutes/);
    clock.advance(5 * 60_000 + 1000);
    expect(check).not.toThrow();
  });
});
