// Shared test plumbing: temp folders, and a real mirror (real config path, LevelDB and files) on port 0.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { loadConfig } from '../src/config/config.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningMirror } from '../src/server.js';

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

export async function startMirror(upstream: string, flags: Record<string, string | boolean> = {}): Promise<TestMirror> {
  const dataDir = typeof flags.data === 'string' ? flags.data : await tempDir();
  const config = loadConfig({ flags: { host: '127.0.0.1', port: '0', data: dataDir, upstream, ...flags }, env: {} });
  const logs: string[] = [];
  const running = await startServer(config, createLogger('debug', { write: (line: string) => logs.push(line) }));
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
