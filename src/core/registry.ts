// The mirror's use cases, shared by every face: metadata through the MetadataCache (freshness, single-flight,
// stale-if-error), archives through the ArchiveCache. Every release the mirror learns of is also stored under
// its own key, so that downloading it needs no further metadata request.
//
// Hosted names (core/hosted) are answered from hosted content only, before any of this: never from the cache, never
// from the upstream. Package lists show the hosted packages a query matches first, then the upstream's.
//
// Offline (configured, or the upstream unreachable with nothing cached for the question) the answers come from
// what the mirror has: only versions whose archives are cached are listed, and `latest` is the best of those, so
// an offline answer never points at an archive the mirror cannot serve.
import { MirrorError } from '../model/errors.js';
import { releaseDigests, V3_PAGE_SIZE, type ArchiveRef, type ListQuery, type PackageSummary, type Release, type Adoption, type Standing } from '../model/release.js';
import { key, prefix } from '../stores/keys.js';
import type { Validators } from '../upstreams/http.js';
import type { Fetched, Upstream } from '../upstreams/upstream.js';
import type { ArchiveCache, ArchiveHandle } from './archives/archive-cache.js';
import type { HostedComponents } from './hosted/hosted-components.js';
import type { Cached, MetadataCache } from './metadata-cache.js';
import { newestFirst, pickLatest } from './versions.js';

/** After a publish or delete through the mirror, its package's metadata is revalidated on every read this long. */
const RECENT_WRITE_MS = 5 * 60_000;

export interface RegistryOptions {
  readonly offline: boolean;
  /** Ask the upstream on every read (a prefetch refresh), instead of trusting copies younger than max age. */
  readonly alwaysRevalidate?: boolean;
  /** Told of each package a read found, e.g. to follow it. */
  readonly onRequested?: (name: string) => void;
  /** The components this mirror hosts: their names never reach the upstream. */
  readonly hosted?: HostedComponents;
  readonly now?: () => number;
}

export class Registry {
  /** Packages written through the mirror lately, with the time until which their reads always revalidate. */
  private readonly recentWrites = new Map<string, number>();
  private readonly now: () => number;
  readonly offline: boolean;

  constructor(
    private readonly upstream: Upstream,
    private readonly metadata: MetadataCache,
    private readonly archives: ArchiveCache,
    private readonly options: RegistryOptions,
  ) {
    this.offline = options.offline;
    this.now = options.now ?? Date.now;
  }

  /** The same registry over another upstream (e.g. one whose requests queue behind live ones) with other options. */
  with(upstream: Upstream, options: Partial<RegistryOptions>): Registry {
    return new Registry(upstream, this.metadata, this.archives, { ...this.options, ...options });
  }

  latest(name: string): Promise<Cached<Release>> {
    return this.read(
      key.latest(name),
      { name, learn: true, what: name, hosted: async (h) => pickLatest(await h.releases(name)) },
      (since) => this.upstream.latest(name, since),
      async () => pickLatest(await this.cachedReleases(name)),
    );
  }

  release(name: string, version: string): Promise<Cached<Release>> {
    return this.read(
      key.release(name, version),
      { name, what: `${name}@${version}`, hosted: (h) => h.release(name, version) },
      (since) => this.upstream.release(name, version, since),
      async () => (await this.cachedReleases(name)).find((r) => r.version === version),
    );
  }

  releasePage(name: string, page: number): Promise<Cached<Release[]>> {
    return this.read(
      key.page(name, page),
      { name, learn: true, what: `page ${page} of ${name}`, hosted: async (h) => pageOf(await h.releases(name), page) },
      (since) => this.upstream.releasePage(name, page, since),
      async () => pageOf(await this.cachedReleases(name), page),
    );
  }

  /**
   * latest, release and releasePage, when their answer is a HIT held in memory: at once, without an await (the hot
   * path); undefined when read is to decide (hosted, offline, not in memory, not fresh), where the caller awaits those.
   */
  latestNow(name: string): Cached<Release> | undefined {
    return this.readNow(key.latest(name), name);
  }

  releaseNow(name: string, version: string): Cached<Release> | undefined {
    return this.readNow(key.release(name, version), name);
  }

  releasePageNow(name: string, page: number): Cached<Release[]> | undefined {
    return this.readNow(key.page(name, page), name);
  }

  allReleases(name: string): Promise<Cached<Release[]>> {
    return this.read(
      key.releases(name),
      { name, learn: true, what: `the releases of ${name}`, hosted: (h) => h.releases(name) },
      (since) => this.upstream.allReleases(name, since),
      () => this.cachedReleases(name),
    );
  }

  /**
   * A page of the package list: the hosted packages the query matches first (on its first page; only when the caller
   * may read them, `withHosted`), then the upstream's, less any entry whose name is hosted here (its reads are
   * answered from hosted content, never by the upstream: listing the upstream's package under it would mislead).
   */
  async listPackages(query: ListQuery, { withHosted = true }: { withHosted?: boolean } = {}): Promise<Cached<PackageSummary[]>> {
    const h = this.options.hosted;
    const firstPage = query.page === 1 || query.page === -1;
    const hosted = withHosted && firstPage ? ((await h?.summaries()) ?? []).filter((p) => matches(p, query)) : [];
    let listed: Cached<PackageSummary[]>;
    try {
      listed = await this.read(key.list(query), { what: 'that package list' }, (since) => this.upstream.listPackages(query, since), async () =>
        pageOf(await this.knownPackages(query), query.page),
      );
    } catch (err) {
      if (hosted.length === 0) throw err;
      return { value: hosted, status: 'HOSTED', age: 0 };
    }
    if (!h) return listed;
    const upstream = listed.value.filter((p) => typeof p.name !== 'string' || !h.isHosted(p.name));
    return upstream.length === listed.value.length && hosted.length === 0 ? listed : { ...listed, value: [...hosted, ...upstream] };
  }

  /** How much the mirror knows: packages and versions with metadata. */
  async inventory(): Promise<{ packages: number; versions: number }> {
    const versions = await this.metadata.keys(prefix.release());
    const names = new Set(versions.map((k) => k.slice(prefix.release().length, k.lastIndexOf(':'))));
    for (const k of await this.metadata.keys(prefix.latest)) names.add(k.slice(prefix.latest.length));
    return { packages: names.size, versions: versions.length };
  }

  /** The release metadata the mirror holds for a version, whatever its age; never asks the upstream (an export). */
  storedRelease(name: string, version: string): Promise<Release | undefined> {
    return this.metadata.peek<Release>(key.release(name, version));
  }

  /**
   * A publish went through: the package's metadata (and every package list) is made stale, forgotten 404s
   * included, and revalidated on every read for a while, so the new version shows as soon as the upstream lists it.
   */
  async published(name: string | undefined): Promise<void> {
    // Reads under way began before the publish: their answers must not be stored as fresh.
    await this.metadata.fence(name === undefined ? { prefixes: [prefix.list] } : this.packageDocuments(name, [prefix.list]));
    const keys = await this.metadata.keys(prefix.list);
    if (name !== undefined) {
      this.recentWrites.set(name, this.now() + RECENT_WRITE_MS);
      keys.push(key.latest(name), key.releases(name), ...(await this.metadata.keys(prefix.page(name))), ...(await this.metadata.keys(prefix.release(name))));
    }
    for (const k of keys) await this.metadata.invalidate(k);
  }

  /** A delete went through: the version leaves every cached answer at once, and its archive is unlinked. */
  async deleted(name: string, version: string): Promise<void> {
    // Reads under way began before the delete: their answers (and the releases they learn) must not be stored.
    await this.metadata.fence(this.packageDocuments(name));
    this.recentWrites.set(name, this.now() + RECENT_WRITE_MS);
    const without = (releases: Release[]) => releases.filter((r) => r.version !== version);
    for (const k of [key.releases(name), ...(await this.metadata.keys(prefix.page(name)))]) await this.metadata.update(k, without);
    if ((await this.metadata.peek<Release>(key.latest(name)))?.version === version) await this.metadata.delete(key.latest(name));
    await this.metadata.delete(key.release(name, version));
    await this.archives.unlink(`${name}@${version}`);
  }

  /**
   * How a cached version brought from elsewhere stands against this mirror: a conflict when the name is hosted here,
   * when the mirror's archive of it is other bytes, or when the release metadata it has states another sha256.
   */
  async standing(name: string, version: string, archive: ArchiveRef): Promise<Standing> {
    const id = `${name}@${version}`;
    if (this.options.hosted?.isHosted(name)) return { conflict: `${name} is hosted on this mirror, not cached` };
    const ref = await this.archives.index.get(id);
    if (ref && ref.digest !== archive.digest) return { conflict: `the mirror has ${id} as sha256 ${ref.digest}` };
    const known = await this.metadata.peek<Release>(key.release(name, version));
    const stated = known ? releaseDigests(known).find((d) => d.toLowerCase() !== archive.digest) : undefined;
    if (stated) return { conflict: `the mirror's release metadata of ${id} states sha256 ${stated}` };
    return ref && known && (await this.archives.hasBlob(ref)) ? 'unchanged' : 'new';
  }

  /**
   * Adds a cached version brought from elsewhere, once its archive is stored (archives.receiveBlob): its release
   * document first (kept if the mirror has one; `fetchedAt` says when the source last confirmed it), then the index
   * entry that makes it servable, so it is never listed without its metadata. Checked again here, at the write.
   */
  async adoptCached(name: string, version: string, release: Release, archive: ArchiveRef, fetchedAt: number): Promise<Adoption> {
    const standing = await this.standing(name, version, archive);
    if (standing !== 'new') return standing;
    if (!(await this.archives.hasBlob(archive))) return 'missing';
    await this.metadata.seed(key.release(name, version), release, fetchedAt);
    await this.archives.index.put(`${name}@${version}`, archive);
    return 'added';
  }

  /** Whether the mirror knows a cached version (its archive or its release metadata). */
  async hasCached(name: string, version: string): Promise<boolean> {
    return (await this.archives.index.get(`${name}@${version}`)) !== undefined || (await this.metadata.peek(key.release(name, version))) !== undefined;
  }

  async archive(name: string, version: string): Promise<ArchiveHandle> {
    if (this.options.hosted?.isHosted(name)) return this.options.hosted.archive(name, version);
    const id = `${name}@${version}`;
    const handle = this.offline
      ? await this.archives.open(id, undefined)
      : await this.archives.open(id, async (consume) => {
          const { value: release } = await this.release(name, version);
          return this.upstream.download(release.archiveUrl, (res) => consume({ ...res, statedDigests: releaseDigests(release) }));
        });
    this.options.onRequested?.(name);
    return handle;
  }

  /**
   * One read: from the cache (which asks the upstream when its copy is old), or offline from what the mirror has.
   * `about` names the package read (if one), says whether the releases of a fresh answer are stored under their own
   * keys too (`learn`), what to call it in a 404, and how to answer it when the package is hosted here.
   */
  private async read<T extends Release | Release[] | PackageSummary[]>(
    cacheKey: string,
    about: { name?: string; learn?: boolean; what: string; hosted?: (hosted: HostedComponents) => Promise<T | undefined> },
    fetch: (since?: Validators) => Promise<Fetched<T>>,
    local: () => Promise<T | undefined>,
  ): Promise<Cached<T>> {
    const { hosted } = this.options;
    if (about.name !== undefined && about.hosted && hosted?.isHosted(about.name)) {
      const value = await about.hosted(hosted);
      if (value === undefined) throw new MirrorError('not-found', `${about.what} is not published on this mirror (${about.name} is hosted here)`);
      return { value, status: 'HOSTED', age: 0 };
    }
    if (this.offline) {
      const value = await local();
      if (value === undefined) throw new MirrorError('not-found', `the mirror is offline and does not have ${about.what}`);
      return { value, status: 'OFFLINE', age: 0 };
    }
    const { name } = about;
    const cached = await this.metadata.get(cacheKey, fetch, {
      maxAgeMs: this.maxAgeFor(name),
      // A prefetch refresh waits for the upstream's answer; a client with a stale copy at hand waits only so long.
      wait: this.options.alwaysRevalidate,
      learn:
        name !== undefined && about.learn
          ? (value) => ((Array.isArray(value) ? value : [value]) as Release[]).map((r) => [key.release(name, r.version), r] as const)
          : undefined,
      fallback: async (upstreamError) => {
        // Local knowledge stands in only when it has something: an empty list would pass for "there are none".
        const value = await local().catch(() => undefined);
        if (value === undefined || (Array.isArray(value) && value.length === 0)) throw upstreamError;
        return { value, status: 'STALE', age: 0 };
      },
    });
    if (name !== undefined) this.options.onRequested?.(name);
    return cached;
  }

  /** read's HIT from memory (see latestNow) for a package's document: read's own checks, in its order, without the awaits. */
  private readNow<T>(cacheKey: string, name: string): Cached<T> | undefined {
    if (this.options.hosted?.isHosted(name) || this.offline) return undefined;
    const cached = this.metadata.getNow<T>(cacheKey, this.maxAgeFor(name));
    if (cached) this.options.onRequested?.(name);
    return cached;
  }

  /** The max age a read of the package uses: 0 (always ask the upstream) for a prefetch refresh and after a write through the mirror. */
  private maxAgeFor(name: string | undefined): number | undefined {
    const revalidate = this.options.alwaysRevalidate || (name !== undefined && (this.recentWrites.get(name) ?? 0) > this.now());
    return revalidate ? 0 : undefined;
  }

  /** Every document about a package (plus `more` prefixes), for MetadataCache.fence. */
  private packageDocuments(name: string, more: string[] = []): { keys: string[]; prefixes: string[] } {
    return { keys: [key.latest(name), key.releases(name)], prefixes: [prefix.page(name), prefix.release(name), ...more] };
  }

  /** The releases of a package whose archives are cached, newest first. */
  private async cachedReleases(name: string): Promise<Release[]> {
    const releases: Release[] = [];
    for (const version of await this.archives.versions(name)) {
      const known = await this.metadata.peek<Release>(key.release(name, version));
      releases.push(known ?? { version, createdAt: '', body: '', archiveUrl: '', fields: {} });
    }
    return releases.sort(newestFirst);
  }

  /** Packages the mirror knows (from package lists it saw, and from cached archives), filtered like the upstream. */
  private async knownPackages(query: ListQuery): Promise<PackageSummary[]> {
    const byName = new Map<string, PackageSummary>();
    for (const listKey of await this.metadata.keys(prefix.list)) {
      for (const p of (await this.metadata.peek<PackageSummary[]>(listKey)) ?? []) {
        if (typeof p.name === 'string') byName.set(p.name, p);
      }
    }
    for (const name of await this.archives.packages()) if (!byName.has(name)) byName.set(name, { name });
    return [...byName.values()].filter((p) => matches(p, query));
  }
}

/** Whether a package list entry matches a query's search text, tag and category, as the upstream filters. */
function matches(p: PackageSummary, query: ListQuery): boolean {
  const has = (value: unknown, wanted: string) => String(value ?? '').toLowerCase().includes(wanted.toLowerCase());
  const category = p.category as { id?: unknown; name?: unknown } | undefined;
  return (
    (!query.search || has(p.name, query.search) || has(p.description, query.search)) &&
    (!query.tag || (Array.isArray(p.tags) && p.tags.includes(query.tag))) &&
    (!query.category || String(category?.id) === query.category || category?.name === query.category)
  );
}

function pageOf<T>(items: T[], page: number): T[] {
  return page === -1 ? items : items.slice((page - 1) * V3_PAGE_SIZE, page * V3_PAGE_SIZE);
}
