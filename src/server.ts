// Runs a Mirror on an HTTP server, with the timeouts a server facing many clients needs.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMirror, type Mirror } from './app.js';
import type { Config } from './config/config.js';
import type { Logger } from './log.js';

export interface RunningMirror {
  readonly mirror: Mirror;
  readonly server: Server;
  /** e.g. "http://127.0.0.1:8080" */
  readonly url: string;
  /** Graceful stop: in-flight responses get up to graceMs to finish. */
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
  try {
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
    async close(graceMs = 10_000) {
      // Stop accepting; let responses under way finish; close keep-alive connections as they fall idle, and cut
      // whatever still runs once the grace period is over.
      const idle = setInterval(() => server.closeIdleConnections(), 50);
      const cut = setTimeout(() => server.closeAllConnections(), graceMs);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      clearInterval(idle);
      clearTimeout(cut);
      await mirror.close(graceMs);
    },
  };
}
