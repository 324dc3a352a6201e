// A real PostgreSQL for the tests of the metadata store on it: Debian's server, installed here when it is missing (apt,
// as root), run as a throwaway cluster in a temp folder on a free loopback port, with fsync off (it is thrown away).
// initdb refuses to run as root: as root, the cluster belongs to the `postgres` user the package creates and its
// programs run as that user. Each test file starts its own cluster, makes databases in it, and stops it at the end.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, readdirSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { tempDir, until } from '../helpers.js';

const LIB = '/usr/lib/postgresql';

/** The newest installed server's bin folder. */
function installedBin(): string | undefined {
  if (!existsSync(LIB)) return undefined;
  const versions = readdirSync(LIB).filter((v) => existsSync(join(LIB, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(LIB, versions[0], 'bin');
}

/** Makes sure a PostgreSQL server is installed (Debian's `postgresql` package); a reason to skip only when it cannot be. */
export function ensurePostgres(): { bin: string } | { skip: string } {
  let bin = installedBin();
  if (bin) return { bin };
  if (process.getuid?.() !== 0) return { skip: 'PostgreSQL is not installed, and the tests do not run as root to install it' };
  if (!existsSync('/usr/bin/apt-get')) return { skip: 'PostgreSQL is not installed, and there is no apt-get here' };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'postgresql'], { env, encoding: 'utf8' });
  let result = install();
  if (result.status !== 0) {
    spawnSync('apt-get', ['update'], { env, encoding: 'utf8' }); // a fresh machine's package lists may be empty
    result = install();
  }
  bin = installedBin();
  if (!bin) return { skip: `could not install PostgreSQL: ${(result.stderr || result.stdout).trim().split('\n').pop()}` };
  return { bin };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
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
  ) {}

  static async start(bin: string): Promise<PostgresCluster> {
    const dir = await tempDir('srm-mirror-pg-');
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
    const cluster = new PostgresCluster(child, port);
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
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGINT'); // fast shutdown: ends the sessions, no waiting for clients
    await exited;
  }
}
