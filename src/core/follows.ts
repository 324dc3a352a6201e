// The packages prefetch keeps warm: those named in the config, plus (by default) every package a client asked for
// through the mirror. Remembered in the metadata store; each package costs one write, the first time only.
import { key, prefix } from '../stores/keys.js';
import type { MetadataStore } from '../stores/metadata-store.js';

export class Follows {
  private readonly known = new Set<string>();

  private constructor(private readonly store: MetadataStore) {}

  static async open(store: MetadataStore): Promise<Follows> {
    const follows = new Follows(store);
    for await (const k of store.keys(prefix.follow)) follows.known.add(k.slice(prefix.follow.length));
    return follows;
  }

  /** Remembers a package clients asked for (a no-op when it is known already). */
  add(name: string): void {
    if (this.known.has(name)) return;
    this.known.add(name);
    void this.store.put(key.follow(name), { since: new Date().toISOString() }).catch(() => this.known.delete(name));
  }

  list(): string[] {
    return [...this.known].sort();
  }
}
