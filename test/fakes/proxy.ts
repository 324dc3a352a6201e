// A real forward proxy for the egress tests: Debian's tinyproxy, installed here when it is missing (apt, as root),
// started per test file on a free port with its own config and log. Its outgoing connections leave from PROXY_ADDRESS
// (tinyproxy's Bind), so an upstream that takes connections from that address only is reachable through it alone.
// Also a test CA and a server certificate it signed, made with the openssl binary (node:crypto cannot sign X.509).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, until } from '../helpers.js';
import { ensureBinaries, freePort, onPath } from './machine.js';

/** Where tinyproxy's connections to upstreams come from (any 127.x address is on the loopback interface). */
export const PROXY_ADDRESS = '127.0.0.2';


/**
 * Makes sure tinyproxy and openssl are there, installing the Debian packages when they are not (tinyproxy-bin: the
 * binary alone, no service started). Resolves with a reason to skip only when they truly cannot be installed.
 */
export function ensureProxyTools(): { tinyproxy: string; openssl: string } | { skip: string } {
  // tinyproxy before its split into -bin: older releases.
  const skip = ensureBinaries([['tinyproxy', 'tinyproxy-bin'], ['openssl', 'openssl']], { 'tinyproxy-bin': 'tinyproxy' });
  return skip ? { skip } : { tinyproxy: onPath('tinyproxy')!, openssl: onPath('openssl')! };
}


export interface TestCertificates {
  /** The CA's certificate (PEM file), for upstream.ca. */
  readonly caFile: string;
  /** A server key and certificate for localhost and 127.0.0.1, signed by the CA. */
  readonly key: string;
  readonly cert: string;
}

/** A fresh test CA and a server certificate it signed (EC P-256, valid for a day). */
export async function testCertificates(openssl = 'openssl'): Promise<TestCertificates> {
  const dir = await tempDir('srm-mirror-ca-');
  const f = (name: string) => join(dir, name);
  const run = (...args: string[]) => execFileSync(openssl, args, { stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=srm-mirror test CA');
  run('req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost');
  writeFileSync(f('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  run('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '1', '-extfile', f('ext.cnf'));
  return { caFile: f('ca.pem'), key: readFileSync(f('server.key'), 'utf8'), cert: readFileSync(f('server.pem'), 'utf8') };
}


export interface ProxyOptions {
  /** The ports CONNECT may reach (tinyproxy's ConnectPort). */
  readonly connectPorts: readonly number[];
  /** Credentials the proxy asks for (tinyproxy's BasicAuth). */
  readonly auth?: { readonly user: string; readonly password: string };
}

export class Tinyproxy {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly logFile: string,
  ) {}

  static async start(binary: string, { connectPorts, auth }: ProxyOptions): Promise<Tinyproxy> {
    const dir = await tempDir('srm-mirror-proxy-');
    const port = await freePort();
    const logFile = join(dir, 'tinyproxy.log');
    const conf = [
      `Port ${port}`,
      'Listen 127.0.0.1',
      `Bind ${PROXY_ADDRESS}`,
      'Timeout 30',
      `LogFile "${logFile}"`,
      'LogLevel Info',
      `PidFile "${join(dir, 'tinyproxy.pid')}"`,
      'MaxClients 64',
      'Allow 127.0.0.1',
      ...(auth ? [`BasicAuth ${auth.user} ${auth.password}`] : []),
      ...connectPorts.map((p) => `ConnectPort ${p}`),
    ];
    writeFileSync(join(dir, 'tinyproxy.conf'), `${conf.join('\n')}\n`);
    const child = spawn(binary, ['-d', '-c', join(dir, 'tinyproxy.conf')], { stdio: 'ignore' });
    const proxy = new Tinyproxy(child, port, logFile);
    await until(() => proxy.log().includes('Accepting connections'), 10_000);
    return proxy;
  }

  /** The proxy's URL, with credentials when given. */
  url(auth?: { user: string; password: string }): string {
    return `http://${auth ? `${encodeURIComponent(auth.user)}:${encodeURIComponent(auth.password)}@` : ''}127.0.0.1:${this.port}`;
  }

  log(): string {
    return existsSync(this.logFile) ? readFileSync(this.logFile, 'utf8') : '';
  }

  /** The requests the proxy received, as their request lines less the version: "CONNECT localhost:443", "GET http://...". */
  requests(): string[] {
    return [...this.log().matchAll(/Request \(file descriptor \d+\): (\S+ \S+)/g)].map((m) => m[1]!);
  }

  /** The CONNECT requests to host:port. */
  connects(hostPort: string): number {
    return this.requests().filter((r) => r === `CONNECT ${hostPort}`).length;
  }

  stop(): void {
    this.child.kill('SIGTERM');
  }
}
