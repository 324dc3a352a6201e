// The metadata database's keyspace, in one place: every key the mirror writes is made here, so that what lives in
// the database (and which part of the code owns it) can be read off one file.
//
//   schema                           the layout version of this database: { version } (see schema.ts)
//   index-lost                       the archive index was lost (meta/ deleted) and is not rebuilt yet (schema.ts)
//   latest:{name}                    MetadataCache documents: a package's latest release ...
//   release:{name}:{version}         ... one release ...
//   page:{name}:{page}               ... one page of its releases (v3 paging) ...
//   releases:{name}                  ... all its releases (SRM) ...
//   list:{json query}                ... one page of the package list (query-keyed: bounded lifetime)
//   archive:{name}@{version}         ArchiveIndex: the archive (digest, size) a version's zipball is
//   digest:{sha256}:{name}@{version} ArchiveIndex: the reverse index, digest → versions (value: 1)
//   access:{sha256}                  ArchiveIndex: when an archive was last served (for the LRU quota)
//   follow:{name}                    Follows: a package prefetch keeps warm
//   prefetch:last                    Prefetcher: the summary of the last run
//   hosted:blob:{sha256}:{ref}       HostedBlobs: a reference to a hosted blob (value: 1); the blob goes with its last
//   hosted:component:{name}          HostedComponents: a hosted component's owner
//   hosted:release:{name}:{version}  HostedComponents: one published version
//   hosted:generic:{owner}/{name}/{version}    GenericPackages: one version and its files ({ id, createdAt, files })
//   hosted:downloads:{owner}/{name}/{version}  GenericPackages: its download count (a number)
//   hosted:generic-ids                         GenericPackages: the last numeric id given to a version or a file
//   ready-probe                      GET /-/ready: written and deleted at once, to prove the database takes writes
import type { ListQuery } from '../model/release.js';

export const key = {
  schema: 'schema',
  indexLost: 'index-lost',
  latest: (name: string) => `latest:${name}`,
  release: (name: string, version: string) => `release:${name}:${version}`,
  page: (name: string, page: number) => `page:${name}:${page}`,
  releases: (name: string) => `releases:${name}`,
  list: (q: ListQuery) => `list:${JSON.stringify([q.page, q.category, q.tag, q.search])}`,
  archive: (id: string) => `archive:${id}`,
  digest: (digest: string, id: string) => `digest:${digest}:${id}`,
  access: (digest: string) => `access:${digest}`,
  follow: (name: string) => `follow:${name}`,
  prefetchLast: 'prefetch:last',
  hostedBlob: (digest: string, ref: string) => `hosted:blob:${digest}:${ref}`,
  hostedComponent: (name: string) => `hosted:component:${name}`,
  hostedRelease: (name: string, version: string) => `hosted:release:${name}:${version}`,
  hostedGeneric: (owner: string, name: string, version: string) => `hosted:generic:${owner}/${name}/${version}`,
  hostedDownloads: (owner: string, name: string, version: string) => `hosted:downloads:${owner}/${name}/${version}`,
  hostedGenericIds: 'hosted:generic-ids',
  readyProbe: 'ready-probe',
} as const;

/** Prefixes for key scans; `prefix.x(...)` is the start shared by every key `key.x(...)` can make. */
export const prefix = {
  latest: 'latest:',
  release: (name?: string) => (name === undefined ? 'release:' : `release:${name}:`),
  page: (name: string) => `page:${name}:`,
  list: 'list:',
  archive: (name?: string) => (name === undefined ? 'archive:' : `archive:${name}@`),
  digest: (digest?: string) => (digest === undefined ? 'digest:' : `digest:${digest}:`),
  access: 'access:',
  follow: 'follow:',
  hostedBlob: (digest: string) => `hosted:blob:${digest}:`,
  hostedComponent: 'hosted:component:',
  hostedRelease: (name?: string) => (name === undefined ? 'hosted:release:' : `hosted:release:${name}:`),
  hostedGeneric: 'hosted:generic:',
  /** Every MetadataCache document (what MetadataCache.sweep looks through). */
  documents: ['latest:', 'release:', 'page:', 'releases:', 'list:'],
} as const;
