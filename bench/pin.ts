// Where each process of a bench runs. On 2 cores or more, every server under test (the mirror, nginx, the
// pass-through proxy, Verdaccio) runs on core 0 and everything that makes load or stands in for the outside world
// (wrk, the bench process itself with its download client, the fake upstreams) on core 1, so that no load generator
// ever takes CPU from the server it measures. On 1 core nothing is pinned, and the header says so.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';

export const SERVER_CORE = 0;
export const CLIENT_CORE = 1;

/** Whether this run pins at all: it needs 2 cores and taskset. */
export const pinned: boolean =
  cpus().length >= 2 && spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0;

/** Moves this process (all its threads) to the client core; children it starts from now on inherit that. */
export function pinSelf(): void {
  if (pinned) execFileSync('taskset', ['-a', '-cp', String(CLIENT_CORE), String(process.pid)], { stdio: 'ignore' });
}

/** A command line that runs on the given core (taskset execs the command: the pid stays the command's own). */
export function onCore(core: number, command: string, args: readonly string[]): [string, string[]] {
  return pinned ? ['taskset', ['-c', String(core), command, ...args]] : [command, [...args]];
}

export const onServerCore = (command: string, args: readonly string[]) => onCore(SERVER_CORE, command, args);
export const onClientCore = (command: string, args: readonly string[]) => onCore(CLIENT_CORE, command, args);

/** One line for a report's header. */
export function pinningLine(servers: string): string {
  return pinned
    ? `pinned: ${servers} on core ${SERVER_CORE}; wrk, the bench process (download client) and the fake upstreams on core ${CLIENT_CORE}`
    : `UNPINNED: ${cpus().length} core(s)${cpus().length >= 2 ? ' but no taskset' : ''}: servers and load generators share the CPU, so ratios flatter whichever side needs less CPU`;
}
