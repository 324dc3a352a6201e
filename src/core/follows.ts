// The packages prefetch keeps warm: those named in the config, plus (by default) every package a client asked for
// through the mirror, for as long as clients keep asking (prefetch.followFor since the last request) and the upstream
// has it. Remembered in the metadata store with the time of the last request, written at most once a day per
// package (not once per request).
import { key, prefix } from '../stores/keys.js';
import type { MetadataStore } from '../stores/metadata-store.js';

/** A request refreshes a package's last-requested time on disk at most this often. */
export const RECORD_EVERY_MS = 24 * 3_600_000;

interface FollowDoc {
  /** When it was first followed (ISO time). */
  readonly since: string;
  /** When a client last asked for it (ms since the epoch), to within RECORD_EVERY_MS. */
  readonly lastRequested: number;
}

export interface FollowsOptions {
  /** A package nobody asked for this long is no longer followed; 0: followed for good. */
  readonly followForMs: number;
  readonly now?: () => number;
}

export class Follows {
  private readonly known = new Map<string, FollowDoc>();
  private readonly now: () => number;

  private constructor(
    private readonly store: MetadataStore,
    private readonly options: FollowsOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  static async open(store: MetadataStore, options: FollowsOptions): Promise<Follows> {
    const follows = new Follows(store, options);
    const now = follows.now();
    try {
      for await (const [k, doc] of store.entries<Partial<FollowDoc>>(prefix.follow)) {
        const lastRequested = typeof doc?.lastRequested === 'number' ? doc.lastRequested : now; // older records: see schema.ts
        follows.known.set(k.slice(prefix.follow.length), { since: typeof doc?.since === 'string' ? doc.since : new Date(now).toISOString(), lastRequested });
      }
    } catch {
      // A damaged database (the store reports it): follow what could be read; clients' requests add the rest back.
    }
    return follows;
  }

  /** Remembers that clients asked for a package (a no-op when that was recorded less than a day ago). */
  add(name: string): void {
    const now = this.now();
    const before = this.known.get(name);
    if (before && now - before.lastRequested < RECORD_EVERY_MS) return;
    const doc: FollowDoc = { since: before?.since ?? new Date(now).toISOString(), lastRequested: now };
    this.known.set(name, doc);
    void this.store.put(key.follow(name), doc).catch(() => {
      // Not recorded: the next request tries again.
      if (this.known.get(name) !== doc) return;
      if (before) this.known.set(name, before);
      else this.known.delete(name);
    });
  }

  /** Stops following a package (the upstream says it is gone). */
  async unfollow(name: string): Promise<void> {
    if (!this.known.delete(name)) return;
    await this.store.del(key.follow(name));
  }

  /** Stops following the packages nobody asked for in followFor; returns their names. */
  async prune(now = this.now()): Promise<string[]> {
    const expired = [...this.known].filter(([, doc]) => this.isExpired(doc, now)).map(([name]) => name);
    for (const name of expired) await this.unfollow(name);
    return expired;
  }

  /** The followed packages (those past followFor are left out, even before prune removes them). */
  list(): string[] {
    const now = this.now();
    return [...this.known]
      .filter(([, doc]) => !this.isExpired(doc, now))
      .map(([name]) => name)
      .sort();
  }

  private isExpired(doc: FollowDoc, now: number): boolean {
    return this.options.followForMs > 0 && now - doc.lastRequested >= this.options.followForMs;
  }
}
