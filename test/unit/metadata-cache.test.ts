// MetadataCache over a real LevelDB (through a store double that can fail or hold operations), with an injected
// clock and timer: store failures, writes that overtake a flight, the bounded wait with a stale copy, cut lists,
// and the sweep of lists and 404s.
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LIST_LIFETIME_MS, MetadataCache, type MetadataCacheOptions } from '../../src/core/metadata-cache.js';
import { deferred } from '../../src/core/single-flight.js';
import { MirrorError } from '../../src/model/errors.js';
import { LevelMetadataStore } from '../../src/stores/metadata-store.js';
import type { Fetched } from '../../src/upstreams/upstream.js';
import { ControlledStore } from '../fakes/stores.js';
import { removeTempDirs, tempDir } from '../helpers.js';

afterAll(removeTempDirs);

const MINUTE = 60_000;
let now: number;
let store: ControlledStore;
/** Resolves the pending delay (the stale-after timer). */
let timers: Array<{ ms: number; fire: () => void }>;

function cacheWith(options: Partial<MetadataCacheOptions> = {}): MetadataCache {
  return new MetadataCache(store, {
    maxAgeMs: 10 * MINUTE,
    notFoundTtlMs: MINUTE,
    now: () => now,
    delay: (ms) => {
      const d = deferred<void>();
      timers.push({ ms, fire: () => d.resolve() });
      return d.promise;
    },
    ...options,
  });
}

const answer = <T>(value: T) => async (): Promise<Fetched<T>> => ({ value });
const failing = async (): Promise<Fetched<never>> => {
  throw new MirrorError('upstream-failed', 'upstream answered 503');
};
/** A fetch the test answers when it wants to. */
function held<T>() {
  const d = deferred<Fetched<T>>();
  const called = deferred<void>();
  let calls = 0;
  return {
    fetch: () => {
      calls++;
      called.resolve();
      return d.promise;
    },
    /** Resolves once the cache asked the upstream. */
    started: called.promise,
    answer: (value: T) => d.resolve({ value }),
    fail: (err: unknown) => d.reject(err),
    get calls() {
      return calls;
    },
  };
}
/** Lets promise callbacks and pending I/O (a LevelDB read or write) run, until check holds. */
async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !check(); i++) await new Promise((r) => setImmediate(r));
  expect(check()).toBe(true);
}
const settle = () => new Promise((r) => setImmediate(r));

beforeEach(async () => {
  now = Date.parse('2026-01-01T00:00:00Z');
  timers = [];
  store = new ControlledStore(await LevelMetadataStore.open(join(await tempDir(), 'meta')));
});

afterEach(async () => {
  await store.close();
});

describe('a failing store', () => {
  it('a read that fails counts as no copy: the upstream answers, BYPASS, nothing written', async () => {
    const cache = cacheWith();
    store.failReads = () => true;
    const got = await cache.get('latest:fc3', answer({ version: '1.0.0' }));
    expect(got).toMatchObject({ value: { version: '1.0.0' }, status: 'BYPASS' });
    expect(store.puts).toEqual([]);
    expect(store.problem()?.error).toMatch(/CORRUPTION/);
  });

  it('a read that fails while the upstream fails too: the upstream error, not an internal one', async () => {
    const cache = cacheWith();
    store.failReads = () => true;
    await expect(cache.get('latest:fc3', failing)).rejects.toMatchObject({ kind: 'upstream-failed', status: 502 });
  });

  it('a write that fails: the answer still reaches the caller, BYPASS', async () => {
    const cache = cacheWith();
    store.failWrites = true;
    expect(await cache.get('latest:fc3', answer({ version: '1.0.0' }))).toMatchObject({ value: { version: '1.0.0' }, status: 'BYPASS' });
    store.failWrites = false;
    expect(await cache.peek('latest:fc3')).toBeUndefined();
  });

  it('peek, keys, invalidate, update and delete do not throw', async () => {
    const cache = cacheWith();
    await cache.get('latest:fc3', answer({ version: '1.0.0' }));
    store.failReads = () => true;
    store.failWrites = true;
    expect(await cache.peek('latest:fc3')).toBeUndefined();
    await cache.invalidate('latest:fc3');
    await cache.update('latest:fc3', (v) => v);
    await cache.delete('latest:fc3');
    expect(await cache.keys('latest:')).toEqual(['latest:fc3']);
  });
});

describe('writes through the mirror overtake flights', () => {
  it.each([
    ['delete', (c: MetadataCache) => c.delete('page:fc3:1')],
    ['invalidate', (c: MetadataCache) => c.invalidate('page:fc3:1')],
    ['update', (c: MetadataCache) => c.update('page:fc3:1', (v: string[]) => v)],
    ['fence by prefix', (c: MetadataCache) => c.fence({ prefixes: ['page:fc3:'] })],
  ])('a flight that began before a %s answers its callers but stores nothing, learnt documents included', async (_name, write) => {
    const cache = cacheWith();
    const upstream = held<string[]>();
    const learn = (v: string[]) => v.map((version) => [`release:fc3:${version}`, { version }] as const);
    const before = cache.get('page:fc3:1', upstream.fetch, { learn });
    await upstream.started;
    await write(cache);
    // A reader after the write starts its own flight (it does not join the one from before the write).
    const after = await cache.get('page:fc3:1', answer(['1.0.0']), { learn });
    expect(after).toMatchObject({ value: ['1.0.0'], status: 'MISS' });
    upstream.answer(['1.1.0', '1.0.0']); // the upstream's answer from before the write comes last
    expect(await before).toMatchObject({ value: ['1.1.0', '1.0.0'], status: 'BYPASS' });
    expect(store.puts).toEqual(['page:fc3:1', 'release:fc3:1.0.0']); // the second flight's, only
    expect(await cache.peek('page:fc3:1')).toEqual(['1.0.0']);
    expect(await cache.peek('release:fc3:1.1.0')).toBeUndefined();
  });

  it('a 404 that began before a write is not remembered', async () => {
    const cache = cacheWith();
    const upstream = held<string>();
    const before = cache.get('latest:new', upstream.fetch);
    await upstream.started;
    await cache.invalidate('latest:new'); // a publish of "new"
    upstream.fail(new MirrorError('not-found', 'no such package'));
    await expect(before).rejects.toMatchObject({ kind: 'not-found' });
    expect(await cache.get('latest:new', answer('1.0.0'))).toMatchObject({ value: '1.0.0', status: 'MISS' });
  });

  it('a write waits for a flight write under way, so that it lands after it', async () => {
    const cache = cacheWith();
    const writing = store.holdWrite();
    const flight = cache.get('latest:fc3', answer({ version: '1.1.0' }));
    await writing.writing; // the flight's put is on its way to the store...
    let deleted = false;
    const del = cache.delete('latest:fc3').then(() => (deleted = true));
    await settle();
    expect(deleted).toBe(false); // ...and the delete waits for it
    writing.release();
    await flight;
    await del;
    expect(await store.inner.get('latest:fc3')).toBeUndefined();
  });
});

describe('stale-after: a reader with a stale copy waits only so long', () => {
  async function staleCopy(cache: MetadataCache) {
    await cache.get('latest:fc3', answer('1.0.0'));
    now += 11 * MINUTE;
  }

  it('gets the stale copy when the timer fires first; the revalidation goes on and updates the cache', async () => {
    const cache = cacheWith({ staleAfterMs: 2000 });
    await staleCopy(cache);
    const upstream = held<string>();
    const read = cache.get('latest:fc3', upstream.fetch);
    await upstream.started;
    expect(timers.map((t) => t.ms)).toEqual([2000]);
    timers[0]!.fire();
    expect(await read).toMatchObject({ value: '1.0.0', status: 'STALE' });
    // A second reader joins the same revalidation (no second upstream request) and is answered the same way.
    const second = cache.get('latest:fc3', upstream.fetch);
    await until(() => timers.length === 2);
    timers[1]!.fire();
    expect(await second).toMatchObject({ value: '1.0.0', status: 'STALE' });
    expect(upstream.calls).toBe(1);
    upstream.answer('1.1.0');
    // Nobody waits for the revalidation any more: it lands in the store on its own (one setImmediate is not always enough).
    await vi.waitFor(async () => expect(await store.inner.get('latest:fc3')).toMatchObject({ value: '1.1.0' }));
    expect(await cache.get('latest:fc3', failing)).toMatchObject({ value: '1.1.0', status: 'HIT' });
  });

  it('gets the upstream answer when it comes first', async () => {
    const cache = cacheWith({ staleAfterMs: 2000 });
    await staleCopy(cache);
    const upstream = held<string>();
    const read = cache.get('latest:fc3', upstream.fetch);
    await upstream.started;
    upstream.answer('1.1.0');
    expect(await read).toMatchObject({ value: '1.1.0', status: 'MISS' });
  });

  it('without a copy, or with wait, it waits for the upstream whatever the timer says', async () => {
    const cache = cacheWith({ staleAfterMs: 2000 });
    const none = held<string>();
    let answered = false;
    const read = cache.get('latest:new', none.fetch).then((r) => ((answered = true), r));
    await none.started;
    expect(timers).toEqual([]); // no timer: nothing to fall back on
    none.answer('1.0.0');
    expect(await read).toMatchObject({ status: 'MISS' });
    expect(answered).toBe(true);

    now += 11 * MINUTE;
    const upstream = held<string>();
    const waiting = cache.get('latest:new', upstream.fetch, { wait: true });
    await upstream.started;
    expect(timers).toEqual([]);
    upstream.answer('1.1.0');
    expect(await waiting).toMatchObject({ value: '1.1.0', status: 'MISS' });
  });

  it('a revalidation that fails in the background after the stale answer is no unhandled rejection', async () => {
    const cache = cacheWith({ staleAfterMs: 2000 });
    await staleCopy(cache);
    const upstream = held<string>();
    const read = cache.get('latest:fc3', upstream.fetch);
    await upstream.started;
    timers[0]!.fire();
    await read;
    upstream.fail(new Error('socket hang up')); // an internal error, not a MirrorError upstream failure
    await settle();
    expect(await cache.peek('latest:fc3')).toBe('1.0.0');
  });
});

describe('a list the upstream adapter cut short', () => {
  it('is answered, never stored as complete', async () => {
    const cache = cacheWith();
    const cut = async (): Promise<Fetched<string[]>> => ({ value: ['a', 'b'], truncated: true });
    expect(await cache.get('releases:big', cut)).toMatchObject({ value: ['a', 'b'], status: 'BYPASS' });
    expect(store.puts).toEqual([]);
  });
});

describe('sweep', () => {
  it('removes package lists past their lifetime and 404s past notFoundTtl; nothing else', async () => {
    const cache = cacheWith();
    const notFound = async (): Promise<Fetched<never>> => {
      throw new MirrorError('not-found', 'no such package');
    };
    await cache.get('list:["old"]', answer([{ name: 'fc3' }]));
    await cache.get('latest:fc3', answer('1.0.0'));
    await cache.get('release:ghost:1.0.0', notFound).catch(() => {});
    now += LIST_LIFETIME_MS - MINUTE;
    await cache.get('list:["young"]', answer([{ name: 'fc3' }]));
    await cache.get('latest:gone', notFound).catch(() => {});
    expect(await cache.sweep()).toEqual({ lists: 0, notFound: 1 }); // the ghost's 404 is a day old; "gone" is fresh

    now += MINUTE;
    expect(await cache.sweep()).toEqual({ lists: 1, notFound: 1 });
    expect(await cache.keys('')).toEqual(['latest:fc3', 'list:["young"]']); // a day-old latest is kept: it is not a list
  });

  it('keeps a list at least max age, however long that is', async () => {
    const cache = cacheWith({ maxAgeMs: 2 * LIST_LIFETIME_MS });
    await cache.get('list:[1]', answer([]));
    now += LIST_LIFETIME_MS + MINUTE;
    expect(await cache.sweep()).toEqual({ lists: 0, notFound: 0 });
  });
});
