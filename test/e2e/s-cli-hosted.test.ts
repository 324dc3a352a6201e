// An air-gapped site publishing its own component with the real `s` CLI: the mirror is offline (its upstream is
// gone), so every publish is hosted on the mirror itself. The CLI drops the port from POST and DELETE URLs
// (PROTOCOL.md), so the mirror listens on port 80 of its own loopback address.
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../fakes/upstream.js';
import { recordSecrets, removeTempDirs, startMirror, type TestMirror } from '../helpers.js';
import { clientHome, project, publishableFolder, runS } from './s-cli.js';

const NAME = 'corp-e2e-tool';
const REGISTRY = 'http://127.0.0.3/v3';
let fake: FakeUpstream;
let mirror: TestMirror | undefined;
let noMirror = '';
let secret = '';


beforeAll(async () => {
  fake = await FakeUpstream.start();
  try {
    mirror = await startMirror(fake.v3, { host: '127.0.0.3', port: '80', offline: true });
  } catch (err) {
    // Binding port 80 needs root (CI runs as root); the test below says so, and why, when it cannot run.
    noMirror = err instanceof Error ? err.message : String(err);
  }
  await fake.close(); // the upstream is gone
  if (mirror) {
    secret = await mirror.mirror.users.add('alice', 'publisher');
    recordSecrets(secret, createHash('md5').update(secret).digest('hex'));
  }
});

afterAll(async () => {
  await mirror?.close();
  await removeTempDirs();
});

describe('an air-gapped site publishes its own component with the real s CLI (mirror offline, on port 80)', () => {
  it('login → publish → detail → a second home resolves and runs it → list --private → same version refused → delete', async (ctx) => {
    if (!mirror) ctx.skip(`cannot listen on 127.0.0.3:80 here (needs root): ${noMirror}`);
    const home = await clientHome(REGISTRY);
    const pkg = await publishableFolder(NAME, 'HOSTED');

    // Missing and wrong secrets are refused; the client prints the mirror's reason.
    const anonymous = await runS(home, pkg, ['registry', 'publish']);
    expect(anonymous.code).toBe(1);
    expect(anonymous.stdout + anonymous.stderr).toContain('needs the credentials of a user of this mirror');
    expect((await runS(home, pkg, ['registry', 'login', '--token', 'not-a-secret-of-this-mirror'])).code).toBe(0);
    const wrong = await runS(home, pkg, ['registry', 'publish']);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout + wrong.stderr).toContain('needs the credentials of a user of this mirror');

    expect((await runS(home, pkg, ['registry', 'login', '--token', secret])).code).toBe(0);
    const published = await runS(home, pkg, ['registry', 'publish']);
    expect(published.stdout).toContain(`Publish package ${NAME}@0.0.1 success.`);
    expect(published.code).toBe(0);

    const detail = await runS(home, pkg, ['registry', 'detail', '--package-name', NAME]);
    expect(detail.stdout).toContain('tag_name:    0.0.1');
    expect(detail.stdout).toContain(`zipball_url: http://127.0.0.3/v3/packages/${NAME}/zipball/0.0.1`);

    // A second machine with an empty home resolves `latest` and runs the component.
    const deploy = await runS(await clientHome(REGISTRY), await project([NAME]), ['deploy', '--silent', '-o', 'json']);
    expect(deploy.stdout).toContain('HOSTED@0.0.1 deploy resource=r0');

    const mine = await runS(home, pkg, ['registry', 'list', '--private']);
    expect(mine.stdout).toContain(NAME);

    const again = await runS(home, pkg, ['registry', 'publish']);
    expect(again.code).toBe(1);
    expect(again.stdout + again.stderr).toContain(`${NAME}@0.0.1 is already published: versions are immutable`);

    const deleted = await runS(home, pkg, ['registry', 'delete', '--name', NAME, '--version-id', '0.0.1']);
    expect(deleted.stdout).toContain(`Delete package ${NAME}@0.0.1 success.`);
    const after = await runS(home, pkg, ['registry', 'detail', '--package-name', NAME]);
    expect(after.stdout).not.toContain('0.0.1');
    const gone = await runS(await clientHome(REGISTRY), await project([`${NAME}@0.0.1`]), ['deploy', '--silent', '-o', 'json']);
    expect(gone.stdout).not.toContain('HOSTED@0.0.1 deploy');
    expect(gone.code).not.toBe(0);

    expect(fake.requests).toEqual([]); // the upstream was never asked
  });

  it('with hosted.anonymousRead false, a logged-in client resolves and runs it (through a signed download link); an anonymous one is refused', async (ctx) => {
    if (!mirror) ctx.skip(`cannot listen on 127.0.0.4:80 here (needs root): ${noMirror}`);
    const closed = await startMirror('http://127.0.0.1:9/v3', { host: '127.0.0.4', port: '80', offline: true, 'hosted-anonymous-read': 'false' });
    try {
      const reader = await closed.mirror.users.add('bob', 'publisher');
      recordSecrets(reader, createHash('md5').update(reader).digest('hex'));
      const registry = 'http://127.0.0.4/v3';
      const home = await clientHome(registry);
      expect((await runS(home, await publishableFolder(NAME, 'HOSTED'), ['registry', 'login', '--token', reader])).code).toBe(0);
      expect((await runS(home, await publishableFolder(NAME, 'HOSTED'), ['registry', 'publish'])).stdout).toContain(`Publish package ${NAME}@0.0.1 success.`);

      const app = await project([NAME]);
      const loggedIn = await runS(home, app, ['deploy', '--silent', '-o', 'json']);
      expect(loggedIn.stdout).toContain('HOSTED@0.0.1 deploy resource=r0');
      const anonymous = await runS(await clientHome(registry), app, ['deploy', '--silent', '-o', 'json']);
      expect(anonymous.stdout).not.toContain('HOSTED@0.0.1 deploy');
      expect(anonymous.code).not.toBe(0);
    } finally {
      await closed.close();
    }
  });
});
