// The four scenarios of the benchmark. Each returns report rows: the mirror's, and beside it the same load on
// nginx and/or straight on the upstream, measured in the same run.
import { setMaxListeners } from 'node:events';
import { concurrentDownloads, download, downloadAgent, rate, summarize, wrk, type Download, type Measure } from './load.js';
import { track } from './procs.js';
import type { Row } from './report.js';
import { BIG, COLD, log, MiB, SMALL, type World } from './world.js';

export interface Settings {
  readonly seconds: number;
  readonly rounds: number;
  readonly warmup: number;
  readonly connections: number;
  readonly threads: number;
  readonly coldMiB: number;
  readonly bigMiB: number;
  readonly bigClients: number;
}

/** Longest any download scenario may take before the bench calls it broken. */
const DOWNLOAD_TIMEOUT_MS = 300_000;

export class Scenarios {
  private readonly agent = downloadAgent();
  private readonly signal = AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS);

  constructor(
    private readonly w: World,
    private readonly s: Settings,
  ) {
    setMaxListeners(0, this.signal); // one listener per download under way
  }

  /** 1. release/latest from the mirror's cache, the same bytes from nginx, and the upstream's own answer. */
  async cachedMetadata(): Promise<Row[]> {
    const latest = `/v3/packages/${SMALL.name}/release/latest`;
    const first = await download(this.w.mirror + latest, this.agent, undefined, this.signal, true);
    const again = await download(this.w.mirror + latest, this.agent, undefined, this.signal, true);
    if (first.cache !== 'MISS' || again.cache !== 'HIT') throw new Error(`mirror ${latest}: expected a MISS then a HIT, got ${first.cache} then ${again.cache}`);
    this.w.serveFromNginx('latest.json', again.body!);
    await this.w.nginxReady('/latest.json');
    return this.compareWrk(`cached metadata (${again.bytes} B JSON)`, [
      { server: 'mirror', url: this.w.mirror + latest, target: '>=25% nginx, p99<=5ms' },
      { server: 'nginx', url: `${this.w.nginx}/latest.json` },
      { server: 'upstream', url: this.w.upstream + latest },
    ]);
  }

  /** 2. A 1 MiB zipball the mirror has cached, the same file from nginx, the upstream's blob. */
  async cachedArchive(): Promise<Row[]> {
    const zip = `/v3/packages/${SMALL.name}/zipball/${SMALL.version}`;
    await this.untilHit(this.w.mirror + zip, MiB);
    return this.compareWrk('cached 1 MiB archive', [
      { server: 'mirror', url: this.w.mirror + zip, target: '>=50% nginx' },
      { server: 'nginx', url: `${this.w.nginx}/small.zip` },
      { server: 'upstream', url: `${this.w.upstream}/blob/${SMALL.name}/${SMALL.version}` },
    ]);
  }

  /**
   * 2b. The same cached archive from a mirror that hashes every whole-archive HIT while it streams
   * (cache.verifyOnServe): what that costs against the same nginx. The mirror is restarted with the setting, and
   * without it again afterwards.
   */
  async cachedArchiveVerified(): Promise<Row[]> {
    const zip = `/v3/packages/${SMALL.name}/zipball/${SMALL.version}`;
    await this.w.restartMirror(['--verify-on-serve', 'true']);
    try {
      await this.untilHit(this.w.mirror + zip, MiB);
      return await this.compareWrk('cached 1 MiB archive, verifyOnServe', [
        { server: 'mirror', url: this.w.mirror + zip, target: 'cost of hashing' },
        { server: 'nginx', url: `${this.w.nginx}/small.zip` },
      ]);
    } finally {
      await this.w.restartMirror([]);
    }
  }

  /**
   * 3. Cold archives, one client at a time: each version once straight from the upstream (following its 302), then
   * once through the mirror, which has never seen it (metadata lookup, 302, fill to disk, commit), taking turns.
   */
  async coldArchive(): Promise<Row[]> {
    const scenario = `cold ${this.s.coldMiB} MiB archive (x${this.w.coldVersions.length}, 1 client)`;
    log(`${scenario}: direct and through the mirror, taking turns`);
    const size = this.s.coldMiB * MiB;
    const direct: Download[] = [];
    const mirror: Download[] = [];
    let upstreamReqs = 0;
    this.w.rss.reset();
    for (const v of this.w.coldVersions) {
      const path = `/v3/packages/${COLD}/zipball/${v}`;
      direct.push(await download(this.w.upstream + path, this.agent, size, this.signal));
      const { m, upstreamReqs: n } = await this.counted(() => download(this.w.mirror + path, this.agent, size, this.signal));
      if (m.cache !== 'MISS') throw new Error(`mirror ${path}: expected a cold MISS, got ${m.cache}`);
      mirror.push(m);
      upstreamReqs += n;
    }
    return [
      { scenario, server: 'mirror', target: '>=90% direct', m: summarize(mirror), upstreamReqs, rss: this.w.rss.peak() },
      { scenario, server: 'upstream', m: summarize(direct) },
    ];
  }

  /**
   * 4. One big archive to many clients at once: straight from the upstream; through a freshly started mirror, cold
   * (one fill, every client following it); through the mirror again, cached.
   */
  async bigArchive(): Promise<{ rows: Row[]; startRss: number }> {
    const { bigMiB, bigClients } = this.s;
    const label = `${bigMiB >= 1024 && bigMiB % 1024 === 0 ? `${bigMiB / 1024} GiB` : `${bigMiB} MiB`} archive to ${bigClients} clients`;
    log(`${label}: direct, then through a freshly started mirror cold, then cached`);
    const zip = `/v3/packages/${BIG.name}/zipball/${BIG.version}`;
    const size = bigMiB * MiB;
    const all = (url: string) => concurrentDownloads(url, bigClients, size, this.signal);

    const direct = await all(this.w.upstream + zip);
    await this.w.restartMirror();
    const startRss = this.w.rss.current();
    const cold = await this.counted(() => all(this.w.mirror + zip), true);
    await this.untilHit(this.w.mirror + zip, size);
    const cached = await this.counted(() => all(this.w.mirror + zip), true);
    const started = `mirror restarted before this row, at ${(startRss / 1e6).toFixed(0)} MB RSS`;
    return {
      startRss,
      rows: [
        { scenario: `${label}, cold`, server: 'mirror', target: 'RSS<=150MB', ...cold, note: `x-cache: ${caches(cold.m.downloads)}; ${started}` },
        { scenario: `${label}, cached`, server: 'mirror', target: 'RSS<=150MB', ...cached, note: `x-cache: ${caches(cached.m.downloads)}` },
        { scenario: `${label}, direct`, server: 'upstream', m: direct },
      ],
    };
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /**
   * The same load on several servers: a warm-up run each, then rounds that take turns, so that noise from the rest
   * of the machine spreads over all of them. A row is its median round (by req/s); the mirror's row carries the
   * upstream requests of all its rounds and its peak RSS over the whole comparison.
   */
  private async compareWrk(scenario: string, targets: Array<{ server: string; url: string; target?: string }>): Promise<Row[]> {
    const { warmup, rounds, seconds, connections, threads } = this.s;
    log(`${scenario}: ${targets.map((t) => t.server).join(', ')}; ${warmup} s warm-up, then ${rounds} round(s) of ${seconds} s each, ${connections} connections`);
    const run = (url: string, s: number) => wrk(url, { connections, threads, seconds: s, scriptDir: this.w.dir, track });
    for (const t of targets) if (warmup > 0) await run(t.url, warmup);
    const measures = targets.map(() => [] as Measure[]);
    let upstreamReqs = 0;
    this.w.rss.reset();
    for (let r = 0; r < rounds; r++) {
      for (const [i, t] of targets.entries()) {
        const { m, upstreamReqs: n } = await this.counted(() => run(t.url, seconds));
        if (m.errorDetail.includes('status')) throw new Error(`wrk ${t.url}: answers that are not 2xx/3xx (${m.errorDetail})`);
        measures[i]!.push(m);
        if (t.server === 'mirror') upstreamReqs += n;
      }
    }
    const peak = this.w.rss.peak();
    return targets.map((t, i) => {
      const sorted = [...measures[i]!].sort((a, b) => rate(a) - rate(b));
      const median = sorted[Math.floor(sorted.length / 2)]!;
      const errors = sorted.filter((x) => x.errors > 0).map((x) => x.errorDetail);
      const note = [
        t.server === 'upstream' ? '' : `rounds: ${sorted.map((x) => `${rate(x).toFixed(0)} req/s p99 ${x.p99Ms.toFixed(1)} ms`).join(', ')}`,
        errors.length ? `wrk socket errors: ${errors.join('; ')}` : '',
      ].filter(Boolean);
      return {
        scenario,
        server: t.server,
        target: t.target,
        m: median,
        note: note.join('; ') || undefined,
        ...(t.server === 'mirror' ? { upstreamReqs, rss: peak } : {}),
      };
    });
  }

  /** Runs a load and counts the requests the upstream saw meanwhile; with `ownRss`, also the mirror's peak RSS. */
  private async counted<M>(run: () => Promise<M>, ownRss = false): Promise<{ m: M; upstreamReqs: number; rss: number }> {
    if (ownRss) this.w.rss.reset();
    const before = await this.w.counts();
    const m = await run();
    const after = await this.w.counts();
    return { m, upstreamReqs: after.total - before.total, rss: this.w.rss.peak() };
  }

  /** Downloads until the mirror answers from its cache (a fill records the archive just after its last byte). */
  private async untilHit(url: string, size: number): Promise<void> {
    for (let i = 0; ; i++) {
      const d = await download(url, this.agent, size, this.signal);
      if (d.cache === 'HIT') return;
      if (i === 20) throw new Error(`${url}: still ${d.cache} after ${i + 1} downloads, never a HIT`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function caches(downloads: Download[]): string {
  const n = new Map<string, number>();
  for (const d of downloads) n.set(d.cache ?? '?', (n.get(d.cache ?? '?') ?? 0) + 1);
  return [...n].map(([k, v]) => `${v} ${k}`).join(', ');
}
