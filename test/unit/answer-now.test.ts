// The synchronous HIT of the hot path (MemoryCachedStore.getNow → MetadataCache.getNow → Registry.latestNow): it
// answers only what the awaited read would answer as a HIT, from memory, and leaves everything else to that read.
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ArchiveCache } from '../../src/core/archives/archive-cache.js';
import type { HostedComponents } from '../../src/core/hosted/hosted-components.js';
import { MetadataCache } from '../../src/core/metadata-cache.js';
import { Registry } from '../../src/core/registry.js';
import { MirrorError } from '../../src/model/errors.js';
import type { Release } from '../../src/model/release.js';
import { LevelMetadataStore, MemoryCachedStore } from '../../src/stores/metadata-store.js';
import type { Fetched, Upstream } from '../../src/upstreams/upstream.js';
import { removeTempDirs, tempDir } from '../helpers.js';

afterAll(removeTempDirs);

const MINUTE = 60_000;
const release = (version: string): Release => ({ version, createdAt: '2024-01-01T00:00:00Z', body: '', archiveUrl: `https://up/${version}.zip`, fields: {} });

let now: number;
let level: LevelMetadataStore;
let memory: MemoryCachedStore;
let fetches: number;
let latest: () => Promise<Fetched<Release>>;

const cacheOver = (store: LevelMetadataStore | MemoryCachedStore) => new MetadataCache(store, { maxAgeMs: 10 * MINUTE, notFoundTtlMs: MINUTE, now: () => now });
const fetchLatest = () => {
  fetches++;
  return latest();
};

beforeEach(async () => {
  now = 1_000_000;
  fetches = 0;
  latest = async () => ({ value: release('1.0.0') });
  level = await LevelMetadataStore.open(await tempDir());
  memory = new MemoryCachedStore(level, 1 << 20);
});
afterEach(async () => {
  await memory.close();
});

describe('MetadataCache.getNow', () => {
  it('is the HIT get gives, from memory, while the copy is fresh: the same document, its age', async () => {
    const cache = cacheOver(memory);
    expect(cache.getNow('latest:a')).toBeUndefined(); // nothing yet: get asks the upstream
    const miss = await cache.get('latest:a', fetchLatest);
    now += 5_000;
    const hit = cache.getNow<Release>('latest:a');
    expect(hit).toEqual({ value: miss.value, status: 'HIT', age: 5 });
    expect(hit!.value).toBe(miss.value); // the same object, for the rendered answers
    expect(await cache.get('latest:a', fetchLatest)).toEqual(hit);
    expect(fetches).toBe(1);
  });

  it('leaves an old copy, a max age of 0 and a remembered 404 to get', async () => {
    const cache = cacheOver(memory);
    await cache.get('latest:a', fetchLatest);
    expect(cache.getNow('latest:a', 0)).toBeUndefined();
    now += 10 * MINUTE;
    expect(cache.getNow('latest:a')).toBeUndefined();
    latest = async () => {
      throw new MirrorError('not-found', 'no such package: b');
    };
    await expect(cache.get('latest:b', fetchLatest)).rejects.toThrow('no such package');
    expect(cache.getNow('latest:b')).toBeUndefined();
    await expect(cache.get('latest:b', fetchLatest)).rejects.toThrow('no such package'); // remembered: not asked again
    expect(fetches).toBe(2);
  });

  it('answers nothing over a store that holds nothing in memory', async () => {
    const cache = cacheOver(level);
    await cache.get('latest:a', fetchLatest);
    expect(cache.getNow('latest:a')).toBeUndefined();
    expect((await cache.get('latest:a', fetchLatest)).status).toBe('HIT');
  });
});

describe('Registry.latestNow', () => {
  const upstream = { latest: () => fetchLatest() } as unknown as Upstream;
  const archives = {} as ArchiveCache;
  const hostedNames = new Set<string>();
  const hosted = { isHosted: (name: string) => hostedNames.has(name) } as unknown as HostedComponents;

  it('is latest as a HIT held in memory, and tells onRequested of it as latest does', async () => {
    const requested: string[] = [];
    const registry = new Registry(upstream, cacheOver(memory), archives, { offline: false, hosted, now: () => now, onRequested: (n) => requested.push(n) });
    expect(registry.latestNow('a')).toBeUndefined();
    const first = await registry.latest('a');
    expect(registry.latestNow('a')).toEqual({ value: first.value, status: 'HIT', age: 0 });
    expect(requested).toEqual(['a', 'a']);
  });

  it('leaves to latest a package written through the mirror lately, a prefetch refresh, a hosted name and offline', async () => {
    const cache = cacheOver(memory);
    const registry = new Registry(upstream, cache, archives, { offline: false, hosted, now: () => now });
    await registry.latest('a');
    await registry.published('a');
    await registry.latest('a'); // the copy is fresh again, but the package revalidates for a while
    expect(registry.latestNow('a')).toBeUndefined();
    now += 6 * MINUTE;
    expect(registry.latestNow('a')?.status).toBe('HIT');
    expect(registry.with(upstream, { alwaysRevalidate: true }).latestNow('a')).toBeUndefined();
    expect(registry.with(upstream, { offline: true }).latestNow('a')).toBeUndefined();
    hostedNames.add('a');
    expect(registry.latestNow('a')).toBeUndefined();
    hostedNames.clear();
  });
});
