// The freshness policy for metadata, in one place:
//   fresh copy (younger than maxAge)          → HIT, no upstream request
//   older copy, upstream says 304             → REVALIDATED (the copy counts as fresh again)
//   no or older copy, upstream answers        → MISS (stored; one fetch for all concurrent callers)
//   upstream 404                              → remembered for notFoundTtl (negative cache), passed on
//   upstream fails, an older copy exists      → STALE (a failure never replaces good metadata)
//   upstream fails, no copy                   → the caller's fallback (local knowledge, STALE), else the error
import { MirrorError, toMirrorError } from '../model/errors.js';
import type { MetadataStore } from '../stores/metadata-store.js';
import type { Validators } from '../upstreams/http.js';
import type { Fetched } from '../upstreams/upstream.js';
import { SingleFlight } from './single-flight.js';

export type CacheStatus = 'HIT' | 'MISS' | 'REVALIDATED' | 'STALE' | 'OFFLINE';

export interface Cached<T> {
  readonly value: T;
  readonly status: CacheStatus;
  /** Seconds since the value was last confirmed by the upstream. */
  readonly age: number;
}

interface Doc {
  /** Absent in a negative entry. */
  readonly value?: unknown;
  /** The upstream's 404 message, in a negative entry. */
  readonly notFound?: string;
  readonly validators?: Validators;
  readonly fetchedAt: number;
}

export interface MetadataCacheOptions {
  readonly maxAgeMs: number;
  readonly notFoundTtlMs: number;
  readonly now?: () => number;
}

export class MetadataCache {
  private readonly flights = new SingleFlight<Cached<unknown>>();
  private readonly now: () => number;

  constructor(
    private readonly store: MetadataStore,
    private readonly options: MetadataCacheOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  /**
   * `fallback` may answer when the upstream failed and nothing is cached (it rethrows the error when it cannot);
   * `maxAgeMs` overrides the configured max age for this read (0: always ask the upstream).
   */
  async get<T>(
    key: string,
    fetch: (since?: Validators) => Promise<Fetched<T>>,
    opts: { fallback?: (err: MirrorError) => Promise<Cached<T>>; maxAgeMs?: number } = {},
  ): Promise<Cached<T>> {
    const isFresh = (doc: Doc) => this.isFresh(doc, opts.maxAgeMs);
    const doc = await this.store.get<Doc>(key);
    if (doc && isFresh(doc)) return this.answer(doc, 'HIT');
    return this.flights.run(key, async () => {
      // Read again: a flight that finished while we looked may have stored a fresh copy.
      const current = await this.store.get<Doc>(key);
      if (current && isFresh(current)) return this.answer(current, 'HIT');
      const copy = current && 'value' in current ? current : undefined;
      try {
        const fetched = await fetch(copy?.validators);
        if (fetched.notModified) {
          if (!copy) throw new MirrorError('upstream-failed', 'upstream answered 304 to an unconditional request');
          const confirmed: Doc = { ...copy, fetchedAt: this.now() };
          await this.store.put(key, confirmed);
          return this.answer(confirmed, 'REVALIDATED');
        }
        const fresh: Doc = { value: fetched.value, validators: fetched.validators, fetchedAt: this.now() };
        await this.store.put(key, fresh);
        return this.answer(fresh, 'MISS');
      } catch (err) {
        const e = toMirrorError(err);
        if (e.kind === 'not-found') await this.store.put(key, { notFound: e.message, fetchedAt: this.now() } satisfies Doc);
        if (!e.isUpstreamFailure) throw e;
        if (copy) return this.answer(copy, 'STALE');
        if (opts.fallback) return opts.fallback(e);
        throw e;
      }
    }) as Promise<Cached<T>>;
  }

  /** The stored value, whatever its age; undefined when there is none (or only a negative entry). */
  async peek<T>(key: string): Promise<T | undefined> {
    return (await this.store.get<Doc>(key))?.value as T | undefined;
  }

  /** Keys of stored documents that start with prefix. */
  async keys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const k of this.store.keys(prefix)) keys.push(k);
    return keys;
  }

  /** Stores documents learnt on the side (e.g. each release of a fetched page) as freshly fetched. */
  async seed(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void> {
    const fetchedAt = this.now();
    await this.store.putMany(entries.map(([key, value]) => [key, { value, fetchedAt } satisfies Doc] as const));
  }

  /** Makes a key's copy stale (the next read asks the upstream) without dropping it. */
  async invalidate(key: string): Promise<void> {
    const doc = await this.store.get<Doc>(key);
    if (doc?.notFound !== undefined) await this.store.del(key);
    else if (doc) await this.store.put(key, { ...doc, fetchedAt: 0 });
  }

  /** Rewrites a stored value in place (its age unchanged); nothing happens when there is none. */
  async update<T>(key: string, change: (value: T) => T): Promise<void> {
    const doc = await this.store.get<Doc>(key);
    if (doc && 'value' in doc) await this.store.put(key, { ...doc, value: change(doc.value as T) });
  }

  async delete(key: string): Promise<void> {
    await this.store.del(key);
  }

  private isFresh(doc: Doc, maxAgeMs = this.options.maxAgeMs): boolean {
    const ttl = doc.notFound !== undefined ? this.options.notFoundTtlMs : maxAgeMs;
    return this.now() - doc.fetchedAt < ttl;
  }

  private answer<T>(doc: Doc, status: CacheStatus): Cached<T> {
    if (doc.notFound !== undefined) throw new MirrorError('not-found', doc.notFound);
    return { value: doc.value as T, status, age: Math.max(0, Math.floor((this.now() - doc.fetchedAt) / 1000)) };
  }
}
