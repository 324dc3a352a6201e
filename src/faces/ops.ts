// The ops face: health and status for operators and load balancers.
import { Router } from 'express';

export function opsFace({ status }: { status: () => unknown }): Router {
  const router = Router();
  router.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/status', (_req, res) => {
    res.json(status());
  });
  return router;
}
