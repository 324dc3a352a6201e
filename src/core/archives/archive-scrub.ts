// The scrub: rehashes every stored archive, whatever the verifier trusts (bit rot changes no timestamp), at a
// bounded rate so that it never competes with serving, one archive at a time. A corrupt archive is dropped the
// moment it is found (fetched again on the next request). It also reports what else is off: archives no version
// points at, versions whose archive is gone, and (for a command on a stopped mirror) leftover temp files; with
// `repair`, those are removed too. Runs on a schedule, on demand (POST /-/verify) and as `srm-mirror verify`.
import type { Logger } from '../../log.js';
import type { ArchiveStore } from '../../stores/archive-store.js';
import type { ArchiveIndex } from './archive-index.js';
import type { ArchiveReclaimer } from './archive-reclaimer.js';
import { sha256Of, type ArchiveVerifier, type Throttle } from './archive-verifier.js';

export interface ScrubReport {
  readonly trigger: string;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly archives: number;
  readonly bytes: number;
  /** Archives whose bytes no longer matched their digest (dropped). */
  readonly corrupt: string[];
  /** Archives no version points at. */
  readonly unreferenced: string[];
  /** package@version whose archive is gone. */
  readonly missing: string[];
  readonly tempFiles: string[];
  /** Whether unreferenced archives, missing versions and temp files were removed. */
  readonly repaired: boolean;
}

export interface ScrubOptions {
  readonly trigger: string;
  readonly repair?: boolean;
  /** Report temp files (only a command on a stopped mirror: a running server's temp files are fills under way). */
  readonly tempFiles?: boolean;
  /** Hash as fast as the disk allows (a command on a stopped mirror), instead of at the configured rate. */
  readonly unthrottled?: boolean;
}

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = { now: Date.now, sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)) };

export class ArchiveScrubber {
  private running: { readonly startedAt: string; readonly done: Promise<ScrubReport> } | undefined;
  private last: ScrubReport | undefined;
  /** Corrupt archives found (and dropped) since start. */
  corruptFound = 0;
  /** Scrubs that ended since start: completed (with a report) or failed. */
  private readonly runs = { completed: 0, failed: 0 };

  constructor(
    private readonly store: ArchiveStore,
    private readonly index: ArchiveIndex,
    private readonly verifier: ArchiveVerifier,
    private readonly reclaimer: ArchiveReclaimer,
    private readonly log: Logger,
    /** Bytes hashed per second at most; 0: no limit. */
    private readonly rate: number,
    private readonly clock: Clock = realClock,
  ) {}

  /**
   * Starts a scrub, or joins the one under way (whose options stand): when it started (its report will say the same)
   * and its report once done.
   */
  start(options: ScrubOptions): { readonly startedAt: string; readonly done: Promise<ScrubReport> } {
    if (!this.running) {
      const started = this.clock.now();
      const done = this.scrub(options, started)
        .then(
          (report) => (this.runs.completed++, report),
          (err: unknown) => {
            this.runs.failed++;
            throw err;
          },
        )
        .finally(() => (this.running = undefined));
      this.running = { startedAt: new Date(started).toISOString(), done };
    }
    return this.running;
  }

  run(options: ScrubOptions): Promise<ScrubReport> {
    return this.start(options).done;
  }

  status(): { running: boolean; corruptFound: number; runs: { completed: number; failed: number }; lastRun: ScrubReport | undefined } {
    return { running: this.running !== undefined, corruptFound: this.corruptFound, runs: { ...this.runs }, lastRun: this.last };
  }

  private async scrub({ trigger, repair = false, tempFiles = false, unthrottled = false }: ScrubOptions, started: number): Promise<ScrubReport> {
    const throttle = unthrottled || this.rate === 0 ? undefined : rateLimit(this.rate, this.clock);
    const report = { archives: 0, bytes: 0, corrupt: [] as string[], unreferenced: [] as string[], missing: [] as string[] };
    for await (const a of this.store.list()) {
      const release = this.reclaimer.lease(a.digest);
      try {
        const reader = await this.store.open(a.digest);
        if (!reader) continue; // removed meanwhile
        try {
          report.archives++;
          report.bytes += reader.stat.size;
          if ((await sha256Of(reader, throttle)) === a.digest) this.verifier.record(a.digest, reader.stat);
          else report.corrupt.push(a.digest);
        } finally {
          reader.close();
        }
      } finally {
        release();
      }
      const corrupt = report.corrupt.at(-1) === a.digest;
      if (corrupt) {
        this.corruptFound++;
        this.log.error('scrub: corrupt archive dropped; it will be fetched again', { digest: a.digest });
        await this.reclaimer.remove(a.digest);
      } else if ((await this.index.versionsOf(a.digest)).length === 0) {
        report.unreferenced.push(a.digest);
        // With a lost index every archive looks unreferenced: only `srm-mirror repair` may decide about them.
        if (repair && this.reclaimer.indexIntact) await this.reclaimer.remove(a.digest);
      }
    }
    for await (const [id, ref] of this.index.entries()) {
      if ((await this.store.stat(ref.digest))?.size === ref.size) continue;
      report.missing.push(id);
      if (repair) await this.index.remove(id);
    }
    const temps = tempFiles ? await this.store.tempFiles() : [];
    if (repair) for (const name of temps) await this.store.deleteTemp(name);
    const done: ScrubReport = {
      trigger,
      startedAt: new Date(started).toISOString(),
      durationMs: this.clock.now() - started,
      ...report,
      tempFiles: temps,
      repaired: repair,
    };
    this.last = done;
    this.log.info('scrub finished', { ...done, corrupt: done.corrupt.length, unreferenced: done.unreferenced.length, missing: done.missing.length, tempFiles: temps.length });
    return done;
  }
}

/** A throttle that keeps the average rate at or below `bytesPerSecond` since it was made. */
export function rateLimit(bytesPerSecond: number, clock: Clock): Throttle {
  const start = clock.now();
  let bytes = 0;
  return async (n) => {
    bytes += n;
    const wait = start + (bytes * 1000) / bytesPerSecond - clock.now();
    if (wait > 0) await clock.sleep(wait);
  };
}
