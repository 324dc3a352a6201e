// The v3 face: what the real `s` 3.x CLI calls (PROTOCOL.md §1). Every answer is uncompressed JSON in the
// {request_id, body} envelope; errors carry a string body. Rendering only: policy lives in the Registry.
import { randomUUID } from 'node:crypto';
import { Router, type Request, type Response } from 'express';
import type { Cached } from '../core/metadata-cache.js';
import type { Registry } from '../core/registry.js';
import type { Logger } from '../log.js';
import { MirrorError, toMirrorError } from '../model/errors.js';
import * as valid from '../model/validate.js';
import { sendArchive } from './archive-response.js';
import { errorHandler } from './errors.js';
import { baseUrl, v3Release } from './render.js';
import type { PrivateForwarder } from './private.js';

export interface V3FaceOptions {
  readonly registry: Registry;
  readonly publicUrl: string | undefined;
  /** Passes a read the mirror may not cache (private content) to the upstream with the caller's credentials. */
  readonly forwardPrivate: PrivateForwarder | undefined;
  readonly log: Logger;
}

export function v3Face({ registry, publicUrl, forwardPrivate, log }: V3FaceOptions): Router {
  const router = Router();
  const name = (req: Request) => valid.packageName(req.params.name as string);

  /** Answers from the shared cache; what the anonymous mirror may not see is forwarded with the caller's credentials. */
  const read =
    (answer: (req: Request, base: string) => Promise<[Cached<unknown>, unknown]>) =>
    async (req: Request, res: Response) => {
      try {
        const [cached, body] = await answer(req, baseUrl(req, publicUrl));
        res.setHeader('x-cache', cached.status);
        res.setHeader('Age', cached.age);
        sendEnvelope(res, 200, body);
      } catch (err) {
        const e = toMirrorError(err);
        if (forwardPrivate && (e.kind === 'not-found' || e.kind === 'unauthorized') && (await forwardPrivate(req, res))) return;
        throw e;
      }
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
    read(async (req, base) => {
      const cached = await registry.latest(name(req));
      return [cached, v3Release(cached.value, base, name(req), true)];
    }),
  );

  router.get(
    '/packages/:name/release/tags/:version',
    read(async (req, base) => {
      const cached = await registry.release(name(req), valid.version(req.params.version as string));
      return [cached, v3Release(cached.value, base, name(req), true)];
    }),
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
    await sendArchive(req, res, await registry.archive(pkg, version), `${pkg}-${version}.zip`);
  });

  router.use((req: Request) => {
    throw new MirrorError('not-found', `no such v3 endpoint: ${req.method} ${req.path}`);
  });

  router.use(errorHandler(log, (res, e) => sendEnvelope(res, e.status, e.message)));

  return router;
}

function sendEnvelope(res: Response, status: number, body: unknown): void {
  res.status(status).json({ request_id: randomUUID(), body });
}
