// The SRM face (PROTOCOL.md §2): GET {package}/releases, {package}/releases/latest, {package}/zipball/{version}
// (and GitHub's {package}/releases/tags/{tag}), as bare JSON. A package may be "name" or "owner/name", so routes
// are matched here on the decoded segments rather than by express patterns. Errors are {message, error} JSON.
//
// `s` 2.x's paths (the registry at http://registry.devsapp.cn/simple) are the same routes under the /simple prefix:
// /simple/{name}/releases[/latest] (a "personal" package) and /simple/{provider}/{name}/... (devsapp's own:
// /simple/devsapp/fc/...), and their zipballs. Read in @serverless-devs/core (s 2.x: load/service.ts,
// loadComponent.ts, common/request) and s 3.x's `s init` fallback: the answer is wrapped as {"Response": ...}
// (`data.Response.zipball_url`; core's request helper returns `body.Response || body`), an error is
// {"Error": {"Code", "Message"}} (core throws with `G.Error.Code, G.Error.Message`), and a pinned version is looked
// for in the whole list `releases` returns (`result.find(item => item.tag_name === version)`): so that list is never
// paged. With a v3 upstream, whose names carry no provider, /simple/devsapp/NAME is the package NAME.
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
import type { HostedReads } from './hosted-reads.js';
import { sendJson, sendMetadata, type Frame, type RenderedAnswers } from './json.js';

/** First path segments that belong to other faces. */
const RESERVED = new Set(['v3', 'api', '-']);
/** The prefix of s 2.x's paths, and the provider whose packages are the v3 upstream's. */
const V2_PREFIX = 'simple';
const V2_PROVIDER = 'devsapp';
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

interface SrmRequest {
  readonly route: SrmRoute;
  /** Asked under /simple (s 2.x): answered in its {"Response": ...} shape, the list never paged. */
  readonly v2: boolean;
  /** The package as the path named it (e.g. "devsapp/fc"), which the URLs handed out name again. */
  readonly asked: string;
}

/**
 * Matches a raw request path; undefined when it is no SRM route. Throws 400 on invalid names. `providerless`: the
 * upstream's names carry no provider (v3), so /simple/devsapp/NAME is NAME.
 */
function parseSrmPath(path: string, providerless: boolean): SrmRequest | undefined {
  let segs = path.split('/').slice(1).map(valid.decodeSegment);
  const v2 = segs[0] === V2_PREFIX && segs.length > 1;
  if (v2) segs = segs.slice(1);
  else if (RESERVED.has(segs[0] ?? '')) return undefined;
  for (const [suffix, make] of PATTERNS) {
    const pkgParts = segs.length - suffix.length;
    if (pkgParts < 1 || pkgParts > 2 || !suffix.every((s, i) => s === '*' || segs[pkgParts + i] === s)) continue;
    const asked = valid.srmPackage(segs.slice(0, pkgParts).join('/'));
    const pkg = v2 && providerless && pkgParts === 2 && segs[0] === V2_PROVIDER ? segs[1]! : asked;
    return { route: make(pkg, segs[segs.length - 1]!), v2, asked };
  }
  return undefined;
}

/** s 2.x's answers are wrapped as {"Response": ...}. */
const V2_FRAME: Frame = () => ['{"Response":', '}'];

export interface SrmFaceOptions {
  readonly registry: Registry;
  readonly baseUrl: BaseUrl;
  readonly reads: HostedReads;
  /** Rendered answers, reused while their document is unchanged. */
  readonly renders: RenderedAnswers;
  readonly log: Logger;
  readonly providerless?: boolean;
}

export function srmFace({ registry, baseUrl, reads, renders, log, providerless = false }: SrmFaceOptions) {
  const handle = async (req: Request, res: Response, next: NextFunction) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const parsed = parseSrmPath(req.path, providerless);
    if (!parsed) return next();
    const { route, v2, asked } = parsed;
    await reads.check(req, route.pkg, route.kind === 'zipball' ? { version: route.version, query: req.query } : undefined);
    // s 2.x's zipball URLs come back under /simple, for the package as it asked for it.
    const base = v2 ? `${baseUrl(req)}/${V2_PREFIX}` : baseUrl(req);
    const release = (r: Release) => srmRelease(r, base, asked, reads.linkQuery(route.pkg, r.version));
    // The rendering depends on the document, the base URL and the URL asked (path and query) only.
    const send = (cached: Cached<unknown>, content: () => unknown) =>
      sendMetadata(req, res, cached, renders.of(cached, `srm ${base} ${req.originalUrl}`, content), v2 ? V2_FRAME : undefined);
    switch (route.kind) {
      case 'latest': {
        const cached = await registry.latest(route.pkg);
        return send(cached, () => release(cached.value));
      }
      case 'tag': {
        const cached = await registry.release(route.pkg, route.version);
        return send(cached, () => release(cached.value));
      }
      case 'releases': {
        const paging = v2 ? undefined : pagingOf(req); // checked before the upstream is asked
        const cached = await registry.allReleases(route.pkg);
        if (!paging) return send(cached, () => cached.value.map(release));
        const page = paginate(res, cached.value, paging, `${base}/${srmPackagePath(asked)}/releases`);
        return send(cached, () => page.map(release));
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
    errorHandler(log, (res, e) =>
      sendJson(
        res,
        e.status,
        res.req.path.startsWith(`/${V2_PREFIX}/`) ? JSON.stringify({ Error: { Code: e.kind, Message: e.message } }) : JSON.stringify({ message: e.message, error: e.kind }),
      ),
    ),
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
