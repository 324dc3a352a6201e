// Which archive each package version's zipball is: `name@version` → (digest, size), with the reverse index
// digest → versions beside it, so that deleting, evicting or auditing an archive never scans every version, and
// when each archive was last served (for the quota). The keys themselves are spelled in stores/keys.ts.
import type { ArchiveRef } from '../../model/release.js';
import { key, prefix } from '../../stores/keys.js';
import type { MetadataStore } from '../../stores/metadata-store.js';

export class ArchiveIndex {
  /** Entries being written: visible from the moment put() is called, so a fill's archive is found at once. */
  private readonly writing = new Map<string, ArchiveRef>();

  constructor(private readonly db: MetadataStore) {}

  async get(id: string): Promise<ArchiveRef | undefined> {
    return this.writing.get(id) ?? (await this.db.get<ArchiveRef>(key.archive(id)));
  }

  /** Points a version at an archive (both directions); get() sees it before the returned promise settles. */
  async put(id: string, ref: ArchiveRef): Promise<void> {
    this.writing.set(id, ref);
    try {
      const old = await this.db.get<ArchiveRef>(key.archive(id));
      await this.db.putMany([
        [key.archive(id), ref],
        [key.digest(ref.digest, id), 1],
      ]);
      if (old && old.digest !== ref.digest) await this.db.del(key.digest(old.digest, id));
    } finally {
      if (this.writing.get(id) === ref) this.writing.delete(id);
    }
  }

  /** Forgets a version's archive; resolves with what it pointed at. */
  async remove(id: string): Promise<ArchiveRef | undefined> {
    this.writing.delete(id);
    const ref = await this.db.get<ArchiveRef>(key.archive(id));
    if (!ref) return undefined;
    await this.db.del(key.archive(id));
    await this.db.del(key.digest(ref.digest, id));
    return ref;
  }

  /**
   * The versions pointing at an archive. A reverse entry is believed only when its version still points here, so
   * one left behind by a crash between the two writes of put() or remove() is harmless (and is cleaned up).
   */
  async versionsOf(digest: string): Promise<string[]> {
    const ids: string[] = [];
    const start = prefix.digest(digest);
    for await (const k of this.db.keys(start)) {
      const id = k.slice(start.length);
      if ((await this.get(id))?.digest === digest) ids.push(id);
      else await this.db.del(k);
    }
    return ids;
  }

  /** Every version with an archive, with it. */
  async *entries(): AsyncIterable<[id: string, ref: ArchiveRef]> {
    const start = prefix.archive();
    for await (const k of this.db.keys(start)) {
      const ref = await this.db.get<ArchiveRef>(k);
      if (ref) yield [k.slice(start.length), ref];
    }
  }

  /** Every version with an archive, with it, in one scan of the index (a listing: entries() reads each record apart). */
  async *scan(): AsyncIterable<[id: string, ref: ArchiveRef]> {
    const start = prefix.archive();
    for await (const [k, ref] of this.db.entries<ArchiveRef>(start)) yield [k.slice(start.length), ref];
  }

  /** Versions of a package that have an archive. */
  async versions(name: string): Promise<Array<[version: string, ref: ArchiveRef]>> {
    const out: Array<[string, ArchiveRef]> = [];
    const start = prefix.archive(name);
    for await (const k of this.db.keys(start)) {
      const ref = await this.db.get<ArchiveRef>(k);
      if (ref) out.push([k.slice(start.length), ref]);
    }
    return out;
  }

  /** Names of the packages with at least one archive. */
  async packages(): Promise<string[]> {
    const names = new Set<string>();
    const start = prefix.archive();
    for await (const k of this.db.keys(start)) names.add(k.slice(start.length, k.lastIndexOf('@')));
    return [...names];
  }

  lastAccess(digest: string): Promise<number | undefined> {
    return this.db.get<number>(key.access(digest));
  }

  async saveAccess(times: ReadonlyArray<readonly [digest: string, at: number]>): Promise<void> {
    if (times.length) await this.db.putMany(times.map(([digest, at]) => [key.access(digest), at] as const));
  }

  forgetAccess(digest: string): Promise<void> {
    return this.db.del(key.access(digest));
  }
}
