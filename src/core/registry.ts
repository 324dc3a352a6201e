// The mirror's use cases, shared by every face: metadata through the MetadataCache (freshness, single-flight,
// stale-if-error), archives through the ArchiveCache. Every release the mirror learns of is also stored under
// its own key, so that downloading it needs no further metadata request.
import type { ListQuery, PackageSummary, Release } from '../model/release.js';
import type { Upstream } from '../upstreams/upstream.js';
import type { ArchiveCache, ArchiveHandle } from './archive-cache.js';
import type { Cached, MetadataCache } from './metadata-cache.js';

export class Registry {
  constructor(
    private readonly upstream: Upstream,
    private readonly metadata: MetadataCache,
    private readonly archives: ArchiveCache,
  ) {}

  async latest(name: string): Promise<Cached<Release>> {
    return this.learn(name, await this.metadata.get(`latest:${name}`, () => this.upstream.latest(name)), (r) => [r]);
  }

  release(name: string, version: string): Promise<Cached<Release>> {
    return this.metadata.get(releaseKey(name, version), () => this.upstream.release(name, version));
  }

  async releasePage(name: string, page: number): Promise<Cached<Release[]>> {
    const cached = await this.metadata.get(`page:${name}:${page}`, () => this.upstream.releasePage(name, page));
    return this.learn(name, cached, (rs) => rs);
  }

  async allReleases(name: string): Promise<Cached<Release[]>> {
    return this.learn(name, await this.metadata.get(`releases:${name}`, () => this.upstream.allReleases(name)), (rs) => rs);
  }

  listPackages(query: ListQuery): Promise<Cached<PackageSummary[]>> {
    const key = `list:${JSON.stringify([query.page, query.category, query.tag, query.search])}`;
    return this.metadata.get(key, () => this.upstream.listPackages(query));
  }

  archive(name: string, version: string): Promise<ArchiveHandle> {
    return this.archives.open(`${name}@${version}`, async (consume) => {
      const { value: release } = await this.release(name, version);
      return this.upstream.download(release.archiveUrl, consume);
    });
  }

  private async learn<T>(name: string, cached: Cached<T>, releases: (value: T) => Release[]): Promise<Cached<T>> {
    if (cached.status === 'MISS') {
      await this.metadata.seed(releases(cached.value).map((r) => [releaseKey(name, r.version), r] as const));
    }
    return cached;
  }
}

function releaseKey(name: string, version: string): string {
  return `release:${name}:${version}`;
}
