// A bare Node pass-through proxy, the floor of what any Node proxy can do for a cold download: each GET goes to the
// upstream (following its redirects, as the mirror follows the zipball's 302) and the answer is piped straight
// back. No cache, no disk, no hashing: what the mirror adds on top of this is its own cost.
//
//   node --import tsx bench/passthrough.ts UPSTREAM_BASE_URL
//
// Prints one line, {"port": N}, once it listens on 127.0.0.1.
import { Agent, get, createServer, type IncomingMessage } from 'node:http';
import { serveForBench } from './child-server.js';

const MAX_REDIRECTS = 3;

function main(): void {
  const upstream = process.argv[2];
  if (!upstream) throw new Error('usage: passthrough.ts UPSTREAM_BASE_URL');
  const agent = new Agent({ keepAlive: true });

  const fetchFollowing = (url: string, left: number, done: (res: IncomingMessage | Error) => void): void => {
    get(url, { agent }, (res) => {
      const location = res.headers.location;
      if (res.statusCode && res.statusCode >= 300 && res.statusCode < 400 && location && left > 0) {
        res.resume();
        return fetchFollowing(new URL(location, url).href, left - 1, done);
      }
      done(res);
    }).on('error', done);
  };

  const server = createServer((req, res) => {
    fetchFollowing(upstream + (req.url ?? '/'), MAX_REDIRECTS, (up) => {
      if (up instanceof Error) return void res.writeHead(502).end();
      const length = up.headers['content-length'];
      res.writeHead(up.statusCode ?? 502, { 'content-type': up.headers['content-type'] ?? 'application/octet-stream', ...(length ? { 'content-length': length } : {}) });
      up.pipe(res);
      res.on('close', () => up.destroy());
    });
  });
  serveForBench(server);
}

main();
