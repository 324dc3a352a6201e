// Input validation for everything a client can name. Values are checked after URL-decoding, so encoded
// traversal ("%2e%2e", "%2f") is caught here like the plain form. Nothing invalid reaches the disk or the upstream.
import { MirrorError } from './errors.js';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
const TEXT_MAX = 128;

function bad(what: string, value: string, expected: string): never {
  throw new MirrorError('bad-request', `invalid ${what} ${JSON.stringify(value)}: ${expected}`);
}

/** A package name: one segment of letters, digits, ".", "_", "-", starting with a letter or digit. */
export function packageName(value: string): string {
  if (!NAME.test(value) || value.includes('..')) {
    bad('package name', value, 'expected letters, digits, ".", "_" or "-", starting with a letter or digit, at most 128 characters');
  }
  return value;
}

/** An SRM package: "name" or "owner/name", each part a valid package name. */
export function srmPackage(value: string): string {
  const parts = value.split('/');
  if (parts.length > 2) bad('package', value, 'expected "name" or "owner/name"');
  parts.forEach(packageName);
  return value;
}

/** A version tag such as "1.2.3", "1.0.0-beta.1+build" or "dev.0.56". */
export function version(value: string): string {
  if (!VERSION.test(value) || value.includes('..')) {
    bad('version', value, 'expected letters, digits, ".", "_", "+" or "-", starting with a letter or digit, at most 128 characters');
  }
  return value;
}

/** A page number: 1, 2, ... (and -1, which the v3 API uses for "all"). */
export function page(value: unknown, fallback = 1): number {
  if (value === undefined || value === '') return fallback;
  if (typeof value === 'string' && /^(-1|[1-9]\d{0,5})$/.test(value)) return Number(value);
  return bad('page', String(value), 'expected a whole number from 1 to 999999, or -1');
}

/** A free-text query parameter (search, tag, category). */
export function queryText(what: string, value: unknown): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string' || value.length > TEXT_MAX || /[\u0000-\u001f\u007f]/.test(value)) {
    bad(what, String(value), `expected one value of at most ${TEXT_MAX} characters without control characters`);
  }
  return value;
}

/** Decodes one URL path segment, answering 400 (not a crash) on malformed escapes. */
export function decodeSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return bad('path segment', raw, 'malformed percent-encoding');
  }
}
