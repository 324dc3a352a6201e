// Losing the index never loses an archive: with meta/ deleted the mirror keeps every archive file; with a damaged
// database it refuses to start and changes nothing; `srm-mirror repair` rebuilds the index from the archives'
// publish.yaml, quarantines what it cannot attribute, and an offline mirror serves the components again.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { get, removeTempDirs, startMirror, tempDir } from '../helpers.js';

const ZIPS = {
  'fc3@1.1.0': componentZip('fc3', '1.1.0', { payload: randomBytes(20_000), topFolder: true }),
  'fc3@1.0.0': componentZip('fc3', '1.0.0'),
  'fc3-domain@0.0.9': componentZip('fc3-domain', '0.0.9'),
};

let fake: FakeUpstream;
let data: string;

async function run(args: string[]) {
  let [stdout, stderr] = ['', ''];
  const code = await main([...args, '--data', data, '--log-level', 'error'], { isTTY: false, write: (t) => void (stdout += t), error: (t) => void (stderr += t) });
  return { code, stdout, stderr };
}

const archiveFiles = async () => (await readdir(join(data, 'archives', 'sha256'), { recursive: true })).filter((f) => /[0-9a-f]{64}$/.test(f)).sort();

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.1.0', zip: ZIPS['fc3@1.1.0'] }, { version: '1.0.0', zip: ZIPS['fc3@1.0.0'] }]);
  fake.add('fc3-domain', [{ version: '0.0.9', zip: ZIPS['fc3-domain@0.0.9'] }]);
  data = await tempDir();
  const m = await startMirror(fake.v3, { data });
  for (const id of Object.keys(ZIPS)) {
    const [name, version] = id.split('@');
    expect((await get(`${m.url}/v3/packages/${name}/zipball/${version}`)).status).toBe(200);
  }
  await m.close();
  await fake.close();
});

afterEach(removeTempDirs);

describe('a lost index', () => {
  it('meta/ deleted: the mirror starts, deletes no archive, says the index is lost; repair brings the components back offline', async () => {
    const before = await archiveFiles();
    expect(before).toHaveLength(3);
    await rm(join(data, 'meta'), { recursive: true });

    const m = await startMirror('http://127.0.0.1:9/v3', { data, 'max-size': '1KB' }); // a quota every archive is over
    try {
      const { unreferenced, evicted } = await m.mirror.archives.reclaimer.enforce(); // joins the start-up collection
      expect([unreferenced.removed, evicted.removed]).toEqual([0, 0]);
      expect(((await get(`${m.url}/-/status`)).json() as { metadata: { index: string } }).metadata.index).toBe('lost');
      expect(m.logs.join('\n')).toMatch(/srm-mirror repair/);
    } finally {
      await m.close();
    }
    expect(await archiveFiles()).toEqual(before);

    const stray = randomBytes(1000); // an archive no publish.yaml names
    await mkdir(join(data, 'archives', 'sha256', sha256(stray).slice(0, 2)), { recursive: true });
    await writeFile(join(data, 'archives', 'sha256', sha256(stray).slice(0, 2), sha256(stray)), stray);
    const repaired = await run(['repair']);
    expect(repaired.code).toBe(0);
    for (const id of Object.keys(ZIPS)) expect(repaired.stdout).toContain(`recovered ${id}`);
    expect(repaired.stdout).toContain(`quarantined ${sha256(stray)}: not a readable zip`);
    expect(existsSync(join(data, 'archives', 'quarantine', sha256(stray)))).toBe(true);

    const offline = await startMirror('http://127.0.0.1:9/v3', { data, offline: true });
    try {
      expect(((await get(`${offline.url}/-/status`)).json() as { metadata: { index: string } }).metadata.index).toBe('intact');
      for (const [id, zip] of Object.entries(ZIPS)) {
        const [name, version] = id.split('@');
        const res = await get(`${offline.url}/v3/packages/${name}/zipball/${version}`);
        expect([res.status, res.headers.get('x-cache'), sha256(res.body)]).toEqual([200, 'HIT', sha256(zip)]);
      }
      const latest = await get(`${offline.url}/v3/packages/fc3/release/latest`);
      expect((latest.json() as { body: { tag_name: string } }).body.tag_name).toBe('1.1.0');
    } finally {
      await offline.close();
    }
    const gc = await run(['gc', '--quarantine', '--offline']);
    expect(gc.stdout).toMatch(/deleted 1 quarantined \(1\.0 KB\)/);
    expect(await readdir(join(data, 'archives', 'quarantine'))).toEqual([]);
  });

  it('meta/CURRENT deleted: start-up refuses and changes nothing; repair recovers the database itself', async () => {
    await rm(join(data, 'meta', 'CURRENT'));
    const metaBefore = (await readdir(join(data, 'meta'))).sort();
    await expect(startMirror('http://127.0.0.1:9/v3', { data })).rejects.toThrow(/damaged[\s\S]*srm-mirror repair/);
    expect((await readdir(join(data, 'meta'))).sort()).toEqual(metaBefore);
    expect(await archiveFiles()).toHaveLength(3);
    const served = await run(['serve', '--port', '0', '--host', '127.0.0.1']);
    expect([served.code, served.stderr]).toEqual([4, expect.stringMatching(/damaged.*srm-mirror repair/)]);

    const repaired = await run(['repair']);
    expect(repaired.code).toBe(0);
    expect(repaired.stdout).toMatch(/metadata database repaired/);
    const offline = await startMirror('http://127.0.0.1:9/v3', { data, offline: true });
    try {
      const res = await get(`${offline.url}/v3/packages/fc3/zipball/1.0.0`);
      expect([res.status, sha256(res.body)]).toEqual([200, sha256(ZIPS['fc3@1.0.0'])]);
    } finally {
      await offline.close();
    }
  });
});
