// One contract, run against every MetadataStore implementation (LevelDB, and PostgreSQL on a throwaway cluster); then
// what only one of them does (LevelDB's damage handling, the LRU's guard against resurrecting what a write replaced,
// PostgreSQL's migrations and its invalidation of other replicas' LRUs).
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LevelMetadataStore, MemoryCachedStore, MetadataDamagedError, type MetadataStore } from '../../src/stores/metadata-store.js';
import { PostgresMetadataStore } from '../../src/stores/postgres-metadata-store.js';
import { throwawayCluster } from '../fakes/postgres.js';
import { ControlledStore } from '../fakes/stores.js';
import { removeTempDirs, tempDir, until } from '../helpers.js';

const postgres = throwawayCluster('the contract on PostgresMetadataStore');
/** A database per test folder, so that "close and reopen" finds its documents again. */
const databases = new Map<string, string>();
/** Every item of a scan, in order. */
async function all<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

async function databaseFor(dir: string): Promise<string> {
  let url = databases.get(dir);
  if (url === undefined) databases.set(dir, (url = await postgres.cluster().createDatabase()));
  return url;
}

type Opener = [string, (dir: string) => Promise<MetadataStore>];
const implementations: Opener[] = [
  ['LevelMetadataStore', (dir) => LevelMetadataStore.open(dir)],
  ['MemoryCachedStore over LevelMetadataStore', async (dir) => new MemoryCachedStore(await LevelMetadataStore.open(dir), 1 << 20)],
  ['MemoryCachedStore smaller than any document', async (dir) => new MemoryCachedStore(await LevelMetadataStore.open(dir), 1)],
  ...(postgres.available
    ? ([
        ['PostgresMetadataStore', async (dir) => PostgresMetadataStore.open(await databaseFor(dir))],
        ['MemoryCachedStore over PostgresMetadataStore', async (dir) => new MemoryCachedStore(await PostgresMetadataStore.open(await databaseFor(dir)), 1 << 20)],
      ] satisfies Opener[])
    : []),
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
    expect(await all(store.keys('archive:'))).toEqual(['archive:a@1', 'archive:b@1']);
  });

  it('scans keys and documents by prefix, in order', async () => {
    await store.putMany([
      ['follow:b', { at: 2 }],
      ['follow:a', { at: 1 }],
      ['followers', 0],
      ['latest:a', 1],
    ]);
    expect(await all(store.entries('follow:'))).toEqual([
      ['follow:a', { at: 1 }],
      ['follow:b', { at: 2 }],
    ]);
  });

  it('reports no problem while the database works', async () => {
    await store.put('a', 1);
    await store.get('a');
    expect(store.problem()).toBeUndefined();
  });

  it('applies puts and deletes together, in order: the last put of a key wins, a delete after a put removes it', async () => {
    await store.putMany([
      ['k', 1],
      ['k', 2],
    ]);
    expect(await store.get('k')).toBe(2);
    await store.put('gone', 1);
    await store.apply({ put: [['both', 1], ['new', 'n']], del: ['both', 'gone'] }, { durable: true });
    expect([await store.get('both'), await store.get('gone'), await store.get('new')]).toEqual([undefined, undefined, 'n']);
  });

  it('gives documents back as JSON.stringify wrote them (key order, escapes and numbers kept)', async () => {
    const doc = { z: 1, a: [1.5, -0.25, 1e21, null, true], m: { y: 'ü日\u0000"\\', b: {} }, '': 'empty key' };
    await store.put('doc', doc);
    await store.close();
    store = await open(dir); // from the database, not a memory cache
    expect(JSON.stringify(await store.get('doc'))).toBe(JSON.stringify(doc));
  });

  it('orders keys by their UTF-8 bytes, as LevelDB does', async () => {
    const keys = ['p:a', 'p:Z', 'p:_', 'p:%', 'p:é', 'p:日', 'p:~', 'p:A0', 'p:a-b', 'p:a:b'];
    await store.putMany(keys.map((k) => [k, 1] as const));
    expect(await all(store.keys('p:'))).toEqual([...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
  });

  it('takes % and _ in a prefix literally', async () => {
    await store.putMany([
      ['p%_:1', 1],
      ['p%_:2', 1],
      ['pab:1', 1],
      ['p%x:1', 1],
      ['p\\%_:1', 1],
    ]);
    expect(await all(store.keys('p%_:'))).toEqual(['p%_:1', 'p%_:2']);
  });

  it('scans more keys and documents than fit in one page of a scan', async () => {
    const many = Array.from({ length: 2345 }, (_, i) => [`n:${String(i).padStart(5, '0')}`, { i }] as const);
    await store.putMany(many);
    await store.put('o:after', 1);
    let count = 0;
    let last = '';
    for await (const k of store.keys('n:')) {
      expect(k > last).toBe(true);
      last = k;
      count++;
    }
    expect(count).toBe(many.length);
    const docs = (await all(store.entries<{ i: number }>('n:00'))).map(([, v]) => v.i); // n:00000 to n:00999
    expect(docs).toEqual(many.slice(0, 1000).map(([, v]) => v.i));
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

/** Writes documents, with padding on both sides so that they sit in a block of their own, into a table file (.ldb). */
async function tableWith(dir: string, docs: Record<string, unknown>): Promise<void> {
  const db = new Level<string, unknown>(dir, { valueEncoding: 'json', compression: false });
  await db.open();
  const pad = (p: string) => Array.from({ length: 200 }, (_, i) => ({ type: 'put' as const, key: `${p}${String(i).padStart(4, '0')}`, value: 'p'.repeat(100) }));
  await db.batch([...pad('a:'), ...Object.entries(docs).map(([key, value]) => ({ type: 'put' as const, key, value })), ...pad('z:')]);
  // In Node, Level is classic-level's ClassicLevel (level's own types, shared with browsers, leave compactRange out).
  await (db as unknown as { compactRange(start: string, end: string): Promise<void> }).compactRange('\u0000', '\uffff');
  await db.close();
}

/** Overwrites the bytes around a key's place in the database's table files, as a bad sector would. */
async function corruptAround(dir: string, text: string): Promise<void> {
  for (const f of (await readdir(dir)).filter((n) => n.endsWith('.ldb'))) {
    const bytes = await readFile(join(dir, f));
    const at = bytes.indexOf(text);
    if (at < 0) continue;
    bytes.fill(0xff, at - 20, at + 60);
    await writeFile(join(dir, f), bytes);
    return;
  }
  throw new Error(`${text} is in no table file`);
}

describe('LevelMetadataStore on damaged files', () => {
  it('a corrupt block fails the reads that need it, not the others, and is reported as a problem', async () => {
    const dir = join(await tempDir(), 'meta');
    await tableWith(dir, { 'latest:fc3': { v: 1 } });
    await corruptAround(dir, 'latest:fc3');
    let now = Date.parse('2026-01-01T00:00:00Z');
    const reported: string[] = [];
    const store = await LevelMetadataStore.open(dir, { now: () => now, onProblem: (e) => reported.push(e) });
    try {
      await expect(store.get('latest:fc3')).rejects.toMatchObject({ code: 'LEVEL_CORRUPTION' });
      expect(await store.get('a:0000')).toBe('p'.repeat(100));
      expect(store.problem()).toEqual({ error: expect.stringMatching(/LEVEL_CORRUPTION/), since: '2026-01-01T00:00:00.000Z' });
      now += 60_000;
      await expect(store.get('latest:fc3')).rejects.toThrow();
      expect(store.problem()?.since).toBe('2026-01-01T00:00:00.000Z'); // the same spell of failures
      expect(reported).toHaveLength(1); // reported (logged) once per spell, not per failure
      now += 11 * 60_000;
      expect(store.problem()).toBeUndefined(); // nothing failed for a while
    } finally {
      await store.close();
    }
  });

  it('refuses a folder whose CURRENT file is missing, instead of creating a new database over the old files', async () => {
    const dir = join(await tempDir(), 'meta');
    await tableWith(dir, { 'latest:fc3': { v: 1 } });
    await rm(join(dir, 'CURRENT'));
    const before = (await readdir(dir)).sort();
    const err = await LevelMetadataStore.open(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MetadataDamagedError);
    expect((err as Error).message).toContain(dir);
    expect((err as Error).message).toMatch(/srm-mirror repair/);
    expect((await readdir(dir)).sort()).toEqual(before); // nothing created, nothing deleted
  });

  it('refuses a database LevelDB cannot open, naming the folder and the way out', async () => {
    const dir = join(await tempDir(), 'meta');
    await tableWith(dir, { 'latest:fc3': { v: 1 } });
    await writeFile(join(dir, 'CURRENT'), 'MANIFEST-999999\n');
    await expect(LevelMetadataStore.open(dir)).rejects.toThrow(MetadataDamagedError);
  });

  it("LevelDB's repair brings back every record it can read", async () => {
    const dir = join(await tempDir(), 'meta');
    await tableWith(dir, { 'latest:fc3': { v: 1 } });
    await rm(join(dir, 'CURRENT'));
    await LevelMetadataStore.repair(dir);
    const store = await LevelMetadataStore.open(dir);
    try {
      expect(await store.get('latest:fc3')).toEqual({ v: 1 });
    } finally {
      await store.close();
    }
  });
});

describe('MemoryCachedStore', () => {
  let inner: ControlledStore;
  let store: MemoryCachedStore;

  beforeEach(async () => {
    inner = new ControlledStore(await LevelMetadataStore.open(join(await tempDir(), 'meta')));
    store = new MemoryCachedStore(inner, 1 << 20);
  });

  afterEach(async () => {
    await store.close();
  });

  it.each([
    ['a delete', (s: MetadataStore) => s.del('k'), undefined],
    ['a put', (s: MetadataStore) => s.put('k', 'new'), 'new'],
    ['a batch', (s: MetadataStore) => s.putMany([['k', 'new']]), 'new'],
  ])('a read that %s overtook does not bring the older document back', async (_name, write, after) => {
    await inner.put('k', 'old'); // on disk, not in memory
    const held = inner.holdRead('k');
    const read = store.get('k'); // reads "old" from disk...
    await held.reading;
    await write(store); // ...then the write finishes...
    held.release(); // ...and then the read returns
    expect(await read).toBe('old'); // it may answer what it read (it began before the write)
    expect(await store.get('k')).toBe(after); // but did not keep it in memory
    expect(await inner.get('k')).toBe(after);
  });

  it.each([
    ['its key', ['k'] as const],
    ['everything', 'all' as const],
  ])('a read under way when %s is invalidated (another replica wrote) is not kept in memory', async (_name, keys) => {
    await inner.put('k', 'old');
    const held = inner.holdRead('k');
    const read = store.get('k');
    await held.reading;
    await inner.inner.put('k', 'new'); // another replica's write...
    store.invalidate(keys); // ...and its notification
    held.release();
    expect(await read).toBe('old');
    expect(await store.get('k')).toBe('new');
  });

  it('drops invalidated keys, and only those', async () => {
    await store.putMany([
      ['a', 1],
      ['b', 1],
    ]);
    await inner.inner.putMany([
      ['a', 2],
      ['b', 2],
    ]);
    store.invalidate(['a']);
    expect([await store.get('a'), await store.get('b')]).toEqual([2, 1]);
    store.invalidate('all');
    expect(await store.get('b')).toBe(2);
  });

  it('a read that no write overtook is kept in memory', async () => {
    await inner.put('k', 'v');
    expect(await store.get('k')).toBe('v');
    await inner.inner.put('k', 'changed behind its back');
    expect(await store.get('k')).toBe('v'); // from memory
  });

  it('forgets a key whose write failed (whether it landed is unknown)', async () => {
    await store.put('k', 'v');
    inner.failWrites = true;
    await expect(store.put('k', 'w')).rejects.toThrow();
    inner.failWrites = false;
    await inner.inner.put('k', 'on disk');
    expect(await store.get('k')).toBe('on disk');
  });

  it('passes the problem of the store under it on', async () => {
    inner.failReads = () => true;
    await expect(store.get('x')).rejects.toThrow();
    expect(store.problem()?.error).toMatch(/LEVEL_CORRUPTION/);
  });
});

describe.skipIf(!postgres.available)('PostgresMetadataStore only', () => {
  const fast = { retryMinMs: 50, retryMaxMs: 200 };
  const opened: MetadataStore[] = [];
  const open = async (url: string) => {
    const store = await PostgresMetadataStore.open(url, { limits: fast });
    opened.push(store);
    return store;
  };
  /** A replica's store with its memory cache, and what its notifications told it (a test watching beside the cache). */
  const cached = async (url: string) => {
    const inner = await PostgresMetadataStore.open(url, { limits: fast });
    const told: Array<readonly string[] | 'all'> = [];
    inner.watchChanges((keys) => told.push(keys));
    const store = new MemoryCachedStore(inner, 1 << 20);
    opened.push(store);
    await until(() => told.includes('all')); // listening (the first LISTEN flushes)
    return { store, told, heard: (key: string) => until(() => told.some((t) => t !== 'all' && t.includes(key))) };
  };
  /** Changes a document behind every store's back: no notification, as a write another replica lost would be. */
  const behindTheBack = (url: string, key: string, value: unknown) =>
    postgres.cluster().admin((c) => c.query('UPDATE srm_metadata SET value = $2 WHERE key = $1', [key, JSON.stringify(value)]), new URL(url).pathname.slice(1));

  afterEach(async () => {
    for (const store of opened.splice(0)) await store.close();
  });

  it('migrates a new database once, however many replicas start on it together', async () => {
    const url = await postgres.cluster().createDatabase();
    await Promise.all(Array.from({ length: 6 }, () => open(url)));
    await open(url); // and again, on a database already up to date
    const rows = await postgres.cluster().admin((c) => c.query('SELECT version FROM srm_schema_migrations ORDER BY version'), new URL(url).pathname.slice(1));
    expect(rows.rows).toEqual([{ version: 1 }]);
  });

  it('refuses a database a newer srm-mirror migrated, naming the database without its password', async () => {
    const url = await postgres.cluster().createDatabase();
    await open(url);
    await postgres.cluster().admin((c) => c.query("INSERT INTO srm_schema_migrations (version, what) VALUES (999, 'future')"), new URL(url).pathname.slice(1));
    const withPassword = url.replace('postgres@', 'postgres:hunter2secret@');
    const err = (await PostgresMetadataStore.open(withPassword).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/SQL schema 999, written by a newer srm-mirror/);
    expect(err.message).toContain('postgres://***@127.0.0.1');
    expect(err.message).not.toContain('hunter2secret');
  });

  it("a write through one replica drops another replica's cached copy", async () => {
    const url = await postgres.cluster().createDatabase();
    const a = await open(url); // a replica's store (no memory cache: it needs no notifications)
    const { store: b, heard } = await cached(url);
    await a.putMany([
      ['k', 'v1'],
      ['other', 'o1'],
    ]);
    await heard('k');
    expect(await b.get('k')).toBe('v1');
    await behindTheBack(url, 'k', 'changed silently');
    expect(await b.get('k')).toBe('v1'); // served from B's memory: nothing told B
    await a.put('k', 'v2');
    await until(async () => (await b.get('k')) === 'v2');
    await a.del('k');
    await until(async () => (await b.get('k')) === undefined);
    // A batch naming more keys than fit in one notification is told in several.
    expect(await b.get('other')).toBe('o1');
    await behindTheBack(url, 'other', 'o2');
    const keys = Array.from({ length: 400 }, (_, i) => `release:some-long-package-name:${i}.0.0`);
    await a.putMany([...keys, 'other'].map((k) => [k, 1] as const));
    await until(async () => (await b.get('other')) === 1);
    // One naming too many keys to tell drops everything.
    await behindTheBack(url, 'other', 'o3');
    expect(await b.get('other')).toBe(1);
    await a.putMany(Array.from({ length: 8000 }, (_, i) => [`access:some-long-package-name@${i}.0.0`, i] as const));
    await until(async () => (await b.get('other')) === 'o3');
  });

  it('losing the notifications connection flushes the cache, is reported, and is reconnected', async () => {
    const url = await postgres.cluster().createDatabase();
    const a = await open(url);
    const { store: b, heard } = await cached(url);
    await a.put('k', 'v1');
    await heard('k');
    expect(await b.get('k')).toBe('v1');
    await behindTheBack(url, 'k', 'changed silently');
    expect(await b.get('k')).toBe('v1');
    await postgres.cluster().admin((c) => c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'srm-mirror listen' AND datname = $1", [new URL(url).pathname.slice(1)]));
    await until(async () => (await b.get('k')) === 'changed silently');
    expect(b.problem()?.error).toMatch(/notifications connection was lost/);
    // Listening again: a later write is seen.
    await a.put('k', 'v3');
    await until(async () => (await b.get('k')) === 'v3');
  });
});
