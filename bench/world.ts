// What the scenarios run against: archives written to a temp folder, the fake upstream serving them, the mirror
// (its own process, from dist/) and nginx (one worker, serving the same bytes from disk), all on 127.0.0.1.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { firstLine, freePort, PeakRss, start, stop, waitReady, type Child } from './procs.js';
import type { Manifest, UpstreamCounts } from './upstream-server.js';

export const MiB = 1024 * 1024;

export interface WorldOptions {
  readonly root: string;
  /** The mirror's entry point (dist/main.js). */
  readonly mainJs: string;
  readonly coldRuns: number;
  readonly coldMiB: number;
  readonly bigMiB: number;
  /** Folder for the mirror's --cpu-prof output, when wanted. */
  readonly cpuProfDir: string | undefined;
  /** Caps each blob download from the fake upstream (MB/s); 0 = full speed. */
  readonly upstreamMBps: number;
}

/** Package names, and the versions the fake upstream has of each. */
export const SMALL = { name: 'bench-small', version: '1.0.0' }; // 1 MiB; its release/latest is the metadata scenario
export const COLD = 'bench-cold'; // coldRuns versions of coldMiB, each fetched once through the mirror
export const BIG = { name: 'bench-big', version: '1.0.0' }; // one archive of bigMiB

export class World {
  readonly coldVersions: string[];
  mirrorChild!: Child;
  rss!: PeakRss;
  private upstreamChild!: Child;
  private nginxChild!: Child;
  private upstreamPort = 0;
  private mirrorPort = 0;
  private mirrorFlags: readonly string[] = [];
  private nginxPort = 0;

  private constructor(
    readonly dir: string,
    private readonly o: WorldOptions,
  ) {
    this.coldVersions = Array.from({ length: o.coldRuns }, (_, i) => `64.0.${i + 1}`);
  }

  /** Creates the temp folder; `onDir` learns it first, so that it is removed even if what follows fails. */
  static async create(o: WorldOptions, onDir: (dir: string) => void): Promise<World> {
    const dir = mkdtempSync(join(tmpdir(), 'srm-mirror-bench-'));
    onDir(dir);
    chmodSync(dir, 0o755); // nginx's worker runs as nobody and reads from here
    const world = new World(dir, o);
    await world.writeArchives();
    await world.startAll();
    return world;
  }

  get upstream(): string {
    return `http://127.0.0.1:${this.upstreamPort}`;
  }

  get mirror(): string {
    return `http://127.0.0.1:${this.mirrorPort}`;
  }

  get nginx(): string {
    return `http://127.0.0.1:${this.nginxPort}`;
  }

  /** The fake upstream's request counts so far. */
  async counts(): Promise<UpstreamCounts> {
    const res = await request(`${this.upstream}/-/count`);
    return (await res.body.json()) as UpstreamCounts;
  }

  /** Puts a file where nginx serves it, as /name. */
  serveFromNginx(name: string, bytes: Uint8Array): void {
    writeFileSync(join(this.dir, 'www', name), bytes, { mode: 0o644 });
  }

  async nginxReady(path: string): Promise<void> {
    await waitReady(this.nginx + path, this.nginxChild);
  }

  /**
   * Stops the mirror and starts it again on the same port and data folder, with a fresh peak-RSS watch; `flags`
   * are added to its command line from now on (e.g. ['--verify-on-serve', 'true']).
   */
  async restartMirror(flags: readonly string[] = this.mirrorFlags): Promise<void> {
    this.rss.close();
    await stop(this.mirrorChild, 15_000);
    this.mirrorFlags = flags;
    await this.startMirror();
  }

  async stop(): Promise<void> {
    this.rss.close();
    await stop(this.nginxChild);
    await stop(this.mirrorChild, 15_000);
    await stop(this.upstreamChild);
  }

  private path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  private async writeArchives(): Promise<void> {
    for (const d of ['blobs', 'mirror-data', 'www', 'nginx']) mkdirSync(this.path(d), { mode: 0o755 });
    const { coldMiB, bigMiB } = this.o;
    const manifest: Manifest = {
      packages: [
        { name: SMALL.name, releases: [{ version: SMALL.version, file: this.path('blobs', 'small.zip') }] },
        { name: COLD, releases: this.coldVersions.map((v) => ({ version: v, file: this.path('blobs', `cold-${v}.zip`) })).reverse() },
        { name: BIG.name, releases: [{ version: BIG.version, file: this.path('blobs', 'big.zip') }] },
      ],
    };
    log(`writing ${(1 + this.coldVersions.length * coldMiB + bigMiB).toLocaleString()} MiB of archives under ${this.dir}`);
    await writeBlob(this.path('blobs', 'small.zip'), MiB, 'small');
    for (const v of this.coldVersions) await writeBlob(this.path('blobs', `cold-${v}.zip`), coldMiB * MiB, `cold-${v}`);
    await writeBlob(this.path('blobs', 'big.zip'), bigMiB * MiB, 'big');
    // nginx serves the same 1 MiB file.
    copyFileSync(this.path('blobs', 'small.zip'), this.path('www', 'small.zip'));
    writeFileSync(this.path('manifest.json'), JSON.stringify(manifest));
    spawnSync('sync'); // so that the kernel writing the archives back to disk does not overlap the measurements
  }

  private async startAll(): Promise<void> {
    this.upstreamChild = start('upstream', process.execPath, ['--import', 'tsx', join(this.o.root, 'bench', 'upstream-server.ts'), this.path('manifest.json'), String(this.o.upstreamMBps)], {
      cwd: this.o.root,
      stdout: 'pipe',
    });
    this.upstreamPort = (JSON.parse(await firstLine(this.upstreamChild)) as { port: number }).port;
    this.mirrorPort = await freePort();
    await this.startMirror();
    this.nginxPort = await freePort();
    this.nginxChild = startNginx(this.path('nginx'), this.path('www'), this.nginxPort);
  }

  /** The mirror from dist/, with no SRM_MIRROR_* setting from our environment leaking in. */
  private async startMirror(): Promise<void> {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SRM_MIRROR_')));
    const prof = this.o.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', this.o.cpuProfDir] : [];
    // No scheduled prefetch: a run that fell into a measured window would add upstream requests to it.
    const args = ['serve', '--host', '127.0.0.1', '--port', String(this.mirrorPort), '--data', this.path('mirror-data'), '--upstream', `${this.upstream}/v3`, '--log-level', 'warn', '--prefetch', 'false', ...this.mirrorFlags];
    // The node flags the mirror runs with are on the first line of dist/main.js (its shebang): run them here too.
    const nodeFlags = (readFileSync(this.o.mainJs, 'utf8').split('\n')[0] ?? '').replace(/^#!.*?\bnode\b\s*/, '').split(/\s+/).filter(Boolean);
    this.mirrorChild = start('mirror', process.execPath, [...nodeFlags, ...prof, this.o.mainJs, ...args], { cwd: this.o.root, env, onStderr: mirrorLog.add });
    await waitReady(`${this.mirror}/-/health`, this.mirrorChild);
    this.rss = new PeakRss(this.mirrorChild.pid);
  }
}

/** The mirror's log lines (it runs at --log-level warn), counted by message; only the first two of each are echoed. */
export const mirrorLog = {
  counts: new Map<string, number>(),
  add(line: string): boolean {
    let msg = line.slice(0, 80);
    try {
      const j = JSON.parse(line) as { level?: string; msg?: string; error?: string };
      msg = `${j.level} "${j.msg}"${j.error ? ` (${j.error.split('\n')[0]})` : ''}`;
    } catch {
      // not one of the mirror's JSON lines
    }
    mirrorLog.counts.set(msg, (mirrorLog.counts.get(msg) ?? 0) + 1);
    return mirrorLog.counts.get(msg)! <= 2;
  },
  summary(): string {
    return [...mirrorLog.counts].map(([msg, n]) => `${n} x ${msg}`).join('; ');
  },
};

/** wrk and nginx from Debian, installed by bench/setup.sh when missing. */
export function ensureTools(root: string): void {
  const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
  if (has('wrk') && existsSync(nginxBin())) return;
  log('wrk or nginx is missing: running bench/setup.sh');
  const r = spawnSync('sh', [join(root, 'bench', 'setup.sh')], { stdio: 'inherit' });
  if (r.status !== 0 || !has('wrk') || !existsSync(nginxBin())) throw new Error('bench/setup.sh could not install wrk and nginx');
}

export function nginxBin(): string {
  return existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';
}

/** dist/main.js, built when missing; a warning when src/ is newer than the build. */
export function ensureBuilt(root: string): string {
  const mainJs = join(root, 'dist', 'main.js');
  if (!existsSync(mainJs)) {
    log('dist/main.js is missing: running npm run build');
    execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
  }
  if (newestMtime(join(root, 'src')) > statSync(mainJs).mtimeMs) {
    log('warning: src/ changed after dist/ was built; run npm run build to bench the current code');
  }
  return mainJs;
}

function newestMtime(dir: string): number {
  return Math.max(
    0,
    ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newestMtime(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)),
  );
}

/**
 * Writes a zip of exactly `size` bytes holding one stored entry of incompressible data (different in every 8 MiB of
 * every file): the mirror stores only archives that are structurally valid zips.
 */
export async function writeBlob(path: string, size: number, label: string): Promise<void> {
  const name = Buffer.from(`${label}.bin`);
  const dataSize = size - (30 + name.length) - (46 + name.length) - 22;
  const chunk = randomBytes(Math.min(dataSize, 8 * MiB));
  const file = await open(path, 'w', 0o644);
  const writeAt = async (buf: Buffer, pos: number) => {
    for (let done = 0; done < buf.length; ) done += (await file.write(buf, done, buf.length - done, pos + done)).bytesWritten;
  };
  try {
    let crc = 0;
    const dataAt = 30 + name.length;
    for (let off = 0; off < dataSize; off += chunk.length) {
      chunk.write(`${label}:${off};`, 0);
      const part = chunk.subarray(0, Math.min(chunk.length, dataSize - off));
      crc = crc32(part, crc);
      await writeAt(part, dataAt + off);
    }
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(dataSize, 18); // compressed size (stored)
    local.writeUInt32LE(dataSize, 22);
    local.writeUInt16LE(name.length, 26);
    await writeAt(Buffer.concat([local, name]), 0);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(dataSize, 20);
    central.writeUInt32LE(dataSize, 24);
    central.writeUInt16LE(name.length, 28);
    const cdAt = dataAt + dataSize;
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(1, 8);
    end.writeUInt16LE(1, 10);
    end.writeUInt32LE(46 + name.length, 12);
    end.writeUInt32LE(cdAt, 16);
    await writeAt(Buffer.concat([central, name, end]), cdAt);
  } finally {
    await file.close();
  }
}

/** nginx with one worker serving `www` from disk, as a child (daemon off), with everything it writes in `prefix`. */
function startNginx(prefix: string, www: string, port: number): Child {
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1;
daemon off;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 1024; }
http {
  types { application/json json; application/zip zip; }
  default_type application/octet-stream;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  server {
    listen 127.0.0.1:${port};
    root ${www};
  }
}
`,
  );
  return start('nginx', nginxBin(), ['-p', prefix, '-e', join(prefix, 'error.log'), '-c', conf]);
}

export function log(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}
