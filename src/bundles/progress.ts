// Progress of an export or import, for people and for scripts: a bar redrawn in place on a terminal, plain lines
// otherwise (at most one every PLAIN_EVERY_MS), one JSON object per line with --json. The same events cross HTTP as
// NDJSON when a command asks the running server to do the work.

export interface Totals {
  readonly bytes: number;
  readonly blobs: number;
  readonly volumes: number;
}

export type BundleEvent =
  /** How far the work is: `done` of `total`, bytes per second so far, and seconds left at that rate (if known). */
  | { readonly type: 'progress'; readonly done: Totals; readonly total: Totals; readonly rate: number; readonly eta: number | undefined }
  /** Something a person should read (a refused blob, a missing volume, a conflict). */
  | { readonly type: 'note'; readonly message: string }
  /** The end: what was done, as the command's own summary object. */
  | { readonly type: 'summary'; readonly summary: Record<string, unknown> };

export type OnEvent = (event: BundleEvent) => void;

/** Measures progress against totals with a clock, and makes 'progress' events of it. */
export class ProgressMeter {
  private readonly started: number;
  private done = { bytes: 0, blobs: 0, volumes: 0 };

  constructor(
    private readonly total: Totals,
    private readonly onEvent: OnEvent,
    private readonly now: () => number = Date.now,
  ) {
    this.started = now();
  }

  add(delta: Partial<Totals>): void {
    this.done = { bytes: this.done.bytes + (delta.bytes ?? 0), blobs: this.done.blobs + (delta.blobs ?? 0), volumes: this.done.volumes + (delta.volumes ?? 0) };
    const seconds = Math.max(0.001, (this.now() - this.started) / 1000);
    const rate = this.done.bytes / seconds;
    const eta = rate > 0 ? Math.max(0, (this.total.bytes - this.done.bytes) / rate) : undefined;
    this.onEvent({ type: 'progress', done: this.done, total: this.total, rate, eta });
  }
}

export interface Output {
  readonly isTTY: boolean;
  write(text: string): void;
}

const PLAIN_EVERY_MS = 2000;

/** Prints events for a person (bar on a TTY, plain lines otherwise) or, with json, as NDJSON. */
export function printer(out: Output, { json = false, now = Date.now }: { json?: boolean; now?: () => number } = {}): OnEvent {
  if (json) return (e) => out.write(`${JSON.stringify(e)}\n`);
  let lastPlain = -Infinity;
  let barShown = false;
  return (e) => {
    if (e.type === 'progress') {
      const line = describeProgress(e);
      if (out.isTTY) {
        out.write(`\r\x1b[2K${line}`);
        barShown = true;
      } else if (now() - lastPlain >= PLAIN_EVERY_MS || e.done.bytes >= e.total.bytes) {
        lastPlain = now();
        out.write(`${line}\n`);
      }
      return;
    }
    if (barShown) out.write('\n');
    barShown = false;
    out.write(e.type === 'note' ? `${e.message}\n` : `${Object.entries(e.summary).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join('\n')}\n`);
  };
}

function describeProgress({ done, total, rate, eta }: Extract<BundleEvent, { type: 'progress' }>): string {
  const width = 24;
  const fraction = total.bytes > 0 ? Math.min(1, done.bytes / total.bytes) : 1;
  const filled = Math.round(fraction * width);
  const etaText = eta === undefined ? '' : ` ETA ${formatSeconds(eta)}`;
  return (
    `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${formatBytes(done.bytes)}/${formatBytes(total.bytes)} ` +
    `${done.blobs}/${total.blobs} blobs ${done.volumes}/${total.volumes} volumes ${formatBytes(rate)}/s${etaText}`
  );
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  for (; n >= 1000 && i < units.length - 1; i++) n /= 1000;
  return `${i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function formatSeconds(s: number): string {
  return s < 60 ? `${Math.ceil(s)}s` : `${Math.floor(s / 60)}m${String(Math.ceil(s % 60)).padStart(2, '0')}s`;
}
