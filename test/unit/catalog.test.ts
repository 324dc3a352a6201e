// The status page's listing: one scan of each source per view, and closer looks (a stat, a description) only for
// what the page shows, however large the mirror.
import { describe, expect, it, vi } from 'vitest';
import type { ArchiveCache } from '../../src/core/archives/archive-cache.js';
import { Catalog } from '../../src/core/catalog.js';
import type { GenericListing, GenericPackages } from '../../src/core/hosted/generic-packages.js';
import type { HostedComponents, HostedListing } from '../../src/core/hosted/hosted-components.js';
import type { Registry } from '../../src/core/registry.js';

function sources(cachedNames: number, versionsEach: number) {
  const scans = { archive: 0 };
  const archives = {
    index: {
      async *scan() {
        scans.archive++;
        for (let p = 0; p < cachedNames; p++) {
          for (let v = 0; v < versionsEach; v++) yield [`pkg-${String(p).padStart(5, '0')}@1.${v}.0`, { digest: `${p}-${v}`, size: 10 }] as [string, { digest: string; size: number }];
        }
      },
    },
    storedAt: vi.fn(async () => Date.parse('2026-11-21T10:00:00Z')),
  };
  const hosted: HostedListing[] = [{ name: 'corp-tool', owner: 'alice', description: 'ours', versions: [{ version: '2.0.0', size: 100, createdAt: '2026-11-20T00:00:00Z' }, { version: '1.0.0', size: 50, createdAt: '2026-11-19T00:00:00Z' }] }];
  const generic: GenericListing[] = [{ owner: 'bob', name: 'tool', versions: [{ version: '1.0', createdAt: '2026-11-18T00:00:00Z', files: 2, bytes: 70 }] }];
  const components = { listing: vi.fn(async () => hosted) };
  const packages = { listing: vi.fn(async () => generic) };
  const registry = { storedRelease: vi.fn(async (name: string) => ({ version: '', createdAt: '', body: '', archiveUrl: '', fields: { description: `about ${name}` } })) };
  const catalog = new Catalog(
    {
      archives: archives as unknown as ArchiveCache,
      components: components as unknown as HostedComponents,
      generic: packages as unknown as GenericPackages,
      registry: registry as unknown as Registry,
    },
    { perPage: 50, versionsShown: 3 },
  );
  return { catalog, scans, archives, components, packages, registry };
}

describe('Catalog', () => {
  it('reads each source once per view, and looks closer only at the page it shows', async () => {
    const s = sources(5000, 6);
    const page = await s.catalog.page('', 2);
    expect([s.scans.archive, s.components.listing.mock.calls.length, s.packages.listing.mock.calls.length]).toEqual([1, 1, 1]);
    expect(page.entries).toHaveLength(50);
    expect([page.matching, page.pages, page.page]).toEqual([5002, 101, 2]);
    expect(s.archives.storedAt).toHaveBeenCalledTimes(50 * 3); // the 3 newest versions of each shown package
    expect(s.registry.storedRelease).toHaveBeenCalledTimes(50); // the description of each shown cached package
    const first = page.entries[0]!;
    expect(first).toMatchObject({ origin: 'cached', description: `about ${first.name}`, versionCount: 6, bytes: 60 });
    expect(first.versions.map((v) => v.version)).toEqual(['1.5.0', '1.4.0', '1.3.0']);
  });

  it('filters by name and owner, case-insensitively, across origins, and counts the hosted figures from the same scan', async () => {
    const s = sources(3, 1);
    const byOwner = await s.catalog.page('  ALICE ', 1);
    expect(byOwner.query).toBe('ALICE');
    expect(byOwner.entries.map((e) => [e.name, e.origin, e.owner])).toEqual([['corp-tool', 'hosted', 'alice']]);
    expect(byOwner.entries[0]!.versions.map((v) => [v.version, v.at])).toEqual([
      ['2.0.0', Date.parse('2026-11-20T00:00:00Z')],
      ['1.0.0', Date.parse('2026-11-19T00:00:00Z')],
    ]);
    const all = await s.catalog.page('', 7);
    expect(all.page).toBe(1); // past the end: the last page there is
    expect(all.entries.map((e) => e.name)).toEqual(['bob/tool', 'corp-tool', 'pkg-00000', 'pkg-00001', 'pkg-00002']);
    expect(all.counts).toEqual({ cached: 3, hosted: 1, generic: 1 });
    expect(all.inventories).toEqual({ components: { packages: 1, versions: 2, bytes: 150 }, generic: { packages: 1, versions: 1, files: 2, bytes: 70 } });
    expect((await s.catalog.page('x'.repeat(500), 1)).query).toHaveLength(100);
  });
});
