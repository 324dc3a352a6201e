// Adapter for Serverless Registry Model upstreams (PROTOCOL.md §2): GitHub-releases style JSON, e.g.
// https://api.github.com/repos or another srm-mirror. Release lists are paged GitHub-style (per_page, Link).
import { MirrorError } from '../model/errors.js';
import { V3_PAGE_SIZE, type PackageSummary, type Release } from '../model/release.js';
import type { UpstreamBody, UpstreamHttp, Validators } from './http.js';
import { list, parsed, toRelease, type Fetched, type Upstream } from './upstream.js';

const PER_PAGE = 100;
const MAX_PAGES = 50;

export class SrmUpstream implements Upstream {
  constructor(
    private readonly base: string,
    private readonly http: UpstreamHttp,
  ) {}

  async latest(pkg: string, since?: Validators): Promise<Fetched<Release>> {
    return parsed(await this.http.getJson(`${this.url(pkg)}/releases/latest`, since), toRelease);
  }

  async release(pkg: string, version: string): Promise<Fetched<Release>> {
    const { all, truncated } = await this.releases(pkg);
    const found = all.find((r) => r.version === version);
    // Not among the releases read is a 404 only when they were all of them.
    if (!found && truncated) throw new MirrorError('upstream-failed', `${pkg} has more releases upstream than the mirror reads (${PER_PAGE * MAX_PAGES}); ${version} is not among them`);
    if (!found) throw new MirrorError('not-found', `${pkg} has no release ${version} upstream`);
    return { value: found };
  }

  async releasePage(pkg: string, page: number): Promise<Fetched<Release[]>> {
    const { all, truncated } = await this.releases(pkg);
    // A page within the releases read is whole even when the list was cut.
    const whole = !truncated || (page !== -1 && page * V3_PAGE_SIZE <= all.length);
    return { value: page === -1 ? all : all.slice((page - 1) * V3_PAGE_SIZE, page * V3_PAGE_SIZE), truncated: !whole };
  }

  async allReleases(pkg: string): Promise<Fetched<Release[]>> {
    const { all, truncated } = await this.releases(pkg);
    return { value: all, truncated };
  }

  async listPackages(): Promise<Fetched<PackageSummary[]>> {
    throw new MirrorError('not-supported', 'an srm upstream has no package list');
  }

  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T> {
    return this.http.download(url, consume);
  }

  /** Every release, following the Link header's rel="next" pages; truncated when MAX_PAGES left some unread. */
  private async releases(pkg: string): Promise<{ all: Release[]; truncated: boolean }> {
    const all: Release[] = [];
    let next: string | undefined = `${this.url(pkg)}/releases?per_page=${PER_PAGE}`;
    for (let n = 0; next && n < MAX_PAGES; n++) {
      const answer = await this.http.getJson(next);
      if (answer.notModified) break; // not asked for: no validators were sent
      all.push(...list(answer.data).map(toRelease));
      next = nextLink(answer.headers.link, this.base);
    }
    return { all, truncated: next !== undefined };
  }

  private url(pkg: string): string {
    return `${this.base}/${pkg.split('/').map(encodeURIComponent).join('/')}`;
  }
}

/** The rel="next" target of a Link header, if it stays on the upstream's origin. */
function nextLink(link: string | string[] | undefined, base: string): string | undefined {
  const value = Array.isArray(link) ? link.join(',') : link;
  const match = value ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(value) : null;
  if (!match?.[1]) return undefined;
  const next = new URL(match[1], base);
  return next.origin === new URL(base).origin ? next.href : undefined;
}
