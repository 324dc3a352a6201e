// Prefetch: keeps the followed packages warm. For each one it refreshes the metadata (asking the upstream, through
// the same caches and single-flight as live traffic) and makes sure the archives of its newest versions are cached.
// Its upstream requests wait behind live ones in the one upstream queue, and it works on a few packages at a time,
// so live requests are never starved. A run never overlaps another; a package that fails keeps its cached data.
import type { Registry } from '../core/registry.js';
import type { Logger } from '../log.js';
import { toMirrorError } from '../model/errors.js';
import type { Release } from '../model/release.js';
import { key } from '../stores/keys.js';
import type { MetadataStore } from '../stores/metadata-store.js';

export interface PrefetchTarget {
  readonly name: string;
  /** A pinned version; otherwise the newest `versions` of the package. */
  readonly version?: string;
}

export interface PrefetchSummary {
  readonly trigger: string;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly packagesChecked: number;
  readonly archivesFetched: number;
  readonly archivesCached: number;
  readonly bytes: number;
  readonly failures: ReadonlyArray<{ readonly target: string; readonly error: string }>;
}

export interface PrefetchProgress {
  readonly done: number;
  readonly total: number;
  readonly target: string;
  readonly error?: string;
}

export interface PrefetchOptions {
  /** Newest versions to keep cached per package (ignored with allVersions). */
  readonly versions: number;
  readonly concurrency: number;
  /** Told of a package the upstream says does not exist (404), e.g. to stop following it. */
  readonly onGone?: (name: string) => unknown;
}

export interface RunOptions {
  readonly trigger: string;
  readonly allVersions?: boolean;
  readonly onProgress?: (p: PrefetchProgress) => void;
}

export function parseTarget(spec: string): PrefetchTarget {
  const at = spec.lastIndexOf('@');
  return at > 0 ? { name: spec.slice(0, at), version: spec.slice(at + 1) } : { name: spec };
}

/** What prefetch did since start (for /-/metrics). */
export interface PrefetchTotals {
  /** Runs that ended: every package fine (ok), some failed (failures), or the run itself failed. */
  readonly runs: { ok: number; failures: number; failed: number };
  archivesFetched: number;
  archivesCached: number;
  bytes: number;
  /** Packages runs failed on, summed over runs. */
  packageFailures: number;
}

export class Prefetcher {
  private running: Promise<PrefetchSummary> | undefined;
  private readonly counted: PrefetchTotals = { runs: { ok: 0, failures: 0, failed: 0 }, archivesFetched: 0, archivesCached: 0, bytes: 0, packageFailures: 0 };

  constructor(
    /** A registry whose reads always ask the upstream, at background priority. */
    private readonly registry: Registry,
    private readonly options: PrefetchOptions,
    /** Where the last run's summary is kept, for /-/status and `srm-mirror status`. */
    private readonly store: MetadataStore,
    private readonly log: Logger,
  ) {}

  lastRun(): Promise<PrefetchSummary | undefined> {
    return this.store.get<PrefetchSummary>(key.prefetchLast);
  }

  get isRunning(): boolean {
    return this.running !== undefined;
  }

  get totals(): PrefetchTotals {
    return { ...this.counted, runs: { ...this.counted.runs } };
  }

  /** Runs now; while a run is under way, another call gets that run's summary instead of starting a second. */
  run(targets: readonly PrefetchTarget[], opts: RunOptions): Promise<PrefetchSummary> {
    this.running ??= this.runOnce(targets, opts)
      .then(
        (summary) => {
          const c = this.counted;
          c.runs[summary.failures.length ? 'failures' : 'ok']++;
          c.archivesFetched += summary.archivesFetched;
          c.archivesCached += summary.archivesCached;
          c.bytes += summary.bytes;
          c.packageFailures += summary.failures.length;
          return summary;
        },
        (err: unknown) => {
          this.counted.runs.failed++;
          throw err;
        },
      )
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async runOnce(targets: readonly PrefetchTarget[], opts: RunOptions): Promise<PrefetchSummary> {
    const started = Date.now();
    const counts = { archivesFetched: 0, archivesCached: 0, bytes: 0 };
    const failures: Array<{ target: string; error: string }> = [];
    const queue = [...targets];
    let done = 0;
    const worker = async () => {
      for (let t = queue.shift(); t; t = queue.shift()) {
        const label = t.version ? `${t.name}@${t.version}` : t.name;
        let error: string | undefined;
        try {
          for (const version of await this.versionsOf(t, opts.allVersions ?? false)) {
            const fetched = await this.ensureArchive(t.name, version);
            if (fetched === undefined) counts.archivesCached++;
            else {
              counts.archivesFetched++;
              counts.bytes += fetched;
            }
          }
        } catch (err) {
          error = toMirrorError(err).message;
          failures.push({ target: label, error });
        }
        opts.onProgress?.({ done: ++done, total: targets.length, target: label, error });
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency, targets.length) }, worker));
    const summary: PrefetchSummary = {
      trigger: opts.trigger,
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      packagesChecked: targets.length,
      ...counts,
      failures,
    };
    await this.store.put(key.prefetchLast, summary);
    this.log.info('prefetch run finished', { ...summary, failures: failures.length, firstFailure: failures[0] });
    return summary;
  }

  /** The versions to have cached: the pinned one, or the newest ones after refreshing the package's metadata. */
  private async versionsOf(t: PrefetchTarget, all: boolean): Promise<string[]> {
    if (t.version) return [t.version];
    const latest = (
      await this.registry.latest(t.name).catch(async (err: unknown) => {
        if (toMirrorError(err).kind === 'not-found') {
          this.log.info('prefetch: the upstream has no such package, no longer following it', { name: t.name });
          await Promise.resolve(this.options.onGone?.(t.name)).catch(() => {}); // the 404 is what this run reports
        }
        throw err;
      })
    ).value;
    if (!all && this.options.versions === 1) return [latest.version];
    const releases: Release[] = all ? (await this.registry.allReleases(t.name)).value : (await this.registry.releasePage(t.name, 1)).value;
    const newest = all ? releases : releases.slice(0, this.options.versions);
    return [...new Set([latest.version, ...newest.map((r) => r.version)])];
  }

  /** Downloads an archive unless cached: the bytes fetched, or undefined when it was cached already. */
  private async ensureArchive(name: string, version: string): Promise<number | undefined> {
    const handle = await this.registry.archive(name, version);
    try {
      if (handle.status === 'HIT') return undefined;
      // Reading the fill to its end waits for the archive to be committed (and fails if the download does).
      const buf = Buffer.allocUnsafe(256 * 1024);
      let bytes = 0;
      for (let n = await handle.reader.read(buf, 0); n > 0; n = await handle.reader.read(buf, bytes)) bytes += n;
      return bytes;
    } finally {
      handle.close();
    }
  }
}
