// End to end with the real `s` CLI from npm: component downloads through the mirror, and the registry commands.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { removeTempDirs, startMirror, type TestMirror } from '../helpers.js';
import { clientHome, deployableZip, project, runS } from './s-cli.js';

let fake: FakeUpstream;
let mirror: TestMirror;
let app: string;
const blobs = () => fake.count(/^\/blob\//);

beforeAll(async () => {
  fake = await FakeUpstream.start();
  // 26 releases of demo-comp, so that `registry detail --page 2` has something to show.
  const older = Array.from({ length: 25 }, (_, i) => ({ version: `0.0.${25 - i}` }));
  fake.add('demo-comp', [{ version: '1.0.0', zip: deployableZip('demo-comp', '1.0.0', { topFolder: true }) }, ...older]);
  fake.add('other-comp', [
    { version: '0.0.3', zip: deployableZip('other-comp', '0.0.3') },
    { version: '0.0.2', zip: deployableZip('other-comp', '0.0.2') },
  ]);
  for (let i = 0; i < 5; i++) fake.add(`filler-${i}`, [{ version: '1.0.0' }]);
  mirror = await startMirror(fake.v3);
  app = await project(['demo-comp', 'other-comp@0.0.2']);
});

afterAll(async () => {
  await mirror.close();
  await fake.close();
  await removeTempDirs();
});

describe('the real s CLI through the mirror', () => {
  it('runs a project with a component at latest and one pinned, both downloaded through the mirror', async () => {
    const home = await clientHome(`${mirror.url}/v3`);
    const run = await runS(home, app, ['deploy', '--silent', '-o', 'json']);
    expect(run.stdout).toContain('DEMO-COMP@1.0.0 deploy resource=r0 msg=hello-0');
    expect(run.stdout).toContain('OTHER-COMP@0.0.2 deploy resource=r1 msg=hello-1');
    expect(run.code).toBe(0);
    // The client asked the mirror, and the mirror fetched each archive once.
    expect(fake.requests.some((r) => r.url === '/v3/packages/demo-comp/release/latest')).toBe(true);
    expect(fake.requests.some((r) => r.url === '/v3/packages/other-comp/release/tags/0.0.2')).toBe(true);
    expect(blobs()).toBe(2);
  });

  it('a second client with an empty home gets both components without any upstream archive request', async () => {
    const before = blobs();
    const home = await clientHome(`${mirror.url}/v3`);
    const run = await runS(home, app, ['deploy', '--silent', '-o', 'json']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('DEMO-COMP@1.0.0 deploy');
    expect(run.stdout).toContain('OTHER-COMP@0.0.2 deploy');
    expect(blobs()).toBe(before);
    expect(fake.count(/\/zipball\//)).toBe(2);
  });

  it.each([
    [['registry', 'list']],
    [['registry', 'list', '--search', 'filler']],
    [['registry', 'detail', '--package-name', 'demo-comp', '--page', '2']],
  ])('`s %j` prints the same through the mirror as against the upstream directly', async (args) => {
    const [viaMirror, direct] = await Promise.all([
      runS(await clientHome(`${mirror.url}/v3`), app, args),
      runS(await clientHome(fake.v3), app, args),
    ]);
    // zipball_url names the registry that answered: the mirror, or the upstream.
    const normal = (out: string) => out.replaceAll(`${mirror.url}/v3`, 'REGISTRY').replaceAll(fake.v3, 'REGISTRY');
    expect(viaMirror.code).toBe(0);
    expect(direct.stdout).toMatch(/name|tag_name/);
    expect(normal(viaMirror.stdout)).toBe(normal(direct.stdout));
  });
});

describe('the real s CLI when the upstream is gone', () => {
  it('a client with an empty home still gets every cached component, online (STALE) and offline', async () => {
    const upstream = await FakeUpstream.start();
    upstream.add('demo-comp', [{ version: '1.0.0', zip: deployableZip('demo-comp', '1.0.0', { topFolder: true }) }]);
    upstream.add('other-comp', [{ version: '0.0.3' }, { version: '0.0.2', zip: deployableZip('other-comp', '0.0.2') }]);
    const online = await startMirror(upstream.v3, { 'max-age': '0s', retries: '0' });
    try {
      const warm = await runS(await clientHome(`${online.url}/v3`), app, ['deploy', '--silent', '-o', 'json']);
      expect(warm.code).toBe(0);
      await upstream.close();

      const stale = await runS(await clientHome(`${online.url}/v3`), app, ['deploy', '--silent', '-o', 'json']);
      expect(stale.stdout).toContain('DEMO-COMP@1.0.0 deploy');
      expect(stale.stdout).toContain('OTHER-COMP@0.0.2 deploy');
      expect(stale.code).toBe(0);
      expect(online.logs.join('')).not.toMatch(/internal error/);
    } finally {
      await online.close();
    }

    const offline = await startMirror(upstream.v3, { data: online.dataDir, offline: true });
    try {
      const run = await runS(await clientHome(`${offline.url}/v3`), app, ['deploy', '--silent', '-o', 'json']);
      expect(run.stdout).toContain('DEMO-COMP@1.0.0 deploy');
      expect(run.stdout).toContain('OTHER-COMP@0.0.2 deploy');
      expect(run.code).toBe(0);
    } finally {
      await offline.close();
    }
  });
});

describe('the real s CLI with what users type', () => {
  it('works with a registry setting that ends in a slash (s stores it verbatim: /v3//packages/...)', async () => {
    const run = await runS(await clientHome(`${mirror.url}/v3/`), app, ['deploy', '--silent', '-o', 'json']);
    expect(run.stdout).toContain('DEMO-COMP@1.0.0 deploy');
    expect(run.stdout).toContain('OTHER-COMP@0.0.2 deploy');
    expect(run.code).toBe(0);
  });

  it('with the upstream down and nothing cached, `s registry detail` fails instead of printing []', async () => {
    const gone = await FakeUpstream.start();
    const upstream = gone.v3;
    await gone.close();
    const m = await startMirror(upstream, { retries: '0' });
    try {
      const run = await runS(await clientHome(`${m.url}/v3`), app, ['registry', 'detail', '--package-name', 'never-seen']);
      expect(run.stdout.trim()).not.toBe('[]');
      expect(`${run.stdout}\n${run.stderr}`).not.toMatch(/^\s*\[\s*\]\s*$/m);
      expect(run.code).not.toBe(0);
    } finally {
      await m.close();
    }
  });
});

describe('the real s CLI after a prefetch run', () => {
  /** A mirror that prefetched both components of the project, and its upstream (closed by the caller). */
  async function prefetched(): Promise<{ upstream: FakeUpstream; m: TestMirror }> {
    const upstream = await FakeUpstream.start();
    upstream.add('demo-comp', [{ version: '1.0.0', zip: deployableZip('demo-comp', '1.0.0', { topFolder: true }) }]);
    upstream.add('other-comp', [{ version: '0.0.3' }, { version: '0.0.2', zip: deployableZip('other-comp', '0.0.2') }]);
    const m = await startMirror(upstream.v3, { 'prefetch-packages': 'demo-comp,other-comp@0.0.2', retries: '0' });
    expect(await m.mirror.prefetchNow('test')).toMatchObject({ archivesFetched: 2, failures: [] });
    return { upstream, m };
  }

  /** The project deploys with an empty client home against `registry`, both components through it. */
  async function deploysThrough(registry: string): Promise<void> {
    const run = await runS(await clientHome(registry), app, ['deploy', '--silent', '-o', 'json']);
    expect(run.stdout).toContain('DEMO-COMP@1.0.0 deploy');
    expect(run.stdout).toContain('OTHER-COMP@0.0.2 deploy');
    expect(run.code).toBe(0);
  }

  it('with the upstream killed after prefetch, a client with an empty home gets every prefetched component', async () => {
    const { upstream, m } = await prefetched();
    try {
      await upstream.close();
      await deploysThrough(`${m.url}/v3`);
    } finally {
      await m.close();
    }
  });

  it('with meta/ lost and the upstream gone, `srm-mirror repair` gives an offline mirror every component back', async () => {
    const { upstream, m } = await prefetched();
    await m.close();
    await upstream.close();
    await rm(join(m.dataDir, 'meta'), { recursive: true });
    const out: string[] = [];
    const code = await main(['repair', '--data', m.dataDir, '--log-level', 'error'], { isTTY: false, write: (t) => void out.push(t), error: (t) => void out.push(t) });
    expect(code).toBe(0);
    expect(out.join('')).toContain('recovered demo-comp@1.0.0');
    expect(out.join('')).toContain('recovered other-comp@0.0.2');
    const offline = await startMirror(upstream.v3, { data: m.dataDir, offline: true });
    try {
      await deploysThrough(`${offline.url}/v3`);
    } finally {
      await offline.close();
    }
  });
});
