// A small structured logger: one JSON object per line. Callers pass fields explicitly; request headers are never
// logged, so credentials (token, sign_code, authorization) cannot end up in a log.
import type { LogLevel } from './config/config.js';

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
}

export function createLogger(level: LogLevel, out: { write(line: string): unknown } = process.stderr): Logger {
  const at = (l: LogLevel) => (msg: string, fields: Fields = {}) => {
    if (RANK[l] >= RANK[level]) out.write(`${JSON.stringify({ time: new Date().toISOString(), level: l, msg, ...fields })}\n`);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
