// The ops face: health, status, Prometheus metrics, and a prefetch trigger for operators and load balancers.
import { Router, type Request } from 'express';
import type { Logger } from '../log.js';
import { MirrorError } from '../model/errors.js';
import { errorHandler } from './errors.js';

export interface OpsFaceOptions {
  readonly log: Logger;
  readonly status: () => Promise<unknown>;
  /** The metrics in Prometheus's text format. */
  readonly metrics: () => Promise<string>;
  /** Starts a prefetch run; undefined when there is no upstream to prefetch from (offline). */
  readonly prefetchNow: ((trigger: string) => Promise<unknown>) | undefined;
}

export function opsFace({ status, metrics, prefetchNow, log }: OpsFaceOptions): Router {
  const router = Router();
  router.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/status', async (_req, res) => {
    res.json(await status());
  });
  router.get('/metrics', async (_req, res) => {
    res.type('text/plain; version=0.0.4').send(await metrics());
  });
  /** Starts a run over the followed packages (or joins the one under way) and answers at once; see /-/status. */
  router.post('/prefetch', (_req, res) => {
    if (!prefetchNow) throw new MirrorError('unavailable', 'the mirror is offline: there is nothing to prefetch from');
    void prefetchNow('http').catch(() => {});
    res.status(202).json({ status: 'started' });
  });
  router.use((req: Request) => {
    throw new MirrorError('not-found', `no such endpoint: ${req.method} ${req.originalUrl.split('?')[0]}`);
  });
  router.use(errorHandler(log, (res, e) => res.status(e.status).json({ message: e.message, error: e.kind })));
  return router;
}
