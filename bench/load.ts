// Load generators: wrk (from Debian) for request rates and latency percentiles of small and cached answers, and
// a small undici client for large downloads, which streams each body, discards it and counts its bytes.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, interceptors, request, type Dispatcher } from 'undici';
import { onClientCore } from './pin.js';

/** One measured load: what every row of the report is made of. */
export interface Measure {
  requests: number;
  /** Bytes received (wrk counts headers too). */
  bytes: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  /** Failures (non-2xx/3xx answers, broken or timed-out connections). */
  errors: number;
  errorDetail: string;
}

export const rate = (m: Measure) => m.requests / m.seconds;
export const mbps = (m: Measure) => m.bytes / 1e6 / m.seconds;

// wrk's done() hook prints the summary as one JSON line: exact percentiles rather than wrk's rounded text.
const WRK_REPORT = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"bytes":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.bytes, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
`;

export interface WrkOptions {
  connections: number;
  threads: number;
  seconds: number;
  /** Folder for wrk's Lua script. */
  scriptDir: string;
  /** Request headers, e.g. ['Accept: application/json']. */
  headers?: readonly string[];
  /** Told of wrk when it starts (true) and ends (false), so that an interrupted bench can stop it. */
  track?: (proc: ChildProcess, running: boolean) => void;
}

export async function wrk(url: string, o: WrkOptions): Promise<Measure> {
  const script = join(o.scriptDir, 'report.lua');
  writeFileSync(script, WRK_REPORT);
  const headers = (o.headers ?? []).flatMap((h) => ['-H', h]);
  const args = ['-t', String(o.threads), '-c', String(o.connections), '-d', `${o.seconds}s`, '--timeout', '5s', ...headers, '-s', script, url];
  const child = spawn(...onClientCore('wrk', args), { stdio: ['ignore', 'pipe', 'pipe'] });
  o.track?.(child, true);
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  }).finally(() => o.track?.(child, false));
  const line = out.split('\n').find((l) => l.startsWith('BENCH_JSON '));
  if (code !== 0 || !line) throw new Error(`wrk ${args.join(' ')} failed (exit ${code}): ${err || out}`);
  const r = JSON.parse(line.slice('BENCH_JSON '.length)) as Record<string, number>;
  const errors = { connect: r.connect!, read: r.read!, write: r.write!, status: r.status!, timeout: r.timeout! };
  return {
    requests: r.requests!,
    bytes: r.bytes!,
    seconds: r.duration_us! / 1e6,
    p50Ms: r.p50_us! / 1000,
    p99Ms: r.p99_us! / 1000,
    errors: Object.values(errors).reduce((a, b) => a + b, 0),
    errorDetail: Object.entries(errors)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`)
      .join(', '),
  };
}

/** A keep-alive client that follows redirects, as the mirror does towards its upstream. */
export function downloadAgent(): Dispatcher {
  return new Agent({ keepAliveTimeout: 10_000, bodyTimeout: 60_000, headersTimeout: 60_000 }).compose(
    interceptors.redirect({ maxRedirections: 3 }),
  );
}

export interface Download {
  bytes: number;
  ms: number;
  status: number;
  /** The mirror's x-cache header (HIT, MISS). */
  cache: string | undefined;
  /** The body, when asked to keep it. */
  body?: Buffer;
}

/**
 * GETs url and streams the body away, counting bytes (or keeps it, for small answers); fails unless the answer
 * is a 200 of `expectBytes` (when given).
 */
export async function download(url: string, dispatcher: Dispatcher, expectBytes: number | undefined, signal: AbortSignal, keep = false): Promise<Download> {
  const start = performance.now();
  const res = await request(url, { dispatcher, signal });
  let bytes = 0;
  const kept: Buffer[] = [];
  for await (const chunk of res.body) {
    bytes += (chunk as Buffer).length;
    if (keep) kept.push(chunk as Buffer);
  }
  const ms = performance.now() - start;
  if (res.statusCode !== 200 || (expectBytes !== undefined && bytes !== expectBytes)) {
    throw new Error(`GET ${url}: status ${res.statusCode}, ${bytes} bytes (expected 200${expectBytes === undefined ? '' : ` and ${expectBytes} bytes`})`);
  }
  const cache = res.headers['x-cache'];
  return { bytes, ms, status: res.statusCode, cache: typeof cache === 'string' ? cache : undefined, ...(keep ? { body: Buffer.concat(kept) } : {}) };
}

/** `clients` concurrent downloads of the same URL: one row, timed from the first request to the last byte. */
export async function concurrentDownloads(url: string, clients: number, expectBytes: number, signal: AbortSignal): Promise<Measure & { downloads: Download[] }> {
  const dispatcher = downloadAgent();
  try {
    const start = performance.now();
    const downloads = await Promise.all(Array.from({ length: clients }, () => download(url, dispatcher, expectBytes, signal)));
    return { ...summarize(downloads, (performance.now() - start) / 1000), downloads };
  } finally {
    await dispatcher.close();
  }
}

/** A row from downloads made one after the other (seconds = the sum of their times) or together (seconds = wall time). */
export function summarize(downloads: Download[], seconds = downloads.reduce((s, d) => s + d.ms, 0) / 1000): Measure {
  const ms = downloads.map((d) => d.ms).sort((a, b) => a - b);
  return {
    requests: downloads.length,
    bytes: downloads.reduce((s, d) => s + d.bytes, 0),
    seconds,
    p50Ms: percentile(ms, 50),
    p99Ms: percentile(ms, 99),
    errors: 0,
    errorDetail: '',
  };
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
