// Retry-After as the retry delay: seconds or an HTTP date, never negative, capped.
import { describe, expect, it } from 'vitest';
import { parseRetryAfter } from '../../src/upstreams/http.js';

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  it.each([
    ['3', 3000],
    [' 0 ', 0],
    ['Thu, 01 Jan 2026 00:00:05 GMT', 5000],
    ['Wed, 31 Dec 2025 23:59:00 GMT', 0], // in the past: at once
    ['86400', 60_000], // capped
    ['soon', undefined],
    [undefined, undefined],
  ])('%j → %j ms', (value, ms) => {
    expect(parseRetryAfter(value, now)).toBe(ms);
  });
});
