// A bare node:http server answering every GET with one file's bytes and the headers the mirror sends with a cached
// metadata answer (x-request-id, x-cache, Age, ETag, content-type, content-length): the ceiling of what any Node
// server can do for the cached-metadata scenario on this runtime. It runs under the mirror's node (BENCH_NODE);
// nginx serves the same file, so the pair says how far node:http itself is from nginx, and the mirror's row how much
// it adds on top.
//
//   node --import tsx bench/bare-node.ts FILE
//
// Prints one line, {"port": N}, once it listens on 127.0.0.1. FILE is read at the first request (the bench writes
// it after the servers start) and kept.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { serveForBench } from './child-server.js';

function main(): void {
  const file = process.argv[2];
  if (!file) throw new Error('usage: bare-node.ts FILE');
  let body: Buffer | undefined;
  const server = createServer((req, res) => {
    body ??= readFileSync(file);
    res.setHeader('x-request-id', randomUUID());
    res.setHeader('x-cache', 'HIT');
    res.setHeader('Age', 0);
    res.setHeader('ETag', '"bare"');
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  serveForBench(server);
}

main();
