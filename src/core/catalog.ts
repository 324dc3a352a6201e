// What the status page lists: the packages this mirror holds (cached from the upstream, hosted components, generic
// packages), searched and paged here, so that the page of a large mirror stays small. One view reads each record of
// the listing once: one scan of the archive index, of the hosted components and versions, and of the generic
// versions; then only the page it shows is looked at closer (a stat per shown archive, the description of each
// shown cached package).
import type { ArchiveRef } from '../model/release.js';
import type { ArchiveCache } from './archives/archive-cache.js';
import type { GenericInventory, GenericPackages } from './hosted/generic-packages.js';
import type { HostedComponents } from './hosted/hosted-components.js';
import type { Registry } from './registry.js';
import { newestFirst } from './versions.js';

export type Origin = 'cached' | 'hosted' | 'generic';

export interface CatalogVersion {
  readonly version: string;
  /** Bytes: the archive, or a generic version's files together. */
  readonly size: number;
  /** When it was cached (the archive's file) or published here (ms); undefined when unknown. */
  readonly at: number | undefined;
  /** A generic version's files. */
  readonly files?: number;
}

export interface CatalogEntry {
  /** The package name; `owner/name` for a generic package. */
  readonly name: string;
  readonly origin: Origin;
  /** A hosted component's owner, a generic package's owner. */
  readonly owner?: string;
  readonly description?: string;
  /** The newest versions (at most CatalogOptions.versionsShown), newest first. */
  readonly versions: readonly CatalogVersion[];
  /** All its versions. */
  readonly versionCount: number;
  /** Bytes of all its versions. */
  readonly bytes: number;
}

export interface CatalogPage {
  /** The search text the page was filtered with ('' for none). */
  readonly query: string;
  readonly page: number;
  readonly pages: number;
  readonly perPage: number;
  /** Packages matching the search (all pages). */
  readonly matching: number;
  /** Packages of each origin, searched or not. */
  readonly counts: Readonly<Record<Origin, number>>;
  readonly entries: readonly CatalogEntry[];
  /** The hosted figures of /-/status, counted by this very scan (so that the page need not scan again). */
  readonly inventories: {
    readonly components: { readonly packages: number; readonly versions: number; readonly bytes: number };
    readonly generic: GenericInventory;
  };
}

export interface CatalogOptions {
  /** Packages per page. */
  readonly perPage: number;
  /** Versions shown per package (newest first); the rest are counted. */
  readonly versionsShown: number;
}

export const CATALOG_DEFAULTS: CatalogOptions = { perPage: 100, versionsShown: 10 };

/** The longest search text taken (longer is cut). */
export const MAX_QUERY = 100;

/** A package as the scan found it, before the page it is on is looked at closer. */
interface Found {
  readonly name: string;
  readonly origin: Origin;
  readonly owner?: string;
  readonly description?: string;
  readonly versions: ReadonlyArray<{ readonly version: string; readonly size: number; readonly createdAt: string; readonly files?: number; readonly digest?: string }>;
}

export class Catalog {
  constructor(
    private readonly sources: {
      readonly archives: ArchiveCache;
      readonly components: HostedComponents;
      readonly generic: GenericPackages;
      readonly registry: Registry;
    },
    private readonly options: CatalogOptions = CATALOG_DEFAULTS,
  ) {}

  /** The packages whose name or owner contains `query` (case-insensitively), sorted by name, one page of them. */
  async page(query: string, page: number): Promise<CatalogPage> {
    const q = query.trim().slice(0, MAX_QUERY);
    const [cached, hosted, generic] = await Promise.all([this.cached(), this.sources.components.listing(), this.sources.generic.listing()]);
    const all: Found[] = [
      ...cached,
      ...hosted.map((h): Found => ({ name: h.name, origin: 'hosted', owner: h.owner, description: h.description, versions: h.versions })),
      ...generic.map(
        (g): Found => ({
          name: `${g.owner}/${g.name}`,
          origin: 'generic',
          owner: g.owner,
          versions: g.versions.map((v) => ({ version: v.version, size: v.bytes, createdAt: v.createdAt, files: v.files })).sort(newestFirst),
        }),
      ),
    ];
    const wanted = q.toLowerCase();
    const matching = all
      .filter((f) => !wanted || f.name.toLowerCase().includes(wanted) || (f.owner ?? '').toLowerCase().includes(wanted))
      .sort((a, b) => compareNames(a.name, b.name) || a.origin.localeCompare(b.origin));
    const { perPage } = this.options;
    const pages = Math.max(1, Math.ceil(matching.length / perPage));
    const current = Math.min(Math.max(1, Math.floor(page) || 1), pages);
    const shown = matching.slice((current - 1) * perPage, current * perPage);
    const count = (origin: Origin) => all.filter((f) => f.origin === origin).length;
    const versions = (list: readonly Found[]) => list.reduce((n, f) => n + f.versions.length, 0);
    const bytes = (list: readonly Found[]) => list.reduce((n, f) => n + sizeOf(f), 0);
    const hostedFound = all.filter((f) => f.origin === 'hosted');
    const genericFound = all.filter((f) => f.origin === 'generic');
    return {
      query: q,
      page: current,
      pages,
      perPage,
      matching: matching.length,
      counts: { cached: count('cached'), hosted: hostedFound.length, generic: genericFound.length },
      entries: await Promise.all(shown.map((f) => this.closer(f))),
      inventories: {
        components: { packages: hostedFound.length, versions: versions(hostedFound), bytes: bytes(hostedFound) },
        generic: { packages: genericFound.length, versions: versions(genericFound), files: genericFound.reduce((n, f) => n + f.versions.reduce((m, v) => m + (v.files ?? 0), 0), 0), bytes: bytes(genericFound) },
      },
    };
  }

  /** The packages with a stored archive, from one scan of the archive index. */
  private async cached(): Promise<Found[]> {
    const byName = new Map<string, Array<{ version: string; size: number; createdAt: string; digest: string }>>();
    for await (const [id, ref] of this.sources.archives.index.scan()) {
      const at = id.lastIndexOf('@'); // a package name has no "@"
      const name = id.slice(0, at);
      let list = byName.get(name);
      if (!list) byName.set(name, (list = []));
      list.push(versionOf(id.slice(at + 1), ref));
    }
    return [...byName].map(([name, list]) => ({ name, origin: 'cached', versions: list.sort(newestFirst) }));
  }

  /** A shown package: its newest versions with when they were cached, and a cached package's description. */
  private async closer(f: Found): Promise<CatalogEntry> {
    const newest = f.versions.slice(0, this.options.versionsShown);
    const { archives, registry } = this.sources;
    const versions = await Promise.all(
      newest.map(async (v): Promise<CatalogVersion> => ({
        version: v.version,
        size: v.size,
        at: v.digest !== undefined ? await archives.storedAt(v.digest) : timeOf(v.createdAt),
        ...(v.files === undefined ? {} : { files: v.files }),
      })),
    );
    let description = f.description;
    if (f.origin === 'cached' && newest[0]) {
      const d = (await registry.storedRelease(f.name, newest[0].version).catch(() => undefined))?.fields.description;
      description = typeof d === 'string' ? d : undefined;
    }
    return {
      name: f.name,
      origin: f.origin,
      ...(f.owner === undefined ? {} : { owner: f.owner }),
      ...(description ? { description } : {}),
      versions,
      versionCount: f.versions.length,
      bytes: sizeOf(f),
    };
  }
}

function versionOf(version: string, ref: ArchiveRef) {
  return { version, size: ref.size, createdAt: '', digest: ref.digest };
}

function sizeOf(f: Found): number {
  return f.versions.reduce((n, v) => n + v.size, 0);
}

function timeOf(iso: string): number | undefined {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? undefined : t;
}

function compareNames(a: string, b: string): number {
  const [x, y] = [a.toLowerCase(), b.toLowerCase()];
  return x < y ? -1 : x > y ? 1 : 0;
}
