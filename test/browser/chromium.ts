// Debian's chromium for the browser tests, installed here when it is missing (idempotent: nothing to do once
// /usr/bin/chromium exists), so that CI needs no step of its own. It needs root, or sudo without a password; without
// either, or when apt-get fails, the caller skips its tests with the reason.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const CHROMIUM = process.env.SRM_TEST_CHROMIUM ?? '/usr/bin/chromium';

export type Chromium = { readonly path: string } | { readonly skip: string };

export function ensureChromium(): Chromium {
  if (existsSync(CHROMIUM)) return { path: CHROMIUM };
  const root = process.getuid?.() === 0;
  const sudo = !root && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0;
  if (!root && !sudo) return { skip: `${CHROMIUM} is missing and installing it needs root or password-less sudo: run apt-get install -y chromium fonts-liberation` };
  const apt = (args: string[]) =>
    spawnSync(sudo ? 'sudo' : 'apt-get', sudo ? ['-n', 'apt-get', ...args] : args, {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      encoding: 'utf8',
      timeout: 15 * 60_000,
    });
  // Another test file may be installing a package too: wait for dpkg's lock rather than fail.
  const install = () => apt(['install', '-y', '--no-install-recommends', '-o', 'DPkg::Lock::Timeout=600', 'chromium', 'fonts-liberation']);
  let run = install();
  if (run.status !== 0) {
    apt(['update', '-o', 'DPkg::Lock::Timeout=600']); // package lists missing or stale (a fresh container)
    run = install();
  }
  if (run.status === 0 && existsSync(CHROMIUM)) return { path: CHROMIUM };
  const why = `${run.error?.message ?? ''} ${run.stderr ?? ''}`.trim().split('\n').slice(-3).join(' ');
  return { skip: `apt-get install -y chromium failed: ${why || `exit ${run.status}`}` };
}
