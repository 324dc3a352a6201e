// Adapter for Serverless Registry Model upstreams (PROTOCOL.md §2): GitHub-releases style JSON, e.g.
// https://api.github.com/repos or another srm-mirror. Release lists are paged GitHub-style (per_page, Link).
import { MirrorError } from '../model/errors.js';
import type { PackageSummary, Release } from '../model/release.js';
import type { UpstreamBody, UpstreamHttp } from './http.js';
import { toRelease, type Upstream } from './upstream.js';

const PER_PAGE = 100;
const MAX_PAGES = 50;
/** Page size of releasePage(), the v3 API's. */
export const V3_PAGE_SIZE = 20;

export class SrmUpstream implements Upstream {
  constructor(
    private readonly base: string,
    private readonly http: UpstreamHttp,
  ) {}

  async latest(pkg: string): Promise<Release> {
    const { data } = await this.http.getJson(`${this.url(pkg)}/releases/latest`);
    return toRelease(data);
  }

  async release(pkg: string, version: string): Promise<Release> {
    const found = (await this.allReleases(pkg)).find((r) => r.version === version);
    if (!found) throw new MirrorError('not-found', `${pkg} has no release ${version} upstream`);
    return found;
  }

  async releasePage(pkg: string, page: number): Promise<Release[]> {
    const all = await this.allReleases(pkg);
    return page === -1 ? all : all.slice((page - 1) * V3_PAGE_SIZE, page * V3_PAGE_SIZE);
  }

  async allReleases(pkg: string): Promise<Release[]> {
    const all: Release[] = [];
    let next: string | undefined = `${this.url(pkg)}/releases?per_page=${PER_PAGE}`;
    for (let n = 0; next && n < MAX_PAGES; n++) {
      const { data, headers } = await this.http.getJson(next);
      if (!Array.isArray(data)) throw new MirrorError('upstream-failed', `upstream answered ${pkg}/releases with something other than a list`);
      all.push(...data.map(toRelease));
      next = nextLink(headers.link, this.base);
    }
    return all;
  }

  async listPackages(): Promise<PackageSummary[]> {
    throw new MirrorError('not-supported', 'an srm upstream has no package list');
  }

  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T> {
    return this.http.download(url, consume);
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
