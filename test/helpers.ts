// Shared test plumbing: temp folders, and a real mirror (real config path, LevelDB and files) on port 0.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { request } from 'undici';
import { main } from '../src/cli.js';
import { loadConfig } from '../src/config/config.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningMirror } from '../src/server.js';
import { shebangFlags } from './fakes/node-flags.js';

const temps: string[] = [];

export async function tempDir(prefix = 'srm-mirror-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

export async function removeTempDirs(): Promise<void> {
  await Promise.all(temps.splice(0).map((d) => rm(d, { recursive: true, force: true })));
}

export interface TestMirror extends RunningMirror {
  readonly dataDir: string;
  /** Every log line the mirror wrote. */
  readonly logs: string[];
}

const LOG_DIR = process.env.SRM_TEST_LOG_DIR;

/** Keeps a log line for the suite-wide credential check (test/global-setup.ts). */
export function keepLog(line: string): void {
  if (LOG_DIR) appendFileSync(join(LOG_DIR, `${process.pid}.log`), line.endsWith('\n') ? line : `${line}\n`);
}

/** Records credentials a test used, so that the suite-wide check looks for them in every log line. */
export function recordSecrets(...values: string[]): void {
  if (LOG_DIR) appendFileSync(join(LOG_DIR, `${process.pid}.secrets`), values.map((v) => `${v}\n`).join(''));
}

/** A clock a test moves by hand: `now()` stands still until `advance(ms)`. */
export function manualClock(start = Date.now()): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

/** A mirror on port 0; its environment is `env` (none by default: HTTPS_PROXY and the like of the test run are not read). */
export async function startMirror(upstream: string, flags: Record<string, string | boolean> = {}, options: { now?: () => number; env?: NodeJS.ProcessEnv } = {}): Promise<TestMirror> {
  const dataDir = typeof flags.data === 'string' ? flags.data : await tempDir();
  const config = loadConfig({ flags: { host: '127.0.0.1', port: '0', data: dataDir, upstream, ...flags }, env: options.env ?? {} });
  const logs: string[] = [];
  const write = (line: string) => {
    logs.push(line);
    keepLog(line);
  };
  const running = await startServer(config, createLogger('debug', { write }), options);
  return Object.assign(running, { dataDir, logs });
}

/** GET with exactly the headers given (fetch() would add cache-control), returning the whole body. */
export async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  const header = (name: string) => {
    const v = res.headers[name];
    return Array.isArray(v) ? v.join(', ') : (v ?? null);
  };
  return { status: res.statusCode, headers: { get: header }, body, json: () => JSON.parse(body.toString()) as unknown };
}

export interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  readonly text: string;
  json(): unknown;
}

/** Any request with exactly the headers given, returning the whole body. */
export async function send(method: string, url: string, headers: Record<string, string> = {}, body?: string | Buffer | Readable): Promise<Answer> {
  const res = await request(url, { method: method as 'GET', headers, body });
  const buf = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body: buf, text: buf.toString(), json: () => JSON.parse(buf.toString()) as unknown };
}

const children: ChildProcess[] = [];

/** The node flags on the executable's first line: a spawned mirror runs with them, as `npm start` runs it. */
const NODE_FLAGS = shebangFlags('src/main.ts');

/**
 * Runs `srm-mirror serve` (from src, via tsx) as its own process; resolves with its URL once it listens. `logs`
 * keeps every stderr line, including any that is not one of the mirror's JSON lines (a crash's stack trace).
 * `node`: another Node binary to run it on (test/fakes/node-lts.ts).
 */
export function spawnMirror(args: string[], { node = process.execPath }: { node?: string } = {}): Promise<{ child: ChildProcess; url: string; logs: string[] }> {
  const child = spawn(node, [...NODE_FLAGS, '--import', 'tsx', 'src/main.ts', 'serve', '--host', '127.0.0.1', '--port', '0', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  const logs: string[] = [];
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      keepLog(line);
      logs.push(line);
      let url: string | undefined;
      try {
        url = (JSON.parse(line) as { url?: string }).url;
      } catch {
        return; // not a JSON line
      }
      if (url) resolve({ child, url, logs });
    });
    child.on('exit', (code) => reject(new Error(`mirror exited with ${code}`)));
  });
}

export function killChildren(): void {
  for (const c of children.splice(0)) c.kill('SIGKILL');
}

/** A process's peak resident memory so far, in bytes (VmHWM). */
export function peakRss(pid: number): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

/** Waits for a condition (polling every 20 ms, for 5 s at most); fails the test when it never holds. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs `srm-mirror ARGS` in this process, as the executable does: its exit code, and what it printed (apart, and as one). */
export async function runCli(args: string[], isTTY = false): Promise<{ code: number; stdout: string; stderr: string; output: string }> {
  let [stdout, stderr, output] = ['', '', ''];
  const code = await main(args, {
    isTTY,
    write: (t) => void ((stdout += t), (output += t)),
    error: (t) => void ((stderr += t), (output += t)),
  });
  return { code, stdout, stderr, output };
}
