// Adapter for the Serverless Registry v3 API (PROTOCOL.md §1): JSON answers in a {request_id, body} envelope.
import { MirrorError } from '../model/errors.js';
import type { ListQuery, PackageSummary, Release } from '../model/release.js';
import type { UpstreamBody, UpstreamHttp } from './http.js';
import { isRecord, toRelease, type Upstream } from './upstream.js';

/** How many detail pages allReleases() reads at most (the registry pages by about 20). */
const MAX_PAGES = 100;

export class ServerlessV3Upstream implements Upstream {
  constructor(
    private readonly base: string,
    private readonly http: UpstreamHttp,
  ) {}

  async latest(name: string): Promise<Release> {
    return toRelease(await this.body(`/packages/${encodeURIComponent(name)}/release/latest`));
  }

  async release(name: string, version: string): Promise<Release> {
    const path = `/packages/${encodeURIComponent(name)}/release/tags/${encodeURIComponent(version)}`;
    return toRelease(await this.body(path));
  }

  async releasePage(name: string, page: number): Promise<Release[]> {
    return list(await this.body(`/packages/${encodeURIComponent(name)}/release?page=${page}`)).map(toRelease);
  }

  async allReleases(name: string): Promise<Release[]> {
    const all: Release[] = [];
    let pageSize = 0;
    for (let page = 1; page <= MAX_PAGES; page++) {
      const releases = await this.releasePage(name, page);
      pageSize ||= releases.length;
      all.push(...releases);
      if (releases.length === 0 || releases.length < pageSize) break;
    }
    return all;
  }

  async listPackages(query: ListQuery): Promise<PackageSummary[]> {
    const params = new URLSearchParams({ page: String(query.page) });
    for (const key of ['category', 'tag', 'search'] as const) {
      const value = query[key];
      if (value !== undefined) params.set(key, value);
    }
    return list(await this.body(`/packages/releases?${params}`)).filter(isRecord);
  }

  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T> {
    return this.http.download(url, consume);
  }

  private async body(path: string): Promise<unknown> {
    const { data } = await this.http.getJson(this.base + path);
    if (!isRecord(data) || !('body' in data)) {
      throw new MirrorError('upstream-failed', `upstream answered ${path} without the {request_id, body} envelope`);
    }
    return data.body;
  }
}

function list(body: unknown): unknown[] {
  if (Array.isArray(body)) return body;
  throw new MirrorError('upstream-failed', 'upstream answered with something other than a list');
}
