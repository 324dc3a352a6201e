// The SRM face (PROTOCOL.md §2): GET {package}/releases, {package}/releases/latest, {package}/zipball/{version}
// (and GitHub's {package}/releases/tags/{tag}), as bare JSON. A package may be "name" or "owner/name", so routes
// are matched here on the decoded segments rather than by express patterns. Errors are {message, error} JSON.
import type { NextFunction, Request, Response } from 'express';
import type { Registry } from '../core/registry.js';
import type { Logger } from '../log.js';
import type { Cached } from '../core/metadata-cache.js';
import { MirrorError } from '../model/errors.js';
import type { Release } from '../model/release.js';
import * as valid from '../model/validate.js';
import { sendArchive } from './archive-response.js';
import { srmPackagePath, srmRelease, type BaseUrl } from './render.js';
import { errorHandler } from './errors.js';
import { sendJson, sendMetadata } from './json.js';

/** First path segments that belong to other faces. */
const RESERVED = new Set(['v3', 'api', '-']);
const PER_PAGE_DEFAULT = 30;
const PER_PAGE_MAX = 100;

type SrmRoute =
  | { kind: 'releases'; pkg: string }
  | { kind: 'latest'; pkg: string }
  | { kind: 'tag'; pkg: string; version: string }
  | { kind: 'zipball'; pkg: string; version: string };

const PATTERNS: ReadonlyArray<readonly [suffix: readonly string[], make: (pkg: string, last: string) => SrmRoute]> = [
  [['releases', 'latest'], (pkg) => ({ kind: 'latest', pkg })],
  [['releases', 'tags', '*'], (pkg, tag) => ({ kind: 'tag', pkg, version: valid.version(tag) })],
  [['releases'], (pkg) => ({ kind: 'releases', pkg })],
  [['zipball', '*'], (pkg, version) => ({ kind: 'zipball', pkg, version: valid.version(version) })],
];

/** Matches a raw request path; undefined when it is no SRM route. Throws 400 on invalid names. */
function parseSrmPath(path: string): SrmRoute | undefined {
  const segs = path.split('/').slice(1).map(valid.decodeSegment);
  if (RESERVED.has(segs[0] ?? '')) return undefined;
  for (const [suffix, make] of PATTERNS) {
    const pkgParts = segs.length - suffix.length;
    if (pkgParts < 1 || pkgParts > 2 || !suffix.every((s, i) => s === '*' || segs[pkgParts + i] === s)) continue;
    return make(valid.srmPackage(segs.slice(0, pkgParts).join('/')), segs[segs.length - 1]!);
  }
  return undefined;
}

export interface SrmFaceOptions {
  readonly registry: Registry;
  readonly baseUrl: BaseUrl;
  readonly log: Logger;
  /** Throws unless the request may read the package (hosted packages: hosted.anonymousRead). */
  readonly mayRead?: (req: Request, pkg: string) => Promise<void>;
}

export function srmFace({ registry, baseUrl, log, mayRead }: SrmFaceOptions) {
  const send = (res: Response, cached: Cached<unknown>, body: unknown) => sendMetadata(res.req, res, cached, body);

  const handle = async (req: Request, res: Response, next: NextFunction) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const route = parseSrmPath(req.path);
    if (!route) return next();
    await mayRead?.(req, route.pkg);
    const base = baseUrl(req);
    switch (route.kind) {
      case 'latest': {
        const cached = await registry.latest(route.pkg);
        return send(res, cached, srmRelease(cached.value, base, route.pkg));
      }
      case 'tag': {
        const cached = await registry.release(route.pkg, route.version);
        return send(res, cached, srmRelease(cached.value, base, route.pkg));
      }
      case 'releases': {
        const paging = pagingOf(req);
        const cached = await registry.allReleases(route.pkg);
        const page = paginate(res, cached.value, paging, `${base}/${srmPackagePath(route.pkg)}/releases`);
        return send(res, cached, page.map((r) => srmRelease(r, base, route.pkg)));
      }
      case 'zipball':
        return sendArchive(req, res, await registry.archive(route.pkg, route.version), `${route.pkg}-${route.version}.zip`);
    }
  };

  return [
    handle,
    (req: Request) => {
      throw new MirrorError('not-found', `no such endpoint: ${req.method} ${req.path}`);
    },
    errorHandler(log, (res, e) => sendJson(res, e.status, JSON.stringify({ message: e.message, error: e.kind }))),
  ];
}

interface Paging {
  readonly page: number;
  readonly perPage: number;
}

/** GitHub-style paging parameters: page, and per_page (default 30, at most 100). */
function pagingOf(req: Request): Paging {
  const page = valid.page(req.query.page);
  const perPage = Math.min(PER_PAGE_MAX, valid.page(req.query.per_page, PER_PAGE_DEFAULT));
  if (page < 1 || perPage < 1) throw new MirrorError('bad-request', 'page and per_page must be 1 or more');
  return { page, perPage };
}

/** One page of releases, with a Link header to the others as GitHub sends it. */
function paginate(res: Response, all: readonly Release[], { page, perPage }: Paging, self: string): readonly Release[] {
  const last = Math.max(1, Math.ceil(all.length / perPage));
  const link = (p: number, rel: string) => `<${self}?per_page=${perPage}&page=${p}>; rel="${rel}"`;
  const links = [
    ...(page < last ? [link(page + 1, 'next'), link(last, 'last')] : []),
    ...(page > 1 ? [link(1, 'first'), link(Math.min(page - 1, last), 'prev')] : []),
  ];
  if (links.length) res.setHeader('Link', links.join(', '));
  return all.slice((page - 1) * perPage, page * perPage);
}
