// `npm run bench:bundles`: the figures of a 1 GB air-gap bundle, exported and imported by the real command
// (dist/main.js, each run its own process, with the node flags of its first line): wall clock, MB/s and the
// command's peak RSS for
//   - an export of everything (signed, volumes of at most 256 MB);
//   - its import into an empty data folder; the same import again (everything there already); an import killed
//     (SIGKILL) once about half its bytes are in, and the rerun that finishes it;
//   - an incremental export (--since last) after a few new versions, and its import;
//   - the same export and import of the small files alone, for the cost per blob.
// The source mirror is filled the way a real one is: cached archives (real zips, test/fakes/zips.ts, with a random
// payload) fetched through the mirror from the bench's fake upstream (bench/upstream-server.ts, its own process),
// generic files PUT through it. At the end a mirror started offline on each imported folder must serve every large
// version and a sample of the small files with the bytes that went in; the run exits 1 when it does not, or when
// any step fails. Everything runs on 127.0.0.1 in a temp folder that is removed at the end.
//
// Settings (environment): BUNDLES_BIG_MB (50) size of the 10 cached archives and 10 generic files;
// BUNDLES_SMALL (2000) and BUNDLES_SMALL_KB (20) the small generic files; BENCH_MIRROR (dist/main.js);
// BUNDLES_KEEP=1 keeps the temp folder (the bundles and data folders) for a look after the run.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { componentZip } from '../test/fakes/zips.js';
import { entryId, parseManifest, type Manifest } from '../src/bundles/manifest.js';
import type { BundleEvent } from '../src/bundles/progress.js';
import { envInt, firstLine, freePort, PeakRss, runBench, start, stop, stopAll, waitReady, type Child } from './procs.js';
import type { Manifest as UpstreamManifest } from './upstream-server.js';
import { ensureBuilt } from './world.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MB = 1e6;
const BIG_MB = envInt('BUNDLES_BIG_MB', 50);
const BIG_COUNT = 10;
const SMALL = envInt('BUNDLES_SMALL', 2000);
const SMALL_KB = envInt('BUNDLES_SMALL_KB', 20);
const SMALL_PER_VERSION = 10;
/** Round 2 (the incremental bundle): new versions of the first few packages. */
const NEW_CACHED = 3;
const NEW_GENERIC = 2;
const NEW_MB = 20;
const OWNER = 'bench';
const VOLUME = '256MB';
/** Small files checked over HTTP on each imported mirror (all the large ones are). */
const SMALL_SAMPLE = 100;


function log(msg: string): void {
  process.stderr.write(`bench:bundles: ${msg}\n`);
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

// ---------------------------------------------------------------------------------------------------------------
// What goes in: every version and file, with the sha256 of its bytes and where a mirror serves it.

interface Item {
  /** The manifest's entry id (cached:NAME@VERSION, generic:OWNER/NAME/VERSION/FILE). */
  readonly id: string;
  /** Where a mirror serves it. */
  readonly path: string;
  readonly digest: string;
  readonly size: number;
  readonly round: 1 | 2;
  readonly small: boolean;
}

const cachedItem = (name: string, version: string, zip: Buffer, round: 1 | 2): Item => ({
  id: entryId({ kind: 'cached', name, version }),
  path: `/v3/packages/${name}/zipball/${version}`,
  digest: sha256(zip),
  size: zip.length,
  round,
  small: false,
});

const genericItem = (name: string, version: string, file: string, bytes: Buffer, round: 1 | 2, small = false): Item & { bytes: Buffer } => ({
  id: entryId({ kind: 'generic', owner: OWNER, name, version, file }),
  path: `/api/packages/${OWNER}/generic/${name}/${version}/${file}`,
  digest: sha256(bytes),
  size: bytes.length,
  round,
  small,
  bytes,
});

// ---------------------------------------------------------------------------------------------------------------
// The command, run as a child: its JSON events, wall clock, and peak RSS (VmHWM, read every 20 ms while it runs).

interface CliRun {
  readonly code: number | null;
  readonly seconds: number;
  readonly peakRss: number;
  readonly summary: Record<string, unknown> | undefined;
  readonly killed: boolean;
  /** The last progress event before the end (or the kill). */
  readonly progress: Extract<BundleEvent, { type: 'progress' }> | undefined;
  readonly output: string;
}

let mainJs = '';
let nodeFlags: string[] = [];
const childEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SRM_MIRROR_')));

async function cli(name: string, args: string[], killWhen?: (e: Extract<BundleEvent, { type: 'progress' }>) => boolean): Promise<CliRun> {
  // What earlier steps wrote goes to disk first (untimed): its write-back would otherwise slow this step's fsyncs.
  spawnSync('sync');
  const startedAt = performance.now();
  const child = start(name, process.execPath, [...nodeFlags, mainJs, ...args], { cwd: ROOT, env: childEnv, stdout: 'pipe', onStderr: (line) => logged(name, line) });
  const rss = new PeakRss(child.pid);
  let peakRss = 0;
  const sample = () => (peakRss = Math.max(peakRss, rss.peak()));
  const sampler = setInterval(sample, 20);
  let summary: Record<string, unknown> | undefined;
  let progress: CliRun['progress'];
  let killed = false;
  let output = '';
  const lines = createInterface({ input: child.proc.stdout! });
  lines.on('line', (line) => {
    output += `${line}\n`;
    let e: BundleEvent;
    try {
      e = JSON.parse(line) as BundleEvent;
    } catch {
      return; // keygen and user print plain text
    }
    if (e.type === 'summary') summary = e.summary;
    if (e.type === 'note') log(`[${name}] ${e.message.split('\n')[0]}`);
    if (e.type !== 'progress') return;
    progress = e;
    if (!killed && killWhen?.(e)) {
      sample();
      killed = true;
      child.proc.kill('SIGKILL');
    }
  });
  const code = await child.exited;
  const seconds = (performance.now() - startedAt) / 1000;
  clearInterval(sampler);
  rss.close();
  await new Promise<void>((resolve) => (lines.once('close', resolve), setTimeout(resolve, 1_000)));
  return { code, seconds, peakRss, summary, killed, progress, output };
}

/** A command that must end with exit 0 and a summary. */
async function cliOk(name: string, args: string[]): Promise<CliRun & { summary: Record<string, unknown> }> {
  const run = await cli(name, args);
  if (run.code !== 0 || !run.summary) throw new Error(`${name}: exit ${run.code}${run.summary ? '' : ', no summary'}\n${run.output.slice(-2000)}`);
  return run as CliRun & { summary: Record<string, unknown> };
}

// ---------------------------------------------------------------------------------------------------------------
// A mirror server on a data folder (the source, or an imported one started offline).

class Server {
  readonly child: Child;
  private stopping = false;

  private constructor(
    readonly url: string,
    private readonly name: string,
    dataDir: string,
    flags: string[],
  ) {
    const args = ['serve', '--host', '127.0.0.1', '--port', new URL(url).port, '--data', dataDir, '--log-level', 'warn', '--prefetch', 'false', ...flags];
    this.child = start(name, process.execPath, [...nodeFlags, mainJs, ...args], { cwd: ROOT, env: childEnv, onStderr: (line) => logged(this.name, line, this.stopping) });
  }

  static async start(name: string, dataDir: string, flags: string[]): Promise<Server> {
    const server = new Server(`http://127.0.0.1:${await freePort()}`, name, dataDir, flags);
  await waitReady(`${server.url}/-/health`, server.child);
    return server;
  }

  /** GETs a path: its status and the sha256 and size of its body. */
  async fetch(path: string): Promise<{ status: number; digest: string; size: number }> {
    const res = await request(this.url + path, { headersTimeout: 30_000, bodyTimeout: 30_000 });
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of res.body) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    return { status: res.statusCode, digest: hash.digest('hex'), size };
  }

  async put(path: string, secret: string, body: Buffer): Promise<void> {
    const res = await request(this.url + path, { method: 'PUT', headers: { 'private-token': secret, 'content-length': String(body.length) }, body, headersTimeout: 60_000 });
    const text = await res.body.text();
    if (res.statusCode !== 201) throw new Error(`PUT ${path}: ${res.statusCode} ${text.slice(0, 300)}`);
  }

  stop(): Promise<void> {
    this.stopping = true;
    return stop(this.child, 15_000);
  }
}

/** Runs `fn` over items, `width` at a time. */
async function parallel<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

/** Blob files and bytes under a data folder's archives/sha256 and hosted/sha256. */
function blobsOnDisk(dataDir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const walk = (dir: string) => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(dir, n);
      const s = statSync(p);
      if (s.isDirectory()) walk(p);
      else (files++, (bytes += s.size));
    }
  };
  walk(join(dataDir, 'archives', 'sha256'));
  walk(join(dataDir, 'hosted', 'sha256'));
  return { files, bytes };
}

// ---------------------------------------------------------------------------------------------------------------
// The figures.

interface Row {
  readonly operation: string;
  readonly bytes: number;
  readonly blobs: number;
  readonly volumes: number;
  readonly seconds: number;
  readonly peakRss: number;
  readonly note?: string;
}

const rows: Row[] = [];
/** Error lines the mirror processes logged, in full: each is a problem of the run. */
const errorsLogged: string[] = [];

/** Error lines a server logged once it was told to stop: reported, but no failure of what the bench measures. */
const errorsAtShutdown: string[] = [];

/** Sees a child's stderr line: an error-level log line is kept whole (the echo cuts lines short). */
function logged(name: string, line: string, stopping = false): boolean {
  if (/"level":"(error|fatal)"|uncaught|unhandled/i.test(line)) (stopping ? errorsAtShutdown : errorsLogged).push(`[${name}] ${line}`);
  return true;
}
const problems: string[] = [];

function exportRow(operation: string, run: CliRun & { summary: Record<string, unknown> }, note?: string): void {
  const s = run.summary as { bytes: number; blobs: number; volumes: number; status: string };
  if (s.status !== 'written') problems.push(`${operation}: status ${s.status}`);
  rows.push({ operation, bytes: s.bytes, blobs: s.blobs, volumes: s.volumes, seconds: run.seconds, peakRss: run.peakRss, note });
}

function importRow(operation: string, run: CliRun & { summary: Record<string, unknown> }, note?: string, complete = true): void {
  const s = run.summary as { bytes: number; blobs: number; status: string; volumes: { read: string[]; damaged: string[] }; conflicts: unknown[]; notImported: unknown[]; refusedBlobs: unknown[] };
  if (complete && s.status !== 'complete') problems.push(`${operation}: status ${s.status}`);
  for (const [what, list] of [['conflicts', s.conflicts], ['entries not imported', s.notImported], ['refused blobs', s.refusedBlobs], ['damaged volumes', s.volumes.damaged]] as const) {
    if (list.length) problems.push(`${operation}: ${list.length} ${what}: ${JSON.stringify(list.slice(0, 3))}`);
  }
  rows.push({ operation, bytes: s.bytes, blobs: s.blobs, volumes: s.volumes.read.length, seconds: run.seconds, peakRss: run.peakRss, note });
}

function table(list: readonly Row[]): string {
  const head = ['operation', 'MB', 'blobs', 'volumes', 'seconds', 'MB/s', 'peak RSS MB'];
  const cells = list.map((r) => [
    r.operation,
    (r.bytes / MB).toFixed(r.bytes >= 100 * MB ? 0 : 1),
    String(r.blobs),
    String(r.volumes),
    r.seconds.toFixed(2),
    r.bytes > 0 ? (r.bytes / MB / r.seconds).toFixed(0) : '-',
    (r.peakRss / MB).toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: readonly string[]) => c.map((s, i) => (i === 0 ? s.padEnd(widths[i]!) : s.padStart(widths[i]!))).join('  ');
  const notes = list.filter((r) => r.note).map((r) => `  ${r.operation}: ${r.note}`);
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line), ...(notes.length ? ['', 'notes:', ...notes] : [])].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------

let workDir: string | undefined;

async function main(): Promise<void> {
  mainJs = process.env.BENCH_MIRROR || ensureBuilt(ROOT);
  nodeFlags = (readFileSync(mainJs, 'utf8').split('\n')[0] ?? '').replace(/^#!.*?\bnode\b\s*/, '').split(/\s+/).filter(Boolean);
  const dir = mkdtempSync(join(tmpdir(), 'srm-mirror-bench-bundles-'));
  workDir = dir;
  const at = (...parts: string[]) => join(dir, ...parts);
  for (const d of ['upstream', 'keys']) mkdirSync(at(d));
  const source = at('source');
  const benchStarted = performance.now();
  const diskMBps = await diskProbe(at('probe'));

  // 1. The content: zips on the fake upstream's disk, and the generic files' bytes.
  log(`writing ${BIG_COUNT} + ${NEW_CACHED} zips for the fake upstream under ${dir}`);
  const items: Item[] = [];
  const manifest: UpstreamManifest = { packages: [] };
  for (let i = 0; i < BIG_COUNT; i++) {
    const name = `bench-big-${i}`;
    const releases: Array<{ version: string; file: string }> = [];
    const versions: Array<[string, number, 1 | 2]> = [...(i < NEW_CACHED ? [['1.1.0', NEW_MB, 2] as [string, number, 1 | 2]] : []), ['1.0.0', BIG_MB, 1]];
    for (const [version, mb, round] of versions) {
      const zip = componentZip(name, version, { payload: randomBytes(mb * MB) });
      const file = at('upstream', `${name}-${version}.zip`);
      writeFileSync(file, zip);
      releases.push({ version, file });
      items.push(cachedItem(name, version, zip, round));
    }
    manifest.packages.push({ name, releases });
  }
  writeFileSync(at('upstream', 'manifest.json'), JSON.stringify(manifest));
  const generic = [
    ...Array.from({ length: BIG_COUNT }, (_, i) => genericItem(`tool-${i}`, '1.0.0', `tool-${i}.bin`, randomBytes(BIG_MB * MB), 1)),
    ...Array.from({ length: SMALL }, (_, i) => genericItem('small', `1.0.${Math.floor(i / SMALL_PER_VERSION)}`, `f${i % SMALL_PER_VERSION}.bin`, randomBytes(SMALL_KB * 1000), 1, true)),
  ];
  const newGeneric = Array.from({ length: NEW_GENERIC }, (_, i) => genericItem(`tool-${i}`, '1.1.0', `tool-${i}.bin`, randomBytes(NEW_MB * MB), 2));
  items.push(...generic, ...newGeneric);

  // 2. The source mirror, filled through its own front doors.
  const keygen = await cli('keygen', ['keygen', '--out', at('keys', 'site')]);
  if (keygen.code !== 0) throw new Error(`keygen: exit ${keygen.code}\n${keygen.output}`);
  const userAdd = await cli('user', ['user', 'add', OWNER, '--data', source, '--log-level', 'error']);
  const secret = /^\s{2}(\S+)$/m.exec(userAdd.output)?.[1];
  if (userAdd.code !== 0 || !secret) throw new Error(`user add: exit ${userAdd.code}\n${userAdd.output}`);
  const upstreamChild = start('upstream', process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'upstream-server.ts'), at('upstream', 'manifest.json')], { cwd: ROOT, stdout: 'pipe' });
  const upstream = `http://127.0.0.1:${(JSON.parse(await firstLine(upstreamChild)) as { port: number }).port}/v3`;
  const sourceFlags = ['--upstream', upstream];

  const fill = async (round: 1 | 2) => {
    const t0 = performance.now();
    const server = await Server.start('source', source, sourceFlags);
    for (const item of items.filter((i) => i.round === round && i.id.startsWith('cached:'))) {
      const got = await server.fetch(item.path);
      if (got.status !== 200 || got.digest !== item.digest) throw new Error(`GET ${item.path} through the source mirror: ${got.status}, ${got.size} bytes, sha256 ${got.digest}`);
    }
    const puts = (round === 1 ? generic : newGeneric).filter((g) => !g.small);
    for (const g of puts) await server.put(g.path, secret, g.bytes);
    const smalls = round === 1 ? generic.filter((g) => g.small) : [];
    const t1 = performance.now();
  await parallel(smalls, 8, (g) => server.put(g.path, secret, g.bytes));
    const t2 = performance.now();
  await server.stop();
    const bytes = items.filter((i) => i.round === round).reduce((n, i) => n + i.size, 0);
    log(`round ${round}: ${(bytes / MB).toFixed(0)} MB into the source mirror in ${((performance.now() - t0) / 1000).toFixed(1)} s` + (smalls.length ? ` (${smalls.length} small PUTs: ${((t2 - t1) / 1000).toFixed(1)} s)` : ''));
  };
  await fill(1);

  const key = ['--sign-key', at('keys', 'site.key')];
  const trust = ['--trust', at('keys', 'site.pub')];
  const json = ['--json', '--log-level', 'error'];
  const exportArgs = (out: string, ...more: string[]) => ['export', '--out', out, ...key, '--max-volume-size', VOLUME, '--data', source, ...sourceFlags, ...json, ...more];
  const importArgs = (bundle: string, target: string) => ['import', bundle, ...trust, '--data', target, '--offline', ...json];

  // 3. The small files alone first (so that the full export is the one `--since last` is relative to).
  log('export and import of the small files alone');
  const perBlob = (run: CliRun) => `${((run.seconds * 1000) / SMALL).toFixed(2)} ms per blob, wall clock (start-up included)`;
  const smallExport = await cliOk('export-small', exportArgs(at('b-small'), `${OWNER}/small`));
  exportRow(`export, ${SMALL} x ${SMALL_KB} KB only`, smallExport, perBlob(smallExport));
  const smallImport = await cliOk('import-small', importArgs(at('b-small'), at('t-small')));
  importRow(`import, ${SMALL} x ${SMALL_KB} KB only`, smallImport, perBlob(smallImport));
  checkManifest('the small-files bundle', at('b-small'), items.filter((i) => i.small), items.filter((i) => i.small));

  // 4. Everything: export, import, import again, import killed half way and run again.
  log('export of everything');
  const full = await cliOk('export', exportArgs(at('b1')));
  exportRow('export, everything (signed, 256 MB volumes)', full);
  const round1 = items.filter((i) => i.round === 1);
  checkManifest('the full bundle', at('b1'), round1, round1);

  log('import into an empty data folder');
  const first = await cliOk('import', importArgs(at('b1'), at('t1')));
  importRow('import into an empty folder', first);
  log('the same import again');
  const again = await cliOk('import-again', importArgs(at('b1'), at('t1')));
  importRow('import again (all there already)', again);
  if ((again.summary as { blobs: number }).blobs !== 0) problems.push('import again: it stored blobs again');

  log('import killed (SIGKILL) half way, then run again');
  const killedRun = await cli('import-killed', importArgs(at('b1'), at('t-resume')), (e) => e.done.bytes >= e.total.bytes / 2);
  if (!killedRun.killed) problems.push(`the import to be killed ended first (exit ${killedRun.code})`);
  const onDisk = blobsOnDisk(at('t-resume'));
  const progressed = killedRun.progress?.done.bytes ?? 0;
  rows.push({
    operation: 'import, SIGKILLed half way',
    bytes: progressed,
    blobs: killedRun.progress?.done.blobs ?? 0,
    volumes: killedRun.progress?.done.volumes ?? 0,
    seconds: killedRun.seconds,
    peakRss: killedRun.peakRss,
    note: `killed at ${(progressed / MB).toFixed(0)} MB of progress; ${onDisk.files} blobs (${(onDisk.bytes / MB).toFixed(0)} MB) committed on disk then`,
  });
  const resumed = await cliOk('import-resumed', importArgs(at('b1'), at('t-resume')));
  const fullBytes = (full.summary as { bytes: number }).bytes;
  importRow('import rerun after the SIGKILL', resumed, `wrote ${(((resumed.summary as { bytes: number }).bytes / fullBytes) * 100).toFixed(0)}% of the bundle's bytes again or anew`);

  // 5. New versions, the incremental bundle, its import.
  await fill(2);
  log('incremental export (--since last) and its import');
  const inc = await cliOk('export-incremental', exportArgs(at('b2'), '--since', 'last'));
  exportRow('export, incremental (--since last)', inc);
  checkManifest('the incremental bundle', at('b2'), items, items.filter((i) => i.round === 2));
  const incImport = await cliOk('import-incremental', importArgs(at('b2'), at('t1')));
  importRow('import of the incremental bundle', incImport);
  await stop(upstreamChild);

  // 6. What the imported mirrors serve, offline.
  const sample = (list: Item[]) => [...list.filter((i) => !i.small), ...pick(list.filter((i) => i.small), SMALL_SAMPLE)];
  await checkServed('t1 (full + incremental)', at('t1'), sample(items));
  await checkServed('t-resume (killed, then rerun)', at('t-resume'), sample(round1));
  await checkServed('t-small', at('t-small'), pick(items.filter((i) => i.small), SMALL_SAMPLE));

  const model = cpus()[0]?.model.trim() ?? 'cpu';
  console.log('');
  console.log(`srm-mirror bench:bundles: node ${process.version}, ${cpus().length} x ${model}; mirror ${mainJs}; temp folder in ${tmpdir()}`);
  console.log(`content: ${BIG_COUNT} cached archives and ${BIG_COUNT} generic files of ${BIG_MB} MB, ${SMALL} generic files of ${SMALL_KB} KB; then ${NEW_CACHED} cached and ${NEW_GENERIC} generic of ${NEW_MB} MB more`);
  console.log(`disk: ${DISK_PROBE_MB} MB written and fsynced at ${diskMBps.toFixed(0)} MB/s just before the run (the imports write every byte durably: a slow or throttled disk shows in their figures)`);
  console.log('each row: one `srm-mirror` command, its own process, wall clock from spawn to exit; MB = 10^6 bytes of blobs (export: carried, import: stored by that run); peak RSS = VmHWM');
  console.log('');
  console.log(table(rows));
  console.log('');
  console.log(`whole bench: ${((performance.now() - benchStarted) / 1000).toFixed(0)} s`);
  if (errorsAtShutdown.length) console.log(`\nerrors the servers logged while stopping (not counted as failures):\n${errorsAtShutdown.map((l) => `  ${l}`).join('\n')}`);
  if (errorsLogged.length) problems.push(`the mirror processes logged ${errorsLogged.length} error(s):\n${errorsLogged.map((l) => `    ${l}`).join('\n')}`);
  if (problems.length) {
    console.log(`\nFAILED: ${problems.length} problem(s):\n${problems.map((p) => `  ${p}`).join('\n')}`);
    process.exitCode = 1;
  } else console.log('every large version and a sample of the small files is served by the imported mirrors with the bytes that went in');
}

/** The bundle's manifest lists exactly `state` (with their sha256) and carries exactly the blobs of `carried`. */
function checkManifest(what: string, bundle: string, state: readonly Item[], carried: readonly Item[]): Manifest {
  const m = parseManifest(readFileSync(join(bundle, 'manifest.json'), 'utf8'));
  const listed = new Map(m.entries.map((e) => [entryId(e), e.digest]));
  const wrong = state.filter((i) => listed.get(i.id) !== i.digest).map((i) => i.id);
  if (wrong.length || listed.size !== state.length) problems.push(`${what}: ${listed.size} entries, ${state.length} expected; wrong or missing: ${wrong.slice(0, 5).join(', ')}`);
  const blobs = new Set(m.blobs.map((b) => b.digest));
  const want = new Set(carried.map((i) => i.digest));
  if (blobs.size !== want.size || [...want].some((d) => !blobs.has(d))) problems.push(`${what}: carries ${blobs.size} blobs, ${want.size} expected`);
  return m;
}

/** A mirror started offline on `dataDir` answers every item 200 with its bytes. */
async function checkServed(what: string, dataDir: string, list: readonly Item[]): Promise<void> {
  const t0 = performance.now();
  const server = await Server.start(`serve ${what.split(' ')[0]}`, dataDir, ['--offline', '--upstream', 'http://127.0.0.1:9/v3']);
  let bad = 0;
  let bytes = 0;
  try {
    for (const item of list) {
      const got = await server.fetch(item.path);
      bytes += got.size;
      if (got.status !== 200 || got.digest !== item.digest) {
        if (bad++ < 5) problems.push(`${what}: GET ${item.path}: ${got.status}, ${got.size} bytes${got.status === 200 ? ', wrong sha256' : ''}`);
      }
    }
  } finally {
  await server.stop();
  }
  if (bad > 5) problems.push(`${what}: ${bad - 5} more wrong answers`);
  log(`${what}: ${list.length - bad} of ${list.length} served right (${(bytes / MB).toFixed(0)} MB over HTTP in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}

const DISK_PROBE_MB = 256;

/** The disk's durable write rate now: DISK_PROBE_MB written a MB at a time, fsynced, in MB/s. */
async function diskProbe(path: string): Promise<number> {
  spawnSync('sync');
  const chunk = randomBytes(MB);
  const t0 = performance.now();
  const file = await open(path, 'w');
  try {
    for (let i = 0; i < DISK_PROBE_MB; i++) await file.write(chunk);
  await file.sync();
  } finally {
  await file.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  rmSync(path);
  return DISK_PROBE_MB / seconds;
}

/** n items spread evenly over the list. */
function pick<T>(list: readonly T[], n: number): T[] {
  if (list.length <= n) return [...list];
  return Array.from({ length: n }, (_, i) => list[Math.floor((i * list.length) / n)]!);
}

async function cleanup(): Promise<void> {
  await stopAll();
  if (workDir && process.env.BUNDLES_KEEP === '1') log(`kept ${workDir}`);
  else if (workDir) rmSync(workDir, { recursive: true, force: true });
}

runBench('bench:bundles', main, cleanup, () => {
  if (rows.length) console.error(`
figures so far:
${table(rows)}`);
});
