// The scenarios of the benchmark. Each returns report rows, and the rounds they came from (for the targets):
// the mirror's, and beside it the same load on a baseline (nginx, the upstream direct, a bare Node proxy) measured
// in paired rounds (rounds.ts), or on a peer (Verdaccio).
import { setMaxListeners } from 'node:events';
import type { CpuUse } from './cpu.js';
import { withCpu } from './cpu.js';
import { concurrentDownloads, download, downloadAgent, rate, summarize, wrk, type Download, type Measure } from './load.js';
import { NPM_PACKAGE, NPM_TARBALL } from './npm-upstream.js';
import { track } from './procs.js';
import type { Row } from './report.js';
import { x } from './report.js';
import { medianRound, discardNote, range, ratios, roundsOf, runRounds, type Rounds, type Side } from './rounds.js';
import { BIG, COLD, COLD_FAST, log, MEM, MiB, SMALL, type Mirror, type World } from './world.js';

export interface Settings {
  readonly seconds: number;
  readonly rounds: number;
  readonly maxExtra: number;
  readonly minCores: number;
  readonly warmup: number;
  readonly connections: number;
  readonly threads: number;
  readonly coldMiB: number;
  readonly bigMiB: number;
  readonly bigClients: number;
}

/** Longest any download scenario may take before the bench calls it broken. */
const DOWNLOAD_TIMEOUT_MS = 600_000;

export const LATEST = `/v3/packages/${SMALL.name}/release/latest`;
export const zipball = (name: string, version: string) => `/v3/packages/${name}/zipball/${version}`;

/** One side of a wrk comparison. */
export interface Target {
  readonly server: string;
  readonly url: string;
  readonly pids: () => readonly number[];
  /** The mirror behind it, for upstream counts and peak RSS. */
  readonly mirror?: Mirror;
  readonly headers?: readonly string[];
}

/** A comparison's rows and the rounds behind them. */
export interface Compared {
  readonly rows: Row[];
  readonly rounds: Rounds;
}

export class Scenarios {
  private readonly agent = downloadAgent();
  private readonly signal = AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS);

  constructor(
    private readonly w: World,
    private readonly s: Settings,
  ) {
    setMaxListeners(0, this.signal); // one listener per download under way
  }

  /** The mirror's release/latest: a MISS then a HIT; nginx gets the same bytes as /latest.json. */
  async warmMetadata(m: Mirror): Promise<void> {
    const first = await download(m.url + LATEST, this.agent, undefined, this.signal, true);
    const again = await download(m.url + LATEST, this.agent, undefined, this.signal, true);
    if (first.cache !== 'MISS' || again.cache !== 'HIT') throw new Error(`mirror ${LATEST}: expected a MISS then a HIT, got ${first.cache} then ${again.cache}`);
    this.w.serveFromNginx('latest.json', again.body!);
    await this.w.nginxReady('/latest.json');
  }

  /** Downloads until the mirror answers from its cache (a fill records the archive just after its last byte). */
  async untilHit(url: string, size: number): Promise<void> {
    for (let i = 0; ; i++) {
      const d = await download(url, this.agent, size, this.signal);
      if (d.cache === 'HIT') return;
      if (i === 20) throw new Error(`${url}: still ${d.cache} after ${i + 1} downloads, never a HIT`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  mirrorTarget(m: Mirror, path: string, server = `mirror${m.spec.name === 'mirror' ? '' : ` ${m.spec.name}`}`): Target {
    return { server, url: m.url + path, pids: () => [m.pid], mirror: m };
  }

  nginxTarget(path: string, server = 'nginx'): Target {
    return { server, url: this.w.nginx + path, pids: () => this.w.nginxWorkers() };
  }

  /**
   * The same wrk load on a baseline and a subject, in paired rounds after a warm-up each. Rows: the median kept
   * round of each; the subject's carries the ratio's range, the upstream requests of all its rounds and its peak RSS.
   */
  async wrkPair(scenario: string, state: string, baseline: Target, subject: Target): Promise<Compared> {
    const { warmup, rounds, seconds, maxExtra, minCores } = this.s;
    log(`${scenario}${state ? ` (${state})` : ''}: ${baseline.server} vs ${subject.server}, ${rounds} paired round(s) of ${seconds} s`);
    for (const t of [baseline, subject]) if (warmup > 0) await this.wrk(t, warmup);
    let upstreamReqs = 0;
    subject.mirror?.rss.reset();
    const side = (t: Target): Side => ({
      server: t.server,
      pids: t.pids,
      run: async () => {
        const { m, upstreamReqs: n } = await this.counted(() => this.wrk(t, seconds));
        if (t.mirror) upstreamReqs += n;
        return m;
      },
    });
    const r = await runRounds([side(baseline), side(subject)], { rounds, maxExtra, minCores });
    const ratio = range(ratios(r, rate));
    const rss = subject.mirror?.rss.peak();
    return {
      rounds: r,
      rows: [
        this.rowOf(scenario, state, r, 0),
        { ...this.rowOf(scenario, state, r, 1), ratio: `${x(ratio.min)}-${x(ratio.max)} ${baseline.server}`, ...(subject.mirror ? { upstreamReqs, rss } : {}) },
      ],
    };
  }

  /** wrk rounds on one server (a peer, or the upstream direct); `minCores` undefined: no round is discarded. */
  async wrkSolo(scenario: string, t: Target, minCores: number | undefined): Promise<Compared> {
    const { warmup, rounds, seconds, maxExtra } = this.s;
    log(`${scenario}: ${t.server}, ${rounds} round(s) of ${seconds} s`);
    if (warmup > 0) await this.wrk(t, warmup);
    const r = await runRounds([{ server: t.server, pids: t.pids, run: () => this.wrk(t, seconds) }], { rounds, maxExtra, minCores });
    return { rounds: r, rows: [this.rowOf(scenario, '', r, 0)] };
  }

  /** Verdaccio's cached tarball and packument: warmed until its uplink stops seeing requests, then wrk rounds. */
  async verdaccio(): Promise<{ tarball: Compared; packument: Compared }> {
    const base = this.w.verdaccio;
    const target = (server: string, path: string, headers?: string[]): Target => ({ server, url: base + path, pids: () => [this.w.verdaccioPid], ...(headers ? { headers } : {}) });
    const json = ['Accept: application/json'];
    for (let i = 0, last = -1; ; i++) {
      for (const path of [`/${NPM_PACKAGE}`, NPM_TARBALL]) await download(base + path, this.agent, path === NPM_TARBALL ? MiB : undefined, this.signal);
      const n = await this.w.npmCount();
      if (n === last) break;
      if (i === 20) throw new Error(`verdaccio still asks its uplink after ${i + 1} rounds of warm-up (${n} requests)`);
      last = n;
    }
    const before = await this.w.npmCount();
    const tarball = await this.wrkSolo('verdaccio: cached 1 MiB tarball', target('verdaccio', NPM_TARBALL), this.s.minCores);
    const packument = await this.wrkSolo('verdaccio: cached packument', target('verdaccio', `/${NPM_PACKAGE}`, json), this.s.minCores);
    const uplink = (await this.w.npmCount()) - before;
    const withUplink = (c: Compared): Compared => ({ ...c, rows: c.rows.map((r) => ({ ...r, upstreamReqs: uplink })) });
    return { tarball: withUplink(tarball), packument: withUplink(packument) };
  }

  /**
   * Cold archives, one client at a time, in paired rounds: each round downloads a version the mirror has never seen
   * through `baseline` (the upstream direct, or the pass-through proxy), then through the mirror (metadata lookup,
   * 302, fill to disk, commit). Not saturating: no round is discarded for CPU; the CPU column still shows it.
   */
  async cold(scenario: string, pkg: typeof COLD | typeof COLD_FAST, m: Mirror, baseline: { server: string; base: string; pids: () => readonly number[] }): Promise<Compared> {
    const [warmup, ...versions] = this.w.coldVersions;
    log(`${scenario}: ${baseline.server} vs the mirror, ${versions.length} paired download(s) after one unmeasured each`);
    const size = this.s.coldMiB * MiB;
    // Like the cached scenarios' warm-up: the first fill of a run pays for compiling its code, not for its bytes.
    for (const base of [baseline.base, m.url]) await download(base + zipball(pkg, warmup!), this.agent, size, this.signal);
    let upstreamReqs = 0;
    m.rss.reset();
    const once = async (base: string, v: number): Promise<Measure> => summarize([await download(base + zipball(pkg, versions[v]!), this.agent, size, this.signal)]);
    const r = await runRounds(
      [
        { server: baseline.server, pids: baseline.pids, run: (i) => once(baseline.base, i) },
        {
          server: 'mirror',
          pids: () => [m.pid],
          run: async (i) => {
            const path = zipball(pkg, versions[i]!);
            const { m: d, upstreamReqs: n } = await this.counted(() => download(m.url + path, this.agent, size, this.signal));
            if (d.cache !== 'MISS') throw new Error(`mirror ${path}: expected a cold MISS, got ${d.cache}`);
            upstreamReqs += n;
            return summarize([d]);
          },
        },
      ],
      { rounds: versions.length, maxExtra: 0, minCores: undefined },
    );
    const ratio = range(ratios(r, rate));
    const all = (side: number): Row => {
      const rounds = roundsOf(r, side);
      const m = summarize(rounds.map((x) => ({ bytes: x.m.bytes, ms: x.m.seconds * 1000, status: 200, cache: undefined })));
      const cpu: CpuUse = { seconds: rounds.reduce((s, x) => s + x.cpu.seconds, 0), wallSeconds: m.seconds, cores: rounds.reduce((s, x) => s + x.cpu.seconds, 0) / m.seconds, coreIdle: undefined };
      return { scenario, server: r.sides[side]!.server, m, cpu };
    };
    const per = r.kept.map((a) => `${(a.rounds[1]!.m.bytes / 1e6 / a.rounds[1]!.m.seconds).toFixed(0)} vs ${(a.rounds[0]!.m.bytes / 1e6 / a.rounds[0]!.m.seconds).toFixed(0)}`).join(', ');
    return {
      rounds: r,
      rows: [all(0), { ...all(1), ratio: `${x(ratio.min)}-${x(ratio.max)} ${baseline.server}`, upstreamReqs, rss: m.rss.peak(), note: `MB/s per download, mirror vs ${baseline.server}: ${per}` }],
    };
  }

  /**
   * Fills the mirror's in-memory archive cache to its budget: distinct 1 MiB archives, each downloaded until it is a
   * HIT and once more (so that a cache that loads on HIT holds it). Returns what /-/status says of it afterwards.
   */
  async fillMemory(m: Mirror, budget: number, available: number): Promise<{ archives: number; used: number | undefined }> {
    const n = Math.min(available, Math.ceil(budget / MiB) + 4);
    log(`filling the in-memory archive cache (${(budget / 1e6).toFixed(0)} MB): ${n} archives of 1 MiB`);
    for (let v = 1; v <= n; v++) {
      const url = m.url + zipball(MEM, `1.0.${v}`);
      await this.untilHit(url, MiB);
      await download(url, this.agent, MiB, this.signal);
    }
    return { archives: n, used: (await memoryStatus(m))?.usedBytes };
  }

  /** One big archive to many clients at once: straight from the upstream; through the mirror cold, then cached. */
  async bigArchive(m: Mirror, memNote: string): Promise<Row[]> {
    const { bigMiB, bigClients } = this.s;
    const label = `${bigMiB >= 1024 && bigMiB % 1024 === 0 ? `${bigMiB / 1024} GiB` : `${bigMiB} MiB`} archive to ${bigClients} clients`;
    log(`${label}: direct, then through the mirror cold, then cached`);
    const zip = zipball(BIG.name, BIG.version);
    const size = bigMiB * MiB;
    const all = (url: string) => concurrentDownloads(url, bigClients, size, this.signal);
    const direct = await all(this.w.upstream + zip);
    const through = async (state: string): Promise<Row> => {
      m.rss.reset();
      const start = m.rss.current();
      const { value, cpu } = await withCpu([m.pid], () => this.counted(() => all(m.url + zip)));
      return {
        scenario: `${label}, ${state}`,
        server: 'mirror',
        m: value.m,
        cpu,
        upstreamReqs: value.upstreamReqs,
        rss: m.rss.peak(),
        note: `x-cache: ${caches(value.m.downloads)}; RSS ${(start / 1e6).toFixed(0)} MB before, ${(m.rss.fileBacked() / 1e6).toFixed(0)} MB of it mapped from files (node's binary: shared, clean); ${memNote}`,
      };
    };
    const cold = await through('cold');
    await this.untilHit(m.url + zip, size);
    const cached = await through('cached');
    return [cold, cached, { scenario: `${label}, direct`, server: 'upstream', m: direct }];
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  private wrk(t: Target, seconds: number): Promise<Measure> {
    const { connections, threads } = this.s;
    return wrk(t.url, { connections, threads, seconds, scriptDir: this.w.dir, track, ...(t.headers ? { headers: t.headers } : {}) }).then((m) => {
      if (m.errorDetail.includes('status')) throw new Error(`wrk ${t.url}: answers that are not 2xx/3xx (${m.errorDetail})`);
      return m;
    });
  }

  /** A side's row: its median kept round, its CPU then, and every round in the note. */
  private rowOf(scenario: string, state: string, r: Rounds, side: number): Row {
    const med = medianRound(roundsOf(r, side), rate);
    const each = r.attempts.map((a) => `${a.discarded ? '(discarded) ' : ''}${rate(a.rounds[side]!.m).toFixed(0)} req/s ${a.rounds[side]!.cpu.cores.toFixed(2)} core p99 ${a.rounds[side]!.m.p99Ms.toFixed(2)} ms`);
    const errors = r.kept.map((a) => a.rounds[side]!.m).filter((m) => m.errors > 0).map((m) => m.errorDetail);
    const note = [side === r.sides.length - 1 ? discardNote(r) : '', `rounds: ${each.join(', ')}`, errors.length ? `wrk socket errors: ${errors.join('; ')}` : ''].filter(Boolean).join('; ');
    return { scenario, server: r.sides[side]!.server, ...(state ? { state } : {}), m: med.m, cpu: med.cpu, note };
  }

  /** Runs a load and counts the requests the upstream saw meanwhile. */
  private async counted<M>(run: () => Promise<M>): Promise<{ m: M; upstreamReqs: number }> {
    const before = await this.w.counts();
    const m = await run();
    const after = await this.w.counts();
    return { m, upstreamReqs: after.total - before.total };
  }
}

/** The mirror's in-memory archive cache, from /-/status (archives.memory), when this build has one. */
export async function memoryStatus(m: Mirror): Promise<{ maxBytes: number; usedBytes: number } | undefined> {
  const res = await fetch(`${m.url}/-/status`);
  const status = (await res.json()) as { archives?: { memory?: { maxBytes?: number; usedBytes?: number } } };
  const mem = status.archives?.memory;
  return typeof mem?.maxBytes === 'number' ? { maxBytes: mem.maxBytes, usedBytes: mem.usedBytes ?? 0 } : undefined;
}

function caches(downloads: Download[]): string {
  const n = new Map<string, number>();
  for (const d of downloads) n.set(d.cache ?? '?', (n.get(d.cache ?? '?') ?? 0) + 1);
  return [...n].map(([k, v]) => `${v} ${k}`).join(', ');
}
