// What the test machine has, and getting what it lacks: binaries on the PATH, Debian packages installed with apt
// (as root) when missing — each test that needs a real tool (tinyproxy, nginx, PostgreSQL, ...) installs it this way
// and skips, saying why, only when it truly cannot — and free loopback ports.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';

export function onPath(binary: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').concat(['/usr/sbin', '/usr/bin'])) {
    if (existsSync(join(dir, binary))) return join(dir, binary);
  }
  return undefined;
}

/**
 * Installs Debian packages (apt, as root), trying the `fallback` names of packages when the first names fail;
 * undefined when done, or a reason to skip when they truly cannot be installed.
 */
export function installPackages(packages: readonly string[], fallback: Record<string, string> = {}): string | undefined {
  if (process.getuid?.() !== 0) return `${packages.join(' and ')} not installed, and the tests do not run as root to install them`;
  if (!existsSync('/usr/bin/apt-get')) return `${packages.join(' and ')} not installed, and there is no apt-get here`;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (rename: Record<string, string> = {}) =>
    spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...packages.map((p) => rename[p] ?? p)], { env, encoding: 'utf8' });
  let result = install();
  if (result.status !== 0) {
    spawnSync('apt-get', ['update'], { env, encoding: 'utf8' }); // a fresh machine's package lists may be empty
    result = install();
  }
  if (result.status !== 0 && Object.keys(fallback).length > 0) result = install(fallback);
  if (result.status !== 0) return `could not install ${packages.join(' and ')}: ${(result.stderr || result.stdout).trim().split('\n').pop()}`;
  return undefined;
}

/** Installs the packages of the [binary, package] pairs whose binary is not on the PATH (see installPackages). */
export function ensureBinaries(needed: ReadonlyArray<readonly [string, string]>, fallback: Record<string, string> = {}): string | undefined {
  const missing = needed.filter(([bin]) => !onPath(bin)).map(([, pkg]) => pkg);
  return missing.length === 0 ? undefined : installPackages(missing, fallback);
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
