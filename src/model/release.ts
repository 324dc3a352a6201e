// The normalized package model. Upstream adapters produce it; faces render it. URLs in it are always the
// upstream's: the mirror's own URLs are made at render time from the request's base URL.

export interface Release {
  /** The tag, e.g. "1.2.3" or "dev.0.56" (not always semver). */
  readonly version: string;
  readonly createdAt: string;
  /** Release notes; "" when the upstream has none. */
  readonly body: string;
  /** Where the upstream serves this version's zip. */
  readonly archiveUrl: string;
  /** The upstream's other fields, verbatim, so a face of the same protocol renders them unchanged. */
  readonly fields: Readonly<Record<string, unknown>>;
}

/** One entry of a package list (`s registry list`): opaque to the mirror, passed on as the upstream gave it. */
export type PackageSummary = Readonly<Record<string, unknown>>;

export interface ListQuery {
  readonly page: number;
  readonly category?: string;
  readonly tag?: string;
  readonly search?: string;
}

/** Where a cached archive lives: its sha256 (hex) and size in bytes. */
export interface ArchiveRef {
  readonly digest: string;
  readonly size: number;
}

/** Page size of the v3 API's release and package lists. */
export const V3_PAGE_SIZE = 20;

/** The sha256 digests a release's metadata states for its archive (`sha256`, or `digest` as "sha256:…" or bare). */
export function releaseDigests(release: Release): string[] {
  const { digest, sha256 } = release.fields;
  return [digest, sha256].flatMap((v) => (typeof v === 'string' && /^(sha256:)?[0-9a-f]{64}$/i.test(v) ? [v.replace(/^sha256:/i, '')] : []));
}

/**
 * How a version (or file) brought from elsewhere, e.g. by an imported bundle, stands against what the mirror has:
 * new here, the very same bytes already, or something else under that name (never overwritten).
 */
export type Standing = 'new' | 'unchanged' | { readonly conflict: string };

/** What adding such a version did: added, nothing (unchanged, or a conflict), or nothing because its blob is not stored. */
export type Adoption = 'added' | 'missing' | Exclude<Standing, 'new'>;
