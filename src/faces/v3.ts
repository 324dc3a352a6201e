// The v3 face: what the real `s` 3.x CLI calls (PROTOCOL.md §1). Every answer is uncompressed JSON in the
// {request_id, body} envelope; errors carry a string body. Reads are rendering only (policy lives in the Registry);
// writes and login go through to the upstream untouched, and a successful one updates the cache before the client
// hears of it, so its next read already reflects it.
import { randomUUID } from 'node:crypto';
import { Router, type Request, type Response } from 'express';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Transform } from 'node:stream';
import type { Cached } from '../core/metadata-cache.js';
import type { Registry } from '../core/registry.js';
import type { Logger } from '../log.js';
import { MirrorError, toMirrorError } from '../model/errors.js';
import type { Release } from '../model/release.js';
import * as valid from '../model/validate.js';
import { sendArchive } from './archive-response.js';
import { answerError, errorHandler } from './errors.js';
import { sendJson, sendMetadata } from './json.js';
import { v3Release, type BaseUrl } from './render.js';
import { hasCredentials, sendForwarded, sniffForm, type Forward } from './forward.js';

export interface V3FaceOptions {
  readonly registry: Registry;
  readonly baseUrl: BaseUrl;
  /** Passes requests to a v3 upstream untouched; undefined when there is none to pass them to (offline, srm). */
  readonly forward: Forward | undefined;
  readonly log: Logger;
}

export function v3Face({ registry, baseUrl, forward, log }: V3FaceOptions): Router {
  const router = Router();
  const name = (req: Request) => valid.packageName(req.params.name as string);

  /**
   * Private content: the anonymous mirror may not see it, the caller may. When the shared cache's anonymous read
   * failed with 404/401/403 and the caller sent credentials, the caller's request is passed through with them,
   * never cached; otherwise the error stands.
   */
  const orPrivate = async (req: Request, res: Response, err: unknown): Promise<void> => {
    const e = toMirrorError(err);
    if (forward && hasCredentials(req) && (e.kind === 'not-found' || e.kind === 'unauthorized')) return sendForwarded(res, await forward(req));
    throw e;
  };

  /** Answers from the shared cache; what the anonymous mirror may not see is forwarded with the caller's credentials. */
  const read =
    (answer: (req: Request, base: string) => Promise<[Cached<unknown>, unknown]>) =>
    async (req: Request, res: Response) => {
      let answered: [Cached<unknown>, unknown];
      try {
        answered = await answer(req, baseUrl(req));
      } catch (err) {
        return orPrivate(req, res, err);
      }
      sendCached(req, res, ...answered);
    };

  router.get(
    '/packages/releases',
    read(async (req) => {
      const cached = await registry.listPackages({
        page: valid.page(req.query.page),
        category: valid.queryText('category', req.query.category),
        tag: valid.queryText('tag', req.query.tag),
        search: valid.queryText('search', req.query.search),
      });
      return [cached, cached.value];
    }),
  );

  router.get(
    '/packages/:name/release/latest',
    read((req, base) => releaseAnswer(registry, name(req), undefined, base)),
  );

  router.get(
    '/packages/:name/release/tags/:version',
    read((req, base) => releaseAnswer(registry, name(req), valid.version(req.params.version as string), base)),
  );

  router.get(
    '/packages/:name/release',
    read(async (req, base) => {
      const cached = await registry.releasePage(name(req), valid.page(req.query.page));
      return [cached, cached.value.map((r) => v3Release(r, base, name(req), false))];
    }),
  );

  router.get('/packages/:name/zipball/:version', async (req, res) => {
    const pkg = name(req);
    const version = valid.version(req.params.version as string);
    let handle: Awaited<ReturnType<Registry['archive']>>;
    try {
      handle = await registry.archive(pkg, version);
    } catch (err) {
      return orPrivate(req, res, err);
    }
    await sendArchive(req, res, handle, `${pkg}-${version}.zip`);
  });

  /**
   * A write (or login) passed to the upstream. `plan` may tap the body (to read it on the way) and says how the
   * cache follows an upstream success; that is applied before the client gets the answer.
   */
  const write =
    (plan?: (req: Request) => { tap?: Transform; applied: () => Promise<void> }) => async (req: Request, res: Response) => {
      if (!forward) {
        const why = registry.offline ? 'the mirror is offline' : 'the mirror has no v3 upstream';
        throw new MirrorError('unavailable', `${why}: ${req.method} ${req.path} needs the upstream registry`);
      }
      const planned = plan?.(req);
      const answer = await forward(req, planned?.tap);
      if (answer.status >= 200 && answer.status < 300) await planned?.applied();
      await sendForwarded(res, answer);
    };

  router.post(
    '/packages/releases',
    write(() => {
      const form = sniffForm();
      return { tap: form.stream, applied: () => registry.published(publishedName(form.field('publish'))) };
    }),
  );
  router.delete(
    '/packages/:name/release/tags/:version',
    write((req) => {
      const [pkg, version] = [name(req), valid.version(req.params.version as string)];
      return { applied: () => registry.deleted(pkg, version) };
    }),
  );
  router.post('/user/token', write());
  router.get('/user/check', write());
  router.get('/package/user', write());

  router.use((req: Request) => {
    throw new MirrorError('not-found', `no such v3 endpoint: ${req.method} ${req.path}`);
  });

  router.use(errorHandler(log, sendError));

  return router;
}

/** The package a publish.yaml names (`Name: fc3`); undefined when it cannot be read. */
function publishedName(yaml: string | undefined): string | undefined {
  const name = yaml && /^Name:\s*["']?([A-Za-z0-9][A-Za-z0-9._-]*)/m.exec(yaml)?.[1];
  return name || undefined;
}

/** One release, latest (version undefined) or pinned, as `s` reads it. */
async function releaseAnswer(registry: Registry, name: string, version: string | undefined, base: string): Promise<[Cached<Release>, unknown]> {
  const cached = version === undefined ? await registry.latest(name) : await registry.release(name, version);
  return [cached, v3Release(cached.value, base, name, true)];
}

/** The {request_id, body} envelope around a body's JSON. */
function envelope(bodyJson: string): string {
  return `{"request_id":"${randomUUID()}","body":${bodyJson}}`;
}

function sendCached(req: IncomingMessage, res: ServerResponse, cached: Cached<unknown>, body: unknown): void {
  sendMetadata(req, res, cached, body, envelope);
}

function sendError(res: ServerResponse, e: MirrorError): void {
  sendJson(res, e.status, envelope(JSON.stringify(e.message)));
}

const HOT_ROUTE = /^\/v3\/packages\/([^/?]+)\/release\/(?:latest|tags\/([^/?]+))$/;

/**
 * The read clients repeat most, a release (latest or pinned), answered on plain node http: for an answer this
 * small, express's own per-request work costs more than the answer itself (bench: about 13k against 40k req/s).
 * Same registry, rendering and errors as the routes above, which still serve everything else: other methods,
 * queries, and requests with credentials (they may need private pass-through).
 */
export function v3HotPath({ registry, baseUrl, log }: Pick<V3FaceOptions, 'registry' | 'baseUrl' | 'log'>) {
  return (req: IncomingMessage, res: ServerResponse): boolean => {
    const match = req.method === 'GET' && !hasCredentials(req) ? HOT_ROUTE.exec(req.url ?? '') : null;
    if (!match) return false;
    (async () => {
      const name = valid.packageName(valid.decodeSegment(match[1]!));
      const version = match[2] === undefined ? undefined : valid.version(valid.decodeSegment(match[2]));
      const [cached, body] = await releaseAnswer(registry, name, version, baseUrl(req));
      sendCached(req, res, cached, body);
    })().catch((err: unknown) => answerError(log, req, res, err, sendError));
    return true;
  };
}
