// Printing the figures: one table of rows, then each target with the ratio it asks for. Informational only:
// nothing here fails the run.
import { mbps, rate, type Measure } from './load.js';

export interface Row {
  readonly scenario: string;
  /** mirror, nginx, upstream (direct) */
  readonly server: string;
  readonly target?: string;
  readonly m: Measure;
  /** Requests the upstream received during the measured window (mirror rows only). */
  readonly upstreamReqs?: number;
  /** The mirror's peak RSS during the row, in bytes (mirror rows only). */
  readonly rss?: number;
  readonly note?: string;
}

export interface Target {
  readonly what: string;
  readonly figure: string;
  readonly meets: boolean;
}

const COLUMNS = ['scenario', 'server', 'target', 'req/s', 'MB/s', 'p50 ms', 'p99 ms', 'upstream reqs', 'mirror peak RSS'] as const;

export function table(rows: readonly Row[]): string {
  const cells = rows.map((r, i) => [
    i > 0 && rows[i - 1]!.scenario === r.scenario ? '' : r.scenario,
    r.server,
    r.target ?? '',
    num(rate(r.m)),
    num(mbps(r.m)),
    ms(r.m.p50Ms),
    ms(r.m.p99Ms),
    r.upstreamReqs === undefined ? '-' : String(r.upstreamReqs),
    r.rss === undefined ? '-' : `${(r.rss / 1e6).toFixed(0)} MB`,
  ]);
  const widths = COLUMNS.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const left = new Set([0, 1, 2]);
  const line = (row: readonly string[]) =>
    row.map((c, i) => (left.has(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  const notes = rows.filter((r) => r.note || r.m.errors > 0).map((r) => `  ${r.scenario} / ${r.server}: ${[r.note, r.m.errorDetail && `errors: ${r.m.errorDetail}`].filter(Boolean).join('; ')}`);
  return [line(COLUMNS), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line), ...(notes.length ? ['', 'notes:', ...notes] : [])].join('\n');
}

export function targets(list: readonly Target[]): string {
  const width = Math.max(...list.map((t) => t.what.length));
  const figWidth = Math.max(...list.map((t) => t.figure.length));
  return list.map((t) => `  ${t.what.padEnd(width)}  ${t.figure.padEnd(figWidth)}  ${t.meets ? 'meets' : 'misses'}`).join('\n');
}

export function pct(a: number, b: number): string {
  return `${((100 * a) / b).toFixed(0)}%`;
}

export function num(n: number): string {
  if (!Number.isFinite(n)) return '-';
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

export function ms(n: number): string {
  if (!Number.isFinite(n)) return '-';
  return n >= 100 ? n.toFixed(0) : n.toFixed(2);
}
