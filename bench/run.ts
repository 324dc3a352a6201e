// `npm run bench`: the mirror (dist/main.js) against nginx, the upstream direct, a bare Node pass-through proxy,
// Verdaccio and (for cached metadata: the runtime's ceiling) a bare node:http server, all on 127.0.0.1, with every
// server pinned to core 0 and every load generator to core 1 (pin.ts).
// Cached scenarios run in paired rounds (nginx, mirror, nginx, mirror, ...; rounds.ts), on the freshly started
// mirror and again after it idled (steady state: V8's memory reducer collects more often after a long idle, as in
// production); the targets use the steady state and the worst kept ratio. Rounds in which a server got less than
// 0.9 of a core are discarded and replaced. It asserts nothing: targets print as meets/MISSES/n/a; it exits
// non-zero only when something breaks. See bench/README.md for the settings and how to read the figures.
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { rate } from './load.js';
import { pinningLine } from './pin.js';
import { envInt, runBench, stopAllAndRemove } from './procs.js';
import { table, targets, x, type Row, type Target } from './report.js';
import { ratioSpan, roundsOf, type Rounds } from './rounds.js';
import { LATEST, memoryStatus, Scenarios, zipball, type Compared, type Settings } from './scenarios.js';
import { ensureVerdaccio, verdaccioVersion } from './verdaccio.js';
import { COLD, COLD_FAST, log, MiB, mirrorFlags, mirrorLog, nginxBin, nodeVersion, OFFLOAD, prepareBench, SMALL, World, type MirrorSpec } from './world.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A server that got less of a core than this in a saturated round was held back by something else. */
export const MIN_CORES = 0.9;

const settings: Settings = {
  seconds: envInt('BENCH_SECONDS', 2),
  rounds: envInt('BENCH_ROUNDS', 3),
  maxExtra: envInt('BENCH_EXTRA_ROUNDS', 3, 0),
  minCores: MIN_CORES,
  warmup: envInt('BENCH_WARMUP', 1, 0),
  connections: envInt('BENCH_CONNECTIONS', 16),
  threads: envInt('BENCH_WRK_THREADS', 1),
  coldMiB: 64,
  bigMiB: envInt('BENCH_BIG_MIB', 1024),
  bigClients: envInt('BENCH_BIG_CLIENTS', 20),
};
const COLD_RUNS = envInt('BENCH_COLD_RUNS', 5);
const UPSTREAM_MBPS = envInt('BENCH_UPSTREAM_MBPS', 200);
const IDLE_SECONDS = envInt('BENCH_IDLE', 35, 0);
const PEERS = process.env.BENCH_PEERS !== '0';
/** Distinct 1 MiB archives the upstream offers for filling the in-memory archive cache (a budget up to ~2 GB). */
const MEM_ARCHIVES = 2048;

const ACCEL = ['--accel-redirect', '/_srm/archives/', '--accel-redirect-min-size', '0'];

let workDir: string | undefined;

async function main(): Promise<void> {
  const { mainJs, node } = prepareBench(ROOT);
  const flags = mirrorFlags(node, mainJs);
  const has = (flag: string) => flags.has(flag);
  const na = (flag: string) => `n/a: this build has no ${flag}`;
  const verdaccio = PEERS ? ensureVerdaccio() : undefined;
  const mirrors: MirrorSpec[] = [
    { name: 'mirror', flags: [] },
    ...(has('--memory-archives') ? [{ name: 'no-memory', flags: ['--memory-archives', '0'] }] : []),
    ...(has('--accel-redirect') && has('--accel-redirect-min-size') ? [{ name: 'offload', flags: ACCEL }] : []),
  ];
  const world = await World.create(
    {
      root: ROOT,
      mainJs,
      node,
      mirrors,
      ...(mirrors.some((m) => m.name === 'offload') ? { offload: 'offload' } : {}),
      passthrough: true,
      bareNode: true,
      ...(verdaccio ? { verdaccio } : {}),
      coldRuns: COLD_RUNS,
      coldMiB: settings.coldMiB,
      coldMBps: UPSTREAM_MBPS,
      bigMiB: settings.bigMiB,
      memArchives: MEM_ARCHIVES,
      cpuProfDir: process.env.BENCH_CPU_PROF || undefined,
    },
    (dir) => (workDir = dir),
  );
  const run = new Scenarios(world, settings);
  const main = world.mirror('mirror');
  const noMem = world.mirrors.get('no-memory');
  const offload = world.mirrors.get('offload');
  const zip = zipball(SMALL.name, SMALL.version);
  const offloadZip = zipball(OFFLOAD.name, OFFLOAD.version);

  // Warm every mirror: metadata cached (and nginx given the same bytes), the archives HITs.
  await run.warmMetadata(main);
  // The offload mirror answers its HITs with X-Accel-Redirect and no body: it is warmed through its nginx.
  for (const m of world.mirrors.values()) await run.untilHit((m === offload ? world.nginxOffload : m.url) + zip, MiB);
  if (offload) await run.untilHit(world.nginxOffload + offloadZip, 8 * MiB);

  const cached = async (state: string) => ({
    meta: await run.wrkPair('cached metadata', state, run.nginxTarget('/latest.json'), run.mirrorTarget(main, LATEST)),
    zip: await run.wrkPair('cached 1 MiB archive, memory cache default', state, run.nginxTarget('/small.zip'), run.mirrorTarget(main, zip)),
    zipNoMem: noMem ? await run.wrkPair('cached 1 MiB archive, --memory-archives 0', state, run.nginxTarget('/small.zip'), run.mirrorTarget(noMem, zip)) : undefined,
  });
  const fresh = await cached('fresh');

  // The mirrors idle now. Meanwhile (nothing of it reaches them) the peers and the upstream direct are measured.
  const idleUntil = Date.now() + IDLE_SECONDS * 1000;
  log(`the mirrors idle for ${IDLE_SECONDS} s (steady state); meanwhile: peers and the upstream direct`);
  const peers = verdaccio ? await run.verdaccio() : undefined;
  const upstreamTarget = (path: string) => ({ server: 'upstream', url: world.upstream + path, pids: () => [] });
  const direct = [await run.wrkSolo('upstream direct: release/latest', upstreamTarget(LATEST), undefined), await run.wrkSolo('upstream direct: 1 MiB blob', upstreamTarget(`/blob/${SMALL.name}/${SMALL.version}`), undefined)];
  const left = idleUntil - Date.now();
  if (left < 0) log(`the idle lasted ${((IDLE_SECONDS * 1000 - left) / 1000).toFixed(0)} s: the peers took longer than ${IDLE_SECONDS} s`);
  else await new Promise((r) => setTimeout(r, left));

  const steady = await cached('steady');
  // What node:http alone does with the same bytes: the runtime's ceiling for the cached-metadata scenario.
  const bare = await run.wrkPair('cached metadata, bare node:http', 'steady', run.nginxTarget('/latest.json'), { server: 'bare node:http', url: `${world.bareNode}/latest.json`, pids: () => [world.bareNodePid] });
  const offloadTarget = (path: string): Parameters<Scenarios['wrkPair']>[3] => ({ server: 'nginx+offload', url: world.nginxOffload + path, pids: () => [...world.nginxWorkers(), offload!.pid], mirror: offload! });
  const off8 = offload ? await run.wrkPair('8 MiB archive via nginx offload', 'steady', run.nginxTarget('/offload.zip', 'nginx direct'), offloadTarget(offloadZip)) : undefined;
  const off1 = offload ? await run.wrkPair('1 MiB archive via nginx offload', 'steady', run.nginxTarget('/small.zip', 'nginx direct'), offloadTarget(zip)) : undefined;

  const passthroughSide = { server: 'node pass-through', base: world.passthrough, pids: () => [world.passthroughPid] };
  const directSide = { server: 'upstream direct', base: world.upstream, pids: () => [] };
  const coldCapped = await run.cold(`cold 64 MiB archive, upstream capped at ${UPSTREAM_MBPS} MB/s`, COLD, main, directSide);
  const coldFast = await run.cold('cold 64 MiB archive, loopback upstream', COLD_FAST, main, passthroughSide);

  let memNote = 'n/a: this build has no --memory-archives';
  if (has('--memory-archives')) {
    const mem = await memoryStatus(main);
    if (!mem) memNote = 'the memory cache: /-/status shows no archives.memory';
    else {
      const filled = await run.fillMemory(main, mem.maxBytes, MEM_ARCHIVES);
      memNote = `in-memory archive cache filled first: budget ${(mem.maxBytes / 1e6).toFixed(1)} MB, ${filled.archives} archives downloaded, ${filled.used === undefined ? '?' : (filled.used / 1e6).toFixed(1)} MB held`;
    }
  }
  const big = await run.bigArchive(main, memNote);
  await run.close();
  const rssMethod = main.rss.method;
  await world.stop();

  const rows: Row[] = [
    ...[fresh, steady].flatMap((c) => [c.meta, c.zip, ...(c.zipNoMem ? [c.zipNoMem] : [])]).flatMap((c) => c.rows),
    ...bare.rows,
    ...(off8 && off1 ? [...off8.rows, ...off1.rows] : []),
    ...(peers ? [...peers.packument.rows, ...peers.tarball.rows] : []),
    ...direct.flatMap((c) => c.rows),
    ...coldCapped.rows,
    ...coldFast.rows,
    ...big,
  ].sort((a, b) => order(a) - order(b));

  const nginxVersion = spawnSync(nginxBin(), ['-v'], { encoding: 'utf8' }).stderr.trim().replace('nginx version: ', '');
  const { threads, connections, warmup, rounds, seconds, maxExtra } = settings;
  console.log('');
  console.log(`srm-mirror bench: ${cpus().length} x ${cpus()[0]?.model.trim() ?? 'cpu'}; ${nginxVersion} (1 worker, sendfile)${verdaccio ? `; verdaccio ${verdaccioVersion()}` : ''}`);
  console.log(`mirror: ${mainJs} under node ${nodeVersion(node)} (${node}); the bench and Verdaccio: node ${process.version}`);
  console.log(pinningLine('the mirrors, nginx (master and worker), the node pass-through proxy, the bare node:http server and Verdaccio'));
  console.log(`wrk: ${threads} thread(s), ${connections} connections, ${warmup} s warm-up per server, then ${rounds} paired round(s) of ${seconds} s (nginx, mirror, nginx, mirror, ...)`);
  console.log(`a saturated round where a server got < ${MIN_CORES} core is discarded and replaced (at most ${maxExtra} extra per comparison); rows are the median kept round`);
  console.log(`fresh = just started and warmed; steady = after ${IDLE_SECONDS} s idle (V8's memory reducer); targets use steady and the MIN paired ratio`);
  console.log(`peak RSS from ${rssMethod}; MB = 10^6 bytes; wrk rows count response headers too; download rows: req/s = downloads per second`);
  console.log('');
  console.log(table(rows));
  console.log('');
  const discards = [fresh, steady].flatMap((c) => [c.meta, c.zip, c.zipNoMem]).concat(bare, off8, off1, peers?.packument, peers?.tarball).filter((c): c is Compared => !!c);
  const discarded = discards.reduce((n, c) => n + c.rounds.attempts.filter((a) => a.discarded).length, 0);
  const total = discards.reduce((n, c) => n + c.rounds.attempts.length, 0);
  console.log(`rounds discarded for lack of CPU: ${discarded} of ${total}${discarded ? ' (which: see the notes)' : ''}`);
  const logged = mirrorLog.summary();
  if (logged) console.log(`the mirror logged (warn and up): ${logged}`);
  console.log('targets (informational; the figures of this run, on this machine):');
  console.log(
    targets(
      verdicts({
        steady,
        bare,
        noMemNa: noMem ? undefined : na('--memory-archives'),
        offloadNa: offload ? undefined : na('--accel-redirect'),
        off8,
        peers,
        coldCapped,
        coldFast,
        big,
      }),
    ),
  );
}

/** Fresh rows, then steady ones, then the rest, each kept in the order it was measured. */
function order(r: Row): number {
  return r.state === 'fresh' ? 0 : r.state === 'steady' ? 1 : 2;
}

interface Results {
  steady: { meta: Compared; zip: Compared; zipNoMem: Compared | undefined };
  /** nginx vs a bare node:http server answering the same bytes (steady). */
  bare: Compared;
  noMemNa: string | undefined;
  offloadNa: string | undefined;
  off8: Compared | undefined;
  peers: { tarball: Compared; packument: Compared } | undefined;
  coldCapped: Compared;
  coldFast: Compared;
  big: Row[];
}

function verdicts(r: Results): Target[] {
  const paired = (what: string, c: Compared | undefined, min: number, naWhy?: string, aside = ''): Target => {
    if (!c) return { what, figure: naWhy ?? 'n/a', meets: undefined };
    const { min: lo, text } = ratioSpan(c.rounds, rate);
    // With no round in which the servers had their core, the run measured the machine: no verdict.
    if (c.rounds.allDiscarded) return { what, figure: `${text}, every round short of CPU: no verdict${aside}`, meets: undefined };
    return { what, figure: `${text}${aside}`, meets: lo >= min };
  };
  // Against a peer: the mirror's slowest kept steady round against the peer's fastest round.
  const vsPeer = (what: string, mirror: Rounds, peer: Compared | undefined, min: number): Target => {
    if (!peer) return { what, figure: 'n/a: peers skipped (BENCH_PEERS=0)', meets: undefined };
    const slowest = Math.min(...roundsOf(mirror, 1).map((x) => rate(x.m)));
    const fastest = Math.max(...roundsOf(peer.rounds, 0).map((x) => rate(x.m)));
    const figure = `${x(slowest / fastest)} (${slowest.toFixed(0)} vs ${fastest.toFixed(0)} req/s)`;
    if (mirror.allDiscarded || peer.rounds.allDiscarded) return { what, figure: `${figure}, every round short of CPU: no verdict`, meets: undefined };
    return { what, figure, meets: slowest / fastest >= min };
  };
  const p99 = Math.max(...roundsOf(r.steady.meta.rounds, 1).map((x) => x.m.p99Ms));
  const [bigCold, bigCached] = r.big.map((row) => row.rss ?? 0) as [number, number];
  const peak = Math.max(bigCold, bigCached);
  const mb = (n: number) => (n / 1e6).toFixed(0);
  return [
    paired('cached metadata >= 0.5x nginx (steady)', r.steady.meta, 0.5, undefined, `; bare node:http ${ratioSpan(r.bare.rounds, rate).text.replace('min ', '')}`),
    {
      what: `cached metadata p99 <= 1.5 ms, ${settings.connections} conn (steady)`,
      figure: `worst round p99 ${p99.toFixed(2)} ms${r.steady.meta.rounds.allDiscarded ? ', every round short of CPU: no verdict' : ''}`,
      meets: r.steady.meta.rounds.allDiscarded ? undefined : p99 <= 1.5,
    },
    vsPeer("cached metadata >= 15x Verdaccio's packument", r.steady.meta.rounds, r.peers?.packument, 15),
    paired('cached 1 MiB archive, --memory-archives 0: >= 0.6x nginx', r.steady.zipNoMem, 0.6, r.noMemNa),
    paired(`cached 1 MiB archive, default settings${r.noMemNa ? ' (no memory cache in this build)' : ''}: >= 0.8x nginx`, r.steady.zip, 0.8),
    vsPeer("cached 1 MiB archive >= 5x Verdaccio's cached tarball", r.steady.zip.rounds, r.peers?.tarball, 5),
    paired(`cold 64 MiB >= 0.95x direct (upstream ${UPSTREAM_MBPS} MB/s)`, r.coldCapped, 0.95),
    paired('cold 64 MiB >= 0.9x node pass-through (loopback)', r.coldFast, 0.9),
    { what: `peak RSS <= 150 MB, ${r.big[0]!.scenario.replace(/, cold$/, '')}`, figure: `${mb(peak)} MB (cold ${mb(bigCold)}, cached ${mb(bigCached)})`, meets: peak <= 150e6 },
    paired('nginx+offload 8 MiB >= 0.95x nginx direct', r.off8, 0.95, r.offloadNa),
  ];
}

runBench('bench', main, stopAllAndRemove(() => workDir));
