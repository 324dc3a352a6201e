// The cache commands, run through the same entry point as the srm-mirror executable, on real data folders.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { componentZip } from '../fakes/zips.js';
import { FakeUpstream, sha256 } from '../fakes/upstream.js';
import { get, recordSecrets, removeTempDirs, runCli, startMirror, tempDir } from '../helpers.js';

let fake: FakeUpstream;
let data: string;
const ZIP = componentZip('fc3', '1.1.0', { payload: randomBytes(50_000) });


beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.1.0', zip: ZIP }, { version: '1.0.0' }]);
  fake.add('fc3-domain', [{ version: '0.0.9' }]);
  data = await tempDir();
});

afterEach(async () => {
  await fake.close();
  await removeTempDirs();
});

const on = (...args: string[]) => [...args, '--data', data, '--upstream', fake.v3, '--log-level', 'error'];

describe('srm-mirror prefetch', () => {
  it('prints plain lines when not on a terminal, a summary, and exits 0', async () => {
    const r = await runCli(on('prefetch', 'fc3', 'fc3-domain@0.0.9'));
    expect(r.stdout).toContain('prefetch 1/2');
    expect(r.stdout).toMatch(/prefetch 2\/2 (fc3|fc3-domain@0\.0\.9) ok/);
    expect(r.stdout).toMatch(/2 package\(s\) checked, 2 archive\(s\) fetched .*no failures/);
    expect(r.stdout).not.toContain('\r');
    expect(r.code).toBe(0);
  });

  it('draws a progress bar on a terminal', async () => {
    const r = await runCli(on('prefetch', 'fc3', 'fc3-domain'), true);
    expect(r.stdout).toContain('\r');
    expect(r.stdout).toMatch(/\[#{15}\.{15}\] 1\/2/);
    expect(r.stdout).toMatch(/\[#{30}\] 2\/2/);
    expect(r.code).toBe(0);
  });

  it('takes names from a file, and exits non-zero when something failed', async () => {
    const list = join(data, '..', `list-${Date.now()}.txt`);
    await writeFile(list, '# packages to warm\nfc3\nnope   # not upstream\n');
    const r = await runCli(on('prefetch', '--from-file', list));
    expect(r.stdout).toMatch(/nope FAILED: not found upstream/);
    expect(r.stdout).toMatch(/1 FAILED/);
    expect(r.code).toBe(1);
  });

  it('fetches every version with --all-versions', async () => {
    const r = await runCli(on('prefetch', 'fc3', '--all-versions'));
    expect(r.stdout).toMatch(/2 archive\(s\) fetched/);
  });

  it('refuses clearly while a server holds the data folder, saying what to do', async () => {
    const server = await startMirror(fake.v3, { data });
    try {
      const r = await runCli(on('prefetch', 'fc3'));
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/in use by a running srm-mirror\. Stop it first.*give this command its --admin-token/);
    } finally {
      await server.close();
    }
  });

  it('rejects bad input and bad flags with a clear message', async () => {
    expect((await runCli(on('prefetch', '../etc'))).stderr).toMatch(/invalid package name/);
    const bad = await runCli(['prefetch', '--max-age', 'soon']);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringMatching(/"--max-age": expected a duration/)]);
  });
});

describe('srm-mirror status', () => {
  it('reports packages, versions, archives, bytes, quota and the last prefetch run (also as JSON)', async () => {
    await runCli(on('prefetch', 'fc3'));
    const r = await runCli(on('status', '--max-size', '1GB'));
    expect(r.stdout).toMatch(/packages\s+1 known/);
    expect(r.stdout).toMatch(/versions\s+\d+ with metadata/);
    expect(r.stdout).toMatch(/archives\s+1, 50\.\d KB on disk \(1\.0 GB quota\)/);
    expect(r.stdout).toMatch(/hosted\s+0 component\(s\), 0 version\(s\); 0 generic package\(s\), 0 version\(s\), 0 file\(s\); 0 blob\(s\), 0 B on disk/);
    expect(r.stdout).toMatch(/last prefetch .*\(cli\): 1 package\(s\) checked, 1 archive\(s\) fetched/);
    const json = JSON.parse((await runCli(on('status', '--json'))).stdout) as { archives: { quota: { usedBytes: number } } };
    expect(json.archives.quota.usedBytes).toBe(ZIP.length);
  });
});

describe('srm-mirror verify and gc', () => {
  it('verify beside a running server asks it (with the admin token); the server drops the corrupt archive at once', async () => {
    const token = 'verify-admin-token-4f1c9a';
    recordSecrets(token);
    await runCli(on('prefetch', 'fc3'));
    const server = await startMirror(fake.v3, { data, 'admin-token': token });
    try {
      const file = join(data, 'archives', 'sha256', sha256(ZIP).slice(0, 2), sha256(ZIP));
      const bytes = await readFile(file);
      bytes[20] = bytes[20]! ^ 1;
      await writeFile(file, bytes);
      const port = new URL(server.url).port;
      const refused = await runCli(on('verify', '--port', port, '--host', '127.0.0.1'));
      expect([refused.code, refused.stderr]).toEqual([1, expect.stringMatching(/answered 401: .*admin token/)]); // without the token
      const r = await runCli(on('verify', '--port', port, '--host', '127.0.0.1', '--admin-token', token));
      expect(r.stdout).toContain('asking it to verify');
      expect(r.stdout).toContain(`dropped corrupt archive: ${sha256(ZIP)}`);
      expect(r.code).toBe(1);
      const res = await get(`${server.url}/v3/packages/fc3/zipball/1.1.0`);
      expect([res.headers.get('x-cache'), sha256(res.body)]).toEqual(['MISS', sha256(ZIP)]);
    } finally {
      await server.close();
    }
  });

  it('verify finds a flipped byte and a planted temp file; --repair removes both; the next request refetches', async () => {
    await runCli(on('prefetch', 'fc3'));
    const file = join(data, 'archives', 'sha256', sha256(ZIP).slice(0, 2), sha256(ZIP));
    const bytes = await readFile(file);
    bytes[10] = bytes[10]! ^ 1;
    await writeFile(file, bytes);
    await writeFile(join(data, 'archives', 'tmp', 'planted.part'), 'half a download');

    const found = await runCli(on('verify'));
    expect(found.stdout).toContain(`dropped corrupt archive: ${sha256(ZIP)}`); // never served again, even without --repair
    expect(found.stdout).toContain('found leftover temp file: planted.part');
    expect(found.code).toBe(1);

    const repaired = await runCli(on('verify', '--repair'));
    expect(repaired.stdout).toMatch(/removed leftover temp file[\s\S]*repaired 1 problem/);
    expect(repaired.code).toBe(0);
    expect((await runCli(on('verify'))).stdout).toContain('all good');

    const m = await startMirror(fake.v3, { data });
    try {
      const res = await get(`${m.url}/v3/packages/fc3/zipball/1.1.0`);
      expect([res.headers.get('x-cache'), sha256(res.body)]).toEqual(['MISS', sha256(ZIP)]);
    } finally {
      await m.close();
    }
  });

  it('gc removes archives no version points at and applies the quota, now', async () => {
    await runCli(on('prefetch', 'fc3@1.1.0')); // 50 KB, the least recently used
    await runCli(on('prefetch', 'fc3@1.0.0')); // 16 B
    const stray = Buffer.from('an archive nothing points at');
    const path = join(data, 'archives', 'sha256', sha256(stray).slice(0, 2));
    await mkdir(path, { recursive: true });
    await writeFile(join(path, sha256(stray)), stray);
    await utimes(join(path, sha256(stray)), new Date(0), new Date(0)); // not a fill that just committed
    const r = await runCli(on('gc', '--max-size', '40KB'));
    expect(r.stdout).toMatch(/^removed 1 unreferenced archive\(s\) \(28 B\), evicted 1 \(50\.\d KB\), deleted 0 quarantined \(0 B\); \d+ B in 1 archives of a 40\.0 KB quota\n$/);
  });
});
