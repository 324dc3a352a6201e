// Structured logs: one JSON object per line, written by pino behind the small Logger interface every module uses.
// Callers pass fields explicitly and never pass request headers, so credentials (token, sign_code, authorization)
// do not reach a log; pino's redaction is a second line of defence, should a header object or a URL with a secret
// in its query ever be passed: credential headers become "[Redacted]", and query parameters that name a signature,
// a token, a key or a secret keep their name but lose their value.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pino, type DestinationStream } from 'pino';
import type { LogLevel } from './config/config.js';

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /**
   * An info line whose fields are JSON already (`"key":value,...`), written as it is: no serializer, no redaction. For
   * the access log only, whose fields are few, known, and never secret (see accessLine).
   */
  infoJson(msg: string, fieldsJson: string): void;
  enabled(level: LogLevel): boolean;
}

/** Request headers that carry credentials: the `s` client's signed headers, GitLab's tokens, and the usual ones. */
export const REDACTED_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'token', 'sign_code', 'nonce', 'timestamp', 'private-token', 'job-token', 'deploy-token'] as const;

/** Fields that may hold a URL (or a path with its query): their query secrets are censored. */
const URL_FIELDS = ['url', 'path', 'location', 'href', 'target', 'upstream'] as const;

/** Query parameters whose value is a secret: X-Amz-Signature, Signature, access_token, OSSAccessKeyId, ... */
const QUERY_SECRET = /([?&][^=&#]*(?:sign|token|key|secret|password|credential)[^=&#]*=)[^&#]*/gi;

/** A URL or path with the values of its secret query parameters replaced by ***. */
export function redactQuery(url: string): string {
  return url.includes('?') ? url.replace(QUERY_SECRET, '$1***') : url;
}

const quoted = (name: string) => (/^[A-Za-z_$][\w$]*$/.test(name) ? `.${name}` : `["${name}"]`);
// Explicit paths only: fast-redact's wildcards (`*.headers.x`) cost about 80 µs a line here, 10 times the line itself.
const REDACT_PATHS = [
  // header objects (`headers`, or a request's or a response's), and credential fields on their own
  ...['headers', 'req.headers', 'request.headers', 'res.headers', 'response.headers'].flatMap((at) => REDACTED_HEADERS.map((h) => `${at}${quoted(h)}`)),
  ...['authorization', 'proxy-authorization', 'cookie', 'token', 'sign_code', 'private-token', 'job-token', 'deploy-token', 'password'].map((h) => quoted(h).replace(/^\./, '')),
  ...URL_FIELDS.flatMap((f) => [f, `req.${f}`, `request.${f}`]),
];
const URL_FIELD = new Set<string>(URL_FIELDS);

function censor(value: unknown, path: string[]): unknown {
  if (URL_FIELD.has(path[path.length - 1]!)) return typeof value === 'string' ? redactQuery(value) : value;
  return '[Redacted]';
}

/** The server's log lines are written when this many bytes are waiting, ... */
const LOG_BATCH_BYTES = 16 * 1024;
/** ... or this long after the first of them. */
const LOG_BATCH_MS = 50;

/**
 * Standard error for the server, whose access log writes a line per request: lines are gathered for at most
 * LOG_BATCH_MS (or LOG_BATCH_BYTES) and then handed together to pino's asynchronous destination (sonic-boom), so that a
 * busy server makes one write(2) for a hundred answers instead of one each (a write a line cost about 5 us of the hot
 * path's 70 here). What is waiting is written when the process exits; a SIGKILL loses at most the last 50 ms.
 */
export function stderrDestination(): DestinationStream {
  const sonic = pino.destination({ dest: 2, sync: false });
  let lines: string[] = [];
  let bytes = 0;
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (lines.length === 0) return;
    const text = lines.length === 1 ? lines[0]! : lines.join('');
    lines = [];
    bytes = 0;
    sonic.write(text);
  };
  process.once('exit', () => {
    flush();
    try {
      sonic.flushSync();
    } catch {
      // not open yet, or closed: nothing more can be written
    }
  });
  return {
    write(line: string) {
      lines.push(line);
      bytes += line.length;
      if (bytes >= LOG_BATCH_BYTES) flush();
      else timer ??= setTimeout(flush, LOG_BATCH_MS).unref();
    },
  };
}

/** pino's timestamp, as ISO 8601 (as before pino), made once per millisecond: toISOString() is a tenth of a line's cost. */
function isoTime(): () => string {
  let ms = -1;
  let text = '';
  return () => {
    const now = Date.now();
    if (now !== ms) {
      ms = now;
      text = `,"time":"${new Date(now).toISOString()}"`;
    }
    return text;
  };
}

/**
 * A logger at `level` writing JSON lines to `out` (process.stderr by default; see stderrDestination). Lines look like
 * {"level":"info","time":"2026-...Z","msg":"...",...fields}.
 */
export function createLogger(level: LogLevel, out: { write(line: string): unknown } = process.stderr): Logger {
  const destination = out as DestinationStream;
  const time = isoTime();
  const p = pino(
    {
      level,
      base: undefined, // no pid and hostname on every line
      timestamp: time,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor },
    },
    destination,
  );
  // The message goes in as the object's first key, so that it comes right after the level and the time, before the
  // fields (pino puts a message given apart last; people and tests read the line from the left).
  const info = p.isLevelEnabled('info');
  return {
    debug: (msg, fields) => p.debug({ msg, ...fields }),
    info: (msg, fields) => p.info({ msg, ...fields }),
    warn: (msg, fields) => p.warn({ msg, ...fields }),
    error: (msg, fields) => p.error({ msg, ...fields }),
    // The same line pino writes, without its serializer and redaction: they were two thirds of an access line's cost.
    infoJson: (msg, fieldsJson) => void (info && destination.write(`{"level":"info"${time()},"msg":${JSON.stringify(msg)},${fieldsJson}}\n`)),
    enabled: (l) => p.isLevelEnabled(l),
  };
}

/**
 * A request's path as it may be logged: never the query (it may hold a login token), and never the token of a
 * one-time upload URL (/v3/uploads/{token}, publish step 2: whoever has it may upload the version).
 */
export function loggedPath(url: string | undefined): string {
  const u = url ?? '';
  const q = u.indexOf('?');
  const path = q < 0 ? u : u.slice(0, q);
  return path.includes('/uploads/') ? path.replace(/^((?:\/v3)?\/uploads\/)[^/]+/, '$1***') : path;
}

/** A request id a client or a proxy in front may send: bounded, and of characters safe in a header and a log. */
const REQUEST_ID = /^[A-Za-z0-9._:;=+/@-]{1,128}$/;

/**
 * New request ids: 12 random hex digits for this process, a dash, and a count in base 36 ("4f0c9a17be2d-1k3"): unique
 * across processes and restarts, and shorter than a UUID (every answer carries one; the hot path's answers are
 * about 500 bytes).
 */
const ID_PREFIX = `${randomBytes(6).toString('hex')}-`;
let idCount = 0;

/** The request's id: its valid `x-request-id`, else a new one. */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : ID_PREFIX + (++idCount).toString(36);
}

/** What one request's log line says, besides its id and path. */
export interface Answered {
  readonly route: string;
  readonly cache: string;
  readonly seconds: number;
  readonly bytes: number;
  /** The response was cut before its end (the client went away, or the mirror cut it). */
  readonly aborted: boolean;
}

/**
 * The access log: one info line per request (request id, method, route, path as loggedPath gives it, status, x-cache,
 * duration in ms, bytes sent with headers). `url`: the request's URL as it came in (express rewrites req.url).
 * Written as JSON here (Logger.infoJson): the path has no query (loggedPath), so nothing in it is for redaction; the
 * id, method, route and cache are of safe characters, but quoted as JSON all the same.
 */
export function accessLine(log: Logger, req: IncomingMessage, url: string, res: ServerResponse, id: string, a: Answered): void {
  const q = JSON.stringify;
  log.infoJson(
    'request',
    `"id":${q(id)},"method":${q(req.method ?? '')},"route":${q(a.route)},"path":${q(loggedPath(url))},"status":${res.statusCode},"cache":${q(a.cache)},` +
      `"ms":${Math.round(a.seconds * 1e4) / 10},"bytes":${a.bytes}${a.aborted ? ',"aborted":true' : ''}`,
  );
}
