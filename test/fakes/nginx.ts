// A real nginx in front of a mirror, for the X-Accel-Redirect tests: Debian's nginx, installed when missing (apt, as
// root), run in the foreground as one process with its config, pid, logs and temp folders in a temp dir, on a free
// port. Its server block is docs/nginx.md's own ("Behind nginx"), with the addresses and the data folder of the test.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, until } from '../helpers.js';
import { readmeNginxServer } from './nginx-config.js';
import { ensureBinaries, freePort, onPath } from './machine.js';

/** nginx's binary, installed if need be; a reason to skip when it cannot be. */
export function ensureNginx(): { nginx: string } | { skip: string } {
  const skip = ensureBinaries([['nginx', 'nginx']]);
  return skip ? { skip } : { nginx: onPath('nginx')! };
}

export class Nginx {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly accessLog: string,
  ) {}

  /** docs/nginx.md's configuration, in front of the mirror at `mirrorPort` whose data folder is `dataDir`. */
  static async start(binary: string, mirrorPort: number, dataDir: string): Promise<Nginx> {
    const dir = await tempDir('srm-mirror-nginx-');
    const port = await freePort();
    const server = readmeNginxServer({ mirrorPort, port, dataDir });
    const accessLog = join(dir, 'access.log');
    const conf = [
      'daemon off;',
      'master_process off;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'error.log')} warn;`,
      'events { worker_connections 256; }',
      'http {',
      // Which location answered: $uri is the internal location's after an X-Accel-Redirect.
      "  log_format served '$request_method $request_uri $status $uri';",
      `  access_log ${accessLog} served;`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(dir, t)};`),
      server,
      '}',
    ];
    writeFileSync(join(dir, 'nginx.conf'), conf.join('\n'));
    const child = spawn(binary, ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (s: string) => void (stderr = (stderr + s).slice(-4096)));
    const nginx = new Nginx(child, port, accessLog);
    const pidFile = join(dir, 'nginx.pid');
    await until(() => {
      if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
      return existsSync(pidFile);
    }, 10_000);
    return nginx;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The URI (after internal redirects) that answered each request for `requestUri`, in order. */
  servedBy(requestUri: string): string[] {
    const lines = existsSync(this.accessLog) ? readFileSync(this.accessLog, 'utf8').split('\n') : [];
    return lines.map((l) => l.split(' ')).filter((f) => f[1] === requestUri).map((f) => f[3]!);
  }

  stop(): void {
    this.child.kill('SIGTERM');
  }
}
