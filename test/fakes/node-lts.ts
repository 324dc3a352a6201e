// The current Node LTS, for the test that runs the mirror on it (the suite itself runs on the machine's node, the
// oldest supported). Fetched once from the npm registry — the only registry CI reaches — as the official binary
// package node-linux-<arch>, into a cache folder outside the repository.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Node's Active LTS line since October 2026. */
export const CURRENT_LTS = 26;

export function ensureLtsNode(): { node: string; version: string } | { skip: string } {
  if (process.platform !== 'linux' || !['x64', 'arm64'].includes(process.arch)) return { skip: `no node-linux binary package for ${process.platform}-${process.arch}` };
  const dir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'srm-mirror-test', `node-${CURRENT_LTS}-${process.arch}`);
  const node = join(dir, 'package', 'bin', 'node');
  if (!existsSync(node)) {
    rmSync(dir, { recursive: true, force: true }); // a half-unpacked earlier attempt
    mkdirSync(dir, { recursive: true });
    const pack = spawnSync('npm', ['pack', `node-linux-${process.arch}@${CURRENT_LTS}`, '--pack-destination', dir, '--silent'], { encoding: 'utf8', timeout: 300_000 });
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    if (pack.status !== 0 || !tgz) return { skip: `could not fetch Node ${CURRENT_LTS} from the npm registry: ${(pack.stderr || pack.stdout || String(pack.error)).trim().split('\n').pop()}` };
    const untar = spawnSync('tar', ['xzf', tgz], { cwd: dir, encoding: 'utf8' });
    rmSync(join(dir, tgz), { force: true });
    if (untar.status !== 0 || !existsSync(node)) return { skip: `could not unpack Node ${CURRENT_LTS}: ${untar.stderr.trim()}` };
  }
  const version = spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim();
  return { node, version };
}
