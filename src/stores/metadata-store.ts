// Metadata storage: a small key → JSON document store. LevelMetadataStore keeps documents on disk;
// MemoryCachedStore puts an LRU of parsed documents in front of any store (write-through).
import { Level } from 'level';
import { LRUCache } from 'lru-cache';

export interface MetadataStore {
  get<T>(key: string): Promise<T | undefined>;
  put(key: string, value: unknown): Promise<void>;
  /** Writes all entries atomically. */
  putMany(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void>;
  del(key: string): Promise<void>;
  /** Keys (in order) that start with prefix. */
  keys(prefix: string): AsyncIterable<string>;
  close(): Promise<void>;
}

export class DataFolderLockedError extends Error {
  constructor(readonly location: string) {
    super(`the metadata database ${location} is in use by another srm-mirror process: stop it, or use another --data folder`);
    this.name = 'DataFolderLockedError';
  }
}

export class LevelMetadataStore implements MetadataStore {
  private constructor(private readonly db: Level<string, unknown>) {}

  static async open(location: string): Promise<LevelMetadataStore> {
    const db = new Level<string, unknown>(location, { valueEncoding: 'json' });
    try {
      await db.open();
    } catch (err) {
      const code = (err as { cause?: { code?: string } }).cause?.code;
      if (code === 'LEVEL_LOCKED') throw new DataFolderLockedError(location);
      throw err;
    }
    return new LevelMetadataStore(db);
  }

  async get<T>(key: string): Promise<T | undefined> {
    return (await this.db.get(key)) as T | undefined;
  }

  async put(key: string, value: unknown): Promise<void> {
    await this.db.put(key, value);
  }

  async putMany(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void> {
    await this.db.batch(entries.map(([key, value]) => ({ type: 'put' as const, key, value })));
  }

  async del(key: string): Promise<void> {
    await this.db.del(key);
  }

  async *keys(prefix: string): AsyncIterable<string> {
    // "\uffff" sorts after every character a key of ours can hold.
    yield* this.db.keys({ gte: prefix, lt: `${prefix}\uffff` });
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/**
 * Keeps parsed documents in memory in front of `inner` (write-through), misses included, up to `maxBytes` of
 * their JSON: bounded by size, not by count, since one package's release list can be a thousand times another's.
 */
export class MemoryCachedStore implements MetadataStore {
  private readonly lru: LRUCache<string, { value: unknown }>;

  constructor(
    private readonly inner: MetadataStore,
    maxBytes: number,
  ) {
    this.lru = new LRUCache({
      maxSize: Math.max(1, maxBytes),
      // Entries are measured when they are stored (not on the hot path of a hit); a miss weighs a little.
      sizeCalculation: (entry) => (entry.value === undefined ? 16 : JSON.stringify(entry.value).length),
    });
  }

  async get<T>(key: string): Promise<T | undefined> {
    let hit = this.lru.get(key);
    if (!hit) {
      const read = { value: await this.inner.get<T>(key) };
      // A put that ran while we read is newer than what we read: keep it.
      hit = this.lru.get(key) ?? read;
      this.lru.set(key, hit);
    }
    return hit.value as T | undefined;
  }

  async put(key: string, value: unknown): Promise<void> {
    await this.inner.put(key, value);
    this.lru.set(key, { value });
  }

  async putMany(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void> {
    await this.inner.putMany(entries);
    for (const [key, value] of entries) this.lru.set(key, { value });
  }

  async del(key: string): Promise<void> {
    await this.inner.del(key);
    this.lru.delete(key);
  }

  keys(prefix: string): AsyncIterable<string> {
    return this.inner.keys(prefix);
  }

  async close(): Promise<void> {
    this.lru.clear();
    await this.inner.close();
  }
}
