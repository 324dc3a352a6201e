// Metadata storage: a small key → JSON document store. LevelMetadataStore keeps documents on disk;
// MemoryCachedStore puts an LRU of parsed documents in front of any store (write-through). Opening the database
// (schema, migrations, a lost or damaged index) is in schema.ts.
import { readdir } from 'node:fs/promises';
import { Level } from 'level';
import { LRUCache } from 'lru-cache';

/** A failure of the storage under a MetadataStore, for /-/status. */
export interface MetadataProblem {
  readonly error: string;
  /** When the failures began (ISO time). */
  readonly since: string;
}

export interface MetadataStore {
  get<T>(key: string): Promise<T | undefined>;
  /**
   * Only for a store that holds documents in memory: what get would answer, when it can say so without I/O
   * (`{ value }`, value undefined when the key has none), else undefined. A use, as get is (for an LRU's order).
   */
  getNow?<T>(key: string): { readonly value: T | undefined } | undefined;
  put(key: string, value: unknown): Promise<void>;
  /** Writes all entries atomically. */
  putMany(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void>;
  del(key: string): Promise<void>;
  /** Applies puts and deletes atomically; `durable`: on disk (fsynced) before it resolves, not only handed to the OS. */
  apply(batch: Batch, options?: { durable?: boolean }): Promise<void>;
  /** Keys (in order) that start with prefix. */
  keys(prefix: string): AsyncIterable<string>;
  /** Keys and documents (in key order) that start with prefix; a scan, not a use (it leaves any memory cache alone). */
  entries<T>(prefix: string): AsyncIterable<readonly [string, T]>;
  /** The storage is failing (a corrupt block, an I/O error): since when and the last error; undefined when healthy. */
  problem(): MetadataProblem | undefined;
  close(): Promise<void>;
  /**
   * Only for a store other processes write to as well (PostgreSQL): calls onChange with the keys any process changed,
   * or 'all' when which is unknown (notifications may have been missed). Returns a function that stops it.
   */
  watchChanges?(onChange: (keys: readonly string[] | 'all') => void): () => void;
}

/** Writes applied together or not at all. */
export interface Batch {
  readonly put?: ReadonlyArray<readonly [string, unknown]>;
  readonly del?: readonly string[];
}

/** Whether any key starts with prefix (a scan that stops at the first). */
export async function hasKeys(store: Pick<MetadataStore, 'keys'>, prefix = ''): Promise<boolean> {
  for await (const _ of store.keys(prefix)) return true;
  return false;
}

export class DataFolderLockedError extends Error {
  /** what: the thing whose lock is held ("the metadata database", or "the data folder" for the lock file of a mirror on PostgreSQL). */
  constructor(readonly location: string, what = 'the metadata database') {
    super(`${what} ${location} is in use by another srm-mirror process: stop it, or use another --data folder`);
    this.name = 'DataFolderLockedError';
  }
}

/**
 * The metadata database cannot be opened as it is (its files are damaged, or a part LevelDB needs is missing).
 * Nothing was created over it: opening anyway would start an empty database and let LevelDB delete the old files.
 */
export class MetadataDamagedError extends Error {
  constructor(
    readonly location: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `the metadata database ${location} is damaged (${reason}); nothing was changed. Stop the mirror and run \`srm-mirror repair\` ` +
        `with the same --data folder: it recovers what LevelDB can and rebuilds the archive index from the archive files`,
      options,
    );
    this.name = 'MetadataDamagedError';
  }
}

/** A storage failure counts as current this long after it last happened (a corrupt block fails each time it is read). */
const PROBLEM_WINDOW_MS = 10 * 60_000;

/**
 * Spells of storage failures, for problem(): a spell begins with a failure after PROBLEM_WINDOW_MS without one (and
 * is reported once, through onProblem), and ends PROBLEM_WINDOW_MS after its last failure.
 */
export class ProblemTracker {
  private failing: { since: number; last: number; error: string } | undefined;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly onProblem?: (error: string) => void,
  ) {}

  /** Records a failure and returns it, to be thrown. */
  failed(err: unknown): unknown {
    const now = this.now();
    const e = err as { code?: string; message?: string };
    const error = e.code ? `${e.code}: ${e.message}` : String(e.message ?? err);
    if (!this.failing || now - this.failing.last > PROBLEM_WINDOW_MS) {
      this.failing = { since: now, last: now, error };
      this.onProblem?.(error);
    } else this.failing = { ...this.failing, last: now, error };
    return err;
  }

  problem(): MetadataProblem | undefined {
    const f = this.failing;
    if (!f || this.now() - f.last > PROBLEM_WINDOW_MS) return undefined;
    return { error: f.error, since: new Date(f.since).toISOString() };
  }
}

/** Files of a LevelDB database besides CURRENT, LOCK and LOG: with them but without CURRENT, it is damaged. */
const LEVELDB_DATA_FILE = /^(\d+\.(ldb|sst|log)|MANIFEST-\d+)$/;

export interface LevelMetadataStoreOptions {
  /** Told of the first failure of each spell of storage failures (to log it once). */
  readonly onProblem?: (error: string) => void;
  readonly now?: () => number;
}

/**
 * LevelDB's own memory, smaller than its defaults (8 MB block cache, 4 MB write buffer, up to two memtables): hot
 * documents are held parsed by MemoryCachedStore in front of it, so a big block cache only held them a second time,
 * and metadata writes are small. At most 2 + 2 x 2 MB instead of 16 (issue 13).
 */
const LEVEL_MEMORY = { cacheSize: 2 << 20, writeBufferSize: 2 << 20 };

export class LevelMetadataStore implements MetadataStore {
  private readonly problems: ProblemTracker;

  private constructor(
    private readonly db: Level<string, unknown>,
    options: LevelMetadataStoreOptions,
  ) {
    this.problems = new ProblemTracker(options.now, options.onProblem);
  }

  /**
   * Opens (or creates) the database at location. A folder that holds LevelDB's files but no CURRENT, or one that
   * LevelDB finds corrupt, is refused with MetadataDamagedError rather than replaced by a new database.
   */
  static async open(location: string, options: LevelMetadataStoreOptions = {}): Promise<LevelMetadataStore> {
    const files = await readdir(location).catch((err: NodeJS.ErrnoException): string[] => {
      if (err.code === 'ENOENT') return [];
      throw err;
    });
    if (!files.includes('CURRENT') && files.some((f) => LEVELDB_DATA_FILE.test(f))) {
      throw new MetadataDamagedError(location, 'its CURRENT file is missing');
    }
    const db = new Level<string, unknown>(location, { valueEncoding: 'json' });
    try {
      await db.open(LEVEL_MEMORY);
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      if (cause?.code === 'LEVEL_LOCKED') throw new DataFolderLockedError(location);
      if (cause?.code === 'LEVEL_CORRUPTION' || cause?.code === 'LEVEL_IO_ERROR') throw new MetadataDamagedError(location, cause.message ?? cause.code, { cause: err });
      throw err;
    }
    return new LevelMetadataStore(db, options);
  }

  /** LevelDB's own repair (RepairDB): keeps every record it can still read, and writes a new CURRENT and MANIFEST. */
  static async repair(location: string): Promise<void> {
    // level's types (shared with browsers) leave it out; in Node, Level is classic-level's ClassicLevel, which has it.
    await (Level as unknown as { repair(location: string): Promise<void> }).repair(location);
  }

  async get<T>(key: string): Promise<T | undefined> {
    return (await this.watch(this.db.get(key))) as T | undefined;
  }

  async put(key: string, value: unknown): Promise<void> {
    await this.watch(this.db.put(key, value));
  }

  async putMany(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void> {
    await this.watch(this.db.batch(entries.map(([key, value]) => ({ type: 'put' as const, key, value }))));
  }

  async del(key: string): Promise<void> {
    await this.watch(this.db.del(key));
  }

  async apply({ put = [], del = [] }: Batch, { durable = false } = {}): Promise<void> {
    const ops = [...put.map(([key, value]) => ({ type: 'put' as const, key, value })), ...del.map((key) => ({ type: 'del' as const, key }))];
    await this.watch(this.db.batch(ops, { sync: durable }));
  }

  async *keys(prefix: string): AsyncIterable<string> {
    try {
      // "\uffff" sorts after every character a key of ours can hold.
      yield* this.db.keys({ gte: prefix, lt: `${prefix}\uffff` });
    } catch (err) {
      throw this.failed(err);
    }
  }

  async *entries<T>(prefix: string): AsyncIterable<readonly [string, T]> {
    try {
      for await (const [k, v] of this.db.iterator({ gte: prefix, lt: `${prefix}\uffff` })) yield [k, v as T] as const;
    } catch (err) {
      throw this.failed(err);
    }
  }

  problem(): MetadataProblem | undefined {
    return this.problems.problem();
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  private async watch<T>(op: Promise<T>): Promise<T> {
    try {
      return await op;
    } catch (err) {
      throw this.failed(err);
    }
  }

  private failed(err: unknown): unknown {
    return this.problems.failed(err);
  }
}

/**
 * Keeps parsed documents in memory in front of `inner` (write-through), misses included, up to `maxBytes` of
 * their JSON: bounded by size, not by count, since one package's release list can be a thousand times another's.
 */
export class MemoryCachedStore implements MetadataStore {
  private readonly lru: LRUCache<string, { value: unknown }>;
  /**
   * Keys being read from `inner` right now, with a count of the writes to them that finished meanwhile: a read that
   * a write overtook does not go into the LRU (it would bring back a deleted or older document). Only keys with a
   * read under way are here, so this stays as small as the reads in flight.
   */
  private readonly reading = new Map<string, { readers: number; writes: number }>();
  private readonly unwatch: (() => void) | undefined;

  constructor(
    private readonly inner: MetadataStore,
    maxBytes: number,
  ) {
    this.lru = new LRUCache({
      maxSize: Math.max(1, maxBytes),
      // Entries are measured when they are stored (not on the hot path of a hit); a miss weighs a little.
      sizeCalculation: (entry) => (entry.value === undefined ? 16 : JSON.stringify(entry.value).length),
    });
    // Another replica's writes make what is held here stale.
    this.unwatch = inner.watchChanges?.((keys) => this.invalidate(keys));
  }

  /** Forgets keys another process changed ('all': any may have), and keeps reads of them under way out of memory. */
  invalidate(keys: readonly string[] | 'all'): void {
    if (keys === 'all') {
      this.overtake(this.reading.keys());
      this.lru.clear();
      return;
    }
    this.overtake(keys);
    for (const key of keys) this.lru.delete(key);
  }

  getNow<T>(key: string): { readonly value: T | undefined } | undefined {
    return this.lru.get(key) as { value: T | undefined } | undefined;
  }

  async get<T>(key: string): Promise<T | undefined> {
    const hit = this.getNow<T>(key);
    if (hit) return hit.value;
    let r = this.reading.get(key);
    if (!r) this.reading.set(key, (r = { readers: 0, writes: 0 }));
    r.readers++;
    const writes = r.writes;
    try {
      const value = await this.inner.get<T>(key);
      if (r.writes === writes) this.lru.set(key, { value });
      return value;
    } finally {
      if (--r.readers === 0) this.reading.delete(key);
    }
  }

  async put(key: string, value: unknown): Promise<void> {
    await this.written([key], this.inner.put(key, value), () => this.lru.set(key, { value }));
  }

  async putMany(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void> {
    await this.written(
      entries.map(([key]) => key),
      this.inner.putMany(entries),
      () => {
        for (const [key, value] of entries) this.lru.set(key, { value });
      },
    );
  }

  async del(key: string): Promise<void> {
    await this.written([key], this.inner.del(key), () => this.lru.delete(key));
  }

  async apply(batch: Batch, options?: { durable?: boolean }): Promise<void> {
    const { put = [], del = [] } = batch;
    await this.written([...put.map(([key]) => key), ...del], this.inner.apply(batch, options), () => {
      // In the order the store applies them: a key both put and deleted ends deleted.
      for (const [key, value] of put) this.lru.set(key, { value });
      for (const key of del) this.lru.delete(key);
    });
  }

  keys(prefix: string): AsyncIterable<string> {
    return this.inner.keys(prefix);
  }

  entries<T>(prefix: string): AsyncIterable<readonly [string, T]> {
    return this.inner.entries<T>(prefix);
  }

  problem(): MetadataProblem | undefined {
    return this.inner.problem();
  }

  async close(): Promise<void> {
    this.unwatch?.();
    this.lru.clear();
    await this.inner.close();
  }

  /**
   * Once a write to `inner` has finished (or failed: then whether it landed is unknown, so the keys are forgotten),
   * reads of its keys under way are told, and the LRU follows, in the same step.
   */
  private async written(keys: readonly string[], write: Promise<void>, apply: () => void): Promise<void> {
    try {
      await write;
    } catch (err) {
      this.overtake(keys);
      for (const key of keys) this.lru.delete(key);
      throw err;
    }
    this.overtake(keys);
    apply();
  }

  /** Tells the reads of keys under way that a write overtook them (what they read must not go into the LRU). */
  private overtake(keys: Iterable<string>): void {
    for (const key of keys) {
      const r = this.reading.get(key);
      if (r) r.writes++;
    }
  }
}
