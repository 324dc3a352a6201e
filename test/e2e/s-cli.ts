// Driving the real `@serverless-devs/s` CLI from npm: a temp home whose set-config.yml names the registry, no
// telemetry or update checks (NODE_ENV=test), no root warning (SERVERLESS_DEVS_CICD=1), nothing inherited from
// the environment (a proxy setting or a PIPELINE* variable would change where it goes).
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { componentZip } from '../fakes/zips.js';
import { tempDir } from '../helpers.js';

const S_BIN = join(dirname(createRequire(import.meta.url).resolve('@serverless-devs/s/package.json')), 'bin', 's');

/** A fresh client home whose registry is `registry` (e.g. "http://127.0.0.1:PORT/v3"). */
export async function clientHome(registry: string): Promise<string> {
  const home = await tempDir('srm-s-home-');
  await mkdir(join(home, '.s'), { recursive: true });
  await writeFile(join(home, '.s', 'set-config.yml'), `registry: ${registry}\nanalysis: disable\n`);
  return home;
}

export interface SResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function runS(home: string, cwd: string, args: string[], extraEnv: Record<string, string> = {}): Promise<SResult> {
  const env = { PATH: process.env.PATH ?? '', HOME: home, serverless_devs_config_home: home, SERVERLESS_DEVS_CICD: '1', NODE_ENV: 'test', ...extraEnv };
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [S_BIN, ...args], { cwd, env, timeout: 90_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end();
  });
}

/** A component the CLI can load: a class whose `deploy` prints a line we can look for. */
export function deployableZip(name: string, version: string, opts: { topFolder?: boolean } = {}): Buffer {
  const source = `module.exports = class {
  async deploy(inputs) {
    console.log('${name.toUpperCase()}@${version} deploy resource=' + inputs.resource.name + ' msg=' + inputs.props.msg);
    return { component: '${name}', version: '${version}' };
  }
};
`;
  const files = {
    'package.json': new TextEncoder().encode(JSON.stringify({ name, version, main: './dist/index.js' })),
    'dist/index.js': new TextEncoder().encode(source),
  };
  // GitHub-style zipballs hold one top-level folder; the CLI accepts both layouts. Paths are given whole, so the
  // zip holds no directory entries (which the CLI's unzip would try to open as files).
  return componentZip(name, version, { files, topFolder: opts.topFolder });
}

/**
 * A component folder the CLI's publish checks accept (Edition 3.0.0, the required fields, Commands, src/), version
 * 0.0.1, whose deploy prints `{marker}@0.0.1 deploy resource=NAME`.
 */
export async function publishableFolder(name: string, marker: string): Promise<string> {
  const dir = await tempDir('srm-s-package-');
  await writeFile(
    join(dir, 'publish.yaml'),
    `Edition: 3.0.0\nType: Component\nName: ${name}\nProvider:\n  - 其它\nVersion: 0.0.1\nDescription: published through srm-mirror\n` +
      `Category: 其它\nService: {}\nCommands:\n  deploy: Print a line\nEffective: Public\nParameters: {}\n`,
  );
  await writeFile(join(dir, 'readme.md'), `# ${name}\n`);
  await mkdir(join(dir, 'src'));
  await writeFile(
    join(dir, 'src', 'index.js'),
    `module.exports = class { async deploy(inputs) { console.log('${marker}@0.0.1 deploy resource=' + inputs.resource.name); return {}; } };\n`,
  );
  return dir;
}

/** A project folder whose s.yaml uses `components` (e.g. "demo-comp", "other-comp@0.0.2"), one resource each. */
export async function project(components: string[]): Promise<string> {
  const dir = await tempDir('srm-s-project-');
  const resources = components.map((c, i) => `  r${i}:\n    component: ${c}\n    props:\n      msg: hello-${i}\n`).join('');
  await writeFile(join(dir, 's.yaml'), `edition: 3.0.0\nname: mirror-e2e\nresources:\n${resources}`);
  return dir;
}
