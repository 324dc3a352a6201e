// Ordering versions when the mirror must decide by itself (offline, or with the upstream gone). Tags are not
// always semver ("dev.0.56" is a real one): stable semver versions rank above prereleases, which rank above
// tags that are not semver at all; within a rank, higher semver (or, for non-semver tags, newer) comes first.
import semver from 'semver';
import type { Release } from '../model/release.js';

/** What the ordering reads of a release (a listing's versions have no more). */
type Versioned = Pick<Release, 'version' | 'createdAt'>;

function rank(r: Versioned): number {
  const v = semver.valid(r.version);
  if (!v) return 0;
  return semver.prerelease(v) ? 1 : 2;
}

/** Sorts newest first by the rule above. */
export function newestFirst(a: Versioned, b: Versioned): number {
  const byRank = rank(b) - rank(a);
  if (byRank !== 0) return byRank;
  if (rank(a) > 0) return semver.rcompare(a.version, b.version);
  return b.createdAt.localeCompare(a.createdAt) || b.version.localeCompare(a.version);
}

/** The release "latest" should name among these, or undefined when there is none. */
export function pickLatest(releases: readonly Release[]): Release | undefined {
  return [...releases].sort(newestFirst)[0];
}
