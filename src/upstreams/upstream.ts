// What the mirror needs from an upstream registry, whatever protocol it speaks. Adapters return the normalized
// model and throw MirrorErrors (translated in UpstreamHttp).
import { MirrorError } from '../model/errors.js';
import type { ListQuery, PackageSummary, Release } from '../model/release.js';
import type { UpstreamBody } from './http.js';

export interface Upstream {
  latest(name: string): Promise<Release>;
  release(name: string, version: string): Promise<Release>;
  /** One page of releases, newest first, with the upstream's page size. */
  releasePage(name: string, page: number): Promise<Release[]>;
  /** Every release, newest first. */
  allReleases(name: string): Promise<Release[]>;
  listPackages(query: ListQuery): Promise<PackageSummary[]>;
  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T>;
}

/** Reads a string field; anything else becomes `fallback`. */
export function text(value: unknown, fallback = ''): string {
  return typeof value === 'string' ? value : fallback;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A release as both protocols write it (v3 and GitHub-style share tag_name, created_at and zipball_url). */
export function toRelease(raw: unknown): Release {
  if (!isRecord(raw) || !text(raw.tag_name) || !text(raw.zipball_url)) {
    throw new MirrorError('upstream-failed', 'upstream answered with a release that has no tag_name or zipball_url');
  }
  const { tag_name, created_at, zipball_url, ...fields } = raw;
  return {
    version: text(tag_name),
    createdAt: text(created_at, text(raw.published_at)),
    body: text(raw.body, text(raw.version_body)),
    archiveUrl: text(zipball_url),
    fields,
  };
}
