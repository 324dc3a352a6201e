// A small structured logger: one JSON object per line. Callers pass fields explicitly; request headers are never
// logged, so credentials (token, sign_code, authorization) cannot end up in a log.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { LogLevel } from './config/config.js';

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  enabled(level: LogLevel): boolean;
}

export function createLogger(level: LogLevel, out: { write(line: string): unknown } = process.stderr): Logger {
  const at = (l: LogLevel) => (msg: string, fields: Fields = {}) => {
    if (RANK[l] >= RANK[level]) out.write(`${JSON.stringify({ time: new Date().toISOString(), level: l, msg, ...fields })}\n`);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), enabled: (l) => RANK[l] >= RANK[level] };
}

/**
 * A request's path as it may be logged: never the query (it may hold a login token), and never the token of a
 * one-time upload URL (/v3/uploads/{token}, publish step 2: whoever has it may upload the version).
 */
export function loggedPath(url: string | undefined): string {
  return (url ?? '').split('?')[0]!.replace(/^((?:\/v3)?\/uploads\/)[^/]+/, '$1***');
}

/** One debug line per answered request: method, path (see loggedPath), status. */
export function accessLog(log: Logger) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const start = process.hrtime.bigint();
    const path = loggedPath(req.url);
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      log.debug('request', { method: req.method, path, status: res.statusCode, cache: res.getHeader('x-cache'), ms: Math.round(ms * 10) / 10 });
    });
  };
}
