// The ops face: health and status for operators and load balancers.
import { Router } from 'express';
import type { Config } from '../config/config.js';

export function opsFace({ config }: { config: Config }): Router {
  const router = Router();
  router.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/status', (_req, res) => {
    res.json({ upstream: { url: config.upstream.url, type: config.upstream.type } });
  });
  return router;
}
