// Adapter for the Serverless Registry v3 API (PROTOCOL.md §1): JSON answers in a {request_id, body} envelope.
import { MirrorError } from '../model/errors.js';
import type { ListQuery, PackageSummary, Release } from '../model/release.js';
import type { UpstreamBody, UpstreamHttp, Validators } from './http.js';
import { isRecord, list, parsed, toRelease, type Fetched, type Upstream } from './upstream.js';

/** How many detail pages allReleases() reads at most (the registry pages by about 20). */
const MAX_PAGES = 100;

export class ServerlessV3Upstream implements Upstream {
  constructor(
    private readonly base: string,
    private readonly http: UpstreamHttp,
  ) {}

  latest(name: string, since?: Validators): Promise<Fetched<Release>> {
    return this.get(`/packages/${encodeURIComponent(name)}/release/latest`, since, toRelease);
  }

  release(name: string, version: string, since?: Validators): Promise<Fetched<Release>> {
    return this.get(`/packages/${encodeURIComponent(name)}/release/tags/${encodeURIComponent(version)}`, since, toRelease);
  }

  releasePage(name: string, page: number, since?: Validators): Promise<Fetched<Release[]>> {
    return this.get(`/packages/${encodeURIComponent(name)}/release?page=${page}`, since, (body) => list(body).map(toRelease));
  }

  async allReleases(name: string): Promise<Fetched<Release[]>> {
    const all: Release[] = [];
    let pageSize = 0;
    for (let page = 1; page <= MAX_PAGES; page++) {
      const fetched = await this.releasePage(name, page);
      const releases = fetched.notModified ? [] : fetched.value;
      pageSize ||= releases.length;
      all.push(...releases);
      if (releases.length === 0 || releases.length < pageSize) return { value: all };
    }
    return { value: all, truncated: true }; // the last page read was full: there may be more
  }

  listPackages(query: ListQuery, since?: Validators): Promise<Fetched<PackageSummary[]>> {
    const params = new URLSearchParams({ page: String(query.page) });
    for (const key of ['category', 'tag', 'search'] as const) {
      const value = query[key];
      if (value !== undefined) params.set(key, value);
    }
    return this.get(`/packages/releases?${params}`, since, (body) => list(body).filter(isRecord));
  }

  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T> {
    return this.http.download(url, consume);
  }

  /** GETs base + path and parses the envelope's body. */
  private async get<T>(path: string, since: Validators | undefined, parse: (body: unknown) => T): Promise<Fetched<T>> {
    return parsed(await this.http.getJson(this.base + path, since), (data) => {
      if (!isRecord(data) || !('body' in data)) {
        throw new MirrorError('upstream-failed', `upstream answered ${path} without the {request_id, body} envelope`);
      }
      return parse(data.body);
    });
  }
}
