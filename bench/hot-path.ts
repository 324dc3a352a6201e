// `npm run bench:hot`: the cached-metadata scenario alone (GET /v3/packages/bench-small/release/latest, a HIT on
// the hot path), for one or more builds of the mirror side by side, to measure what a change costs the hot path.
//
//   node --import tsx bench/hot-path.ts [MAIN_JS[:LOG_LEVEL] ...]      (default: dist/main.js)
//
// Each build runs as its own process on its own data folder, against one fake upstream (bench/upstream-server.ts),
// with its log written to a file (as a deployment writes it to a pipe or a file, not to nothing). After a warm-up the
// builds take turns, round after round, with wrk (16 connections, 1 thread); each row is the median round by req/s,
// with every round listed so that the spread is seen. It asserts nothing.
//
// Settings: HOT_ROUNDS (5), HOT_SECONDS (3), HOT_WARMUP (2), HOT_CONNECTIONS (16), HOT_LOG_LEVEL (info: the level
// the mirror runs at, the default of `srm-mirror serve`), HOT_ARGS (more `serve` flags, space separated).
//
// HOT_COUNT=instructions counts instead of timing. Each build runs under valgrind (callgrind), uninstrumented through
// its start and a warm-up of HOT_WARMUP_REQUESTS (5,000: V8 has optimised the path by then), instrumented for 2,000
// more (valgrind translates the code again), then HOT_ROUNDS rounds of HOT_REQUESTS (10,000) requests, each counted
// on its own (callgrind_control: zero, load, dump). On a shared VM the CPU time of one answer moves by 2x from round
// to round (steal, a busy neighbour) and there are no hardware counters; the instructions the process executes move
// by about 3 %. They are user space only: the kernel's socket writes (a third of a cached answer's time) are not in
// them. valgrind is Debian's (bench/setup.sh installs it).
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, get } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds } from './cpu.js';
import { rate, wrk, type Measure } from './load.js';
import { firstLine, freePort, start, stopAll, track, waitReady, type Child } from './procs.js';
import { shebangFlags } from '../test/fakes/node-flags.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const num = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);
const ROUNDS = num('HOT_ROUNDS', 5);
const SECONDS = num('HOT_SECONDS', 3);
const WARMUP = num('HOT_WARMUP', 2);
const CONNECTIONS = num('HOT_CONNECTIONS', 16);
const LOG_LEVEL = process.env.HOT_LOG_LEVEL || 'info';
const COUNT = process.env.HOT_COUNT === 'instructions';
const WARMUP_REQUESTS = num('HOT_WARMUP_REQUESTS', 5_000);
const REQUESTS = num('HOT_REQUESTS', 10_000);
const EXTRA = (process.env.HOT_ARGS ?? '').split(/\s+/).filter(Boolean);
const PATH = '/v3/packages/bench-small/release/latest';

async function main(): Promise<void> {
  const builds = process.argv.slice(2).map((arg) => {
    const [path, level] = arg.split(':');
    return { path: resolve(path!), level: level || LOG_LEVEL };
  });
  if (builds.length === 0) builds.push({ path: join(ROOT, 'dist', 'main.js'), level: LOG_LEVEL });
  const dir = mkdtempSync(join(tmpdir(), 'srm-hot-'));
  const spawned: Child[] = [];
  try {
    writeFileSync(join(dir, 'small.zip'), Buffer.alloc(1024));
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ packages: [{ name: 'bench-small', releases: [{ version: '1.0.0', file: join(dir, 'small.zip') }] }] }));
    const upstream = start('upstream', process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'upstream-server.ts'), join(dir, 'manifest.json')], { cwd: ROOT, stdout: 'pipe' });
    const upstreamUrl = `http://127.0.0.1:${(JSON.parse(await firstLine(upstream)) as { port: number }).port}`;
    const mirrors: Array<{ build: { path: string; level: string }; url: string; child: Child; rounds: Measure[]; cpuUs: number[] }> = [];
    for (const [i, { path: build, level }] of builds.entries()) {
      const port = await freePort();
      const logFd = openSync(join(dir, `mirror-${i}.log`), 'a');
      // The node flags of the build's first line (its shebang), as the bench runs them.
      const nodeFlags = shebangFlags(build);
      const args = ['serve', '--host', '127.0.0.1', '--port', String(port), '--data', join(dir, `data-${i}`), '--upstream', `${upstreamUrl}/v3`, '--log-level', level, '--prefetch', 'false', ...EXTRA];
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SRM_MIRROR_')));
      // Its own spawn, not procs.start: the log goes to a file, not through a pipe to this process.
      const node = [process.execPath, ...nodeFlags, build, ...args];
      const [command, ...argv] = COUNT ? [...valgrind(join(dir, `callgrind-${i}`)), ...node] : node;
      const proc = spawn(command!, argv, { cwd: ROOT, env, stdio: ['ignore', 'ignore', logFd] });
      closeSync(logFd);
      const exited = new Promise<number | null>((done) => proc.once('exit', done));
      const child: Child = { name: `mirror-${i}`, proc, pid: proc.pid!, stderrTail: () => readFileSync(join(dir, `mirror-${i}.log`), 'utf8').slice(-4096), exited };
      spawned.push(child);
      const url = `http://127.0.0.1:${port}`;
      await waitReady(`${url}/-/health`, child, COUNT ? 300_000 : undefined);
      mirrors.push({ build: { path: build, level }, url, child, rounds: [], cpuUs: [] });
    }
    if (COUNT) return await countInstructions(mirrors, dir);
    const opts = (seconds: number) => ({ connections: CONNECTIONS, threads: 1, seconds, scriptDir: dir, track });
    for (const m of mirrors) await wrk(m.url + PATH, opts(WARMUP)); // MISS, then HITs
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate the order, so that no build always runs right after another one's load.
      for (const m of r % 2 ? [...mirrors].reverse() : mirrors) {
        const cpu = cpuSeconds(m.child.pid);
        const measured = await wrk(m.url + PATH, opts(SECONDS));
        m.rounds.push(measured);
        m.cpuUs.push(((cpuSeconds(m.child.pid) - cpu) / measured.requests) * 1e6);
      }
    }
    console.log(`hot path: GET ${PATH} (HIT), wrk 1 thread ${CONNECTIONS} connections, ${ROUNDS} rounds of ${SECONDS} s ${EXTRA.join(' ')}`);
    console.log('CPU/req: the mirror process\'s own CPU time (user + system) per answered request, which other load on the machine hardly changes');
    for (const m of mirrors) {
      const sorted = [...m.rounds].sort((a, b) => rate(a) - rate(b));
      const median = sorted[Math.floor(sorted.length / 2)]!;
      const errors = m.rounds.reduce((n, x) => n + x.errors, 0);
      const cpu = [...m.cpuUs].sort((a, b) => a - b)[Math.floor(m.cpuUs.length / 2)]!;
      console.log(
        `${m.build.path} (--log-level ${m.build.level}): median ${rate(median).toFixed(0)} req/s, p50 ${median.p50Ms.toFixed(2)} ms, p99 ${median.p99Ms.toFixed(2)} ms, ` +
          `CPU/req median ${cpu.toFixed(1)} µs${errors ? `, ${errors} errors` : ''}; rounds: ${m.rounds.map((x) => rate(x).toFixed(0)).join(' ')} req/s, ` +
          `${m.cpuUs.map((x) => x.toFixed(1)).join(' ')} µs`,
      );
    }
  } finally {
    for (const c of spawned) c.proc.kill('SIGTERM');
    await Promise.all(spawned.map((c) => c.exited));
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** valgrind's command line for a build: callgrind, off until told (callgrind_control -i on), dumps to `out`.N. */
function valgrind(out: string): string[] {
  ensureValgrind();
  // --smc-check: V8 writes and rewrites machine code in its heap, which valgrind must translate again.
  return ['valgrind', '--tool=callgrind', '--instr-atstart=no', '--smc-check=all-non-file', `--callgrind-out-file=${out}`];
}

function ensureValgrind(): void {
  if (spawnSync('sh', ['-c', 'command -v valgrind && command -v callgrind_control'], { stdio: 'ignore' }).status === 0) return;
  if (spawnSync('sh', [join(ROOT, 'bench', 'setup.sh'), 'valgrind'], { stdio: 'inherit' }).status !== 0) throw new Error('bench/setup.sh could not install valgrind');
}

async function countInstructions(mirrors: ReadonlyArray<{ build: { path: string }; url: string; child: Child }>, dir: string): Promise<void> {
  const callgrind = (pid: number, ...args: string[]) => {
    const r = spawnSync('callgrind_control', [...args, String(pid)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`callgrind_control ${args.join(' ')} ${pid}: ${r.stderr || r.stdout}`);
  };
  const perRound = new Map(mirrors.map((m) => [m, [] as number[]]));
  for (const m of mirrors) {
    await requests(m.url + PATH, WARMUP_REQUESTS, CONNECTIONS);
    callgrind(m.child.pid, '--instr=on');
    await requests(m.url + PATH, 2_000, CONNECTIONS); // uncounted: valgrind translates the code again, instrumented
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, m] of mirrors.entries()) {
      callgrind(m.child.pid, '--zero');
      await requests(m.url + PATH, REQUESTS, CONNECTIONS);
      callgrind(m.child.pid, '--dump');
      const dump = readFileSync(join(dir, `callgrind-${i}.${r + 1}`), 'utf8');
      perRound.get(m)!.push(Number(/^totals: (\d+)/m.exec(dump)?.[1]) / REQUESTS);
    }
  }
  console.log(`hot path: GET ${PATH} (HIT), instructions per answer (valgrind), ${ROUNDS} rounds of ${REQUESTS} requests over ${CONNECTIONS} connections, after ${WARMUP_REQUESTS} ${EXTRA.join(' ')}`);
  for (const [m, counts] of perRound) {
    const median = [...counts].sort((a, b) => a - b)[Math.floor(counts.length / 2)]!;
    console.log(`${m.build.path}: median ${(median / 1000).toFixed(1)}k instructions/answer; rounds: ${counts.map((c) => (c / 1000).toFixed(1)).join(' ')}k`);
  }
}

/** `count` GETs of `url` over `connections` keep-alive connections, each answer read whole; throws on a failure. */
async function requests(url: string, count: number, connections: number): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  let left = count;
  const one = () =>
    new Promise<void>((resolve, reject) => {
      get(url, { agent }, (res) => {
        res.resume().on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`${url}: ${res.statusCode}`))));
      }).on('error', reject);
    });
  try {
    await Promise.all(Array.from({ length: connections }, async () => {
      while (left-- > 0) await one();
    }));
  } finally {
    agent.destroy();
  }
}

main().catch(async (err: unknown) => {
  console.error(err);
  await stopAll();
  process.exit(1);
});
