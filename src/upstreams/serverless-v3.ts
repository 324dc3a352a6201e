// Adapter for the Serverless Registry v3 API (PROTOCOL.md §1): JSON answers in a {request_id, body} envelope.
//
// Two bases, as the `s` client (3.1.7 and later) has them: the registry commands (`s registry list`, `detail`, the
// private list, publish, delete) go to `commands` (upstream.commandsUrl), while component loading (release/latest,
// release/tags/{v}), downloads and login (user/check, user/token) go to `base` (upstream.url). With the public
// default these differ (docs/corporate-network.md "Deploying inside a corporate network"); for any other upstream
// they are the same.
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
    /** Where the list and the release pages (`s registry list`, `s registry detail`) are read. */
    private readonly commands: string = base,
  ) {}

  latest(name: string, since?: Validators): Promise<Fetched<Release>> {
    return this.get(`/packages/${encodeURIComponent(name)}/release/latest`, since, toRelease);
  }

  release(name: string, version: string, since?: Validators): Promise<Fetched<Release>> {
    return this.get(`/packages/${encodeURIComponent(name)}/release/tags/${encodeURIComponent(version)}`, since, toRelease);
  }

  releasePage(name: string, page: number, since?: Validators): Promise<Fetched<Release[]>> {
    return this.get(`/packages/${encodeURIComponent(name)}/release?page=${page}`, since, (body) => list(body).map(toRelease), this.commands);
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
    return this.get(`/packages/releases?${params}`, since, (body) => list(body).filter(isRecord), this.commands);
  }

  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T> {
    return this.http.download(url, consume);
  }

  /** GETs base + path and parses the envelope's body. */
  private async get<T>(path: string, since: Validators | undefined, parse: (body: unknown) => T, base = this.base): Promise<Fetched<T>> {
    return parsed(await this.http.getJson(base + path, since), (data) => {
      if (!isRecord(data) || !('body' in data)) {
        throw new MirrorError('upstream-failed', `upstream answered ${path} without the {request_id, body} envelope`);
      }
      return parse(data.body);
    });
  }
}

/**
 * Whether a v3 request (its path below the base) is one of the registry commands, which `s` 3.1.7+ sends to its
 * commands host: the list (GET packages/releases), publish (POST packages/releases), the private list (GET
 * package/user), detail (GET packages/{name}/release) and delete (DELETE packages/{name}/release/tags/{v}).
 * Everything else (release/latest, release/tags/{v}, zipball, user/check, user/token) goes to the registry itself.
 */
export function isRegistryCommand(method: string, path: string): boolean {
  const read = method === 'GET' || method === 'HEAD';
  if (path === '/packages/releases') return read || method === 'POST';
  if (path === '/package/user') return read;
  if (/^\/packages\/[^/]+\/release$/.test(path)) return read;
  return method === 'DELETE' && /^\/packages\/[^/]+\/release\/tags\/[^/]+$/.test(path);
}
