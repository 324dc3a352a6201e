// `srm-mirror user`, run through the same entry point as the executable, on real data folders: what it prints,
// its exit codes, that a secret is printed only by the commands that make it, and that it works beside a server.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Users } from '../../src/core/hosted/users.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { recordSecrets, removeTempDirs, runCli, startMirror, tempDir } from '../helpers.js';

let data: string;


const on = (...args: string[]) => runCli([...args, '--data', data, '--log-level', 'error']);

/** The secret `user add` or `user reset` printed. */
function secretIn(stdout: string): string {
  const secret = /^ {2}(\S{32,})$/m.exec(stdout)?.[1];
  expect(secret).toBeDefined();
  recordSecrets(secret!);
  return secret!;
}

beforeEach(async () => {
  data = await tempDir();
});

afterEach(removeTempDirs);

describe('srm-mirror user', () => {
  it('add prints the secret once with how to use it; list shows name, role and date, never a secret', async () => {
    const added = await on('user', 'add', 'alice');
    expect(added.code).toBe(0);
    const secret = secretIn(added.stdout);
    expect(added.stdout).toContain('added alice (publisher)');
    expect(added.stdout).toContain(`s registry login --token ${secret}`);
    expect(added.stdout).toContain(`curl -u alice:${secret}`);
    const admin = secretIn((await on('user', 'add', 'root-ci', '--role', 'admin')).stdout);
    const list = await on('user', 'list');
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^NAME\s+ROLE\s+CREATED\nalice\s+publisher\s+\d{4}-\d\d-\d\dT[\d:.]+Z\nroot-ci\s+admin\s+\d{4}-/);
    for (const s of [secret, admin]) expect(list.stdout + list.stderr).not.toContain(s);
    expect(await (await Users.open(data)).authenticate({ authorization: `Bearer ${admin}` })).toEqual({ name: 'root-ci', role: 'admin' });
  });

  it('says so when there are no users', async () => {
    const r = await on('user', 'list');
    expect([r.code, r.stdout]).toEqual([0, expect.stringMatching(/^no users yet .*users\.json\); add one with: srm-mirror user add NAME\n$/)]);
  });

  it('reset prints a new secret and the old one stops working; remove takes the user away', async () => {
    const old = secretIn((await on('user', 'add', 'alice', '--role', 'reader')).stdout);
    const reset = await on('user', 'reset', 'alice');
    expect(reset.code).toBe(0);
    expect(reset.stdout).toContain('new secret of alice');
    const fresh = secretIn(reset.stdout);
    expect(fresh).not.toBe(old);
    const users = await Users.open(data);
    await expect(users.authenticate({ authorization: `Bearer ${old}` })).rejects.toThrow('unknown token');
    expect(await users.authenticate({ 'private-token': fresh })).toEqual({ name: 'alice', role: 'reader' });
    const removed = await on('user', 'remove', 'alice');
    expect([removed.code, removed.stdout]).toEqual([0, 'removed alice: its secret no longer works\n']);
    await expect(users.authenticate({ 'private-token': fresh })).rejects.toThrow('unknown token');
  });

  it('exits 1 for an unknown user, or one that exists already', async () => {
    for (const action of ['remove', 'reset']) {
      const r = await on('user', action, 'nobody');
      expect([r.code, r.stdout, r.stderr]).toEqual([1, '', `srm-mirror user ${action}: no user "nobody"\n`]);
    }
    await on('user', 'add', 'alice').then((r) => secretIn(r.stdout));
    const again = await on('user', 'add', 'alice');
    expect([again.code, again.stdout, again.stderr]).toEqual([1, '', expect.stringMatching(/user alice exists already/)]);
  });

  it('exits 2 with the usage for wrong usage', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['user'], /say what to do: add, list, remove or reset/],
      [['user', 'rename', 'a'], /unknown action "rename"/],
      [['user', 'add'], /add needs a user name/],
      [['user', 'remove', 'a', 'b'], /too many arguments for remove/],
      [['user', 'list', 'a'], /too many arguments for list/],
      [['user', 'reset', 'a', '--role', 'admin'], /--role goes with add only/],
      [['user', 'add', 'a', '--role', 'owner'], /invalid role "owner"/],
      [['user', 'add', '../a'], /invalid user name "..\/a"/],
      [['user', 'add', 'a', '--colour'], /Unknown option '--colour'/],
    ];
    for (const [args, message] of cases) {
      const r = await on(...args);
      expect([r.code, r.stdout, r.stderr], args.join(' ')).toEqual([2, '', expect.stringMatching(message)]);
      if (!/Unknown option/.test(r.stderr)) expect(r.stderr).toContain('usage: srm-mirror user add NAME');
    }
    expect((await on('user', 'list')).stdout).toMatch(/^no users yet/); // nothing was written
  });

  it('refuses a damaged users file, naming it, and leaves it as it is', async () => {
    const file = join(data, 'users.json');
    await writeFile(file, '{"version": 1, "users": {', { mode: 0o600 });
    for (const args of [['user', 'list'], ['user', 'add', 'bob']]) {
      const r = await on(...args);
      expect([r.code, r.stderr]).toEqual([1, `srm-mirror user: the users file ${file} is damaged (not valid JSON): fix or move it away; srm-mirror does not replace it\n`]);
    }
    expect(await readFile(file, 'utf8')).toBe('{"version": 1, "users": {');
  });

  it('works while a server holds the data folder, which sees the change without restart', async () => {
    const fake = await FakeUpstream.start();
    const server = await startMirror(fake.v3, { data });
    try {
      const serverUsers = await Users.open(data); // as the server's routes will hold it
      const added = await on('user', 'add', 'ci-bot');
      expect(added.code).toBe(0);
      const secret = secretIn(added.stdout);
      expect(await serverUsers.authenticate({ authorization: `token ${secret}` })).toEqual({ name: 'ci-bot', role: 'publisher' });
      expect((await on('user', 'remove', 'ci-bot')).code).toBe(0);
      await expect(serverUsers.authenticate({ authorization: `token ${secret}` })).rejects.toThrow('unknown token');
    } finally {
      await server.close();
      await fake.close();
    }
  });
});
