// What the mirror needs from an upstream registry, whatever protocol it speaks. Adapters return the normalized
// model and throw MirrorErrors (translated in UpstreamHttp). Reads take the validators of the copy the mirror has,
// and answer { notModified } when the upstream says it is still current.
import { MirrorError } from '../model/errors.js';
import type { ListQuery, PackageSummary, Release } from '../model/release.js';
import type { JsonAnswer, UpstreamBody, Validators } from './http.js';

export type Fetched<T> =
  | { readonly notModified: true }
  | {
      readonly notModified?: false;
      readonly value: T;
      readonly validators?: Validators;
      /** The list stopped at the adapter's page limit with more pages left: answer it, never cache it as complete. */
      readonly truncated?: boolean;
    };

export interface Upstream {
  latest(name: string, since?: Validators): Promise<Fetched<Release>>;
  release(name: string, version: string, since?: Validators): Promise<Fetched<Release>>;
  /** One page of releases, newest first, with the upstream's page size. */
  releasePage(name: string, page: number, since?: Validators): Promise<Fetched<Release[]>>;
  /** Every release, newest first. */
  allReleases(name: string, since?: Validators): Promise<Fetched<Release[]>>;
  listPackages(query: ListQuery, since?: Validators): Promise<Fetched<PackageSummary[]>>;
  download<T>(url: string, consume: (res: UpstreamBody) => Promise<T>): Promise<T>;
}

/** Parses a JSON answer, passing "not modified" on. */
export function parsed<T>(answer: JsonAnswer, parse: (data: unknown) => T): Fetched<T> {
  return answer.notModified ? answer : { value: parse(answer.data), validators: answer.validators };
}

/** Reads a string field; anything else becomes `fallback`. */
export function text(value: unknown, fallback = ''): string {
  return typeof value === 'string' ? value : fallback;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function list(data: unknown): unknown[] {
  if (Array.isArray(data)) return data;
  throw new MirrorError('upstream-failed', 'upstream answered with something other than a list');
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
