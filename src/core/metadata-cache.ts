// The freshness policy for metadata, in one place: a document is served from the store while younger than
// maxAge (HIT), fetched from the upstream after (MISS, one fetch for all concurrent callers), and served old
// (STALE) when the upstream fails and an older copy exists. Upstream answers such as 404 are never masked.
import { toMirrorError } from '../model/errors.js';
import type { MetadataStore } from '../stores/metadata-store.js';
import { SingleFlight } from './single-flight.js';

export type CacheStatus = 'HIT' | 'MISS' | 'STALE';

export interface Cached<T> {
  readonly value: T;
  readonly status: CacheStatus;
  /** Seconds since the value was fetched from the upstream. */
  readonly age: number;
}

interface Doc {
  readonly value: unknown;
  readonly fetchedAt: number;
}

export class MetadataCache {
  private readonly flights = new SingleFlight<Cached<unknown>>();

  constructor(
    private readonly store: MetadataStore,
    private readonly maxAgeMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  async get<T>(key: string, fetch: () => Promise<T>): Promise<Cached<T>> {
    const doc = await this.store.get<Doc>(key);
    if (doc && this.isFresh(doc)) return this.answer(doc, 'HIT');
    return this.flights.run(key, async () => {
      // Read again: a flight that finished while we looked may have stored a fresh copy.
      const current = await this.store.get<Doc>(key);
      if (current && this.isFresh(current)) return this.answer(current, 'HIT');
      try {
        const value = await fetch();
        await this.store.put(key, { value, fetchedAt: this.now() } satisfies Doc);
        return { value, status: 'MISS', age: 0 };
      } catch (err) {
        if (current && toMirrorError(err).isUpstreamFailure) return this.answer(current, 'STALE');
        throw err;
      }
    }) as Promise<Cached<T>>;
  }

  /** Stores documents learnt on the side (e.g. each release of a fetched page) as freshly fetched. */
  async seed(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void> {
    const fetchedAt = this.now();
    await this.store.putMany(entries.map(([key, value]) => [key, { value, fetchedAt } satisfies Doc] as const));
  }

  private isFresh(doc: Doc): boolean {
    return this.now() - doc.fetchedAt < this.maxAgeMs;
  }

  private answer<T>(doc: Doc, status: CacheStatus): Cached<T> {
    return { value: doc.value as T, status, age: Math.max(0, Math.floor((this.now() - doc.fetchedAt) / 1000)) };
  }
}
