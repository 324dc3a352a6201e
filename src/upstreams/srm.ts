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
    const found = (await this.releases(pkg)).find((r) => r.version === version);
    if (!found) throw new MirrorError('not-found', `${pkg} has no release ${version} upstream`);
    return { value: found };
  }

  async releasePage(pkg: string, page: number): Promise<Fetched<Release[]>> {
    const all = await this.releases(pkg);
    return { value: page === -1 ? all : all.slice((page - 1) * V3_PAGE_SIZE, page * V3_PAGE_SIZE) };
  }

  async allReleases(pkg: string): Promise<Fetched<Release[]>> {
    return { value: await this.releases(pkg) };
  }

  async listPackages(): Promise<Fetched<PackageSummary[]>> {
    throw new MirrorError('not-supported', 'an srm upstream has no package list');
  }

  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T> {
    return this.http.download(url, consume);
  }

  /** Every release, following the Link header's rel="next" pages. */
  private async releases(pkg: string): Promise<Release[]> {
    const all: Release[] = [];
    let next: string | undefined = `${this.url(pkg)}/releases?per_page=${PER_PAGE}`;
    for (let n = 0; next && n < MAX_PAGES; n++) {
      const answer = await this.http.getJson(next);
      if (answer.notModified) break; // not asked for: no validators were sent
      all.push(...list(answer.data).map(toRelease));
      next = nextLink(answer.headers.link, this.base);
    }
    return all;
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
