// The mirror runs on the current Node LTS as well as on the oldest supported Node (the one the suite runs on):
// the same process, on the LTS binary, warms from the upstream, serves from its cache, survives a SIGKILL and
// serves offline from what LevelDB (a native addon: the part most likely to break on a new Node) and the archive
// store kept.
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { componentZip } from '../fakes/zips.js';
import { ensureLtsNode, CURRENT_LTS } from '../fakes/node-lts.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { get, killChildren, removeTempDirs, send, spawnMirror, tempDir } from '../helpers.js';

const lts = ensureLtsNode();
if ('skip' in lts) console.warn(`node LTS test skipped: ${lts.skip}`);

afterEach(async () => {
  killChildren();
  await removeTempDirs();
});

describe.skipIf('skip' in lts)(`on Node ${CURRENT_LTS} (current LTS)`, () => {
  it('warms, serves HITs, and after a SIGKILL serves the same bytes offline', async () => {
    const { node, version } = lts as { node: string; version: string };
    expect(version).toMatch(new RegExp(`^v${CURRENT_LTS}\\.`));
    const fake = await FakeUpstream.start();
    const zip = componentZip('lts-check', '1.2.0', { payload: randomBytes(300_000) });
    fake.add('lts-check', [{ version: '1.2.0', zip }]);
    const data = await tempDir();
    try {
      const first = await spawnMirror(['--data', data, '--upstream', fake.v3], { node });
      const meta = `${first.url}/v3/packages/lts-check/release/latest`;
      const archive = `${first.url}/v3/packages/lts-check/zipball/1.2.0`;
      expect((await get(meta)).headers.get('x-cache')).toBe('MISS');
      const latest = await get(meta);
      expect(latest.headers.get('x-cache')).toBe('HIT');
      expect(latest.json()).toMatchObject({ body: { tag_name: '1.2.0', zipball_url: archive } });
      const miss = await get(archive);
      expect([miss.status, miss.headers.get('x-cache'), sha256(miss.body)]).toEqual([200, 'MISS', sha256(zip)]);
      const hit = await get(archive);
      expect([hit.status, hit.headers.get('x-cache'), sha256(hit.body)]).toEqual([200, 'HIT', sha256(zip)]);
      // The process that answered is the LTS one (prom-client's default metrics name the runtime).
      expect((await send('GET', `${first.url}/-/metrics`)).text).toContain(`nodejs_version_info{version="${version}"`);
      const exited = new Promise((resolve) => first.child.once('exit', resolve));
      first.child.kill('SIGKILL');
      await exited;

      const upstreamBefore = fake.requests.length;
      const second = await spawnMirror(['--data', data, '--offline'], { node });
      const offline = await get(`${second.url}/v3/packages/lts-check/zipball/1.2.0`);
      expect([offline.status, offline.headers.get('x-cache'), sha256(offline.body)]).toEqual([200, 'HIT', sha256(zip)]);
      expect((await get(`${second.url}/v3/packages/lts-check/release/latest`)).json()).toMatchObject({ body: { tag_name: '1.2.0' } });
      expect(fake.requests.length).toBe(upstreamBefore);
    } finally {
      await fake.close();
    }
  });
});
