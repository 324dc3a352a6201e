// `npm run bench`: starts a fake upstream, the mirror (dist/main.js) and nginx as separate processes on
// 127.0.0.1, drives them with wrk and a small download client, and prints req/s, MB/s, p50/p99, upstream request
// counts and the mirror's peak RSS for each scenario, side by side with nginx and with direct upstream access
// measured in the same run. It asserts nothing: the targets are printed as "meets"/"misses". It exits non-zero
// only when something breaks (a process does not start, an answer is not a 200 of the right size, ...).
// See bench/README.md for the settings (BENCH_* environment variables) and the figures of a run.
import { readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { mbps, rate } from './load.js';
import { envInt, runBench, stopAll } from './procs.js';
import { pct, table, targets, type Row, type Target } from './report.js';
import { Scenarios, type Settings } from './scenarios.js';
import { ensureBuilt, ensureTools, mirrorLog, nginxBin, World } from './world.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));


const settings: Settings = {
  seconds: envInt('BENCH_SECONDS', 2),
  rounds: envInt('BENCH_ROUNDS', 3),
  warmup: envInt('BENCH_WARMUP', 1, 0),
  connections: envInt('BENCH_CONNECTIONS', 16),
  threads: envInt('BENCH_WRK_THREADS', 1),
  coldMiB: 64,
  bigMiB: envInt('BENCH_BIG_MIB', 1024),
  bigClients: envInt('BENCH_BIG_CLIENTS', 20),
};
const COLD_RUNS = envInt('BENCH_COLD_RUNS', 5);
const UPSTREAM_MBPS = envInt('BENCH_UPSTREAM_MBPS', 0, 0);

let workDir: string | undefined;

async function main(): Promise<void> {
  const busyBefore = await cpuBusy(1_000);
  ensureTools(ROOT);
  const mainJs = process.env.BENCH_MIRROR || ensureBuilt(ROOT);
  const world = await World.create(
    { root: ROOT, mainJs, coldRuns: COLD_RUNS, coldMiB: settings.coldMiB, bigMiB: settings.bigMiB, cpuProfDir: process.env.BENCH_CPU_PROF || undefined, upstreamMBps: UPSTREAM_MBPS },
    (dir) => (workDir = dir),
  );
  const run = new Scenarios(world, settings);
  const meta = await run.cachedMetadata();
  const zip = await run.cachedArchive();
  const verified = await run.cachedArchiveVerified();
  const cold = await run.coldArchive();
  const earlierPeak = Math.max(...[...meta, ...zip, ...verified, ...cold].map((r) => r.rss ?? 0));
  const big = await run.bigArchive();
  await run.close();
  const rss = world.rss.method;
  await world.stop();

  const rows: Row[] = [...meta, ...zip, ...verified, ...cold, ...big.rows];
  const nginxVersion = spawnSync(nginxBin(), ['-v'], { encoding: 'utf8' }).stderr.trim().replace('nginx version: ', '');
  const { threads, connections, warmup, rounds, seconds } = settings;
  console.log('');
  console.log(`srm-mirror bench: node ${process.version}, ${cpus().length} x ${cpus()[0]?.model.trim() ?? 'cpu'}, ${nginxVersion} (1 worker, sendfile)`);
  console.log(`wrk: ${threads} thread(s), ${connections} connections, ${warmup} s warm-up, then the median of ${rounds} interleaved round(s) of ${seconds} s`);
  const speed = UPSTREAM_MBPS ? `each blob download capped at ${UPSTREAM_MBPS} MB/s` : 'full speed';
  console.log(`mirror: ${mainJs}; peak RSS from ${rss}; upstream: bench/upstream-server.ts (node, fs streams, ${speed})`);
  console.log(`MB = 10^6 bytes; wrk rows count response headers too; download rows: req/s = downloads per second`);
  const busy = busyBefore >= 0.1 ? ' (something else was running: expect noisy figures)' : '';
  console.log(`CPU busy in the second before the run: ${(busyBefore * 100).toFixed(0)}%${busy}`);
  console.log('');
  console.log(table(rows));
  console.log('');
  console.log(`mirror peak RSS in the first four scenarios: ${(earlierPeak / 1e6).toFixed(0)} MB`);
  const mirrorMBps = (rows: Row[]) => mbps(rows.find((r) => r.server === 'mirror')!.m);
  console.log(`verifyOnServe costs ${(100 * (1 - mirrorMBps(verified) / mirrorMBps(zip))).toFixed(0)}% of cached-archive throughput in this run`);
  const logged = mirrorLog.summary();
  if (logged) console.log(`the mirror logged (warn and up): ${logged}`);
  console.log('targets (informational; the figures of this run, on this machine):');
  console.log(targets(verdicts(meta, zip, cold, big.rows)));
}

function verdicts(meta: Row[], zip: Row[], cold: Row[], big: Row[]): Target[] {
  const of = (rows: Row[], server: string) => rows.find((r) => r.server === server)!.m;
  const [metaM, metaN] = [of(meta, 'mirror'), of(meta, 'nginx')];
  const [zipM, zipN] = [of(zip, 'mirror'), of(zip, 'nginx')];
  const [coldM, coldD] = [of(cold, 'mirror'), of(cold, 'upstream')];
  const [bigCold, bigCached] = big.map((r) => r.rss ?? 0) as [number, number];
  const peak = Math.max(bigCold, bigCached);
  const mb = (n: number) => (n / 1e6).toFixed(0);
  const vs = (a: number, b: number, unit: string) => `${pct(a, b)} (${a.toFixed(0)} vs ${b.toFixed(0)} ${unit})`;
  return [
    { what: 'cached archive >= 50% of nginx', figure: vs(mbps(zipM), mbps(zipN), 'MB/s'), meets: mbps(zipM) >= 0.5 * mbps(zipN) },
    { what: 'cached metadata >= 25% of nginx', figure: vs(rate(metaM), rate(metaN), 'req/s'), meets: rate(metaM) >= 0.25 * rate(metaN) },
    { what: `cached metadata p99 <= 5 ms, ${settings.connections} conn`, figure: `p99 ${metaM.p99Ms.toFixed(2)} ms`, meets: metaM.p99Ms <= 5 },
    { what: 'cold archive >= 90% of direct', figure: vs(mbps(coldM), mbps(coldD), 'MB/s'), meets: mbps(coldM) >= 0.9 * mbps(coldD) },
    { what: `peak RSS <= 150 MB, ${big[0]!.scenario.replace(/, cold$/, '')}`, figure: `${mb(peak)} MB (cold ${mb(bigCold)}, cached ${mb(bigCached)})`, meets: peak <= 150e6 },
  ];
}

/** The share of all CPUs' time spent busy during the next `ms` (from /proc/stat). */
async function cpuBusy(ms: number): Promise<number> {
  const sample = () => {
    const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
    const n = fields.map(Number);
    const idle = n[3]! + (n[4] ?? 0); // idle + iowait
    return { idle, total: n.reduce((a, b) => a + b, 0) };
  };
  const a = sample();
  await new Promise((r) => setTimeout(r, ms));
  const b = sample();
  return b.total === a.total ? 0 : 1 - (b.idle - a.idle) / (b.total - a.total);
}

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await stopAll();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  })();
  return cleaning;
}

runBench('bench', main, cleanup);
