// Runs a Mirror on an HTTP server, with the timeouts a server facing many clients needs.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMirror, type Mirror } from './app.js';
import type { Config } from './config/config.js';
import type { Logger } from './log.js';
import { interceptDir, interceptIdentity } from './intercept/certificates.js';
import { dialDirect, dialThrough, interceptOn, type Interceptor } from './intercept/intercept.js';
import { proxiesOf, type EgressSettings } from './upstreams/egress.js';

export interface RunningMirror {
  readonly mirror: Mirror;
  readonly server: Server;
  /** e.g. "http://127.0.0.1:8080" */
  readonly url: string;
  /** Graceful stop: work under way gets graceMs (default: the shutdownGrace setting) in total to finish. */
  close(graceMs?: number): Promise<void>;
}

/** `now` replaces the clock of the mirror's time-based policies (tests drive it instead of sleeping). */
export async function startServer(config: Config, log: Logger, { now }: { now?: () => number } = {}): Promise<RunningMirror> {
  const mirror = await createMirror(config, log, { role: 'server', now });
  const server = createServer(mirror.handle);
  server.headersTimeout = 30_000; // slow-loris: a client has 30 s to send its request headers
  server.requestTimeout = 300_000; // and 5 min for a whole request body
  server.timeout = 120_000; // a connection on which nothing moves for 2 min is closed
  server.keepAliveTimeout = 5_000;
  server.maxConnections = config.server.maxConnections; // more are refused at once rather than piling up
  let intercept: Interceptor | undefined;
  try {
    // ---- proxy mode (issue 12, item 3): CONNECT and absolute-form requests for the registry hosts, answered here ----
    if (config.intercept.enabled) {
      const { hosts, tunnel, cert, key } = config.intercept;
      const identity = await interceptIdentity(config.dataDir, hosts, cert && key ? { cert, key } : undefined);
      intercept = interceptOn(server, {
        hosts,
        tunnel,
        identity,
        handle: mirror.handle,
        log,
        connectTimeoutMs: config.upstream.connectTimeoutMs,
        idleTimeoutMs: server.timeout,
        publicUrl: config.publicUrl,
        dial: tunnelDial(config.upstream),
      });
      log.info('proxy mode', { hosts, tunnel, ca: identity.ca ? `${interceptDir(config.dataDir)}/ca.crt` : undefined });
    }
    // ---- end of proxy mode ----
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, resolve);
    });
  } catch (err) {
    await mirror.close();
    throw err;
  }
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  const url = `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}`;
  log.info('listening', { url, upstream: config.upstream.url, upstreamType: config.upstream.type, dataDir: config.dataDir });
  return {
    mirror,
    server,
    url,
    async close(graceMs = config.shutdownGraceMs) {
      // One deadline for everything: stop accepting; let responses under way finish, closing keep-alive connections
      // as they fall idle; cut whatever still runs once it is reached. The mirror shuts down alongside (refusing
      // upstream calls not yet started, letting downloads finish) and closes its stores once the connections are gone.
      const idle = setInterval(() => server.closeIdleConnections(), 50);
      const cut = setTimeout(() => {
        server.closeAllConnections();
        intercept?.closeTunnels(); // proxy mode's tunnels: opaque, so never idle as far as the server knows
      }, graceMs);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      try {
        await mirror.close(graceMs, closed);
      } finally {
        clearInterval(idle);
        clearTimeout(cut);
      }
    },
  };
}

/**
 * How proxy mode's tunnels (intercept.tunnel) reach their targets: through the upstream's forward proxy when one is
 * set (the only way out of most corporate networks), except to hosts NO_PROXY names; otherwise directly.
 */
function tunnelDial(upstream: Pick<EgressSettings, 'proxy' | 'httpsProxy' | 'httpProxy' | 'noProxy'>) {
  const proxies = proxiesOf(upstream);
  if (!proxies?.https) return undefined;
  const viaProxy = dialThrough(proxies.https);
  const bypasses = (host: string) =>
    proxies.noProxy.some((entry) => {
      const name = entry.replace(/^\*?\./, '').replace(/:\d+$/, '');
      return entry === '*' || host === name || host.endsWith(`.${name}`);
    });
  return (host: string, port: number) => (bypasses(host) ? dialDirect(host, port) : viaProxy(host, port));
}
