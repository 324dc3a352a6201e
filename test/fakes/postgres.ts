// A real PostgreSQL for the tests of the metadata store on it: Debian's server, installed here when it is missing (apt,
// as root), run as a throwaway cluster in a temp folder on a free loopback port, with fsync off (it is thrown away).
// initdb refuses to run as root: as root, the cluster belongs to the `postgres` user the package creates and its
// programs run as that user. Each test file starts its own cluster, makes databases in it, and stops it at the end.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { until } from '../helpers.js';
import { freePort, installPackages } from './machine.js';

const LIB = '/usr/lib/postgresql';

/** The newest installed server's bin folder. */
function installedBin(): string | undefined {
  if (!existsSync(LIB)) return undefined;
  const versions = readdirSync(LIB).filter((v) => existsSync(join(LIB, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(LIB, versions[0], 'bin');
}

/** Makes sure a PostgreSQL server is installed (Debian's `postgresql` package); a reason to skip only when it cannot be. */
export function ensurePostgres(): { bin: string } | { skip: string } {
  const installed = installedBin();
  if (installed) return { bin: installed };
  const failed = installPackages(['postgresql']);
  const bin = installedBin();
  return bin ? { bin } : { skip: failed ?? `postgresql was installed, but no server is in ${LIB}` };
}

/** The uid and gid programs of the cluster run as: the postgres user when we are root, else ourselves. */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
  return { uid: id('-u'), gid: id('-g') };
}

export class PostgresCluster {
  private databases = 0;

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly dir: string,
  ) {}

  static async start(bin: string): Promise<PostgresCluster> {
    // Its own folder, removed by stop(): not one of the test's temp folders, which a file's afterAll may remove first.
    const dir = await mkdtemp(join(tmpdir(), 'srm-mirror-pg-'));
    const user = runAs();
    if (user) chownSync(dir, user.uid, user.gid);
    const data = join(dir, 'data');
    const init = spawnSync(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'], { encoding: 'utf8', ...user });
    if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
    const port = await freePort();
    const settings = { listen_addresses: '127.0.0.1', port: String(port), unix_socket_directories: dir, fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '200' };
    const args = ['-D', data, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
    const child = spawn(join(bin, 'postgres'), args, { stdio: ['ignore', 'pipe', 'pipe'], ...user });
    const output: string[] = [];
    for (const s of [child.stdout!, child.stderr!]) s.on('data', (d: Buffer) => output.push(d.toString()));
    const cluster = new PostgresCluster(child, port, dir);
    process.once('exit', () => child.kill('SIGKILL'));
    await until(async () => {
      if (child.exitCode !== null) throw new Error(`postgres exited: ${output.join('')}`);
      return cluster.admin((c) => c.query('SELECT 1')).then(() => true, () => false);
    }, 20_000);
    return cluster;
  }

  /** The URL of a new, empty database of this cluster. */
  async createDatabase(): Promise<string> {
    const name = `srm_${process.pid}_${++this.databases}`;
    await this.admin((c) => c.query(`CREATE DATABASE ${name}`));
    return this.url(name);
  }

  url(database: string): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** Runs fn on a connection to the cluster's maintenance database (postgres). */
  async admin<T>(fn: (client: pg.Client) => Promise<T>, database = 'postgres'): Promise<T> {
    const client = new pg.Client({ connectionString: this.url(database), connectionTimeoutMillis: 2000 });
    client.on('error', () => {});
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGINT'); // fast shutdown: ends the sessions, no waiting for clients
      await exited;
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * A throwaway cluster for the test file that calls this (at its top): PostgreSQL installed if need be, the cluster
 * started before the file's tests and stopped after them. Where PostgreSQL cannot be had, a skipped test in the report
 * says why (`what`: what is skipped). `available`: whether to run the file's PostgreSQL tests.
 */
export function throwawayCluster(what: string): { readonly available: boolean; cluster(): PostgresCluster } {
  const postgres = ensurePostgres();
  let cluster: PostgresCluster | undefined;
  if ('skip' in postgres) {
    describe(`${what} (skipped: ${postgres.skip})`, () => {
      it.skip(`runs ${what}`, () => {});
    });
  } else {
    beforeAll(async () => {
      cluster = await PostgresCluster.start(postgres.bin);
    }, 60_000);
    afterAll(() => cluster?.stop());
  }
  return {
    available: 'bin' in postgres,
    cluster: () => {
      if (!cluster) throw new Error('the PostgreSQL cluster is not running');
      return cluster;
    },
  };
}
