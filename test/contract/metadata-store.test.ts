// One contract, run against every MetadataStore implementation.
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LevelMetadataStore, MemoryCachedStore, type MetadataStore } from '../../src/stores/metadata-store.js';
import { removeTempDirs, tempDir } from '../helpers.js';

const implementations: Array<[string, (dir: string) => Promise<MetadataStore>]> = [
  ['LevelMetadataStore', (dir) => LevelMetadataStore.open(dir)],
  ['MemoryCachedStore over LevelMetadataStore', async (dir) => new MemoryCachedStore(await LevelMetadataStore.open(dir), 1 << 20)],
  ['MemoryCachedStore smaller than any document', async (dir) => new MemoryCachedStore(await LevelMetadataStore.open(dir), 1)],
];

afterAll(removeTempDirs);

describe.each(implementations)('%s', (_name, open) => {
  let dir: string;
  let store: MetadataStore;

  beforeEach(async () => {
    dir = join(await tempDir(), 'meta');
    store = await open(dir);
  });

  afterEach(async () => {
    await store.close();
  });

  it('gets what was put, and undefined for what was not', async () => {
    await store.put('latest:fc3', { value: { version: '1.0.0' }, fetchedAt: 1 });
    expect(await store.get('latest:fc3')).toEqual({ value: { version: '1.0.0' }, fetchedAt: 1 });
    expect(await store.get('latest:nope')).toBeUndefined();
  });

  it('sees a put that follows a miss (no stale negative entry)', async () => {
    expect(await store.get('k')).toBeUndefined();
    await store.put('k', 1);
    expect(await store.get('k')).toBe(1);
  });

  it('overwrites, deletes, and writes many at once', async () => {
    await store.put('a', 1);
    await store.put('a', 2);
    expect(await store.get('a')).toBe(2);
    await store.del('a');
    expect(await store.get('a')).toBeUndefined();
    await store.putMany([
      ['release:fc3:1', 'x'],
      ['release:fc3:2', 'y'],
    ]);
    expect([await store.get('release:fc3:1'), await store.get('release:fc3:2')]).toEqual(['x', 'y']);
  });

  it('lists keys by prefix, in order', async () => {
    await store.putMany([
      ['archive:b@1', 1],
      ['archive:a@1', 1],
      ['latest:a', 1],
    ]);
    const keys: string[] = [];
    for await (const k of store.keys('archive:')) keys.push(k);
    expect(keys).toEqual(['archive:a@1', 'archive:b@1']);
  });

  it('keeps documents across a close and reopen', async () => {
    await store.put('latest:fc3', { v: 1 });
    await store.close();
    store = await open(dir);
    expect(await store.get('latest:fc3')).toEqual({ v: 1 });
  });
});

describe('LevelMetadataStore', () => {
  it('refuses a second opener of the same folder with a message that says what to do', async () => {
    const dir = join(await tempDir(), 'meta');
    const first = await LevelMetadataStore.open(dir);
    try {
      await expect(LevelMetadataStore.open(dir)).rejects.toThrow(/in use by another srm-mirror process/);
    } finally {
      await first.close();
    }
  });
});
