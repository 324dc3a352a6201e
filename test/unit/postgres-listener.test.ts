// The payloads of change notifications: every key told, each payload within NOTIFY's limit, a flush beyond a bound.
import { describe, expect, it } from 'vitest';
import { changedKeys, changePayloads } from '../../src/stores/postgres-listener.js';

describe('change notifications', () => {
  it('name every key, in payloads under 8000 bytes', () => {
    const keys = Array.from({ length: 1000 }, (_, i) => `release:pkg-${'é'.repeat(i % 7)}:${i}.0.0 "quoted"`);
    const payloads = changePayloads(keys);
    expect(payloads.length).toBeGreaterThan(1);
    for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThan(8000);
    expect(payloads.flatMap((p) => changedKeys(p) as string[])).toEqual(keys);
  });

  it('say "everything" when the keys need too many notifications, or one key alone is too long', () => {
    expect(changedKeys(changePayloads(Array.from({ length: 20_000 }, (_, i) => `access:some-package@${i}.0.0`))[0])).toBe('all');
    expect(changePayloads(['x'.repeat(9000)]).map(changedKeys)).toEqual(['all']);
  });

  it('take a payload not of ours as "everything"', () => {
    expect(changedKeys('not json')).toBe('all');
    expect(changedKeys('{"a":1}')).toBe('all');
    expect(changedKeys(undefined)).toBe('all');
    expect(changedKeys('["a","b"]')).toEqual(['a', 'b']);
  });
});
