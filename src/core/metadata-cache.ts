// The freshness policy for metadata, in one place:
//   fresh copy (younger than maxAge)          → HIT, no upstream request
//   older copy, upstream says 304             → REVALIDATED (the copy counts as fresh again)
//   no or older copy, upstream answers        → MISS (stored; one fetch for all concurrent callers)
//   upstream 404                              → remembered for notFoundTtl (negative cache), passed on
//   upstream fails, an older copy exists      → STALE (a failure never replaces good metadata)
//   upstream fails, no copy                   → the caller's fallback (local knowledge, STALE), else the error
//   older copy, upstream slower than staleAfter → STALE at once; the revalidation goes on and updates the cache
// and what is never stored, answered BYPASS (fetched now, not cached): a list the upstream adapter had to cut short,
// an answer whose fetch began before a write to its key through the mirror (it may predate the write), and anything
// while the store fails. A store that fails to read counts as having no copy: the upstream answers, never a 500.
import { MirrorError, toMirrorError } from '../model/errors.js';
import { prefix as keyPrefix } from '../stores/keys.js';
import type { MetadataStore } from '../stores/metadata-store.js';
import { unshared, type Exclusive } from './fleet.js';
import type { Validators } from '../upstreams/http.js';
import type { Fetched } from '../upstreams/upstream.js';

/** HOSTED: content this mirror owns (core/hosted), never cached or fetched. */
export type CacheStatus = 'HIT' | 'MISS' | 'REVALIDATED' | 'STALE' | 'OFFLINE' | 'BYPASS' | 'HOSTED';

export interface Cached<T> {
  /**
   * The stored document: the same object for every read until the document changes (a new one is stored), so that the
   * faces can reuse what they rendered of it (faces/json.ts RenderedAnswers). Never changed in place.
   */
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
  /** How long a reader with a stale copy waits for its revalidation before it gets the copy; undefined: no limit. */
  readonly staleAfterMs?: number;
  readonly now?: () => number;
  /** Resolves after ms (tests pass their own); it may stay pending once signal is aborted. */
  readonly delay?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Replicas on one database: one upstream refresh of a key across all of them (default: this process alone). */
  readonly exclusive?: Exclusive;
}

/**
 * How long a package list (a `list:` document) is kept at all: lists are keyed by the query, whose search text a
 * client chooses, so they must not pile up. Past max age a list only serves stale-if-error and the offline package
 * list, and costs one request to fetch again; a day rides out a day-long outage while bounding the list documents
 * to the distinct queries of one day (never less than max age, so a list is never dropped while it is fresh).
 */
export const LIST_LIFETIME_MS = 24 * 3_600_000;

/** One upstream fetch for a key, shared by its concurrent readers. */
class Flight {
  promise!: Promise<Cached<unknown>>;
  /** A write to its key went through the mirror after it began: its answer may predate the write, so it is not stored. */
  fenced = false;
  /** Its write to the store, while under way (a write through the mirror waits for it, to come after it). */
  committing?: Promise<void>;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  });

const TIMED_OUT: unique symbol = Symbol('timed out');

export class MetadataCache {
  private readonly flights = new Map<string, Flight>();
  /** Reads that joined an upstream fetch already under way for their key, since start (for /-/metrics). */
  coalesced = 0;
  private readonly now: () => number;
  private readonly delay: (ms: number, signal: AbortSignal) => Promise<void>;

  constructor(
    private readonly store: MetadataStore,
    private readonly options: MetadataCacheOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.delay = options.delay ?? sleep;
  }

  /**
   * `fallback` may answer when the upstream failed and nothing is cached (it rethrows the error when it cannot);
   * `maxAgeMs` overrides the configured max age for this read (0: always ask the upstream); `learn` names documents
   * to store along with a fetched answer (e.g. each release of a page), under the same conditions, in the same batch;
   * `wait` waits for the upstream however long it takes, even with a stale copy at hand (prefetch).
   */
  async get<T>(
    key: string,
    fetch: (since?: Validators) => Promise<Fetched<T>>,
    opts: {
      fallback?: (err: MirrorError) => Promise<Cached<T>>;
      maxAgeMs?: number;
      learn?: (value: T) => ReadonlyArray<readonly [string, unknown]>;
      wait?: boolean;
    } = {},
  ): Promise<Cached<T>> {
    const { doc } = await this.read(key);
    if (doc && this.isFresh(doc, opts.maxAgeMs)) return this.answer(doc, 'HIT');
    let flight = this.flights.get(key);
    if (flight) this.coalesced++;
    else {
      const started = (flight = new Flight());
      // fly reads the store again once it holds the fleet's lock: another replica's refresh may have stored a fresh copy.
      started.promise = (this.options.exclusive ?? unshared)(key, () => this.fly(key, started, fetch, opts)).finally(() => {
        if (this.flights.get(key) === started) this.flights.delete(key);
      });
      this.flights.set(key, started);
    }
    const answer = flight.promise as Promise<Cached<T>>;
    const { staleAfterMs } = this.options;
    if (!doc || !('value' in doc) || opts.wait || staleAfterMs === undefined) return answer;
    // A stale copy is at hand: wait for the upstream only so long.
    const timer = new AbortController();
    try {
      const first = await Promise.race<Cached<T> | typeof TIMED_OUT>([answer, this.delay(staleAfterMs, timer.signal).then(() => TIMED_OUT)]);
      return first === TIMED_OUT ? this.answer(doc, 'STALE') : first;
    } finally {
      timer.abort();
    }
  }

  /**
   * get's HIT, when the store has the document in memory (MemoryCachedStore) and it is a fresh copy: without an await,
   * for the hot path. Undefined otherwise (not in memory, a 404 remembered, old), where get decides what to do.
   */
  getNow<T>(key: string, maxAgeMs?: number): Cached<T> | undefined {
    let doc: Doc | undefined;
    try {
      doc = this.store.getNow?.<Doc>(key)?.value;
    } catch {
      return undefined; // get reads it again and copes
    }
    return doc && doc.notFound === undefined && this.isFresh(doc, maxAgeMs) ? this.answer(doc, 'HIT') : undefined;
  }

  private async fly<T>(
    key: string,
    flight: Flight,
    fetch: (since?: Validators) => Promise<Fetched<T>>,
    opts: { fallback?: (err: MirrorError) => Promise<Cached<T>>; maxAgeMs?: number; learn?: (value: T) => ReadonlyArray<readonly [string, unknown]> },
  ): Promise<Cached<T>> {
    // Read again: a flight that finished while we looked may have stored a fresh copy.
    const { doc: current, failed } = await this.read(key);
    if (current && this.isFresh(current, opts.maxAgeMs)) return this.answer(current, 'HIT');
    const copy = current && 'value' in current ? current : undefined;
    // With the store failing, nothing is written: what it holds is unknown.
    const commit = (entries: Array<readonly [string, Doc]>) => (failed ? Promise.resolve(false) : this.commit(flight, entries));
    try {
      const fetched = await fetch(copy?.validators);
      if (fetched.notModified) {
        if (!copy) throw new MirrorError('upstream-failed', 'upstream answered 304 to an unconditional request');
        const confirmed: Doc = { ...copy, fetchedAt: this.now() };
        await commit([[key, confirmed]]);
        return this.answer(confirmed, 'REVALIDATED');
      }
      const fetchedAt = this.now();
      const fresh: Doc = { value: fetched.value, validators: fetched.validators, fetchedAt };
      if (fetched.truncated) return this.answer(fresh, 'BYPASS');
      const learnt = (opts.learn?.(fetched.value) ?? []).map(([k, value]) => [k, { value, fetchedAt } satisfies Doc] as const);
      return this.answer(fresh, (await commit([[key, fresh], ...learnt])) ? 'MISS' : 'BYPASS');
    } catch (err) {
      const e = toMirrorError(err);
      if (e.kind === 'not-found') await commit([[key, { notFound: e.message, fetchedAt: this.now() }]]);
      if (!e.isUpstreamFailure) throw e;
      if (copy) return this.answer(copy, 'STALE');
      if (opts.fallback) return opts.fallback(e);
      throw e;
    }
  }

  /** Stores a flight's documents unless a write through the mirror fenced it; false when nothing was stored. */
  private async commit(flight: Flight, entries: ReadonlyArray<readonly [string, Doc]>): Promise<boolean> {
    if (flight.fenced) return false;
    const write = this.store.putMany(entries);
    flight.committing = write.then(
      () => {},
      () => {},
    );
    try {
      await write;
      return true;
    } catch {
      return false; // the store reports its problem; the answer still goes to the client
    }
  }

  /**
   * A write through the mirror is about to change these documents (exact keys, or keys starting with a prefix):
   * flights for them that began earlier are not stored (new readers start a new flight), and a store write of theirs
   * under way is waited for, so that the write comes after it.
   */
  async fence(which: { keys?: readonly string[]; prefixes?: readonly string[] }): Promise<void> {
    const under: Array<Promise<void>> = [];
    for (const [k, flight] of this.flights) {
      if (!(which.keys?.includes(k) || which.prefixes?.some((p) => k.startsWith(p)))) continue;
      flight.fenced = true;
      this.flights.delete(k);
      if (flight.committing) under.push(flight.committing);
    }
    await Promise.all(under);
  }

  /** The stored value, whatever its age; undefined when there is none (or only a negative entry, or the store fails). */
  async peek<T>(key: string): Promise<T | undefined> {
    return (await this.read(key)).doc?.value as T | undefined;
  }

  /** Keys of stored documents that start with prefix (those read before the store failed, if it does). */
  async keys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    try {
      for await (const k of this.store.keys(prefix)) keys.push(k);
    } catch {
      // the store reports its problem
    }
    return keys;
  }

  /**
   * Stores a document learnt elsewhere (an imported bundle) as last confirmed at `fetchedAt`, unless a copy is stored
   * already (the mirror's own is kept). Past max age an online mirror revalidates it as any other copy, and serves it
   * when the upstream fails; an offline one answers with it. False when nothing was written.
   */
  async seed(key: string, value: unknown, fetchedAt: number): Promise<boolean> {
    const { doc, failed } = await this.read(key);
    if (failed || (doc && 'value' in doc)) return false;
    return this.write(this.store.put(key, { value, fetchedAt } satisfies Doc));
  }

  /** Makes a key's copy stale (the next read asks the upstream) without dropping it. */
  async invalidate(key: string): Promise<void> {
    await this.fence({ keys: [key] });
    const { doc } = await this.read(key);
    if (doc?.notFound !== undefined) await this.write(this.store.del(key));
    else if (doc) await this.write(this.store.put(key, { ...doc, fetchedAt: 0 }));
  }

  /** Rewrites a stored value in place (its age unchanged); nothing happens when there is none. */
  async update<T>(key: string, change: (value: T) => T): Promise<void> {
    await this.fence({ keys: [key] });
    const { doc } = await this.read(key);
    if (doc && 'value' in doc) await this.write(this.store.put(key, { ...doc, value: change(doc.value as T) }));
  }

  async delete(key: string): Promise<void> {
    await this.fence({ keys: [key] });
    await this.write(this.store.del(key));
  }

  /**
   * Removes what has outlived its use: package lists older than LIST_LIFETIME_MS (or max age, if longer) and
   * negative entries past notFoundTtl. Reads every document (without touching the memory cache); run it every few
   * minutes. Returns what it removed.
   */
  async sweep(): Promise<{ lists: number; notFound: number }> {
    const removed = { lists: 0, notFound: 0 };
    const now = this.now();
    const listLifetime = Math.max(LIST_LIFETIME_MS, this.options.maxAgeMs);
    for (const p of keyPrefix.documents) {
      const doomed: string[] = [];
      try {
        for await (const [k, doc] of this.store.entries<Doc>(p)) {
          if (typeof doc?.fetchedAt !== 'number') continue;
          if (doc.notFound !== undefined ? now - doc.fetchedAt >= this.options.notFoundTtlMs : p === keyPrefix.list && now - doc.fetchedAt >= listLifetime) {
            doomed.push(k);
          }
        }
      } catch {
        // the store reports its problem; remove what was found
      }
      for (const k of doomed) {
        // A flight may have stored a fresh document since the scan read this one.
        const { doc } = await this.read(k);
        if (!doc) continue;
        const expired = doc.notFound !== undefined ? now - doc.fetchedAt >= this.options.notFoundTtlMs : now - doc.fetchedAt >= listLifetime;
        if (!expired || !(await this.write(this.store.del(k)))) continue;
        if (doc.notFound !== undefined) removed.notFound++;
        else removed.lists++;
      }
    }
    return removed;
  }

  /** Reads a document; a store that fails counts as having none (and says so: such a read is not to be overwritten). */
  private async read(key: string): Promise<{ doc: Doc | undefined; failed: boolean }> {
    try {
      return { doc: await this.store.get<Doc>(key), failed: false };
    } catch {
      return { doc: undefined, failed: true };
    }
  }

  /** A write that may fail (the store reports its problem): true when it went through. */
  private async write(op: Promise<void>): Promise<boolean> {
    try {
      await op;
      return true;
    } catch {
      return false;
    }
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
