// End to end, proxy mode (issue 12, item 3): the real `s` 3.1.10 with NO `registry` setting, only `s set proxy`
// pointing at the mirror, which listens on its own loopback address. The client believes it talks to
// https://api.devsapp.cn (and, for the registry commands, to the fcapp.run host); the mirror's upstream is the
// FakeUpstream, whose counters show the mirror fetched each thing once.
import { readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../fakes/upstream.js';
import { removeTempDirs, startMirror, tempDir, type TestMirror } from '../helpers.js';
import { clientHome, deployableZip, project, runS } from './s-cli.js';

let fake: FakeUpstream;
let mirror: TestMirror;
let app: string;
const blobs = () => fake.count(/^\/blob\//);

/**
 * An application template as `s init` takes it (read in s 3.1.10's load-application): publish.yaml at the zip's
 * root (the download is not stripped) with Type: Project, the application in src/ (copied to the new folder), its
 * s.yaml an art-template filled from Parameters (their defaults in CI, where nothing is asked).
 */
function projectZip(name: string): Buffer {
  const text = (s: string) => new TextEncoder().encode(s);
  const files: Record<string, Uint8Array> = {
    'publish.yaml': text(
      `Edition: 3.0.0\nType: Project\nName: ${name}\nProvider:\n  - 阿里云\nVersion: 0.0.1\nDescription: an application template\n` +
        `HomePage: https://example.com\nCategory: 其它\nService:\n  函数计算:\n    Authorities:\n      - AliyunFCFullAccess\n` +
        `Parameters:\n  type: object\n  additionalProperties: false\n  required:\n    - region\n  properties:\n` +
        `    region:\n      title: 地域\n      type: string\n      default: cn-hangzhou\n      description: where it runs\n`,
    ),
    'src/s.yaml': text(`edition: 3.0.0\nname: ${name}-app\naccess: "{{ access }}"\nvars:\n  region: "{{ region }}"\nresources:\n  hello:\n    component: demo-comp\n    props:\n      msg: from-template\n`),
    'src/readme.md': text(`# ${name}\n`),
  };
  return Buffer.from(zipSync(Object.fromEntries(Object.entries(files).map(([p, d]) => [p, [d, { level: 0, mtime: new Date(Date.UTC(2024, 0, 1)) }]]))));
}

/** A client home with no registry setting, whose proxy is the mirror, set the way users do: `s set proxy`. */
async function proxiedHome(): Promise<string> {
  const home = await clientHome('unused');
  await writeFile(join(home, '.s', 'set-config.yml'), 'analysis: disable\n'); // no registry at all
  const set = await runS(home, home, ['set', 'proxy', '--enable', '--http_proxy', mirror.url, '--https_proxy', mirror.url]);
  expect(set.code).toBe(0);
  const config = await readFile(join(home, '.s', 'set-config.yml'), 'utf8');
  expect(config).toContain('proxy_enable: true');
  expect(config).toContain(`https_proxy: ${mirror.url}`);
  expect(config).not.toContain('registry');
  return home;
}

beforeAll(async () => {
  fake = await FakeUpstream.start();
  fake.add('demo-comp', [{ version: '1.0.0', zip: deployableZip('demo-comp', '1.0.0', { topFolder: true }) }, { version: '0.0.9' }]);
  fake.add('other-comp', [
    { version: '0.0.3', zip: deployableZip('other-comp', '0.0.3') },
    { version: '0.0.2', zip: deployableZip('other-comp', '0.0.2') },
  ]);
  fake.add('demo-app', [{ version: '0.0.1', zip: projectZip('demo-app') }], { description: 'an application template' });
  // Its own loopback address; the client reaches it only as its proxy.
  mirror = await startMirror(fake.v3, { intercept: true, host: '127.0.0.9' });
  app = await project(['demo-comp', 'other-comp@0.0.2']);
}, 60_000);

afterAll(async () => {
  await mirror.close();
  await fake.close();
  await removeTempDirs();
});

describe('the real s 3.1.10 with only `s set proxy` pointing at the mirror (no registry setting)', () => {
  it('deploys a project with a latest and a pinned component, both resolved and downloaded through the mirror', async () => {
    const run = await runS(await proxiedHome(), app, ['deploy', '--silent', '-o', 'json']);
    expect(run.stdout).toContain('DEMO-COMP@1.0.0 deploy resource=r0 msg=hello-0');
    expect(run.stdout).toContain('OTHER-COMP@0.0.2 deploy resource=r1 msg=hello-1');
    expect(run.code).toBe(0);
    // The client asked "api.devsapp.cn"; the mirror asked its upstream, once for each thing.
    expect(fake.count(/^\/v3\/packages\/demo-comp\/release\/latest$/)).toBe(1);
    expect(fake.count(/^\/v3\/packages\/other-comp\/release\/tags\/0\.0\.2$/)).toBe(1);
    expect(fake.count(/^\/v3\/packages\/[^/]+\/zipball\//)).toBe(2);
    expect(blobs()).toBe(2);
  });

  it('a second client with an empty home gets both components without any upstream archive request', async () => {
    const before = blobs();
    const run = await runS(await proxiedHome(), app, ['deploy', '--silent', '-o', 'json']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('DEMO-COMP@1.0.0 deploy');
    expect(run.stdout).toContain('OTHER-COMP@0.0.2 deploy');
    expect(blobs()).toBe(before);
    expect(fake.count(/^\/v3\/packages\/[^/]+\/zipball\//)).toBe(2);
  });

  it('`s registry list` and `s registry detail` (sent to the registry-commands host) print what the upstream has', async () => {
    const list = await runS(await proxiedHome(), app, ['registry', 'list']);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain('demo-comp');
    expect(list.stdout).toContain('other-comp');
    const detail = await runS(await proxiedHome(), app, ['registry', 'detail', '--package-name', 'demo-comp']);
    expect(detail.code).toBe(0);
    expect(detail.stdout).toContain('0.0.9');
    // The zipball URLs printed name the host the client asked, which leads back to the mirror.
    expect(detail.stdout).toContain('https://server-serverlgistry-v-awljqvnszb.cn-hangzhou.fcapp.run/v3/packages/demo-comp/zipball/1.0.0');
  });

  it('`s init NAME` of an application template downloads it through the mirror and fills it in', async () => {
    const where = await tempDir('srm-s-init-');
    const before = blobs();
    const run = await runS(await proxiedHome(), where, ['init', 'demo-app', '-d', join(where, 'my-app'), '-y']);
    expect(run.code).toBe(0);
    const yaml = await readFile(join(where, 'my-app', 's.yaml'), 'utf8');
    expect(yaml).toContain('name: demo-app-app');
    expect(yaml).toContain('region: "cn-hangzhou"');
    expect(await readFile(join(where, 'my-app', 'readme.md'), 'utf8')).toBe('# demo-app\n');
    expect(fake.count(/^\/v3\/packages\/demo-app\/release\/latest$/)).toBe(1);
    expect(blobs()).toBe(before + 1);
    // The template's project deploys through the mirror too (demo-comp is cached by now).
    const deploy = await runS(await proxiedHome(), join(where, 'my-app'), ['deploy', '--silent', '-o', 'json']);
    expect(deploy.stdout).toContain('DEMO-COMP@1.0.0 deploy resource=hello msg=from-template');
    expect(blobs()).toBe(before + 1);
  });

  it('refuses a CONNECT to any other host with 403', async () => {
    const { hostname, port } = new URL(mirror.url);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), hostname);
      let text = '';
      socket.on('data', (d) => (text += d.toString()));
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
      socket.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    });
    expect(answer).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(answer).toContain('intercept.hosts');
  });
});
