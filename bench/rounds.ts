// The one place where rounds are run, paired and discarded. A comparison runs its sides in turn, always in the same
// order (nginx, mirror, nginx, mirror, ...), each round the same length; each attempt's ratio is subject/baseline.
// When the servers are saturated (wrk rows), an attempt in which any side's server got less than `minCores` of a
// core (CPU seconds / wall seconds, from /proc) while that core was busy is discarded: something else on the
// machine took its core. A server short of a core while its core sat idle (IDLE_SHARE of the round or more) was not
// held back, it needed no more (the client on the other core was the limit, as for a big file nginx sends with
// sendfile): that round measures what a client gets, and is kept. A replacement attempt follows a discarded one, up
// to `maxExtra` of them. Targets use the worst kept ratio, never the best.
import { withCpu, type CpuUse } from './cpu.js';

/** The share of a round the servers' core must sit idle for a server short of a core to count as not held back. */
const IDLE_SHARE = 0.1;
import type { Measure } from './load.js';
import { x } from './report.js';

export interface Side {
  readonly server: string;
  /** The processes whose CPU is this server's (nginx: its worker; nginx in front of the mirror: both). */
  readonly pids: () => readonly number[];
  /** One measured round; `attempt` counts from 0 (a cold download takes a new version each time). */
  readonly run: (attempt: number) => Promise<Measure>;
}

export interface Round {
  readonly m: Measure;
  readonly cpu: CpuUse;
}

export interface Attempt {
  /** 1-based. */
  readonly n: number;
  /** One per side, in the sides' order. */
  readonly rounds: readonly Round[];
  /** Why it was discarded, e.g. "nginx 0.71 core". */
  readonly discarded?: string;
}

export interface RoundOptions {
  readonly rounds: number;
  /** Replacement attempts allowed beyond `rounds`. */
  readonly maxExtra: number;
  /** Discard an attempt in which a side got less of a core than this; undefined: never (unsaturated loads). */
  readonly minCores: number | undefined;
}

export interface Rounds {
  readonly sides: readonly Side[];
  readonly attempts: readonly Attempt[];
  /** The attempts that count; when every attempt was discarded, all of them (and `allDiscarded` says so). */
  readonly kept: readonly Attempt[];
  readonly allDiscarded: boolean;
}

export async function runRounds(sides: readonly Side[], o: RoundOptions): Promise<Rounds> {
  const attempts: Attempt[] = [];
  let kept = 0;
  for (let i = 0; kept < o.rounds && i < o.rounds + o.maxExtra; i++) {
    const rounds: Round[] = [];
    for (const side of sides) {
      const { value: m, cpu } = await withCpu(side.pids(), () => side.run(i));
      rounds.push({ m, cpu });
    }
    const starved = (c: CpuUse) => o.minCores !== undefined && c.cores < o.minCores && !((c.coreIdle ?? 0) >= IDLE_SHARE);
    const short = rounds.flatMap((r, s) => (starved(r.cpu) ? [`${sides[s]!.server} ${r.cpu.cores.toFixed(2)} core, its core ${idleText(r.cpu)} idle`] : []));
    attempts.push({ n: i + 1, rounds, ...(short.length ? { discarded: short.join(', ') } : {}) });
    if (!short.length) kept++;
  }
  const good = attempts.filter((a) => !a.discarded);
  return { sides, attempts, kept: good.length ? good : attempts, allDiscarded: good.length === 0 };
}

/** The ratios subject/baseline (sides 1 and 0) of the kept attempts, by `metric`. */
export function ratios(r: Rounds, metric: (m: Measure) => number, subject = 1, baseline = 0): number[] {
  return r.kept.map((a) => metric(a.rounds[subject]!.m) / metric(a.rounds[baseline]!.m));
}

/** A side's kept rounds. */
export function roundsOf(r: Rounds, side: number): Round[] {
  return r.kept.map((a) => a.rounds[side]!);
}

/** The median round of a side by `metric` (the lower middle one). */
export function medianRound(rounds: readonly Round[], metric: (m: Measure) => number): Round {
  const sorted = [...rounds].sort((a, b) => metric(a.m) - metric(b.m));
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/** "3 discarded (#2 nginx 0.71 core; ...)", or '' when none was. */
export function discardNote(r: Rounds): string {
  const d = r.attempts.filter((a) => a.discarded);
  if (!d.length) return '';
  const which = d.map((a) => `#${a.n} ${a.discarded}`).join('; ');
  return r.allDiscarded
    ? `EVERY round was below the CPU floor (${which}): the figures are kept but the server was not what limited them`
    : `${d.length} of ${r.attempts.length} rounds discarded for lack of CPU (${which})`;
}

function idleText(c: CpuUse): string {
  return c.coreIdle === undefined ? '?' : `${Math.round(c.coreIdle * 100)} %`;
}

/** The lower middle value. */
function median(xs: readonly number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
}

/**
 * The kept ratios subject/baseline by `metric`: their min (what targets use) and "min 0.91x (median 1.02x, range
 * 0.91x-1.20x)" (the median beside it: on a noisy machine one bad round decides the min).
 */
export function ratioSpan(r: Rounds, metric: (m: Measure) => number): { min: number; text: string } {
  const all = ratios(r, metric);
  const { min, max } = range(all);
  return { min, text: `min ${x(min)} (median ${x(median(all))}, range ${x(min)}-${x(max)})` };
}

export function range(xs: readonly number[]): { min: number; max: number } {
  return { min: Math.min(...xs), max: Math.max(...xs) };
}
