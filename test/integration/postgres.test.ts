// The mirror on PostgreSQL (issue 14, part 1), on a throwaway cluster: a warmed LevelDB store migrated into it serves
// the same; two mirror processes on one database see each other's writes at once (LISTEN/NOTIFY); they may share
// a data folder (issue 14 part 2, fleet.test.ts).
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { throwawayCluster } from '../fakes/postgres.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { fetchOk, warmMirror } from '../fakes/warm-mirror.js';
import { killChildren, recordSecrets, removeTempDirs, runCli, spawnMirror, startMirror, tempDir, until } from '../helpers.js';

const postgres = throwawayCluster('the mirror on PostgreSQL');

afterAll(async () => {
  killChildren();
  await removeTempDirs();
});

async function json(url: string): Promise<unknown> {
  const res = await request(url);
  expect(res.statusCode, url).toBe(200);
  return res.body.json();
}

/** The body of a v3 answer (less its request_id, which each answer has its own of). */
async function v3Body(url: string): Promise<unknown> {
  return ((await json(url)) as { body: unknown }).body;
}

describe.skipIf(!postgres.available)('the mirror on PostgreSQL', () => {
  it('migrate-metadata copies a warmed LevelDB store, and a mirror on PostgreSQL serves the same offline', async () => {
    const warm = await warmMirror();
    const dataDir = warm.mirror.dataDir;
    const paths = ['/v3/packages/fc3/release/latest', '/v3/packages/fc3/release/tags/1.0.0', '/v3/packages/corp-tool/release/latest', '/v3/packages/fc3-domain/release/latest'];
    const before = await Promise.all(paths.map((p) => v3Body(warm.mirror.url + p)));
    const statusBefore = (await json(`${warm.mirror.url}/-/status`)) as { metadata: unknown };
    const url = await postgres.cluster().createDatabase();

    const whileRunning = await runCli(['migrate-metadata', '--data', dataDir, '--to', url]);
    expect(whileRunning.code).toBe(3); // the LevelDB store is held by the running mirror
    await warm.close();

    const migrated = await runCli(['migrate-metadata', '--data', dataDir, '--to', url]);
    expect(migrated.stderr).toBe('');
    expect(migrated.code).toBe(0);
    expect(migrated.stdout).toMatch(/copied \d+ record\(s\) from .*meta to postgres:\/\/\*\*\*@127\.0\.0\.1:\d+\/srm_\d+_\d+ \(.*archive \d+/);
    const again = await runCli(['migrate-metadata', '--data', dataDir, '--to', url]);
    expect([again.code, again.stderr]).toEqual([1, expect.stringMatching(/already holds \d+ metadata record\(s\); nothing was copied. Give --force/)]);
    const forced = await runCli(['migrate-metadata', '--data', dataDir, '--to', url, '--force']);
    expect([forced.code, forced.stdout]).toEqual([0, expect.stringMatching(/removed the \d+ record\(s\)[\s\S]*copied/)]);

    // The upstream is gone: only the data folder (archives) and PostgreSQL (metadata) can answer.
    const onPg = await startMirror('http://127.0.0.1:9/v3', { data: dataDir, 'database-url': url, offline: true, 'hosted-packages': 'corp-*' });
    try {
      expect(await Promise.all(paths.map((p) => v3Body(onPg.url + p)))).toEqual(before.map((b) => JSON.parse(JSON.stringify(b).replaceAll(warm.mirror.url, onPg.url))));
      expect(((await json(`${onPg.url}/-/status`)) as { metadata: unknown }).metadata).toEqual(statusBefore.metadata);
      expect((await fetchOk(`${onPg.url}/v3/packages/fc3/zipball/1.1.0`)).length).toBeGreaterThan(3000);
      // On PostgreSQL, replicas share the data folder (fleet.test.ts): a second one starts and serves the same.
      const second = await startMirror('http://127.0.0.1:9/v3', { data: dataDir, 'database-url': url, offline: true, 'hosted-packages': 'corp-*', 'replica-id': 'second' });
      try {
        expect((await fetchOk(`${second.url}/v3/packages/fc3/zipball/1.1.0`)).length).toBeGreaterThan(3000);
      } finally {
        await second.close();
      }
    } finally {
      await onPg.close();
    }
  });

  it('an upstream refresh through one mirror process is what another one on the same database serves next', async () => {
    const fake = await FakeUpstream.start();
    try {
      fake.add('fc3', [{ version: '0.1.2' }]);
      // The cluster trusts loopback connections, so a password is never asked for: it is there to be looked for in the logs.
      const url = (await postgres.cluster().createDatabase()).replace('postgres@', 'postgres:pg-pass-7fe29a@');
      recordSecrets('pg-pass-7fe29a');
      // A always asks the upstream; B takes what the database has for an hour: B can only know what A wrote there.
      const a = await spawnMirror(['--upstream', fake.v3, '--data', await tempDir(), '--database-url', url, '--max-age', '0']);
      const b = await spawnMirror(['--upstream', fake.v3, '--data', await tempDir(), '--database-url', url, '--max-age', '1h']);
      const latest = async (m: { url: string }) => ((await v3Body(`${m.url}/v3/packages/fc3/release/latest`)) as { tag_name: string }).tag_name;
      expect(await latest(a)).toBe('0.1.2');
      expect(await latest(b)).toBe('0.1.2'); // now in B's memory cache too
      expect(await latest(b)).toBe('0.1.2');

      fake.add('fc3', [{ version: '0.2.0' }, { version: '0.1.2' }]);
      expect(await latest(a)).toBe('0.2.0');
      // B's copy is dropped once the notification of A's write reaches it (it was sent when A's write committed).
      await until(async () => (await latest(b)) === '0.2.0');
      expect(a.logs.join('\n')).toMatch(/"msg":"metadata on PostgreSQL","database":"postgres:\/\/\*\*\*@127\.0\.0\.1/);
      expect(fake.count(/\/packages\/fc3\/release\/latest/)).toBe(2); // A's two: B never asked
    } finally {
      killChildren();
      await fake.close();
    }
  });
});
