// The benchmark's upstream: a standalone HTTP server (its own process) that answers the v3 API the way
// test/fakes/upstream.ts does — {request_id, body} envelopes, and a 302 from /v3/packages/{name}/zipball/{ver} to
// /blob/... — but serves the blobs from files on disk with fs streams, so a 1 GiB archive never sits in memory.
// It counts the requests it answers; GET /-/count reports the counts (and is not counted itself).
//
//   node --import tsx bench/upstream-server.ts MANIFEST.json
//
// MANIFEST: {"packages": [{"name": "...", "releases": [{"version": "...", "file": "/abs/path"}], "mbps": 200}]}
// (releases newest first). A package with `mbps` sends each blob at no more than that many MB/s (a WAN-like
// upstream); others at full speed. A package with `generated: {count, size}` has versions 1.0.1 .. 1.0.count, each
// a distinct zip of `size` bytes made in memory when asked for (many small archives without files on disk).
// Prints one line, {"port": N}, once it listens on 127.0.0.1.
import { randomBytes } from 'node:crypto';
import { createReadStream, readFileSync, statSync, type ReadStream } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import { crc32 } from 'node:zlib';
import { dataSizeFor, storedZip } from './zip.js';
import { serveForBench } from './child-server.js';

export interface Manifest {
  packages: Array<{
    name: string;
    releases?: Array<{ version: string; file: string }>;
    mbps?: number;
    generated?: { count: number; size: number };
  }>;
}

export interface UpstreamCounts {
  total: number;
  metadata: number;
  zipball: number;
  blob: number;
}

/** Read size of the blob streams: a fast upstream, so that it is not what limits a cold download. */
const BLOB_CHUNK = 256 * 1024;

interface Release {
  readonly version: string;
  /** A file on disk, or undefined for a generated archive. */
  readonly file: string | undefined;
  readonly size: number;
  readonly createdAt: string;
  /** Bytes per second for its blob; 0 = full speed. */
  readonly bytesPerSecond: number;
}

function main(): void {
  const [manifestPath] = process.argv.slice(2);
  if (!manifestPath) throw new Error('usage: upstream-server.ts MANIFEST.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
  const packages = new Map<string, Release[]>(
    manifest.packages.map((p) => {
      const bytesPerSecond = (p.mbps ?? 0) * 1e6;
      const listed = (p.releases ?? []).map((r) => ({ version: r.version, file: r.file as string | undefined, size: statSync(r.file).size }));
      const g = p.generated;
      const made = g ? Array.from({ length: g.count }, (_, i) => ({ version: `1.0.${g.count - i}`, file: undefined, size: g.size })) : [];
      const all = [...listed, ...made];
      return [p.name, all.map((r, i) => ({ ...r, bytesPerSecond, createdAt: new Date(Date.UTC(2024, 0, 1) + (all.length - i) * 86_400_000).toISOString() }))];
    }),
  );
  const counts: UpstreamCounts = { total: 0, metadata: 0, zipball: 0, blob: 0 };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://upstream');
    const path = url.pathname.split('/').slice(1).map(decodeURIComponent);
    if (url.pathname === '/-/count') return json(res, 200, counts);
    counts.total++;
    const base = `http://${req.headers.host ?? '127.0.0.1'}`;

    if (path[0] === 'blob' && path.length === 3) {
      counts.blob++;
      const release = packages.get(path[1]!)?.find((r) => r.version === path[2]);
      if (!release) return json(res, 404, { request_id: 'bench', body: '未找到指定资源' });
      res.writeHead(200, { 'content-type': 'application/zip', 'content-length': release.size });
      if (req.method === 'HEAD') return void res.end();
      if (release.file === undefined) return void res.end(generatedZip(`${path[1]}-${release.version}`, release.size));
      const file = createReadStream(release.file, { highWaterMark: BLOB_CHUNK });
      file.on('error', () => res.destroy());
      res.on('close', () => file.destroy());
      if (release.bytesPerSecond > 0) throttled(file, res, release.bytesPerSecond);
      else file.pipe(res);
      return;
    }

    const [v3, packagesSegment, name, what, sub, version] = path;
    const releases = v3 === 'v3' && packagesSegment === 'packages' && name !== undefined ? packages.get(name) : undefined;
    if (!releases) {
      counts.metadata++;
      return json(res, 404, { request_id: 'bench', body: '未找到指定资源' });
    }
    const zipballUrl = (r: Release) => `${base}/v3/packages/${encodeURIComponent(name!)}/zipball/${encodeURIComponent(r.version)}`;
    const release = (r: Release) => ({ name, tag_name: r.version, created_at: r.createdAt, zipball_url: zipballUrl(r), description: `${name} component` });

    if (what === 'zipball' && path.length === 5) {
      counts.zipball++;
      const r = releases.find((x) => x.version === sub);
      if (!r) return json(res, 404, { request_id: 'bench', body: '未找到指定资源' });
      res.writeHead(302, { location: `${base}/blob/${encodeURIComponent(name!)}/${encodeURIComponent(r.version)}` }).end();
      return;
    }
    counts.metadata++;
    if (what === 'release' && sub === 'latest' && path.length === 5) return json(res, 200, envelope(release(releases[0]!)));
    if (what === 'release' && sub === 'tags' && path.length === 6) {
      const r = releases.find((x) => x.version === version);
      return r ? json(res, 200, envelope(release(r))) : json(res, 404, { request_id: 'bench', body: '未找到指定资源' });
    }
    if (what === 'release' && path.length === 4) {
      const page = Number(url.searchParams.get('page') ?? '1');
      const items = page === -1 ? releases : releases.slice((page - 1) * 20, page * 20);
      return json(res, 200, envelope(items.map((r) => ({ platform: 'linux', tag_name: r.version, created_at: r.createdAt, zipball_url: zipballUrl(r) }))));
    }
    json(res, 404, { request_id: 'bench', body: '未找到指定资源' });
  });
  server.keepAliveTimeout = 5_000;
  serveForBench(server);
}

/** Pipes file to res at no more than bytesPerSecond, like an upstream across a slower network would. */
function throttled(file: ReadStream, res: ServerResponse, bytesPerSecond: number): void {
  const start = performance.now();
  let sent = 0;
  file.on('data', (chunk) => {
    sent += chunk.length;
    const ok = res.write(chunk);
    const wait = start + (sent / bytesPerSecond) * 1000 - performance.now();
    if (!ok || wait > 0) {
      file.pause();
      let pending = (ok ? 0 : 1) + (wait > 0 ? 1 : 0);
      const resume = () => --pending === 0 && file.resume();
      if (!ok) res.once('drain', resume);
      if (wait > 0) setTimeout(resume, wait);
    }
  });
  file.on('end', () => res.end());
}

/** Random bytes shared by every generated archive; each one's label at the start makes its digest its own. */
let noise: Buffer | undefined;

function generatedZip(label: string, size: number): Buffer {
  const entry = `${label}.bin`;
  const dataSize = dataSizeFor(entry, size);
  if (!noise || noise.length < dataSize) noise = randomBytes(dataSize);
  const data = Buffer.from(noise.subarray(0, dataSize));
  data.write(`${label};`, 0);
  const { head, tail } = storedZip(entry, dataSize, crc32(data));
  return Buffer.concat([head, data, tail]);
}

function envelope(body: unknown) {
  return { request_id: `bench-${Math.random().toString(36).slice(2)}`, body };
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) }).end(body);
}

main();
