// What the scenarios run against, all on 127.0.0.1: archives written to a temp folder; the fake v3 upstream and
// the fake npm upstream (client core); and on the server core the mirrors (one process per configuration, from
// dist/ or BENCH_MIRROR, under `node` or BENCH_NODE), nginx (one worker, serving the same bytes from disk, and in
// front of the offload mirror), the bare pass-through proxy and Verdaccio. See pin.ts for the cores.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { childPids } from './cpu.js';
import { CLIENT_CORE, pinSelf, SERVER_CORE } from './pin.js';
import { readmeNginxServer } from '../test/fakes/nginx-config.js';
import { shebangFlags } from '../test/fakes/node-flags.js';
import { firstLine, freePort, log, PeakRss, start, stop, waitReady, type Child } from './procs.js';
import type { Manifest, UpstreamCounts } from './upstream-server.js';
import { verdaccioConfig } from './verdaccio.js';
import { dataSizeFor, storedZip } from './zip.js';

export { log };
export const MiB = 1024 * 1024;

/** One mirror process: its name in the report, its extra `serve` flags. */
export interface MirrorSpec {
  readonly name: string;
  readonly flags: readonly string[];
  /** The node binary it runs under (default: the world's). */
  readonly node?: string;
}

export interface WorldOptions {
  readonly root: string;
  /** The mirror's entry point (dist/main.js). */
  readonly mainJs: string;
  /** The node binary the mirrors and the pass-through proxy run under. */
  readonly node: string;
  readonly mirrors: readonly MirrorSpec[];
  /** The mirror nginx fronts with X-Accel-Redirect offload, if any. */
  readonly offload?: string;
  readonly passthrough: boolean;
  /** A bare node:http server answering with nginx's latest.json (bench/bare-node.ts). */
  readonly bareNode?: boolean;
  /** Verdaccio's bin script, when it is a peer in this run. */
  readonly verdaccio?: string;
  readonly coldRuns: number;
  readonly coldMiB: number;
  /** The cap of the capped cold package's blobs, MB/s. */
  readonly coldMBps: number;
  /** 0: no big archive. */
  readonly bigMiB: number;
  /** How many distinct 1 MiB archives bench-mem offers (to fill the in-memory archive cache); 0: none. */
  readonly memArchives: number;
  /** Folder for the mirrors' --cpu-prof output, when wanted. */
  readonly cpuProfDir: string | undefined;
}

/** Package names, and the versions the fake upstream has of each. */
export const SMALL = { name: 'bench-small', version: '1.0.0' }; // 1 MiB; its release/latest is the metadata scenario
export const OFFLOAD = { name: 'bench-offload', version: '1.0.0' }; // 8 MiB, for nginx offload
export const COLD = 'bench-cold'; // coldRuns versions of coldMiB behind the capped upstream, each fetched once
export const COLD_FAST = 'bench-cold-fast'; // the same at loopback speed
export const BIG = { name: 'bench-big', version: '1.0.0' }; // one archive of bigMiB
export const MEM = 'bench-mem'; // generated 1 MiB archives, versions 1.0.1 .. 1.0.memArchives
export const OFFLOAD_MIB = 8;

/** A mirror process the world started. */
export class Mirror {
  child!: Child;
  rss!: PeakRss;
  port = 0;

  constructor(
    readonly spec: MirrorSpec,
    readonly dataDir: string,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number {
    return this.child.pid;
  }
}

export class World {
  /** The cold packages' versions: 64.0.0, for warming up, then one per measured round. */
  readonly coldVersions: string[];
  readonly mirrors = new Map<string, Mirror>();
  private readonly children: Child[] = [];
  private upstreamPort = 0;
  private npmPort = 0;
  private nginxPort = 0;
  private offloadPort = 0;
  private passthroughPort = 0;
  private bareNodePort = 0;
  private verdaccioPort = 0;
  private nginxChild: Child | undefined;
  private passthroughChild: Child | undefined;
  private bareNodeChild: Child | undefined;
  private verdaccioChild: Child | undefined;

  private constructor(
    readonly dir: string,
    readonly o: WorldOptions,
  ) {
    this.coldVersions = Array.from({ length: o.coldRuns + 1 }, (_, i) => `64.0.${i}`);
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

  mirror(name: string): Mirror {
    const m = this.mirrors.get(name);
    if (!m) throw new Error(`no mirror ${name} in this run`);
    return m;
  }

  get upstream(): string {
    return `http://127.0.0.1:${this.upstreamPort}`;
  }

  get npmUpstream(): string {
    return `http://127.0.0.1:${this.npmPort}`;
  }

  get nginx(): string {
    return `http://127.0.0.1:${this.nginxPort}`;
  }

  /** nginx proxying to the offload mirror, sending its archives itself. */
  get nginxOffload(): string {
    return `http://127.0.0.1:${this.offloadPort}`;
  }

  get passthrough(): string {
    return `http://127.0.0.1:${this.passthroughPort}`;
  }

  get bareNode(): string {
    return `http://127.0.0.1:${this.bareNodePort}`;
  }

  get verdaccio(): string {
    return `http://127.0.0.1:${this.verdaccioPort}`;
  }

  /** nginx's worker processes (where its CPU time goes; the master only manages them). */
  nginxWorkers(): number[] {
    return this.nginxChild ? childPids(this.nginxChild.pid) : [];
  }

  get passthroughPid(): number {
    return this.passthroughChild!.pid;
  }

  get bareNodePid(): number {
    return this.bareNodeChild!.pid;
  }

  get verdaccioPid(): number {
    return this.verdaccioChild!.pid;
  }

  /** The fake upstream's request counts so far. */
  async counts(): Promise<UpstreamCounts> {
    const res = await request(`${this.upstream}/-/count`);
    return (await res.body.json()) as UpstreamCounts;
  }

  /** The fake npm upstream's request count so far. */
  async npmCount(): Promise<number> {
    const res = await request(`${this.npmUpstream}/-/count`);
    return ((await res.body.json()) as { total: number }).total;
  }

  /** Puts a file where nginx serves it, as /name. */
  serveFromNginx(name: string, bytes: Uint8Array): void {
    writeFileSync(join(this.dir, 'www', name), bytes, { mode: 0o644 });
  }

  async nginxReady(path: string): Promise<void> {
    await waitReady(this.nginx + path, this.nginxChild!);
  }

  async stop(): Promise<void> {
    for (const m of this.mirrors.values()) m.rss.close();
    await Promise.all([...this.children].reverse().map((c) => stop(c, 15_000)));
  }

  private path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  private async writeArchives(): Promise<void> {
    for (const d of ['blobs', 'www', 'nginx', 'verdaccio']) mkdirSync(this.path(d), { mode: 0o755 });
    const { coldMiB, bigMiB, coldMBps, memArchives } = this.o;
    const blob = (name: string) => this.path('blobs', name);
    const cold = (pkg: string) => this.coldVersions.map((v) => ({ version: v, file: blob(`${pkg}-${v}.zip`) })).reverse();
    const manifest: Manifest = {
      packages: [
        { name: SMALL.name, releases: [{ version: SMALL.version, file: blob('small.zip') }] },
        { name: OFFLOAD.name, releases: [{ version: OFFLOAD.version, file: blob('offload.zip') }] },
        ...(this.o.coldRuns ? [{ name: COLD, releases: cold(COLD), mbps: coldMBps }, { name: COLD_FAST, releases: cold(COLD_FAST) }] : []),
        ...(bigMiB ? [{ name: BIG.name, releases: [{ version: BIG.version, file: blob('big.zip') }] }] : []),
        ...(memArchives ? [{ name: MEM, generated: { count: memArchives, size: MiB } }] : []),
      ],
    };
    const total = 1 + OFFLOAD_MIB + 2 * this.coldVersions.length * coldMiB + bigMiB;
    log(`writing ${total.toLocaleString()} MiB of archives under ${this.dir}`);
    await writeBlob(blob('small.zip'), MiB, 'small');
    await writeBlob(blob('offload.zip'), OFFLOAD_MIB * MiB, 'offload');
    for (const pkg of this.o.coldRuns ? [COLD, COLD_FAST] : []) {
      for (const v of this.coldVersions) await writeBlob(blob(`${pkg}-${v}.zip`), coldMiB * MiB, `${pkg}-${v}`);
    }
    if (bigMiB) await writeBlob(blob('big.zip'), bigMiB * MiB, 'big');
    // nginx serves the same files.
    copyFileSync(blob('small.zip'), this.path('www', 'small.zip'));
    copyFileSync(blob('offload.zip'), this.path('www', 'offload.zip'));
    writeFileSync(this.path('manifest.json'), JSON.stringify(manifest));
    spawnSync('sync'); // so that the kernel writing the archives back to disk does not overlap the measurements
  }

  private async startAll(): Promise<void> {
    const tsx = (script: string, args: string[], core: number, node = process.execPath) =>
      start(script.replace(/\.ts$/, ''), node, ['--import', 'tsx', join(this.o.root, 'bench', script), ...args], { cwd: this.o.root, stdout: 'pipe', core });
    const portOf = async (c: Child) => (JSON.parse(await firstLine(c)) as { port: number }).port;
    const upstream = this.own(tsx('upstream-server.ts', [this.path('manifest.json')], CLIENT_CORE));
    this.upstreamPort = await portOf(upstream);
    for (const spec of this.o.mirrors) {
      const m = new Mirror(spec, this.path(`mirror-${spec.name}`));
      mkdirSync(m.dataDir, { mode: 0o755 });
      m.port = await freePort();
      await this.startMirror(m);
      this.mirrors.set(spec.name, m);
    }
    if (this.o.passthrough) {
      this.passthroughChild = this.own(tsx('passthrough.ts', [this.upstream], SERVER_CORE, this.o.node));
      this.passthroughPort = await portOf(this.passthroughChild);
    }
    if (this.o.bareNode) {
      this.bareNodeChild = this.own(tsx('bare-node.ts', [this.path('www', 'latest.json')], SERVER_CORE, this.o.node));
      this.bareNodePort = await portOf(this.bareNodeChild);
    }
    this.nginxPort = await freePort();
    const offload = this.o.offload === undefined ? undefined : this.mirror(this.o.offload);
    if (offload) this.offloadPort = await freePort();
    this.nginxChild = this.own(startNginx(this.path('nginx'), this.path('www'), this.nginxPort, offload && { port: this.offloadPort, mirror: offload }));
    if (this.o.verdaccio) {
      const npm = this.own(tsx('npm-upstream.ts', [String(MiB)], CLIENT_CORE));
      this.npmPort = await portOf(npm);
      this.verdaccioPort = await freePort();
      const config = verdaccioConfig(this.path('verdaccio'), this.npmUpstream, this.verdaccioPort);
      // It warns that it runs as root (as the bench does here): not worth echoing.
      const quiet = (line: string) => !/superuser privileges|--trace-warnings/.test(line);
      this.verdaccioChild = this.own(start('verdaccio', process.execPath, [this.o.verdaccio, '-c', config], { cwd: this.path('verdaccio'), core: SERVER_CORE, onStderr: quiet }));
      await waitReady(`${this.verdaccio}/-/ping`, this.verdaccioChild, 60_000);
    }
  }

  private own(c: Child): Child {
    this.children.push(c);
    return c;
  }

  /** A mirror from dist/, with no SRM_MIRROR_* setting from our environment leaking in. */
  private async startMirror(m: Mirror): Promise<void> {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SRM_MIRROR_')));
    const prof = this.o.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', this.o.cpuProfDir] : [];
    // No scheduled prefetch: a run that fell into a measured window would add upstream requests to it.
    const args = ['serve', '--host', '127.0.0.1', '--port', String(m.port), '--data', m.dataDir, '--upstream', `${this.upstream}/v3`, '--log-level', 'warn', '--prefetch', 'false', ...m.spec.flags];
    const node = m.spec.node ?? this.o.node;
    m.child = this.own(start(`mirror ${m.spec.name}`, node, [...shebangFlags(this.o.mainJs), ...prof, this.o.mainJs, ...args], { cwd: this.o.root, env, onStderr: mirrorLog.add, core: SERVER_CORE }));
    await waitReady(`${m.url}/-/health`, m.child);
    m.rss = new PeakRss(m.child.pid);
  }
}

/** The `serve` flags a build of the mirror knows, from its help text (`serve --help`, or the general --help). */
export function mirrorFlags(node: string, mainJs: string): Set<string> {
  const help = [['serve', '--help'], ['--help']]
    .map((a) => spawnSync(node, [mainJs, ...a], { encoding: 'utf8', timeout: 30_000 }))
    .map((r) => `${r.stdout ?? ''}\n${r.stderr ?? ''}`)
    .join('\n');
  return new Set([...help.matchAll(/(--[a-z][a-z0-9-]*)/g)].map((m) => m[1]!));
}

export function nodeVersion(node: string): string {
  return spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim();
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

/**
 * What every pinned bench does first: pins itself to the client core, installs wrk and nginx when missing, and
 * names the mirror build (BENCH_MIRROR, else dist/main.js, built when missing) and the node it runs under (BENCH_NODE).
 */
export function prepareBench(root: string): { mainJs: string; node: string } {
  pinSelf();
  ensureTools(root);
  return { mainJs: process.env.BENCH_MIRROR || ensureBuilt(root), node: process.env.BENCH_NODE || process.execPath };
}

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
  const entry = `${label}.bin`;
  const dataSize = dataSizeFor(entry, size);
  const chunk = randomBytes(Math.min(dataSize, 8 * MiB));
  const file = await open(path, 'w', 0o644);
  const writeAt = async (buf: Buffer, pos: number) => {
    for (let done = 0; done < buf.length; ) done += (await file.write(buf, done, buf.length - done, pos + done)).bytesWritten;
  };
  try {
    let crc = 0;
    const dataAt = 30 + Buffer.byteLength(entry);
    for (let off = 0; off < dataSize; off += chunk.length) {
      chunk.write(`${label}:${off};`, 0);
      const part = chunk.subarray(0, Math.min(chunk.length, dataSize - off));
      crc = crc32(part, crc);
      await writeAt(part, dataAt + off);
    }
    const { head, tail } = storedZip(entry, dataSize, crc);
    await writeAt(head, 0);
    await writeAt(tail, dataAt + dataSize);
  } finally {
    await file.close();
  }
}

/**
 * nginx with one worker, as a child (daemon off) with everything it writes in `prefix`: serving `www` from disk on
 * `port`, and, with `offload`, proxying to that mirror on its own port while sending the archives the mirror
 * names in X-Accel-Redirect straight from the mirror's data folder (an internal location).
 */
function startNginx(prefix: string, www: string, port: number, offload: { port: number; mirror: Mirror } | undefined): Child {
  const conf = join(prefix, 'nginx.conf');
  // docs/nginx.md's configuration ("Behind nginx"), as documented, in front of the offload mirror.
  const offloadConf = offload ? `\n${readmeNginxServer({ mirrorPort: offload.mirror.port, port: offload.port, dataDir: offload.mirror.dataDir })}` : '';
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
  }${offloadConf}
}
`,
  );
  return start('nginx', nginxBin(), ['-p', prefix, '-e', join(prefix, 'error.log'), '-c', conf], { core: SERVER_CORE });
}
