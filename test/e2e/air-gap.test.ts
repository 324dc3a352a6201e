// The whole air-gap story with the real `s` CLI: mirror A, online, warms components and hosts a generic file; a
// signed bundle is exported beside its running server; mirror B, with no upstream at all, imports it, and `s`
// pointed at B resolves and runs every exported component at latest and pinned versions, with no upstream request.
// Then A learns a new version, an incremental bundle carries only it, and B (running) imports it and serves it.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseManifest } from '../../src/bundles/manifest.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { get, recordSecrets, removeTempDirs, runCli, startMirror, tempDir, type TestMirror } from '../helpers.js';
import { clientHome, deployableZip, project, runS } from './s-cli.js';

const ADMIN = 'air-gap-admin-token-0123456789';
const TOOL = randomBytes(200_000);
let fake: FakeUpstream;
let a: TestMirror;
let b: TestMirror | undefined;
let keys: string;


/** The flags that point a command at a running mirror's data folder and server. */
const at = (m: TestMirror) => ['--data', m.dataDir, '--host', '127.0.0.1', '--port', new URL(m.url).port, '--admin-token', ADMIN, '--log-level', 'error'];

const comp = (version: string) => ({ version, zip: deployableZip('comp-a', version) });

beforeAll(async () => {
  recordSecrets(ADMIN);
  fake = await FakeUpstream.start();
  fake.add('comp-a', [comp('0.0.2'), comp('0.0.1')]);
  fake.add('comp-b', [{ version: '1.0.0', zip: deployableZip('comp-b', '1.0.0') }]);
  a = await startMirror(fake.v3, { 'admin-token': ADMIN });
  keys = await tempDir('srm-keys-');
});

afterAll(async () => {
  await b?.close();
  await a.close();
  await fake.close();
  await removeTempDirs();
});

describe('across the air gap with signed bundles and the real s CLI', () => {
  it('export beside A → import into B (no upstream) → s resolves and runs everything from B; then an incremental bundle', async () => {
    // A warms what the site needs, and hosts a tool.
    for (const [name, version] of [['comp-a', '0.0.1'], ['comp-a', '0.0.2'], ['comp-b', '1.0.0']] as const) {
      expect((await get(`${a.url}/v3/packages/${name}/zipball/${version}`)).status).toBe(200);
    }
    const secret = await a.mirror.users.add('alice', 'publisher');
    recordSecrets(secret);
    const put = await fetch(`${a.url}/api/packages/alice/generic/tool/1.0/tool.bin`, { method: 'PUT', headers: { 'private-token': secret }, body: TOOL });
    expect(put.status).toBe(201);

    expect((await runCli(['keygen', '--out', join(keys, 'site')])).code).toBe(0);
    const first = await tempDir('srm-bundle-');
    const exported = await runCli(['export', '--out', first, '--sign-key', join(keys, 'site.key'), ...at(a)]);
    expect(exported.code, exported.output).toBe(0);
    const manifest = parseManifest(await readFile(join(first, 'manifest.json'), 'utf8'));
    expect(manifest.entries.map((e) => e.kind).sort()).toEqual(['cached', 'cached', 'cached', 'generic']);

    // B has no upstream at all: the bundle is imported before it starts, then it serves offline.
    const bData = await tempDir();
    const imported = await runCli(['import', first, '--trust', join(keys, 'site.pub'), '--data', bData, '--offline', '--log-level', 'error']);
    expect(imported.code, imported.output).toBe(0);
    b = await startMirror('http://127.0.0.1:9/v3', { data: bData, offline: true, 'admin-token': ADMIN });

    const app = await project(['comp-a', 'comp-a@0.0.1', 'comp-b']);
    const deploy = await runS(await clientHome(`${b.url}/v3`), app, ['deploy', '--silent', '-o', 'json']);
    expect(deploy.stdout).toContain('COMP-A@0.0.2 deploy resource=r0');
    expect(deploy.stdout).toContain('COMP-A@0.0.1 deploy resource=r1');
    expect(deploy.stdout).toContain('COMP-B@1.0.0 deploy resource=r2');
    expect(deploy.code).toBe(0);
    const tool = await get(`${b.url}/api/packages/alice/generic/tool/1.0/tool.bin`);
    expect([tool.status, tool.body.equals(TOOL)]).toEqual([200, true]);

    // A learns a new version; the incremental bundle carries only its archive; B imports it while it serves.
    fake.add('comp-a', [comp('0.0.3'), comp('0.0.2'), comp('0.0.1')]);
    expect((await get(`${a.url}/v3/packages/comp-a/zipball/0.0.3`)).status).toBe(200);
    const second = await tempDir('srm-bundle-');
    const incremental = await runCli(['export', '--out', second, '--since', 'last', '--sign-key', join(keys, 'site.key'), ...at(a)]);
    expect(incremental.code, incremental.output).toBe(0);
    const next = parseManifest(await readFile(join(second, 'manifest.json'), 'utf8'));
    expect(next.base).toBe(manifest.id);
    expect(next.blobs).toHaveLength(1);
    const besideServer = await runCli(['import', second, '--trust', join(keys, 'site.pub'), ...at(b)]);
    expect(besideServer.code, besideServer.output).toBe(0);

    const latest = await runS(await clientHome(`${b.url}/v3`), await project(['comp-a']), ['deploy', '--silent', '-o', 'json']);
    expect(latest.stdout).toContain('COMP-A@0.0.3 deploy resource=r0');

    // B never asked an upstream for anything.
    const metrics = (await get(`${b.url}/-/metrics`)).body.toString();
    expect(metrics).toMatch(/^srm_mirror_upstream_requests_total 0$/m);
  });
});
