// The benchmark's child processes (fake upstream, mirror, nginx, wrk): started here, tracked by pid, and all
// stopped — by their own pids — when the bench ends, fails or is interrupted. Also: free ports, readiness,
// and the mirror's peak RSS from /proc.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { request } from 'undici';
import { onCore } from './pin.js';

export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** The last few KB the process wrote to stderr. */
  stderrTail(): string;
  /** Settles when the process has exited. */
  readonly exited: Promise<number | null>;
}

const running = new Set<Child>();
/** Short-lived processes (wrk) that are not Child objects. */
const extras = new Set<ChildProcess>();

export interface StartOptions extends SpawnOptions {
  /** Sees each stderr line first; the line is echoed only when it answers true. */
  onStderr?: (line: string) => boolean;
  /** Keep stdout to read it (firstLine); otherwise it is discarded. */
  stdout?: 'pipe' | 'ignore';
  /** Run on this core (see pin.ts); by default wherever this process runs. */
  core?: number;
}

/** Starts a process whose stderr lines are echoed (cut to 240 characters) with a [name] prefix. */
export function start(name: string, command: string, args: string[], { onStderr, stdout = 'ignore', core, ...options }: StartOptions = {}): Child {
  const [cmd, argv] = core === undefined ? [command, args] : onCore(core, command, args);
  const proc = spawn(cmd, argv, { ...options, stdio: ['ignore', stdout, 'pipe'] });
  if (proc.pid === undefined) throw new Error(`could not start ${name} (${command})`);
  let tail = '';
  let partial = '';
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => {
    tail = (tail + s).slice(-4096);
    const lines = (partial + s).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.trim() && (onStderr?.(line) ?? true)) process.stderr.write(`[${name}] ${line.length > 240 ? `${line.slice(0, 240)}...` : line}\n`);
    }
  });
  const exited = new Promise<number | null>((resolve) => {
    proc.once('exit', (code) => resolve(code));
    proc.once('error', () => resolve(null));
  });
  const child: Child = { name, proc, pid: proc.pid, stderrTail: () => tail, exited };
  running.add(child);
  void exited.then(() => running.delete(child));
  return child;
}

/** Makes stopAll() stop a short-lived process too, while it runs. */
export function track(proc: ChildProcess, running: boolean): void {
  if (running) extras.add(proc);
  else extras.delete(proc);
}

/** SIGTERM to one child, SIGKILL if it is still there after graceMs. */
export async function stop(child: Child, graceMs = 5_000): Promise<void> {
  if (!running.has(child)) return;
  child.proc.kill('SIGTERM');
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), graceMs);
  await child.exited;
  clearTimeout(timer);
}

/** Stops every process this bench started. */
export async function stopAll(): Promise<void> {
  for (const proc of extras) proc.kill('SIGKILL'); // a no-op for one that has exited
  extras.clear();
  await Promise.all([...running].map((c) => stop(c, 3_000)));
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Polls url until it answers 200, failing early if the process behind it exits. */
export async function waitReady(url: string, child: Child, timeoutMs = 20_000): Promise<void> {
  let exited = false;
  void child.exited.then(() => (exited = true));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw new Error(`${child.name} exited before it was ready:\n${child.stderrTail()}`);
    try {
      const res = await request(url, { headersTimeout: 1_000, bodyTimeout: 1_000 });
      await res.body.dump();
      if (res.statusCode === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${child.name} not ready at ${url} after ${timeoutMs} ms:\n${child.stderrTail()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The first stdout line of a child. */
export function firstLine(child: Child, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${child.name} printed nothing in ${timeoutMs} ms:\n${child.stderrTail()}`)), timeoutMs);
    child.proc.stdout?.setEncoding('utf8').on('data', (s: string) => {
      buf += s;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(buf.slice(0, nl));
      }
    });
    void child.exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`${child.name} exited:\n${child.stderrTail()}`));
    });
  });
}

/**
 * Peak resident memory of a process. Linux keeps the peak (VmHWM), and lets root reset it to the current RSS
 * (writing 5 to /proc/PID/clear_refs), so each scenario gets its own peak. Where the reset is refused, it
 * falls back to sampling VmRSS every 20 ms.
 */
export class PeakRss {
  private canReset = true;
  private sampled = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.timer = setInterval(() => (this.sampled = Math.max(this.sampled, this.status('VmRSS'))), 20);
    this.timer.unref();
  }

  reset(): void {
    if (this.canReset) {
      try {
        writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
      } catch {
        this.canReset = false;
      }
    }
    this.sampled = this.status('VmRSS');
  }

  /** Bytes, now. */
  current(): number {
    return this.status('VmRSS');
  }

  /** Bytes of it mapped from files, now: node's binary and its libraries, shared and clean (the kernel can drop them). */
  fileBacked(): number {
    return this.status('RssFile');
  }

  /** Bytes, since the last reset. */
  peak(): number {
    const current = this.status('VmRSS');
    return Math.max(this.canReset ? this.status('VmHWM') : this.sampled, current);
  }

  /** Peak over the process's life (or since the last reset, when resets work). */
  get method(): string {
    return this.canReset ? 'VmHWM, reset per scenario' : 'VmRSS sampled every 20 ms';
  }

  close(): void {
    clearInterval(this.timer);
  }

  private status(field: 'VmRSS' | 'VmHWM' | 'RssFile'): number {
    try {
      const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : 0;
    } catch {
      return 0;
    }
  }
}

/** A whole number >= min from the environment, or the fallback. */
export function envInt(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be a whole number >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

/**
 * Runs a bench's main: cleanup at the end, on failure (exit 1, after `onFailure` printed what it has) and on
 * SIGINT/SIGTERM/SIGHUP (exit 130), so that no child process or temp folder outlives it.
 */
export function runBench(name: string, main: () => Promise<void>, cleanupOnce: () => Promise<void>, onFailure: () => void = () => {}): void {
  let cleaning: Promise<void> | undefined;
  const cleanup = () => (cleaning ??= cleanupOnce()); // a signal may come while the end's cleanup runs
  let interrupted = false;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      interrupted = true;
      console.error(`${signal}: stopping`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  main().then(
    () => cleanup().then(() => process.exit(process.exitCode ?? 0)),
    (err: unknown) => {
      if (interrupted) return; // the signal handler cleans up and exits
      console.error(`${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      onFailure();
      void cleanup().finally(() => process.exit(1));
    },
  );
}

/** The usual cleanup: every process stopped, then the bench's temp folder (once it is known) removed. */
export function stopAllAndRemove(dir: () => string | undefined): () => Promise<void> {
  return async () => {
    await stopAll();
    const d = dir();
    if (d) rmSync(d, { recursive: true, force: true });
  };
}

export function log(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}
