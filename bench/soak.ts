// `npm run soak`: the mirror (dist/main.js, its own process) against a sick upstream and hostile clients for a
// bounded time, with canary clients reading cached answers throughout. The fake upstream (test/fakes/upstream.ts,
// with its fault injection) and every client run in this process, all on 127.0.0.1. It prints a table of figures
// and a verdict per target; it asserts nothing and exits 0 once done (or when its watchdog fires).
//
// Phases, in this order: warm-up; (iii) a 100 MB upstream JSON answer read by 10 clients; (iv) cold reads alone,
// then with 16 clients trickling publish bodies; (i) a blackholed upstream with 300 clients of stale metadata, then
// the upstream back; (ii) 1,500 paused downloads of a cached archive; then the fault matrix (every
// hostile request, body and upstream answer of test/integration/crash-matrix.test.ts, plus the sick-upstream
// cases) in a loop for SOAK_SECONDS (default 60). If the mirror dies it is counted as a crash and started again.
import { randomBytes, createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setMaxListeners } from 'node:events';
import { Agent, request, type Dispatcher } from 'undici';
import { FakeUpstream, sha256 } from '../test/fakes/upstream.js';
import { componentZip } from '../test/fakes/zips.js';
import { bigBody, rawRequest } from '../test/fakes/clients.js';
import { percentile } from './load.js';
import { envInt, freePort, PeakRss, start, stop, stopAll, waitReady, type Child } from './procs.js';
import { ensureBuilt } from './world.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SOAK_SECONDS = envInt('SOAK_SECONDS', 60);
const ADMIN_TOKEN = 'soak-admin-token-0123456789';
const MB = 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


function log(msg: string): void {
  process.stderr.write(`soak: ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------------------------
// The mirror, supervised: an exit we did not ask for is a crash; it is counted and the mirror started again.

class Mirror {
  child!: Child;
  rss!: PeakRss;
  readonly firstPid: number[] = [];
  crashes = 0;
  readonly crashTails: string[] = [];
  /** stderr lines: all, those naming an uncaught/unhandled error, those that are not JSON, and counts by message. */
  readonly lines = { total: 0, uncaught: [] as string[], nonJson: [] as string[], byMsg: new Map<string, number>() };
  private stopping = false;

  constructor(
    private readonly mainJs: string,
    readonly port: number,
    private readonly args: string[],
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SRM_MIRROR_')));
    // The node flags the mirror runs with are on the first line of dist/main.js (its shebang): run them here too.
    const nodeFlags = (readFileSync(this.mainJs, 'utf8').split('\n')[0] ?? '').replace(/^#!.*?\bnode\b\s*/, '').split(/\s+/).filter(Boolean);
    const args = [...nodeFlags, this.mainJs, 'serve', '--host', '127.0.0.1', '--port', String(this.port), ...this.args];
    this.child = start('mirror', process.execPath, args, { cwd: ROOT, env, onStderr: (line) => this.onLine(line) });
    this.firstPid.push(this.child.pid);
    const child = this.child;
    void child.exited.then((code) => {
      if (this.stopping || child !== this.child) return;
      this.crashes++;
      this.crashTails.push(`exit ${code}: ${child.stderrTail().slice(-1500)}`);
      log(`the mirror exited (${code}): counted as a crash, starting it again`);
      void this.start().catch((err: unknown) => log(`restart failed: ${String(err)}`));
    });
    await waitReady(`${this.url}/-/health`, this.child);
    this.rss = new PeakRss(this.child.pid);
  }

  async stop(): Promise<number | null> {
    this.stopping = true;
    this.rss?.close();
    const signalled = Date.now();
    await stop(this.child, 15_000);
    const code = await this.child.exited;
    log(`mirror stopped (SIGTERM) in ${Date.now() - signalled} ms, exit ${code}`);
    return code;
  }

  private onLine(line: string): boolean {
    this.lines.total++;
    if (/uncaught|unhandled/i.test(line)) this.lines.uncaught.push(line.slice(0, 400));
    let msg: string;
    try {
      const j = JSON.parse(line) as { level?: string; msg?: string };
      msg = `${j.level} "${j.msg}"`;
    } catch {
      this.lines.nonJson.push(line.slice(0, 400));
      msg = `(not JSON) ${line.slice(0, 60)}`;
    }
    const n = (this.lines.byMsg.get(msg) ?? 0) + 1;
    this.lines.byMsg.set(msg, n);
    return n <= 1 || !line.startsWith('{'); // echo the first of each message, and anything that is not a log line
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Figures per phase.

interface PhaseStats {
  readonly name: string;
  seconds: number;
  canaryRequests: number;
  canaryErrors: number;
  canaryLatencies: number[];
  corrupt: number;
  upstreamRequests: number;
  peakRss: number;
  /** This process's event-loop delay p99 (ms): the canary's latency includes it. */
  loopP99: number;
  /** The phase's own figure, for the table. */
  figure: string;
}

const phases: PhaseStats[] = [];
let current: PhaseStats | undefined;
const canaryErrorSamples: string[] = [];

function newPhase(name: string): PhaseStats {
  return { name, seconds: 0, canaryRequests: 0, canaryErrors: 0, canaryLatencies: [], corrupt: 0, upstreamRequests: 0, peakRss: 0, loopP99: 0, figure: '' };
}

async function phase(name: string, mirror: Mirror, fake: FakeUpstream, run: (p: PhaseStats) => Promise<void>): Promise<PhaseStats> {
  const p = newPhase(name);
  phases.push(p);
  current = p;
  log(`${name}`);
  const startedAt = performance.now();
  const upstreamBefore = fake.requests.length;
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  mirror.rss.reset();
  try {
    await run(p);
  } catch (err) {
    p.figure += ` [phase failed: ${err instanceof Error ? err.message : String(err)}]`;
    log(`${name}: failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    p.seconds = (performance.now() - startedAt) / 1000;
    p.upstreamRequests = fake.requests.length - upstreamBefore;
    p.peakRss = mirror.rss.peak();
    loop.disable();
    p.loopP99 = loop.percentile(99) / 1e6;
    fake.clearFaults();
  }
  return p;
}

// ---------------------------------------------------------------------------------------------------------------
// Canary clients: read the cached metadata and the cached archive over and over, checking every body.

class Canary {
  private stopped = false;
  private readonly loops: Array<Promise<void>> = [];
  private readonly agent = new Agent({ connections: 8, headersTimeout: 10_000, bodyTimeout: 10_000 });

  constructor(
    private readonly base: () => string,
    private readonly zipSha: string,
    clients: number,
  ) {
    for (let i = 0; i < clients; i++) this.loops.push(this.loop(i));
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all(this.loops);
    await this.agent.close();
  }

  private async loop(i: number): Promise<void> {
    // Half the clients start with the archive, so that both are read at every moment.
    const reads = [() => this.read('/v3/packages/canary/release/latest', (b) => (JSON.parse(b.toString()) as { body: { tag_name: string } }).body.tag_name === '1.0.0'), () => this.read('/v3/packages/canary/zipball/1.0.0', (b) => sha256(b) === this.zipSha, true)];
    if (i % 2) reads.reverse();
    while (!this.stopped) {
      for (const read of reads) await read();
      await sleep(10);
    }
  }

  private async read(path: string, good: (body: Buffer) => boolean, archive = false): Promise<void> {
    const p = current;
    const t0 = performance.now();
    let error: string | undefined;
    try {
      const res = await request(this.base() + path, { dispatcher: this.agent });
      const body = Buffer.from(await res.body.arrayBuffer());
      if (res.statusCode !== 200) error = `${res.statusCode} ${body.toString().slice(0, 120)}`;
      else if (!good(body)) {
        error = `wrong body (${body.length} bytes)`;
        if (archive && p) p.corrupt++;
      }
    } catch (err) {
      error = String(err);
    }
    if (!p) return;
    p.canaryRequests++;
    p.canaryLatencies.push(performance.now() - t0);
    if (error) {
      p.canaryErrors++;
      if (canaryErrorSamples.length < 10) canaryErrorSamples.push(`${p.name}: ${path}: ${error}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Clients.

type Outcome = { status: number; body: Buffer; cache: string; ms: number } | { error: string; ms: number };

async function fetchWhole(url: string, o: { method?: Dispatcher.HttpMethod; headers?: Record<string, string>; body?: Readable | Buffer; timeoutMs?: number; dispatcher?: Dispatcher } = {}): Promise<Outcome> {
  const t0 = performance.now();
  try {
    const res = await request(url, { method: o.method ?? 'GET', headers: o.headers, body: o.body, dispatcher: o.dispatcher, signal: AbortSignal.timeout(o.timeoutMs ?? 15_000) });
    const body = Buffer.from(await res.body.arrayBuffer());
    const cache = res.headers['x-cache'];
    return { status: res.statusCode, body, cache: typeof cache === 'string' ? cache : '-', ms: performance.now() - t0 };
  } catch (err) {
    return { error: err instanceof Error ? err.name : String(err), ms: performance.now() - t0 };
  }
}

const label = (o: Outcome) => ('error' in o ? o.error : o.cache === '-' ? String(o.status) : `${o.status} ${o.cache}`);

const raw = (base: string, head: string, o?: Parameters<typeof rawRequest>[2]) => rawRequest(base, head, o);


/** Headers as a logged-in `s` client signs a publish (made-up credentials: the fake checks their shape only). */
function signed(): Record<string, string> {
  const safety = 'soak-safety-code';
  const [nonce, timestamp] = ['n0nce', String(Math.floor(Date.now() / 1000))];
  return { token: createHash('md5').update(safety).digest('hex'), nonce, timestamp, sign_code: createHash('sha256').update(safety + nonce + timestamp).digest('hex') };
}

function stats(ms: number[]): { p50: number; p99: number; max: number } {
  const s = [...ms].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1] ?? NaN };
}

function count(labels: string[]): string {
  const m = new Map<string, number>();
  for (const l of labels) m.set(l, (m.get(l) ?? 0) + 1);
  return [...m].map(([k, n]) => `${k} x${n}`).join(', ');
}

// ---------------------------------------------------------------------------------------------------------------

interface World {
  readonly fake: FakeUpstream;
  readonly mirror: Mirror;
  readonly dataDir: string;
}

const CANARY_ZIP = componentZip('canary', '1.0.0', { payload: randomBytes(200_000) });
/** The archive the paused downloads read: a few MB. */
const PAUSED_ZIP = componentZip('paused', '1.0.0', { payload: randomBytes(4 << 20) });
const STALE_PACKAGES = 50;
const COLD_READS = 100;

/** (ii) 1,500 clients that open a download of a cached 4 MB archive, read its headers, and stop reading. */
async function pausedDownloads(w: World, p: PhaseStats): Promise<{ open: number; rssOpen: number; rssBefore: number; rssAfter: number }> {
  const { hostname, port } = new URL(w.mirror.url);
  const sockets: Socket[] = [];
  const rssBefore = w.mirror.rss.current();
  const open1 = () =>
    new Promise<boolean>((resolve) => {
      const s = connect(Number(port), hostname, () => s.write(`GET /v3/packages/paused/zipball/1.0.0 HTTP/1.1\r\nHost: ${hostname}:${port}\r\n\r\n`));
      sockets.push(s);
      const timer = setTimeout(() => resolve(false), 15_000);
      s.once('data', (c: Buffer) => {
        s.pause(); // reads nothing more: the mirror's writes back up
        clearTimeout(timer);
        resolve(c.toString('latin1', 0, 12) === 'HTTP/1.1 200');
      });
      s.on('error', () => resolve(false));
    });
  let open = 0;
  try {
    for (let i = 0; i < 1500; i += 100) open += (await Promise.all(Array.from({ length: 100 }, open1))).filter(Boolean).length;
    await sleep(3_000); // all open and stuck; the canary goes on
    const rssOpen = Math.max(w.mirror.rss.current(), w.mirror.rss.peak());
    for (const s of sockets) s.destroy();
    await sleep(2_000);
    const rssAfter = w.mirror.rss.current();
    p.figure = `${open}/1500 open (200, headers read, then paused); mirror RSS ${(rssBefore / MB).toFixed(0)} MB before, ${(rssOpen / MB).toFixed(0)} MB peak while open, ${(rssAfter / MB).toFixed(0)} MB 2 s after they closed`;
    return { open, rssOpen, rssBefore, rssAfter };
  } finally {
    for (const s of sockets) s.destroy();
  }
}

/** (iii) 10 clients of a metadata answer whose upstream JSON is 100 MB, with a Content-Length and then chunked. */
async function hugeJson(w: World, p: PhaseStats): Promise<{ delta: number; statuses: string }> {
  await breakerClosed(w);
  const before = w.mirror.rss.current();
  w.mirror.rss.reset();
  const outcomes: Outcome[] = [];
  for (const chunked of [false, true]) {
    w.fake.inject(/^\/v3\/packages\/huge\/release\/latest/, { kind: 'big-json', bytes: 100e6, chunked });
    outcomes.push(...(await Promise.all(Array.from({ length: 10 }, () => fetchWhole(`${w.mirror.url}/v3/packages/huge/release/latest`, { timeoutMs: 60_000 })))));
    w.fake.clearFaults();
  }
  const peak = w.mirror.rss.peak();
  const slowest = Math.max(...outcomes.map((o) => o.ms));
  const statuses = count(outcomes.map(label));
  p.figure = `20 reads (10 with Content-Length, 10 chunked): ${statuses}, slowest ${(slowest / 1000).toFixed(2)} s; RSS ${(before / MB).toFixed(0)} MB before, peak ${(peak / MB).toFixed(0)} MB (+${((peak - before) / MB).toFixed(0)} MB)`;
  return { delta: peak - before, statuses };
}

/** (iv) Cold reads (metadata, then the archive; one client, one after the other): alone, then beside 16 trickling uploads. */
async function coldReads(w: World, p: PhaseStats): Promise<{ alone: ReturnType<typeof stats>; trickling: ReturnType<typeof stats>; bad: number }> {
  await breakerClosed(w);
  let bad = 0;
  const caches: string[] = [];
  const reads = async (from: number) => {
    const ms: number[] = [];
    for (let i = from; i < from + COLD_READS; i++) {
      const t0 = performance.now();
      const meta = await fetchWhole(`${w.mirror.url}/v3/packages/cold-${i}/release/latest`);
      const zip = await fetchWhole(`${w.mirror.url}/v3/packages/cold-${i}/zipball/1.0.0`);
      ms.push(performance.now() - t0);
      if ('error' in meta || meta.status !== 200 || 'error' in zip || zip.status !== 200) bad++;
      else {
        caches.push(zip.cache);
        if (sha256(zip.body) !== coldZips.get(i)) (bad++, p.corrupt++);
      }
    }
    return stats(ms);
  };
  const alone = await reads(0);
  const abort = new AbortController();
  setMaxListeners(64, abort.signal);
  const uploads = Array.from({ length: 16 }, () => {
    let first = true;
    const body = new Readable({
      read() {
        if (first) (first = false), this.push('publish=Name%3A%20trickle%0AVersion%3A%201.0.0%0A');
        else setTimeout(() => this.push('a'), 1_000).unref(); // one byte a second: never idle for writes.bodyTimeout
      },
    });
    return request(`${w.mirror.url}/v3/packages/releases`, { method: 'POST', headers: { ...signed(), 'content-type': 'application/x-www-form-urlencoded' }, body, signal: abort.signal }).then(
      (r) => r.body.dump(),
      () => undefined,
    );
  });
  await sleep(1_000); // the writes lane's 4 slots are taken, 12 wait
  const trickling = await reads(COLD_READS);
  abort.abort();
  await Promise.all(uploads);
  p.figure = `${COLD_READS} cold reads alone: p50 ${alone.p50.toFixed(0)} ms, p99 ${alone.p99.toFixed(0)} ms; ${COLD_READS} beside 16 trickling uploads: p50 ${trickling.p50.toFixed(0)} ms, p99 ${trickling.p99.toFixed(0)} ms; archives ${count(caches)}${bad ? `; ${bad} failed` : ''}`;
  return { alone, trickling, bad };
}

/** (i) 300 clients of stale metadata (50 packages) with the upstream blackholed; then the upstream back. */
async function blackhole(w: World, p: PhaseStats): Promise<{ slowest: number; stale: number; total: number; revalidatedAfter: number; revalidatedAs: string }> {
  await breakerClosed(w);
  const agent = new Agent({ connections: 400, headersTimeout: 60_000, bodyTimeout: 60_000 });
  try {
    const latest = (i: number) => `${w.mirror.url}/v3/packages/stale-${i}/release/latest`;
    for (let i = 0; i < STALE_PACKAGES; i += 10) await Promise.all(Array.from({ length: 10 }, (_, j) => fetchWhole(latest(i + j), { dispatcher: agent })));
    await sleep(1_500); // past --max-age 1s: every copy is stale
    w.fake.inject(/./, { kind: 'hang' }); // accepts, reads the request, never answers
    const outcomes = await Promise.all(Array.from({ length: 300 }, (_, k) => fetchWhole(latest(k % STALE_PACKAGES), { dispatcher: agent, timeoutMs: 60_000 })));
    const slowest = Math.max(...outcomes.map((o) => o.ms));
    const stale = outcomes.filter((o) => !('error' in o) && o.status === 200 && o.cache === 'STALE').length;
    await sleep(1_000);
    w.fake.clearFaults(); // the upstream is back (the hung requests are cut)
    const back = performance.now();
    let revalidatedAs = 'never (40 s)';
    let revalidatedAfter = NaN;
    for (let i = 0; i < 160; i++) {
      const o = await fetchWhole(latest(0), { dispatcher: agent });
      if (!('error' in o) && o.status === 200 && o.cache !== 'STALE') {
        revalidatedAfter = performance.now() - back;
        revalidatedAs = o.cache;
        break;
      }
      await sleep(250);
    }
    const after = await Promise.all(Array.from({ length: STALE_PACKAGES }, (_, i) => fetchWhole(latest(i), { dispatcher: agent })));
    p.figure =
      `300 clients: ${count(outcomes.map((o) => ('error' in o ? o.error : `${o.status} ${o.cache}`)))}, slowest ${(slowest / 1000).toFixed(2)} s; ` +
      `upstream back: first non-STALE answer after ${(revalidatedAfter / 1000).toFixed(1)} s (${revalidatedAs}), then the 50: ${count(after.map((o) => ('error' in o ? o.error : o.cache)))}`;
    return { slowest, stale, total: outcomes.length, revalidatedAfter, revalidatedAs };
  } finally {
    await agent.close();
  }
}

/** Waits (up to 25 s) for the upstream circuit to be closed, sending a probe (an unknown package: a 404) when it is due. */
async function breakerClosed(w: World): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const s = await fetchWhole(`${w.mirror.url}/-/status`);
    if (!('error' in s) && (JSON.parse(s.body.toString()) as { upstream: { circuit: { state: string } } }).upstream.circuit.state === 'closed') return;
    await fetchWhole(`${w.mirror.url}/v3/packages/probe-${Date.now()}/release/latest`);
    await sleep(500);
  }
  log('the upstream circuit did not close within 25 s');
}

// ---------------------------------------------------------------------------------------------------------------
// The fault matrix: one case at a time, in a loop, each bounded; what each answered is tallied.

const coldZips = new Map<number, string>();
const tally = new Map<string, number>();
const note = (what: string) => tally.set(what, (tally.get(what) ?? 0) + 1);
let victimSerial = 0;

/** A new version of `victim` nobody has asked for yet (the fake keeps only the newest few). */
function newVictim(fake: FakeUpstream, payload = 100_000): { version: string; zip: Buffer; blob: RegExp } {
  const version = `1.0.${++victimSerial}`;
  const zip = componentZip('victim', version, { payload: randomBytes(payload) });
  fake.publish('victim', { version, zip });
  const pkg = fake.packages.get('victim')!;
  pkg.releases.length = Math.min(pkg.releases.length, 6);
  return { version, zip, blob: new RegExp(`^/blob/${sha256(zip)}`) };
}

/** A download answered 200 whole with other bytes than the archive's is a corrupt body served. */
function checkArchive(o: Outcome, zip: Buffer, what: string, p: PhaseStats): void {
  note(`${what}: ${'error' in o ? o.error : `${o.status}${o.status === 200 ? ` ${o.cache}` : ''}`}`);
  if (!('error' in o) && o.status === 200 && sha256(o.body) !== sha256(zip)) {
    p.corrupt++;
    note(`${what}: CORRUPT 200`);
  }
}

function matrix(w: World, p: PhaseStats): Array<[string, () => Promise<void>]> {
  const { fake, mirror } = w;
  const url = () => mirror.url;
  const host = () => new URL(mirror.url).host;
  let sick = 0;
  let disk = 0;
  let bigJson = 0;
  return [
    [
      'a: 2 x 50 MB anonymous publish, upstream 401 before reading',
      async () => {
        fake.inject(/^\/v3\/packages\/releases$/, { kind: 'status-early', status: 401 });
        const r = await Promise.all(
          Array.from({ length: 2 }, () =>
            fetchWhole(`${url()}/v3/packages/releases`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(50 << 20) }, body: bigBody(50 << 20), timeoutMs: 20_000 }),
          ),
        );
        for (const o of r) note(`a 50 MB publish: ${label(o)}`);
      },
    ],
    [
      'c: 5 uploads left mid-body',
      async () => {
        const head = `POST /v3/packages/releases HTTP/1.1\r\nHost: ${host()}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${10 << 20}\r\n\r\n`;
        const r = await Promise.all(Array.from({ length: 5 }, () => raw(url(), head, { body: Buffer.alloc(1 << 20, 'a'), timeoutMs: 300 })));
        for (const o of r) note(`c upload left mid-body: ${o.status || (o.how === 'timeout' ? 'left, unanswered' : o.how)}`);
      },
    ],
    [
      'd: downloads left mid-body, cold x3 then cached x5',
      async () => {
        const v = newVictim(fake, 1 << 20);
        const get = `GET /v3/packages/victim/zipball/${v.version} HTTP/1.1\r\nHost: ${host()}\r\n\r\n`;
        for (const o of await Promise.all(Array.from({ length: 3 }, () => raw(url(), get, { leaveAfter: 128 * 1024 })))) note(`d cold download left: ${o.status} ${o.how}`);
        await sleep(200);
        for (const o of await Promise.all(Array.from({ length: 5 }, () => raw(url(), get, { leaveAfter: 128 * 1024 })))) note(`d second download left: ${o.status} ${o.how}`);
        checkArchive(await fetchWhole(`${url()}/v3/packages/victim/zipball/${v.version}`), v.zip, 'd whole download after', p);
      },
    ],
    ...(['reset-mid-body', 'stall-mid-body', 'short-body'] as const).map((kind): [string, () => Promise<void>] => [
      `e: upstream ${kind}`,
      async () => {
        const v = newVictim(fake);
        fake.inject(v.blob, { kind }, 1);
        // A stall lasts until the faults are cleared: this client gives up after 3 s, then the stall ends (a reset).
        const o = await fetchWhole(`${url()}/v3/packages/victim/zipball/${v.version}`, { timeoutMs: 3_000 });
        checkArchive(o, v.zip, `e ${kind}`, p);
        fake.clearFaults();
        checkArchive(await fetchWhole(`${url()}/v3/packages/victim/zipball/${v.version}`), v.zip, `e after ${kind}`, p);
      },
    ]),
    [
      'f: not JSON, JSON over the cap (20 MB), HTML as an archive',
      async () => {
        fake.inject(/^\/v3\/packages\/junk\/release\/latest/, { kind: 'not-json' }, 3);
        note(`f not JSON: ${label(await fetchWhole(`${url()}/v3/packages/junk/release/latest`))}`);
        fake.inject(/^\/v3\/packages\/junk\/release\/tags/, { kind: 'big-json', bytes: 20e6, chunked: ++bigJson % 2 === 0 }, 3);
        note(`f 20 MB JSON: ${label(await fetchWhole(`${url()}/v3/packages/junk/release/tags/1.0.0`))}`);
        const v = newVictim(fake);
        fake.inject(v.blob, { kind: 'body', body: Buffer.from(`<html>${'<p>bad gateway</p>'.repeat(3000)}</html>`), chunked: victimSerial % 2 === 0 }, 3);
        checkArchive(await fetchWhole(`${url()}/v3/packages/victim/zipball/${v.version}`), v.zip, 'f HTML as an archive', p);
        fake.clearFaults();
      },
    ],
    [
      'sick: 500, 503, 429 Retry-After, blackholed, slow (1.5 s)',
      async () => {
        const name = `sick-${++sick}`;
        fake.add(name, [{ version: '1.0.0' }]);
        const latest = `${url()}/v3/packages/${name}/release/latest`;
        const match = new RegExp(`^/v3/packages/${name}/`);
        for (const fault of [
          { kind: 'status', status: 500 },
          { kind: 'status', status: 503 },
          { kind: 'status', status: 429, headers: { 'retry-after': '1' } },
        ] as const) {
          fake.inject(match, fault, 3);
          note(`sick ${fault.status}: ${label(await fetchWhole(latest))}`);
          fake.clearFaults();
        }
        fake.inject(match, { kind: 'hang' });
        note(`sick blackholed (client gives up at 3 s): ${label(await fetchWhole(latest, { timeoutMs: 3_000 }))}`);
        fake.clearFaults();
        const v = newVictim(fake);
        fake.inject(v.blob, { kind: 'delay', ms: 1_500 }, 1);
        checkArchive(await fetchWhole(`${url()}/v3/packages/victim/zipball/${v.version}`), v.zip, 'sick slow blob', p);
        note(`sick unknown package: ${label(await fetchWhole(`${url()}/v3/packages/nobody-${sick}/release/latest`))}`);
      },
    ],
    [
      'g: malformed requests',
      async () => {
        const h = host();
        const heads = [
          ...['/v3/packages/%zz/release/latest', '/v3/packages/%E0%A4%A/release/latest', '/v3/packages/../../../../etc/passwd', '/v3/packages/canary/zipball/..%2f..%2fmeta%2fCURRENT', '/%00/releases', '/v3/packages/releases?page=99999999999999999999&search=%ff%fe', `/v3/packages/${'a'.repeat(8000)}/release/latest`].map(
            (t) => `GET ${t} HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
          ),
          `GET /v3/packages/ca\x01nary/release/latest HTTP/1.1\r\nHost: ${h}\r\n\r\n`,
          `GET /v3/packages/canary/release/latest HTTP/1.1\r\nHost: ${h}\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`,
          `POST /v3/packages/releases HTTP/1.1\r\nHost: ${h}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n`,
          '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + 'garbage'.repeat(40),
          ...['bytes=99999999999999999999999-', 'bytes=-99999999999999999999', 'bytes=5-1', 'bytes=abc', `bytes=${Array.from({ length: 1500 }, (_, i) => `${i}-${i}`).join(',')}`].map(
            (r) => `GET /v3/packages/canary/zipball/1.0.0 HTTP/1.1\r\nHost: ${h}\r\nRange: ${r}\r\nConnection: close\r\n\r\n`,
          ),
        ];
        for (const head of heads) {
          const o = await raw(url(), head);
          note(`g malformed: ${o.status ? (o.status >= 500 ? `${o.status} (5xx!)` : `${Math.floor(o.status / 100)}xx`) : o.how}`);
        }
      },
    ],
    [
      'b: archives/tmp removed, or a file in its place; a cold download',
      async () => {
        const tmp = join(w.dataDir, 'archives', 'tmp');
        rmSync(tmp, { recursive: true, force: true });
        if (++disk % 2 === 0) writeFileSync(tmp, 'not a folder');
        try {
          const v = newVictim(fake);
          checkArchive(await fetchWhole(`${url()}/v3/packages/victim/zipball/${v.version}`), v.zip, 'b cold download, disk broken', p);
        } finally {
          rmSync(tmp, { recursive: true, force: true });
          mkdirSync(tmp, { recursive: true });
        }
      },
    ],
  ];
}

/**
 * A broken disk makes the mirror pass downloads through (uncached) for the next minute (its retry interval), so the
 * disk case runs only from half-way through (at most 60 s in), and then at most once every 65 s: the other cases
 * run both with fills to disk and with pass-through.
 */
const DISK_CASE_EVERY_MS = 65_000;

async function runMatrix(w: World, p: PhaseStats): Promise<void> {
  const cases = matrix(w, p);
  const began = Date.now();
  const end = began + SOAK_SECONDS * 1000;
  let lastDisk = began - DISK_CASE_EVERY_MS + Math.min(SOAK_SECONDS * 500, 60_000);
  let runs = 0;
  let cycles = 0;
  let overran = 0;
  while (Date.now() < end) {
    for (const [name, run] of cases) {
      if (Date.now() >= end) break;
      if (name.startsWith('b:')) {
        if (Date.now() - lastDisk < DISK_CASE_EVERY_MS) continue;
        lastDisk = Date.now();
      }
      const t0 = Date.now();
      // Every case is bounded: one that has not finished in 45 s is an unbounded wait somewhere (noted, left behind).
      const outcome = await Promise.race([run().then(() => 'done'), sleep(45_000).then(() => 'overran')]).catch((err: unknown) => `threw ${String(err)}`);
      if (outcome !== 'done') (overran++, note(`${name}: ${outcome}`));
      w.fake.clearFaults();
      runs++;
      if (Date.now() - t0 > 20_000) log(`${name}: took ${Date.now() - t0} ms`);
    }
    cycles++;
  }
  p.figure = `${runs} cases in ${cycles} cycle(s) of ${cases.length}${overran ? `, ${overran} overran 45 s` : ''}`;
}

// ---------------------------------------------------------------------------------------------------------------

let workDir: string | undefined;
let fakeRef: FakeUpstream | undefined;
let canaryRef: Canary | undefined;

async function main(): Promise<void> {
  const began = Date.now();
  const mainJs = process.env.SOAK_MIRROR || ensureBuilt(ROOT);
  workDir = mkdtempSync(join(tmpdir(), 'srm-mirror-soak-'));
  const fake = (fakeRef = await FakeUpstream.start());
  fake.add('canary', [{ version: '1.0.0', zip: CANARY_ZIP }]);
  fake.add('paused', [{ version: '1.0.0', zip: PAUSED_ZIP }]);
  fake.add('victim', [{ version: '1.0.0' }]);
  fake.add('junk', [{ version: '1.0.0' }]);
  for (let i = 0; i < STALE_PACKAGES; i++) fake.add(`stale-${i}`, [{ version: '1.0.0' }]);
  for (let i = 0; i < 2 * COLD_READS; i++) {
    const zip = componentZip(`cold-${i}`, '1.0.0', { payload: randomBytes(100_000) });
    coldZips.set(i, sha256(zip));
    fake.add(`cold-${i}`, [{ version: '1.0.0', zip }]);
  }
  const dataDir = join(workDir, 'data');
  const args = ['--data', dataDir, '--upstream', fake.v3, '--log-level', 'warn', '--prefetch', 'false', '--admin-token', ADMIN_TOKEN, '--max-age', '1s', '--shutdown-grace', '2s', '--breaker-max-backoff', '10s'];
  const mirror = new Mirror(mainJs, await freePort(), args);
  await mirror.start();
  const w: World = { fake, mirror, dataDir };
  log(`mirror ${mainJs} (pid ${mirror.child.pid}) on ${mirror.url}, fake upstream ${fake.url}; fault matrix for ${SOAK_SECONDS} s`);

  for (const path of ['/v3/packages/canary/release/latest', '/v3/packages/canary/zipball/1.0.0', '/v3/packages/paused/zipball/1.0.0', '/v3/packages/paused/zipball/1.0.0']) {
    const o = await fetchWhole(mirror.url + path);
    if ('error' in o || o.status !== 200) throw new Error(`warming ${path} failed: ${label(o)}`);
  }
  const canary = (canaryRef = new Canary(() => mirror.url, sha256(CANARY_ZIP), 4));
  await phase('warm (canary alone, 3 s)', mirror, fake, async (p) => {
    await sleep(3_000);
    p.figure = 'baseline';
  });
  let huge: Awaited<ReturnType<typeof hugeJson>> | undefined;
  await phase('(iii) 100 MB upstream JSON, 10 + 10 clients', mirror, fake, async (p) => void (huge = await hugeJson(w, p)));
  let cold: Awaited<ReturnType<typeof coldReads>> | undefined;
  await phase('(iv) cold reads, then beside 16 trickling publishes', mirror, fake, async (p) => void (cold = await coldReads(w, p)));
  let hole: Awaited<ReturnType<typeof blackhole>> | undefined;
  await phase('(i) blackholed upstream, 300 clients of stale metadata', mirror, fake, async (p) => void (hole = await blackhole(w, p)));
  // Last of the four: the memory it takes is not all given back to the system afterwards.
  let paused: Awaited<ReturnType<typeof pausedDownloads>> | undefined;
  await phase('(ii) 1,500 paused downloads of a cached 4 MB archive', mirror, fake, async (p) => void (paused = await pausedDownloads(w, p)));
  await phase('(ii) again: is that memory reused?', mirror, fake, async (p) => void (await pausedDownloads(w, p)));
  await phase(`fault matrix a-g + sick upstream, ${SOAK_SECONDS} s`, mirror, fake, (p) => runMatrix(w, p));
  const health = await fetchWhole(`${mirror.url}/-/health`);
  const rssEnd = mirror.rss.current();
  current = undefined;
  await canary.stop();
  const pids = [...new Set(mirror.firstPid)];
  const exitCode = await mirror.stop();

  // ---- report
  const all = phases.flatMap((p) => p.canaryLatencies);
  const total = {
    canaryRequests: phases.reduce((s, p) => s + p.canaryRequests, 0),
    canaryErrors: phases.reduce((s, p) => s + p.canaryErrors, 0),
    corrupt: phases.reduce((s, p) => s + p.corrupt, 0),
    upstream: phases.reduce((s, p) => s + p.upstreamRequests, 0),
    peak: Math.max(...phases.map((p) => p.peakRss)),
  };
  const overall = stats(all);
  const cols = ['phase', 's', 'canary req', 'canary err', 'canary p50 ms', 'canary p99 ms', 'corrupt', 'upstream req', 'mirror peak RSS', 'soak loop p99 ms'];
  const rows = phases.map((p) => {
    const s = stats(p.canaryLatencies);
    return [p.name, p.seconds.toFixed(0), String(p.canaryRequests), String(p.canaryErrors), s.p50.toFixed(1), s.p99.toFixed(1), String(p.corrupt), String(p.upstreamRequests), `${(p.peakRss / MB).toFixed(0)} MB`, p.loopP99.toFixed(0)];
  });
  rows.push(['all', ((Date.now() - began) / 1000).toFixed(0), String(total.canaryRequests), String(total.canaryErrors), overall.p50.toFixed(1), overall.p99.toFixed(1), String(total.corrupt), String(total.upstream), `${(total.peak / MB).toFixed(0)} MB`, '']);
  const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log('');
  console.log(`srm-mirror soak: node ${process.version}; mirror ${mainJs}, pid(s) ${pids.join(', ')}; peak RSS from ${mirror.rss.method}; fake upstream and clients in this process, all on 127.0.0.1`);
  console.log(`mirror flags: ${args.filter((a) => !a.startsWith('/') && !a.startsWith('http') && a !== ADMIN_TOKEN).join(' ')} (the rest defaults); 4 canary clients (cached metadata + cached 200 kB archive, sha256 of every body)`);
  console.log('');
  console.log([line(cols), line(widths.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n'));
  console.log('');
  for (const p of phases) console.log(`  ${p.name}: ${p.figure}`);
  console.log('');
  console.log(`fault matrix answers: ${[...tally].map(([k, n]) => `${k} x${n}`).join('; ')}`);
  console.log(`mirror log (warn and up, by message): ${[...mirror.lines.byMsg].map(([m, n]) => `${n} x ${m}`).join('; ') || 'nothing'}`);
  if (canaryErrorSamples.length) console.log(`canary errors, first ${canaryErrorSamples.length}: ${canaryErrorSamples.join(' | ')}`);
  if (mirror.crashTails.length) console.log(`crashes: ${mirror.crashTails.join('\n---\n')}`);
  if (mirror.lines.nonJson.length) console.log(`mirror stderr lines that are not log lines: ${mirror.lines.nonJson.slice(0, 5).join(' | ')}`);
  console.log(`after the soak: /-/health ${label(health)}, mirror RSS ${(rssEnd / MB).toFixed(0)} MB; SIGTERM: exit ${exitCode}`);
  console.log('');
  const verdicts: Array<[string, string, boolean]> = [
    ['crashes = 0', `${mirror.crashes} (one pid throughout: ${pids.length === 1 ? 'yes' : 'no'})`, mirror.crashes === 0 && pids.length === 1],
    ['no uncaught/unhandled error logged', `${mirror.lines.uncaught.length} line(s)`, mirror.lines.uncaught.length === 0],
    ['canary errors = 0', `${total.canaryErrors} of ${total.canaryRequests}`, total.canaryErrors === 0],
    ['corrupt bodies served = 0', String(total.corrupt), total.corrupt === 0],
    ['(i) 300 stale clients, blackholed: all STALE, each <= 3 s', hole ? `${hole.stale}/${hole.total} STALE, slowest ${(hole.slowest / 1000).toFixed(2)} s` : 'not measured', !!hole && hole.stale === hole.total && hole.slowest <= 3_000],
    ['(i) upstream back: the cache revalidates', hole ? `after ${(hole.revalidatedAfter / 1000).toFixed(1)} s (${hole.revalidatedAs})` : 'not measured', !!hole && Number.isFinite(hole.revalidatedAfter)],
    ['(ii) RSS with 1,500 paused downloads < 256 MB', paused ? `${(paused.rssOpen / MB).toFixed(0)} MB (${paused.open} open)` : 'not measured', !!paused && paused.open === 1500 && paused.rssOpen < 256e6],
    ['(iii) 100 MB JSON: peak RSS growth of the order of the 8 MB cap (<= 32 MB)', huge ? `+${(huge.delta / MB).toFixed(0)} MB (${huge.statuses})` : 'not measured', !!huge && huge.delta <= 32e6],
    [
      '(iv) cold-read p99 beside 16 trickling publishes <= 2x alone (or +50 ms)',
      cold ? `${cold.trickling.p99.toFixed(0)} ms vs ${cold.alone.p99.toFixed(0)} ms alone` : 'not measured',
      !!cold && cold.bad === 0 && cold.trickling.p99 <= Math.max(2 * cold.alone.p99, cold.alone.p99 + 50),
    ],
  ];
  const wv = Math.max(...verdicts.map((v) => v[0].length));
  const wf = Math.max(...verdicts.map((v) => v[1].length));
  console.log('targets (informational):');
  for (const [what, figure, meets] of verdicts) console.log(`  ${what.padEnd(wv)}  ${figure.padEnd(wf)}  ${meets ? 'meets' : 'misses'}`);
}

async function cleanup(): Promise<void> {
  await canaryRef?.stop().catch(() => {});
  await stopAll();
  await fakeRef?.close().catch(() => {});
  if (workDir) rmSync(workDir, { recursive: true, force: true });
}

// The soak stops by itself: the phases are bounded, and so is the whole run.
const watchdog = setTimeout(
  () => {
    log('watchdog: the soak ran far past its time; stopping');
    void cleanup().finally(() => process.exit(0));
  },
  (SOAK_SECONDS + 300) * 1000,
);
watchdog.unref();

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping`);
    void cleanup().finally(() => process.exit(130));
  });
}

main().then(
  () => cleanup().then(() => process.exit(0)),
  (err: unknown) => {
    console.error(`soak failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    void cleanup().finally(() => process.exit(0));
  },
);
