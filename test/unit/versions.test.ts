import { describe, expect, it } from 'vitest';
import { newestFirst, pickLatest } from '../../src/core/versions.js';
import type { Release } from '../../src/model/release.js';

const r = (version: string, createdAt = ''): Release => ({ version, createdAt, body: '', archiveUrl: '', fields: {} });

describe('the offline latest rule', () => {
  it.each([
    [['1.0.0', '1.2.0', '1.10.0'], '1.10.0'],
    [['0.0.9', 'dev.0.56'], '0.0.9'], // a non-semver tag never wins over a semver one
    [['1.0.0', '2.0.0-beta.1'], '1.0.0'], // prereleases only when nothing else
    [['2.0.0-beta.1', '2.0.0-alpha.3', 'dev.0.56'], '2.0.0-beta.1'],
    [['dev.0.56'], 'dev.0.56'],
    [['v1.2.3', '1.2.2'], 'v1.2.3'],
    [['1.0.0+build.5', '0.9.0'], '1.0.0+build.5'],
    [[], undefined],
  ])('%j → %s', (versions, latest) => {
    expect(pickLatest(versions.map((v) => r(v)))?.version).toBe(latest);
  });

  it('orders non-semver tags by creation time, newest first', () => {
    const sorted = [r('dev.0.9', '2024-01-01'), r('dev.0.10', '2024-02-01'), r('nightly', '2023-12-01')].sort(newestFirst);
    expect(sorted.map((x) => x.version)).toEqual(['dev.0.10', 'dev.0.9', 'nightly']);
  });
});
