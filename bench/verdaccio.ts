// Verdaccio 6, the npm world's caching proxy, as a peer: installed on demand into a cache folder outside the
// repository (not a project dependency), run with its storage in the bench's temp folder, uplinked to
// bench/npm-upstream.ts, logging at warn.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { log } from './procs.js';

export const VERDACCIO_DIR = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'srm-mirror-bench', 'verdaccio');

/** The path of Verdaccio's bin script, installing verdaccio@6 first when it is not there yet. */
export function ensureVerdaccio(): string {
  const bin = join(VERDACCIO_DIR, 'node_modules', 'verdaccio', 'bin', 'verdaccio');
  if (existsSync(bin)) return bin;
  log(`installing verdaccio@6 into ${VERDACCIO_DIR} (once)`);
  mkdirSync(VERDACCIO_DIR, { recursive: true });
  // verdaccio-audit asks for node-fetch's "cjs" dist-tag, which not every registry mirror carries: 2.7.0 is what
  // that tag names.
  writeFileSync(join(VERDACCIO_DIR, 'package.json'), JSON.stringify({ private: true, overrides: { 'node-fetch': '2.7.0' } }, null, 2));
  execFileSync('npm', ['install', '--prefix', VERDACCIO_DIR, '--no-audit', '--no-fund', '--loglevel=error', 'verdaccio@6'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (!existsSync(bin)) throw new Error(`npm install verdaccio@6 left no ${bin}`);
  return bin;
}

export function verdaccioVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(VERDACCIO_DIR, 'node_modules', 'verdaccio', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

/**
 * Writes Verdaccio's config in `dir` and returns the path: everything proxied to `uplink`, kept an hour (so that no
 * packument request in a measured window goes to the uplink), storage in `dir`.
 */
export function verdaccioConfig(dir: string, uplink: string, port: number): string {
  mkdirSync(join(dir, 'storage'), { recursive: true });
  const path = join(dir, 'config.yaml');
  writeFileSync(
    path,
    `storage: ${join(dir, 'storage')}
listen: 127.0.0.1:${port}
uplinks:
  fake:
    url: ${uplink}/
    maxage: 60m
    cache: true
packages:
  '**':
    access: $all
    proxy: fake
log: { type: stdout, format: json, level: warn }
web: { enable: false }
`,
  );
  return path;
}
