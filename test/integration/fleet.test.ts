// Three replicas (separate processes) on one PostgreSQL and one data folder (issue 14 part 2), on a throwaway cluster:
// one upstream fetch across the fleet for a cold archive and a metadata key, a hosted publish through one replica
// served by the others, a SIGKILL of the replica doing a fill, and the leader's jobs moving on when it dies.
import { createHash } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Users } from '../../src/core/hosted/users.js';
import { KEY_LOCKS, LEADER_LOCK } from '../../src/stores/postgres-fleet.js';
import { FORM_HEADERS, publishForm, signed } from '../fakes/clients.js';
import { throwawayCluster } from '../fakes/postgres.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { killChildren, recordSecrets, removeTempDirs, runCli, send, spawnMirror, tempDir, until } from '../helpers.js';

const postgres = throwawayCluster('replicas on PostgreSQL');
let fake: FakeUpstream | undefined;

afterEach(async () => {
  killChildren();
  await fake?.close();
  fake = undefined;
});

afterAll(async () => {
  await removeTempDirs();
});

interface Replica {
  readonly child: ChildProcess;
  readonly url: string;
  readonly logs: string[];
}

/** Three replicas a, b, c on one new database and one new data folder. */
async function fleet(extra: string[] = []): Promise<{ replicas: Replica[]; dataDir: string; db: string }> {
  fake = await FakeUpstream.start();
  const db = await postgres.cluster().createDatabase();
  const dataDir = await tempDir();
  const replicas: Replica[] = [];
  for (const id of ['a', 'b', 'c']) replicas.push(await spawnMirror(['--upstream', fake.v3, '--data', dataDir, '--database-url', db, '--replica-id', id, ...extra]));
  return { replicas, dataDir, db };
}

/** Advisory locks of srm-mirror held in the database: key locks, and the leader's. */
async function advisoryLocks(db: string): Promise<{ keys: number; leaders: number }> {
  return postgres.cluster().admin(async (c) => {
    const { rows } = await c.query<{ classid: number; n: string }>(
      "SELECT classid::int AS classid, count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted GROUP BY classid",
    );
    const count = (id: number) => Number(rows.find((r) => r.classid === id)?.n ?? 0);
    return { keys: count(KEY_LOCKS), leaders: count(LEADER_LOCK) };
  }, new URL(db).pathname.slice(1));
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.skipIf(!postgres.available)('replicas on PostgreSQL and one data folder', () => {
  it('200 concurrent cold requests over 3 replicas: one upstream fetch of the archive, one of the metadata key, 200 correct bodies', async () => {
    const { replicas, db } = await fleet();
    const pkg = fake!.add('fc3', [{ version: '1.0.0' }]);
    fake!.add('fc3-domain', [{ version: '0.3.0' }]);
    // Slow answers, so that every request arrives while the first fetch is under way.
    fake!.inject(/\/packages\/fc3-domain\/release\/latest/, { kind: 'delay', ms: 300 }, 1);
    const latest = await Promise.all(Array.from({ length: 200 }, (_, i) => send('GET', `${replicas[i % 3]!.url}/v3/packages/fc3-domain/release/latest`)));
    expect(latest.map((a) => a.status)).toEqual(Array(200).fill(200));
    expect(new Set(latest.map((a) => (a.json() as { body: { tag_name: string } }).body.tag_name))).toEqual(new Set(['0.3.0']));
    expect(fake!.count(/\/packages\/fc3-domain\/release\/latest/)).toBe(1);

    fake!.inject(/\/blob\//, { kind: 'delay', ms: 300 }, 1);
    const zips = await Promise.all(Array.from({ length: 200 }, (_, i) => send('GET', `${replicas[i % 3]!.url}/v3/packages/fc3/zipball/1.0.0`)));
    expect(zips.map((a) => a.status)).toEqual(Array(200).fill(200));
    expect(new Set(zips.map((a) => sha256(a.body)))).toEqual(new Set([sha256(pkg.releases[0]!.zip)]));
    expect(fake!.count(/\/blob\//)).toBe(1);
    // The other replicas waited for the fill's commit and served the committed file.
    expect(new Set(zips.map((a) => a.headers['x-cache']))).toContain('HIT');
    await until(async () => (await advisoryLocks(db)).keys === 0);
  }, 60_000);

  it('a hosted publish through replica A is served by B and C (offline replicas: the name is hosted by its publish alone)', async () => {
    const dataDir = await tempDir();
    const users = await Users.open(dataDir);
    const secret = await users.add('ann', 'publisher');
    recordSecrets(secret);
    fake = await FakeUpstream.start();
    const db = await postgres.cluster().createDatabase();
    const replicas: Replica[] = [];
    // Offline, any name may be published, and is hosted once it is: B and C know of it only from the database.
    for (const id of ['a', 'b', 'c']) replicas.push(await spawnMirror(['--upstream', fake.v3, '--data', dataDir, '--database-url', db, '--replica-id', id, '--offline']));
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    expect((await send('GET', `${b.url}/v3/packages/team-tool/release/latest`)).status).toBe(404);
    const zip = componentZip('team-tool', '1.0.0');
    const step1 = await send('POST', `${a.url}/v3/packages/releases`, { ...signed(secret), ...FORM_HEADERS }, publishForm('team-tool', '1.0.0'));
    expect(step1.status, step1.text).toBe(200);
    const { url } = (step1.json() as { body: { url: string } }).body;
    recordSecrets(url.slice(url.lastIndexOf('/') + 1));
    expect((await send('PUT', url, {}, zip)).status).toBe(201);
    for (const m of [b, c]) {
      // The name is hosted there as soon as A's write's notification arrives (milliseconds).
      await until(async () => (await send('GET', `${m.url}/v3/packages/team-tool/release/latest`)).status === 200);
      const body = (await send('GET', `${m.url}/v3/packages/team-tool/release/latest`)).json() as { body: { tag_name: string } };
      expect(body.body.tag_name).toBe('1.0.0');
      const archive = await send('GET', `${m.url}/v3/packages/team-tool/zipball/1.0.0`);
      expect([archive.status, sha256(archive.body)]).toEqual([200, sha256(zip)]);
    }
    expect(fake.count(/team-tool/)).toBe(0); // a hosted name never reaches the upstream
  }, 60_000);

  it('SIGKILL of the replica doing a fill: the others still serve a correct archive (one refetch), and no lock is left', async () => {
    const { replicas, db } = await fleet();
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    const pkg = fake!.add('fc3', [{ version: '1.0.0' }]);
    // A's fill gets half the archive, then stalls.
    fake!.inject(/\/blob\//, { kind: 'stall-mid-body' }, 1);
    const onA = send('GET', `${a.url}/v3/packages/fc3/zipball/1.0.0`).catch(() => undefined);
    await until(() => fake!.count(/\/blob\//) === 1);
    await until(async () => (await advisoryLocks(db)).keys === 1);
    const others = Array.from({ length: 20 }, (_, i) => send('GET', `${[b, c][i % 2]!.url}/v3/packages/fc3/zipball/1.0.0`));
    await new Promise((r) => setTimeout(r, 300)); // they wait for A's lock (not a timed assertion: only to let them queue)
    expect(fake!.count(/\/blob\//)).toBe(1);
    a.child.kill('SIGKILL');
    fake!.clearFaults();
    const answers = await Promise.all(others);
    await onA;
    expect(answers.map((x) => x.status)).toEqual(Array(20).fill(200));
    expect(new Set(answers.map((x) => sha256(x.body)))).toEqual(new Set([sha256(pkg.releases[0]!.zip)]));
    expect(fake!.count(/\/blob\//)).toBe(2); // A's, cut, and one refetch
    await until(async () => (await advisoryLocks(db)).keys === 0);
  }, 60_000);

  it('kill the leader: another replica runs the next prefetch, and never two at once', async () => {
    const { replicas, db } = await fleet(['--prefetch', 'true', '--prefetch-schedule', '* * * * * *', '--prefetch-packages', 'fc3']);
    fake!.add('fc3', [{ version: '1.0.0' }]);
    const runs = (r: Replica) => r.logs.filter((l) => l.includes('"msg":"prefetch run finished"')).length;
    await until(() => replicas.some((r) => runs(r) >= 2), 10_000);
    const leaders = replicas.filter((r) => r.logs.some((l) => l.includes('"msg":"leading the fleet-wide jobs"')));
    expect(leaders).toHaveLength(1);
    const [old] = leaders as [Replica];
    expect(replicas.filter((r) => r !== old).map(runs)).toEqual([0, 0]);
    expect(await advisoryLocks(db)).toMatchObject({ leaders: 1 });
    const status = (await send('GET', `${old.url}/-/status`)).json() as { fleet: { replica: string; leader: boolean; leaderReplica: string; database: string } };
    expect(status.fleet).toMatchObject({ leader: true, database: 'postgres', leaderReplica: status.fleet.replica });

    old.child.kill('SIGKILL');
    const rest = replicas.filter((r) => r !== old);
    // A new leader within a minute (the lease is tried every 15 s).
    await until(() => rest.some((r) => runs(r) >= 1), 40_000);
    const next = rest.filter((r) => runs(r) > 0);
    expect(next).toHaveLength(1);
    expect(rest.filter((r) => r.logs.some((l) => l.includes('"msg":"leading the fleet-wide jobs"')))).toHaveLength(1);
    expect(await advisoryLocks(db)).toMatchObject({ leaders: 1 });
  }, 90_000);

  it('a command that needs the data folder alone (gc) refuses while any replica serves, and runs once none does', async () => {
    const { replicas, dataDir, db } = await fleet();
    const gc = () => runCli(['gc', '--quarantine', '--data', dataDir, '--database-url', db, '--offline']);
    const refused = await gc();
    expect(refused.code).not.toBe(0);
    expect(refused.output).toMatch(/in use by a running srm-mirror/);
    for (const r of replicas) {
      const gone = new Promise((resolve) => r.child.once('exit', resolve));
      r.child.kill('SIGTERM');
      await gone;
    }
    const ran = await gc();
    expect([ran.code, ran.output]).toEqual([0, expect.stringMatching(/removed 0/)]);
  }, 60_000);
});
