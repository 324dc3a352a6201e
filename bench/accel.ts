// `npm run bench:accel`: nginx offload (server.accelRedirect) for cached archives of several sizes, against nginx
// sending the same file by itself, and against the mirror sending it through the same nginx (no offload): the
// figures server.accelRedirectMinSize's default is picked from. It asserts nothing.
//
// nginx (one worker, docs/nginx.md's configuration, plus a plain location on the same files) and the two mirrors
// (dist/, with and without --accel-redirect) run on core 0, wrk and this process on core 1 (taskset). After a warm-up
// the three take turns, round after round, the order rotating; each row shows the median round and the range of the
// per-round ratios (each ratio within one round: the pairs share whatever else the machine did meanwhile).
//
// Settings: ACCEL_SIZES_KIB (64,256,1024,8192), ACCEL_ROUNDS (5), ACCEL_SECONDS (3), ACCEL_CONNECTIONS (8).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { readmeNginxServer } from '../test/fakes/nginx-config.js';
import { mbps, wrk, type Measure } from './load.js';
import { envInt, firstLine, freePort, runBench, start, stopAllAndRemove, track, waitReady, type Child } from './procs.js';
import { ensureBuilt, ensureTools, nginxBin, writeBlob } from './world.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SIZES_KIB = (process.env.ACCEL_SIZES_KIB ?? '64,256,1024,8192').split(',').map(Number);
const ROUNDS = envInt('ACCEL_ROUNDS', 5);
const SECONDS = envInt('ACCEL_SECONDS', 3);
const CONNECTIONS = envInt('ACCEL_CONNECTIONS', 8);
const PREFIX = '/_srm/archives/';
const dir = mkdtempSync(join(tmpdir(), 'srm-accel-'));
chmodSync(dir, 0o755); // nginx's worker runs as nobody and reads the mirror's files

interface Archive {
  readonly kib: number;
  readonly name: string;
  readonly digest: string;
  readonly file: string;
}

const pinned = (core: number, command: string, args: string[]): [string, string[]] => ['taskset', ['-c', String(core), command, ...args]];

async function main(): Promise<void> {
  const mainJs = ensureBuilt(ROOT);
  ensureTools(ROOT);
  if (spawnSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' }).status !== 0) throw new Error('taskset failed: 2 cores needed');
  mkdirSync(join(dir, 'blobs'));
  const archives: Archive[] = [];
  for (const kib of SIZES_KIB) {
    const file = join(dir, 'blobs', `accel-${kib}.zip`);
    await writeBlob(file, kib * 1024, `accel-${kib}`);
    archives.push({ kib, name: `accel-${kib}`, digest: createHash('sha256').update(readFileSync(file)).digest('hex'), file });
  }
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ packages: archives.map((a) => ({ name: a.name, releases: [{ version: '1.0.0', file: a.file }] })) }));
  const upstream = start('upstream', process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'upstream-server.ts'), join(dir, 'manifest.json')], { cwd: ROOT, stdout: 'pipe' });
  const upstreamUrl = `http://127.0.0.1:${(JSON.parse(await firstLine(upstream)) as { port: number }).port}/v3`;

  const nodeFlags = (readFileSync(mainJs, 'utf8').split('\n')[0] ?? '').replace(/^#!.*?\bnode\b\s*/, '').split(/\s+/).filter(Boolean);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SRM_MIRROR_')));
  const mirror = async (name: string, flags: string[]) => {
    const port = await freePort();
    const data = join(dir, name);
    const args = ['serve', '--host', '127.0.0.1', '--port', String(port), '--data', data, '--upstream', upstreamUrl, '--log-level', 'warn', '--prefetch', 'false', ...flags];
    const child: Child = start(name, ...pinned(0, process.execPath, [...nodeFlags, mainJs, ...args]), { cwd: ROOT, env });
    await waitReady(`http://127.0.0.1:${port}/-/health`, child);
    return { port, data };
  };
  const offloading = await mirror('mirror-accel', ['--accel-redirect', PREFIX, '--accel-redirect-min-size', '0']);
  const streaming = await mirror('mirror-plain', []);

  // docs/nginx.md's server block twice: one in front of each mirror, the first with a plain location on the same files.
  const [portA, portB] = [await freePort(), await freePort()];
  const server = (port: number, m: { port: number; data: string }, upstreamName: string, extra = '') =>
    readmeNginxServer({ mirrorPort: m.port, port, dataDir: m.data, upstream: upstreamName }).replace(`location ${PREFIX} {`, `${extra}\n  location ${PREFIX} {`);
  const direct = `location /direct/ { alias ${offloading.data}/archives/sha256/; }`;
  const ngx = join(dir, 'nginx');
  mkdirSync(ngx);
  writeFileSync(
    join(ngx, 'nginx.conf'),
    [
      'worker_processes 1;',
      'daemon off;',
      `pid ${ngx}/nginx.pid;`,
      `error_log ${ngx}/error.log warn;`,
      'events { worker_connections 1024; }',
      'http {',
      '  default_type application/octet-stream;',
      '  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${ngx}/${t};`),
      server(portA, offloading, 'srm_accel', direct),
      server(portB, streaming, 'srm_plain'),
      '}',
    ].join('\n'),
  );
  const nginx = start('nginx', ...pinned(0, nginxBin(), ['-p', ngx, '-e', join(ngx, 'error.log'), '-c', join(ngx, 'nginx.conf')]));
  const zipball = (a: Archive) => `/v3/packages/${a.name}/zipball/1.0.0`;
  // In this order: the file is nginx's to send alone once a mirror has cached it.
  const variants = (a: Archive) => ({
    'nginx + offload': `http://127.0.0.1:${portA}${zipball(a)}`,
    'nginx + mirror': `http://127.0.0.1:${portB}${zipball(a)}`,
    'nginx alone': `http://127.0.0.1:${portA}/direct/${a.digest.slice(0, 2)}/${a.digest}`,
  });
  await waitReady(variants(archives[0]!)['nginx + mirror'], nginx);
  // Each archive cached (and checked once) by both mirrors, then every URL answers the whole archive.
  for (const a of archives) {
    for (const url of Object.values(variants(a))) {
      for (let i = 0; i < 2; i++) {
        const res = await request(url);
        const body = Buffer.from(await res.body.arrayBuffer());
        if (res.statusCode !== 200 || body.length !== a.kib * 1024) throw new Error(`${url}: ${res.statusCode}, ${body.length} bytes`);
      }
    }
  }
  const o = { connections: CONNECTIONS, threads: 1, seconds: SECONDS, scriptDir: dir, track };
  console.log(`nginx + 2 mirrors on core 0, wrk on core 1; ${ROUNDS} rounds of ${SECONDS}s, ${CONNECTIONS} connections`);
  console.log('size      | nginx alone MB/s | nginx + offload MB/s | nginx + mirror MB/s | offload/alone (rounds) | mirror/alone (rounds) | offload/mirror (rounds)');
  for (const a of archives) {
    const urls = Object.entries(variants(a));
    for (const [, url] of urls) await wrk(url, { ...o, seconds: 1 }); // warm-up
    const rounds: Array<Record<string, Measure>> = [];
    for (let r = 0; r < ROUNDS; r++) {
      const round: Record<string, Measure> = {};
      for (let i = 0; i < urls.length; i++) {
        const [name, url] = urls[(i + r) % urls.length]!;
        const m = await wrk(url, o);
        if (m.errors > 0) throw new Error(`${name} ${a.kib} KiB: ${m.errorDetail}`);
        round[name] = m;
      }
      rounds.push(round);
    }
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const speed = (name: string) => median(rounds.map((r) => mbps(r[name]!))).toFixed(0);
    const ratio = (x: string, y: string) => {
      const rs = rounds.map((r) => mbps(r[x]!) / mbps(r[y]!));
      return `${median(rs).toFixed(2)} (${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)})`;
    };
    console.log(
      [`${a.kib} KiB`.padEnd(9), speed('nginx alone').padStart(16), speed('nginx + offload').padStart(20), speed('nginx + mirror').padStart(19), ratio('nginx + offload', 'nginx alone').padStart(22), ratio('nginx + mirror', 'nginx alone').padStart(21), ratio('nginx + offload', 'nginx + mirror').padStart(23)].join(' | '),
    );
  }
}

runBench('bench:accel', main, stopAllAndRemove(() => dir));
