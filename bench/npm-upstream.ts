// A fake npm registry for the peer comparison: one package, `bench-npm`, version 1.0.0, whose packument and tarball
// (random bytes of the given size; Verdaccio does not unpack it) it serves, counting the requests it answers
// (GET /-/count, not counted itself). Verdaccio uplinks to it.
//
//   node --import tsx bench/npm-upstream.ts TARBALL_BYTES
//
// Prints one line, {"port": N}, once it listens on 127.0.0.1.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type ServerResponse } from 'node:http';
import { serveForBench } from './child-server.js';

export const NPM_PACKAGE = 'bench-npm';
export const NPM_VERSION = '1.0.0';
export const NPM_TARBALL = `/${NPM_PACKAGE}/-/${NPM_PACKAGE}-${NPM_VERSION}.tgz`;

function main(): void {
  const size = Number(process.argv[2]);
  if (!Number.isInteger(size) || size < 1) throw new Error('usage: npm-upstream.ts TARBALL_BYTES');
  const tarball = randomBytes(size);
  const shasum = createHash('sha1').update(tarball).digest('hex');
  const integrity = `sha512-${createHash('sha512').update(tarball).digest('base64')}`;
  let count = 0;

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://npm').pathname;
    if (path === '/-/count') return send(res, 200, 'application/json', JSON.stringify({ total: count }));
    count++;
    if (path === NPM_TARBALL) return send(res, 200, 'application/octet-stream', tarball);
    if (path !== `/${NPM_PACKAGE}`) return send(res, 404, 'application/json', '{"error":"not found"}');
    const base = `http://${req.headers.host ?? '127.0.0.1'}`;
    // Padded with a readme and a few fields a real packument carries, so that it is not trivially small.
    const packument = {
      _id: NPM_PACKAGE,
      name: NPM_PACKAGE,
      description: 'a package for the bench',
      'dist-tags': { latest: NPM_VERSION },
      versions: {
        [NPM_VERSION]: {
          name: NPM_PACKAGE,
          version: NPM_VERSION,
          description: 'a package for the bench',
          main: 'index.js',
          license: 'MIT',
          dependencies: {},
          dist: { shasum, integrity, tarball: `${base}${NPM_TARBALL}` },
        },
      },
      time: { created: '2024-01-01T00:00:00.000Z', modified: '2024-01-01T00:00:00.000Z', [NPM_VERSION]: '2024-01-01T00:00:00.000Z' },
      license: 'MIT',
      readme: 'bench-npm\n=========\n\nA package the srm-mirror bench serves through Verdaccio.\n',
    };
    send(res, 200, 'application/json', JSON.stringify(packument));
  });
  server.keepAliveTimeout = 5_000;
  serveForBench(server);
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) }).end(body);
}

// Only when run (the bench imports the constants).
if (process.argv[1]?.endsWith('npm-upstream.ts')) main();
