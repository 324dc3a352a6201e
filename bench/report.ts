// Printing the figures: one table of rows, notes under it (every round, every discarded round), then each target
// with the figure it is judged on. Informational only: nothing here fails the run.
import { coresText, type CpuUse } from './cpu.js';
import { mbps, rate, type Measure } from './load.js';

export interface Row {
  readonly scenario: string;
  /** mirror, nginx, upstream (direct), verdaccio, ... */
  readonly server: string;
  /** fresh or steady, for the cached scenarios. */
  readonly state?: string;
  readonly m: Measure;
  /** The server's CPU over the row's median round (or its whole download). */
  readonly cpu?: CpuUse;
  /** The paired ratio's range over the kept rounds, e.g. "0.21-0.29x nginx". */
  readonly ratio?: string;
  /** Requests the upstream received during the measured rounds (mirror rows only). */
  readonly upstreamReqs?: number;
  /** The server's peak RSS during the row, in bytes. */
  readonly rss?: number;
  readonly note?: string;
}

export interface Target {
  readonly what: string;
  readonly figure: string;
  /** undefined: n/a (the figure says why). */
  readonly meets: boolean | undefined;
}

const COLUMNS = ['scenario', 'server', 'state', 'req/s', 'MB/s', 'p50 ms', 'p99 ms', 'server CPU', 'paired ratio (min-max)', 'upstream reqs', 'peak RSS'] as const;

export function table(rows: readonly Row[]): string {
  const cells = rows.map((r, i) => [
    i > 0 && rows[i - 1]!.scenario === r.scenario ? '' : r.scenario,
    r.server,
    r.state ?? '',
    num(rate(r.m)),
    num(mbps(r.m)),
    ms(r.m.p50Ms),
    ms(r.m.p99Ms),
    coresText(r.cpu),
    r.ratio ?? '',
    r.upstreamReqs === undefined ? '-' : String(r.upstreamReqs),
    r.rss === undefined ? '-' : `${(r.rss / 1e6).toFixed(0)} MB`,
  ]);
  const widths = COLUMNS.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const left = new Set([0, 1, 2, 8]);
  const line = (row: readonly string[]) =>
    row.map((c, i) => (left.has(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  const notes = rows
    .filter((r) => r.note || r.m.errors > 0)
    .map((r) => `  ${r.scenario}${r.state ? ` (${r.state})` : ''} / ${r.server}: ${[r.note, r.m.errorDetail && `errors: ${r.m.errorDetail}`].filter(Boolean).join('; ')}`);
  return [line(COLUMNS), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line), ...(notes.length ? ['', 'notes:', ...notes] : [])].join('\n');
}

export function targets(list: readonly Target[]): string {
  const width = Math.max(...list.map((t) => t.what.length));
  const figWidth = Math.max(...list.map((t) => t.figure.length));
  const verdict = (t: Target) => (t.meets === undefined ? 'n/a' : t.meets ? 'meets' : 'MISSES');
  return list.map((t) => `  ${t.what.padEnd(width)}  ${t.figure.padEnd(figWidth)}  ${verdict(t)}`).join('\n');
}

export function num(n: number): string {
  if (!Number.isFinite(n)) return '-';
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

export function ms(n: number): string {
  if (!Number.isFinite(n)) return '-';
  return n >= 100 ? n.toFixed(0) : n.toFixed(2);
}

export function x(n: number): string {
  return `${n.toFixed(2)}x`;
}
