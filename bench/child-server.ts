// What the bench's helper servers (fake upstreams, the pass-through proxy) share: listen on a free loopback port,
// tell the bench which on stdout (one JSON line), and stop when the bench stops them.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export function serveForBench(server: Server): void {
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`));
  const stop = () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
