// The v3 face: what the real `s` 3.x CLI calls (PROTOCOL.md §1). Every answer is uncompressed JSON in the
// {request_id, body} envelope; errors carry a string body. Reads are rendering only (policy lives in the Registry).
// Writes of hosted packages, and of users of this mirror, are answered here (core/hosted); other writes and login go
// through to the upstream untouched, and a successful one updates the cache before the client hears of it, so its
// next read already reflects it.
import { Router, type Request } from 'express';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Access } from '../core/hosted/access.js';
import type { HostedComponents } from '../core/hosted/hosted-components.js';
import type { Users } from '../core/hosted/users.js';
import type { Cached } from '../core/metadata-cache.js';
import type { Registry } from '../core/registry.js';
import { requestIdOf, type Logger } from '../log.js';
import { MirrorError, toMirrorError } from '../model/errors.js';
import { publishSpecName } from '../model/publish-spec.js';
import { V3_PAGE_SIZE, type Release } from '../model/release.js';
import * as valid from '../model/validate.js';
import { sendArchive } from './archive-response.js';
import { answerError, errorHandler } from './errors.js';
import { sendJson, sendMetadata, type Frame, type RenderedAnswers } from './json.js';
import { v3Release, type BaseUrl } from './render.js';
import { hasCredentials, sendForwarded, type Forward } from './forward.js';
import { registerReads, type HotRoutes, type ReadRoute, type RouteContext } from './hot-path.js';
import type { HostedReads } from './hosted-reads.js';
import { guardedBody, peekBody, readBody, type BodyLimits } from './request-body.js';

/** What the v3 face needs of hosting: the hosted components, who callers are, and what they may do. */
export interface HostedV3 {
  readonly components: HostedComponents;
  readonly users: Pick<Users, 'authenticate' | 'reset'>;
  readonly access: Access;
  readonly reads: HostedReads;
  /** Limits of a zip uploaded to the mirror (hosted.maxFileSize), and of a publish form (writes.*). */
  readonly uploadLimits: BodyLimits;
  readonly formLimits: BodyLimits;
}

/** A publish form's first field (publish.yaml, which names the package) is looked for in this many bytes. */
const FORM_PEEK = 64 * 1024;
/** A publish form read whole (text files: publish.yaml, readme, version notes) is at most this large. */
const FORM_MAX = 16 << 20;

export interface V3FaceOptions {
  readonly registry: Registry;
  readonly baseUrl: BaseUrl;
  /** Passes requests to a v3 upstream untouched; undefined when there is none to pass them to (offline, srm). */
  readonly forward: Forward | undefined;
  readonly hosted: HostedV3;
  /** Rendered answers, reused while their document is unchanged (shared with the hot path). */
  readonly renders: RenderedAnswers;
  readonly log: Logger;
}

export interface V3Face {
  readonly router: Router;
  /** The reads the hot path answers too (faces/hot-path.ts): the same routes as the router's. */
  readonly hot: HotRoutes;
}

export function v3Face({ registry, baseUrl, forward, hosted, renders, log }: V3FaceOptions): V3Face {
  const router = Router();
  const name = (at: { params: Request['params'] }) => valid.packageName(at.params.name as string);
  const caller = (req: IncomingMessage) => hosted.users.authenticate(req.headers);
  // Reads of hosted packages need a user, or a download link, when hosted.anonymousRead is false (writes check their own).
  const mayRead = (req: IncomingMessage, at: Pick<RouteContext, 'params' | 'query'>, zipball?: string) =>
    hosted.reads.check(req, at.params.name as string, zipball === undefined ? undefined : { version: zipball, query: at.query });
  const link = (name: string, version: string) => hosted.reads.linkQuery(name, version);

  /**
   * Private content: the anonymous mirror may not see it, the caller may. When the shared cache's anonymous read
   * failed with 404/401/403 and the caller sent credentials of an account of the upstream, the caller's request is
   * passed through with them, never cached; otherwise the error stands. Credentials of this mirror (a user's signed
   * headers, Basic, tokens), right or wrong, are never sent to the upstream.
   */
  const orPrivate = async (at: RouteContext, err: unknown): Promise<void> => {
    const e = toMirrorError(err);
    const ex = at.express; // requests with credentials are express's (the hot path takes none)
    if (!ex) throw e;
    const upstreamAccount = async () => (await caller(ex.req).catch(() => true)) === undefined;
    const hostedName = typeof at.params.name === 'string' && hosted.components.isHosted(at.params.name);
    if (forward && hasCredentials(ex.req) && !hostedName && (e.kind === 'not-found' || e.kind === 'unauthorized') && (await upstreamAccount())) {
      return sendForwarded(ex.res, await forward(ex.req));
    }
    throw e;
  };

  /**
   * Answers from the shared cache; what the anonymous mirror may not see is forwarded with the caller's credentials.
   * `answerNow`: the answer when the registry has it at once (a fresh copy in memory, the common case), sent without
   * an await; when it has not (or the package is not open to anyone), `answer` is awaited.
   */
  const read = (
    answer: (req: IncomingMessage, at: RouteContext, base: string) => Promise<Answer>,
    answerNow?: (at: RouteContext, base: string) => Answer | undefined,
  ) => {
    const later = async (req: IncomingMessage, res: ServerResponse, at: RouteContext) => {
      if (at.params.name !== undefined) await mayRead(req, at);
      const base = baseUrl(req);
      let answered: Answer;
      try {
        answered = await answer(req, at, base);
      } catch (err) {
        return orPrivate(at, err);
      }
      sendCached(req, res, renders, renderKey(base, at.url), answered);
    };
    return (req: IncomingMessage, res: ServerResponse, at: RouteContext): Promise<void> | void => {
      if (answerNow && (at.params.name === undefined || hosted.reads.open(at.params.name as string))) {
        const base = baseUrl(req);
        const answered = answerNow(at, base);
        if (answered) return sendCached(req, res, renders, renderKey(base, at.url), answered);
      }
      return later(req, res, at);
    };
  };
  /** releaseAnswer at once (see read): the latest release, or the one the route's :version names. */
  const releaseNow = (at: RouteContext, base: string) => {
    const pkg = name(at);
    const version = at.params.version;
    const cached = version === undefined ? registry.latestNow(pkg) : registry.releaseNow(pkg, valid.version(version));
    return cached && releaseOf(cached, pkg, base, link);
  };
  const pageOf = (cached: Cached<Release[]>, pkg: string, base: string): Answer => [cached, () => cached.value.map((r) => v3Release(r, base, pkg, false, link(pkg, r.version)))];

  const reads: ReadRoute[] = [
    {
      path: '/packages/releases',
      handle: read(async (req, { query: q }) => {
        const query = {
          page: valid.page(q.page),
          category: valid.queryText('category', q.category),
          tag: valid.queryText('tag', q.tag),
          search: valid.queryText('search', q.search),
        };
        // Hosted packages are listed to those who may read them (hosted.anonymousRead); credentials are looked at only then.
        const withHosted = hosted.access.mayRead(undefined) || hosted.access.mayRead(await caller(req));
        const cached = await registry.listPackages(query, { withHosted });
        return [cached, () => cached.value];
      }),
    },
    { path: '/packages/:name/release/latest', handle: read((_req, at, base) => releaseAnswer(registry, name(at), undefined, base, link), releaseNow) },
    {
      path: '/packages/:name/release/tags/:version',
      handle: read((_req, at, base) => releaseAnswer(registry, name(at), valid.version(at.params.version as string), base, link), releaseNow),
    },
    {
      path: '/packages/:name/release',
      handle: read(
        async (_req, at, base) => {
          const pkg = name(at);
          return pageOf(await registry.releasePage(pkg, valid.page(at.query.page)), pkg, base);
        },
        (at, base) => {
          const pkg = name(at);
          const cached = registry.releasePageNow(pkg, valid.page(at.query.page));
          return cached && pageOf(cached, pkg, base);
        },
      ),
    },
    {
      path: '/packages/:name/zipball/:version',
      handle: async (req, res, at) => {
        await mayRead(req, at, at.params.version); // a download link names its version
        const pkg = name(at);
        const version = valid.version(at.params.version as string);
        let handle: Awaited<ReturnType<Registry['archive']>>;
        try {
          handle = await registry.archive(pkg, version);
        } catch (err) {
          return orPrivate(at, err);
        }
        await sendArchive(req, res, handle, `${pkg}-${version}.zip`);
      },
    },
  ];
  registerReads(router, reads);
  // Other reads under a package's path are refused as the routes' are, before the 404.
  router.use('/packages/:name', async (req, _res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD') await mayRead(req, req);
    next();
  });

  /** Passes a write to the upstream, or says why it cannot be. */
  const upstreamOnly = (req: Request): Forward => {
    if (forward) return forward;
    const why = registry.offline ? 'the mirror is offline' : 'the mirror has no v3 upstream';
    throw new MirrorError('unavailable', `${why}: ${req.method} ${req.path} needs the upstream registry`);
  };

  /**
   * Publish, step 1. Answered here when the package is hosted, the caller is a user of this mirror, or there is no
   * upstream to pass it to (offline: every publish is hosted); otherwise passed through. The form's first field
   * (publish.yaml) is read before anything is sent on, so that a hosted name never reaches the upstream.
   */
  router.post('/packages/releases', async (req, res) => {
    const { head, body } = await peekBody(req, (h) => h.includes(0x26 /* & */), FORM_PEEK, hosted.formLimits.bodyTimeoutMs);
    const firstFieldWhole = head.includes(0x26) || head.length < FORM_PEEK;
    const named = firstFieldWhole ? publishedNames(new URLSearchParams(head.toString('utf8')).get('publish') ?? undefined) : [];
    const user = await caller(req);
    if (!forward || user || named.some((n) => hosted.components.isHosted(n))) {
      const form = await readBody(guardedBody(body, hosted.formLimits), FORM_MAX, 'the publish form').catch((err: unknown) => {
        res.setHeader('Connection', 'close'); // the rest of the body is not read
        throw err;
      });
      const token = await hosted.components.beginPublish(user, new URLSearchParams(form.toString('utf8')));
      return sendJson(res, 200, envelope(res, JSON.stringify({ url: `${baseUrl(req)}/v3/uploads/${token}` })));
    }
    const answer = await forward(req, { body });
    if (answer.status >= 200 && answer.status < 300) await registry.published(named[0]);
    await sendForwarded(res, answer);
  });

  /** Publish, step 2: the zip, to the one-time URL step 1 gave (the client sends no credentials with it). */
  router.put('/uploads/:token', async (req, res) => {
    const guard = guardedBody(req, hosted.uploadLimits);
    const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
    let published: { name: string; version: string };
    try {
      published = await hosted.components.finishPublish(req.params.token as string, guard, declared);
    } catch (err) {
      req.unpipe(guard);
      res.setHeader('Connection', 'close'); // the body may not have been read whole
      throw guard.failure ?? err;
    }
    log.info('published', { ...published });
    sendJson(res, 201, envelope(res, JSON.stringify({ name: published.name, tag_name: published.version })));
  });

  router.delete('/packages/:name/release/tags/:version', async (req, res) => {
    const [pkg, version] = [name(req), valid.version(req.params.version as string)];
    const user = await caller(req);
    if (hosted.components.isHosted(pkg) || !forward) {
      await hosted.components.remove(user, pkg, version);
      log.info('deleted', { name: pkg, version });
      return sendJson(res, 200, envelope(res, JSON.stringify({ name: pkg, tag_name: version })));
    }
    // A user of this mirror signs with a secret of this mirror: its headers are never sent to the upstream.
    if (user) throw new MirrorError('forbidden', `${pkg} is not hosted on this mirror (hosted.packages): it belongs to the upstream registry, delete it there`);
    const answer = await upstreamOnly(req)(req);
    if (answer.status >= 200 && answer.status < 300) await registry.deleted(pkg, version);
    await sendForwarded(res, answer);
  });

  /** `login --retoken`: a user of this mirror gets a new secret; anyone else's request goes to the upstream. */
  router.post('/user/token', async (req, res) => {
    const user = await caller(req);
    if (!user) return sendForwarded(res, await upstreamOnly(req)(req));
    sendJson(res, 200, envelope(res, JSON.stringify({ safety_code: await hosted.users.reset(user.name) })));
  });

  /** `registry list --private`: a user of this mirror gets the hosted packages it owns. */
  router.get('/package/user', async (req, res) => {
    const user = await caller(req);
    if (!user) return sendForwarded(res, await upstreamOnly(req)(req));
    const page = valid.page(req.query.page);
    const owned = await hosted.components.summaries(user.name);
    sendJson(res, 200, envelope(res, JSON.stringify(page === -1 ? owned : owned.slice((page - 1) * V3_PAGE_SIZE, page * V3_PAGE_SIZE))));
  });

  router.get('/user/check', async (req, res) => sendForwarded(res, await upstreamOnly(req)(req)));

  router.use((req: Request) => {
    throw new MirrorError('not-found', `no such v3 endpoint: ${req.method} ${req.path}`);
  });

  router.use(errorHandler(log, sendError));

  return { router, hot: { mount: '/v3', reads, fail: (req, res, err) => answerError(log, req, res, err, sendError) } };
}

/**
 * The package a publish.yaml names (`Name: fc3`), read as a line and as YAML (which also reads a quoted, folded or
 * flow-style Name, as the upstream would): every reading found, the YAML one first; none when it cannot be read.
 */
function publishedNames(yaml: string | undefined): string[] {
  if (!yaml) return [];
  const lines = [...yaml.matchAll(/^Name:\s*["']?([A-Za-z0-9][A-Za-z0-9._-]*)/gm)].map((m) => m[1]); // every one: a duplicate key is no YAML
  return [...new Set([publishSpecName(yaml), ...lines].filter((n): n is string => !!n))];
}

/** A read's answer: the cached document, and how its content is rendered (only when no rendering of it is kept). */
type Answer = readonly [Cached<unknown>, () => unknown];

/** One release, latest (version undefined) or pinned, as `s` reads it. */
async function releaseAnswer(
  registry: Registry,
  name: string,
  version: string | undefined,
  base: string,
  link: (name: string, version: string) => string = () => '',
): Promise<Answer> {
  const cached = version === undefined ? await registry.latest(name) : await registry.release(name, version);
  return releaseOf(cached, name, base, link);
}

/** A release's answer: the document, and its rendering. */
function releaseOf(cached: Cached<Release>, name: string, base: string, link: (name: string, version: string) => string): Answer {
  return [cached, () => v3Release(cached.value, base, name, true, link(name, cached.value.version))];
}

/**
 * The {request_id, body} envelope around a body's JSON: its head, then the JSON, then `}`. Its request_id is the
 * request's own id (x-request-id, in the access log too), so that the id in a user's report finds the log line.
 */
const envelopeHead = (res: ServerResponse) => `{"request_id":"${answerIdOf(res)}","body":`;
const ENVELOPE: Frame = (res) => [envelopeHead(res), '}'];

function envelope(res: ServerResponse, bodyJson: string): string {
  return `${envelopeHead(res)}${bodyJson}}`;
}

/** The id the request observer gave the request (its x-request-id answer header); where none did, one as it gives. */
function answerIdOf(res: ServerResponse): string {
  const id = res.getHeader('x-request-id');
  return typeof id === 'string' ? id : requestIdOf(res.req);
}

/** What a v3 read's rendering depends on besides its document: the base URL and the whole URL asked (path and query). */
const renderKey = (base: string, url: string) => `v3 ${base} ${url}`;

function sendCached(req: IncomingMessage, res: ServerResponse, renders: RenderedAnswers, key: string, [cached, content]: Answer): void {
  sendMetadata(req, res, cached, renders.of(cached, key, content), ENVELOPE);
}

function sendError(res: ServerResponse, e: MirrorError): void {
  sendJson(res, e.status, envelope(res, JSON.stringify(e.message)));
}
