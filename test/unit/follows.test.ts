// Follows: last-requested times written at most once a day, packages nobody asked for in followFor dropped,
// unfollow. Real LevelDB, an injected clock.
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Follows, RECORD_EVERY_MS } from '../../src/core/follows.js';
import { key } from '../../src/stores/keys.js';
import { LevelMetadataStore } from '../../src/stores/metadata-store.js';
import { ControlledStore } from '../fakes/stores.js';
import { removeTempDirs, tempDir } from '../helpers.js';

afterAll(removeTempDirs);

const DAY = 24 * 3_600_000;
let now: number;
let store: ControlledStore;
let dir: string;

const open = () => Follows.open(store, { followForMs: 30 * DAY, now: () => now });
/** Lets the fire-and-forget write of add() land. */
const landed = async (k: string, check: (doc: unknown) => boolean) => {
  for (let i = 0; i < 1000 && !check(await store.inner.get(k)); i++) await new Promise((r) => setImmediate(r));
  expect(check(await store.inner.get(k))).toBe(true);
};

beforeEach(async () => {
  now = Date.parse('2026-01-01T00:00:00Z');
  dir = join(await tempDir(), 'meta');
  store = new ControlledStore(await LevelMetadataStore.open(dir));
});

afterEach(async () => {
  await store.close();
});

describe('Follows', () => {
  it('records a request at most once a day per package, not once per request', async () => {
    const follows = await open();
    follows.add('fc3');
    await landed(key.follow('fc3'), (d) => (d as { lastRequested?: number } | undefined)?.lastRequested === now);
    for (let i = 0; i < 50; i++) follows.add('fc3');
    now += RECORD_EVERY_MS - 1;
    follows.add('fc3');
    expect(store.puts).toEqual([key.follow('fc3')]);
    now += 1;
    follows.add('fc3');
    await landed(key.follow('fc3'), (d) => (d as { lastRequested?: number }).lastRequested === now);
    expect(store.puts).toHaveLength(2);
    expect(await store.inner.get(key.follow('fc3'))).toEqual({ since: '2026-01-01T00:00:00.000Z', lastRequested: now });
  });

  it('a package nobody asked for in followFor is no longer listed, and prune forgets it for good', async () => {
    let follows = await open();
    follows.add('old');
    await landed(key.follow('old'), Boolean);
    now += 10 * DAY;
    follows.add('recent');
    await landed(key.follow('recent'), Boolean);
    now += 20 * DAY; // "old" was asked for 30 days ago, "recent" 20
    expect(follows.list()).toEqual(['recent']);
    expect(await follows.prune()).toEqual(['old']);
    expect(await store.inner.get(key.follow('old'))).toBeUndefined();
    follows = await open(); // after a restart too
    expect(follows.list()).toEqual(['recent']);
  });

  it('a request keeps a package followed', async () => {
    const follows = await open();
    follows.add('fc3');
    await landed(key.follow('fc3'), Boolean);
    now += 29 * DAY;
    follows.add('fc3');
    await landed(key.follow('fc3'), (d) => (d as { lastRequested: number }).lastRequested === now);
    now += 29 * DAY;
    expect(await follows.prune()).toEqual([]);
    expect(follows.list()).toEqual(['fc3']);
  });

  it('unfollow forgets a package at once', async () => {
    const follows = await open();
    follows.add('gone');
    await landed(key.follow('gone'), Boolean);
    await follows.unfollow('gone');
    expect(follows.list()).toEqual([]);
    expect(await store.inner.get(key.follow('gone'))).toBeUndefined();
  });

  it('followFor 0 follows for good', async () => {
    const follows = await Follows.open(store, { followForMs: 0, now: () => now });
    follows.add('fc3');
    await landed(key.follow('fc3'), Boolean);
    now += 1000 * DAY;
    expect(await follows.prune()).toEqual([]);
    expect(follows.list()).toEqual(['fc3']);
  });

  it('a record that could not be written is tried again on the next request', async () => {
    const follows = await open();
    store.failWrites = true;
    follows.add('fc3');
    for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r));
    store.failWrites = false;
    follows.add('fc3');
    await landed(key.follow('fc3'), Boolean);
  });
});
