// `npm run bench:cold`: only the cold-download scenarios of `npm run bench` (a 64 MiB archive the mirror has never
// seen, behind an upstream capped at BENCH_UPSTREAM_MBPS and at loopback speed), with the same pinning and paired
// rounds, for working on the fill path without the whole run. BENCH_COLD_RUNS paired downloads each (default 5), after
// the mirror idled BENCH_IDLE s (default 35, as in the whole run, where they come after the idle; 0 for a quick loop).
import { fileURLToPath } from 'node:url';
import { pinningLine } from './pin.js';
import { envInt, runBench, stopAllAndRemove } from './procs.js';
import { table } from './report.js';
import { ratioSpan } from './rounds.js';
import { Scenarios, type Settings } from './scenarios.js';
import { rate } from './load.js';
import { COLD, COLD_FAST, log, nodeVersion, prepareBench, World } from './world.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const UPSTREAM_MBPS = envInt('BENCH_UPSTREAM_MBPS', 200);
const IDLE_SECONDS = envInt('BENCH_IDLE', 35, 0);

const settings: Settings = { seconds: 0, rounds: 0, maxExtra: 0, minCores: 0.9, warmup: 0, connections: 1, threads: 1, coldMiB: 64, bigMiB: 0, bigClients: 0 };

let workDir: string | undefined;

async function main(): Promise<void> {
  const { mainJs, node } = prepareBench(ROOT);
  const world = await World.create(
    { root: ROOT, mainJs, node, mirrors: [{ name: 'mirror', flags: [] }], passthrough: true, coldRuns: envInt('BENCH_COLD_RUNS', 5), coldMiB: settings.coldMiB, coldMBps: UPSTREAM_MBPS, bigMiB: 0, memArchives: 0, cpuProfDir: process.env.BENCH_CPU_PROF || undefined },
    (dir) => (workDir = dir),
  );
  const run = new Scenarios(world, settings);
  const main = world.mirror('mirror');
  log(`the mirror idles for ${IDLE_SECONDS} s (steady state)`);
  await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000));
  const capped = await run.cold(`cold 64 MiB archive, upstream capped at ${UPSTREAM_MBPS} MB/s`, COLD, main, { server: 'upstream direct', base: world.upstream, pids: () => [] });
  const fast = await run.cold('cold 64 MiB archive, loopback upstream', COLD_FAST, main, { server: 'node pass-through', base: world.passthrough, pids: () => [world.passthroughPid] });
  await run.close();
  await world.stop();
  console.log('');
  console.log(`srm-mirror bench:cold: ${mainJs} under node ${nodeVersion(node)}, after ${IDLE_SECONDS} s idle; ${pinningLine('the mirror and the node pass-through proxy')}`);
  console.log('');
  console.log(table([...capped.rows, ...fast.rows]));
  console.log('');
  for (const [what, c, min] of [[`>= 0.95x direct (${UPSTREAM_MBPS} MB/s)`, capped, 0.95], ['>= 0.9x node pass-through (loopback)', fast, 0.9]] as const) {
    const r = ratioSpan(c.rounds, rate);
    console.log(`cold 64 MiB ${what}: ${r.text}: ${r.min >= min ? 'meets' : 'MISSES'}`);
  }
}

runBench('bench:cold', main, stopAllAndRemove(() => workDir));
