// An import killed with SIGKILL in the middle of a volume (the executable, as its own process): a rerun completes it,
// nothing is stored twice, and nothing was half-visible in between.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { createMirror } from '../../src/app.js';
import type { BundleEvent } from '../../src/bundles/progress.js';
import { main } from '../../src/cli.js';
import { loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import { readerStream } from '../../src/stores/archive-store.js';
import { cached, writeBundle } from '../fakes/bundles.js';
import { componentZip } from '../fakes/zips.js';
import { get, keepLog, removeTempDirs, startMirror, tempDir } from '../helpers.js';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const DEAD_UPSTREAM = 'http://127.0.0.1:9/v3';
const VERSIONS = 40;

afterEach(removeTempDirs);

async function filesIn(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name);
}

describe('an interrupted import', () => {
  it('SIGKILL mid-volume: the rerun completes, nothing is duplicated, and nothing was half-visible', async () => {
    const work = await tempDir();
    const data = await tempDir();
    const zips = Array.from({ length: VERSIONS }, (_, i) => componentZip('big', `1.0.${i}`, { payload: randomBytes(2 << 20) }));
    const bundle = await writeBundle(join(work, 'b'), { id: 'big-1', items: zips.map((z, i) => cached('big', `1.0.${i}`, z)) });
    const flags = ['--data', data, '--offline', '--upstream', DEAD_UPSTREAM, '--log-level', 'error'];

    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'import', bundle.dir, '--json', ...flags], { stdio: ['ignore', 'pipe', 'pipe'] });
    createInterface({ input: child.stderr! }).on('line', keepLog);
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const event = JSON.parse(line) as BundleEvent;
      if (event.type === 'progress' && event.done.bytes >= 7 * 2 ** 20) child.kill('SIGKILL'); // in the 4th blob
    });
    expect(await exited).toBe('SIGKILL');
    const storedBefore = (await filesIn(join(data, 'archives', 'sha256'))).length;
    expect(storedBefore).toBeGreaterThanOrEqual(3);
    expect(storedBefore).toBeLessThan(VERSIONS); // killed in the middle of the volume
    const leftovers = await readdir(join(data, 'archives', 'tmp')); // the blob it was writing, as a temp file
    expect(leftovers.length).toBeLessThanOrEqual(1);

    // Nothing half-visible: whatever a mirror lists of the package, it serves whole and right.
    const config = loadConfig({ flags: { data, offline: true, upstream: DEAD_UPSTREAM }, env: {} });
    const between = await createMirror(config, createLogger('error', { write: keepLog }), { role: 'command' });
    try {
      const listed = await between.registry.allReleases('big').then((r) => r.value.map((x) => x.version), () => []);
      expect(listed).toEqual([]); // the metadata comes last: the blobs stored so far belong to no version yet
      for (const version of listed) {
        const handle = await between.registry.archive('big', version);
        const chunks: Buffer[] = [];
        for await (const c of readerStream(handle.reader)) chunks.push(c as Buffer);
        handle.close();
        expect(sha256(Buffer.concat(chunks))).toBe(sha256(zips[Number(version.split('.')[2])]!));
      }
    } finally {
      await between.close();
    }

    let stdout = '';
    const out = { isTTY: false, write: (t: string) => void (stdout += t), error: (t: string) => void (stdout += t) };
    expect(await main(['import', bundle.dir, '--json', ...flags], out)).toBe(0);
    const summary = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as BundleEvent).find((e) => e.type === 'summary')!.summary;
    expect(summary).toMatchObject({ status: 'complete', added: { cached: VERSIONS }, blobs: VERSIONS - storedBefore });
    expect((await filesIn(join(data, 'archives', 'sha256'))).length).toBe(VERSIONS);
    expect(await readdir(join(data, 'archives', 'tmp'))).toEqual([]); // the killed run's temp file is gone

    const m = await startMirror(DEAD_UPSTREAM, { data, offline: true });
    try {
      const page = JSON.parse((await get(`${m.url}/v3/packages/big/release?page=1`)).body.toString()) as { body: unknown[] };
      expect(page.body).toHaveLength(20);
      for (const i of [0, 7, VERSIONS - 1]) expect(sha256((await get(`${m.url}/v3/packages/big/zipball/1.0.${i}`)).body)).toBe(sha256(zips[i]!));
    } finally {
      await m.close();
    }
  }, 60_000);
});
