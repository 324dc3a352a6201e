// CPU accounting for the benches: a process's CPU time (user + system) from /proc/PID/stat, and how much of a core
// a server got over a measured stretch. A server that got clearly less than one core while it was saturated with
// load was held back by something else on the machine, and its round says more about that than about the server.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { SERVER_CORE } from './pin.js';

/** USER_HZ, the unit of /proc/PID/stat's times. */
const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** A process's CPU time so far (utime + stime), in seconds; 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** The pids of a process's children (e.g. nginx's worker, beside its master). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export interface CpuUse {
  /** CPU seconds of the watched processes together. */
  readonly seconds: number;
  readonly wallSeconds: number;
  /** seconds / wallSeconds: 1 = one whole core. */
  readonly cores: number;
  /** The share of the wall time the servers' core sat idle (undefined where /proc/stat cannot say). */
  readonly coreIdle: number | undefined;
}

/** A core's idle time so far (idle + iowait, from /proc/stat), in seconds. */
function coreIdleSeconds(core: number): number | undefined {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${core} `));
  if (!line) return undefined;
  const f = line.trim().split(/\s+/).map(Number);
  return (f[4]! + f[5]!) / CLOCK_TICKS;
}

/** Runs `work` and measures the CPU the given processes used meanwhile. */
export async function withCpu<T>(pids: readonly number[], work: () => Promise<T>): Promise<{ value: T; cpu: CpuUse }> {
  const sum = () => pids.reduce((s, p) => s + cpuSeconds(p), 0);
  const cpu0 = sum();
  const idle0 = coreIdleSeconds(SERVER_CORE);
  const t0 = performance.now();
  const value = await work();
  const wallSeconds = (performance.now() - t0) / 1000;
  const seconds = sum() - cpu0;
  const idle1 = coreIdleSeconds(SERVER_CORE);
  const coreIdle = idle0 === undefined || idle1 === undefined || wallSeconds <= 0 ? undefined : (idle1 - idle0) / wallSeconds;
  return { value, cpu: { seconds, wallSeconds, cores: wallSeconds > 0 ? seconds / wallSeconds : 0, coreIdle } };
}

export function coresText(c: CpuUse | undefined): string {
  return c ? `${c.cores.toFixed(2)} core` : '-';
}
