// The ops face: health, readiness, status, Prometheus metrics, and prefetch and verify triggers for operators and load
// balancers.
import { createHash, timingSafeEqual } from 'node:crypto';
import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import { isAbsolute } from 'node:path';
import { exportRequestOf, type ExportRequest } from '../bundles/export.js';
import type { OnEvent } from '../bundles/progress.js';
import { checkedKey } from '../bundles/trust.js';
import type { Logger } from '../log.js';
import { MirrorError, toMirrorError } from '../model/errors.js';
import type { Readiness } from '../ready.js';
import { errorHandler } from './errors.js';
import { readBody } from './request-body.js';

export interface OpsFaceOptions {
  readonly log: Logger;
  readonly status: () => Promise<unknown>;
  /** The metrics in Prometheus's text format. */
  readonly metrics: () => Promise<string>;
  /** Whether the mirror is ready (GET /-/ready: 200 or 503). */
  readonly ready: () => Promise<Readiness>;
  /** Starts a prefetch run; undefined when there is no upstream to prefetch from (offline). */
  readonly prefetchNow: ((trigger: string) => Promise<unknown>) | undefined;
  /** Starts a scrub of every archive (or joins the one under way); resolves with when that run started. */
  readonly startVerify: (repair: boolean) => string;
  /** Writes a bundle (POST /-/export), its events streamed as NDJSON. */
  readonly exportBundle: (request: ExportRequest, onEvent: OnEvent) => Promise<unknown>;
  /** Imports a bundle from a folder on this host (trustedKeys: PEMs; undefined: the configured ones). */
  readonly importBundle?: (dir: string, options: { trustedKeys?: string[]; allowPartial: boolean; dryRun: boolean }, onEvent: OnEvent) => Promise<unknown>;
  /** The token mutating endpoints require; undefined: they are refused. */
  readonly adminToken: string | undefined;
}

/** How a given admin token stands: right, wrong (or missing), or no admin token is configured at all. */
export type AdminVerdict = 'ok' | 'wrong' | 'disabled';

/** Checks a given admin token against the configured one, in constant time (both are hashed to equal lengths). */
export function adminCheck(adminToken: string | undefined): (given: string | undefined) => AdminVerdict {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  const expected = adminToken === undefined ? undefined : digest(adminToken);
  return (given) => (!expected ? 'disabled' : given !== undefined && timingSafeEqual(digest(given), expected) ? 'ok' : 'wrong');
}

/**
 * Guards an ops endpoint that changes something: it needs `Authorization: Bearer <adminToken>`. Without an admin
 * token configured it is refused to everyone (403), a missing or wrong token gets 401. Compared in constant time.
 */
export function requireAdmin(adminToken: string | undefined): RequestHandler {
  const check = adminCheck(adminToken);
  return (req, res, next) => {
    const what = `${req.method} ${req.originalUrl.split('?')[0]}`;
    const verdict = check(/^Bearer (\S+)$/i.exec(req.headers.authorization ?? '')?.[1]);
    if (verdict === 'disabled') throw new MirrorError('forbidden', `${what} is disabled: set the adminToken setting (--admin-token, SRM_MIRROR_ADMIN_TOKEN) to enable it`);
    if (verdict === 'wrong') {
      res.setHeader('WWW-Authenticate', 'Bearer');
      throw new MirrorError('unauthorized', `${what} needs "Authorization: Bearer <admin token>"`);
    }
    next();
  };
}

/** The pages a status-page form may ask to go back to (nothing else: no open redirect). */
const FORM_PAGES = new Set(['/', '/-/ui']);
/** A status-page form is a few short fields. */
const MAX_FORM_BYTES = 4096;

/** What a status-page form asked for, once its token was found right (res.locals.form). */
interface AdminForm {
  readonly fields: URLSearchParams;
  /** Answers with a redirect back to the page, with a flash code (src/faces/ui.ts shows its message). */
  readonly done: (flash: string) => void;
}

/**
 * The status page's path to an admin endpoint (src/faces/ui.ts): an application/x-www-form-urlencoded body with a
 * `token` field instead of the Authorization header, answered with a 303 back to the page (the `back` field: `/` or
 * `/-/ui`) and a flash code in its query, never the token. A request without such a body goes to the header check.
 */
export function adminOrForm(adminToken: string | undefined): RequestHandler {
  const check = adminCheck(adminToken);
  const header = requireAdmin(adminToken);
  return async (req, res, next) => {
    if (!req.is('application/x-www-form-urlencoded')) return header(req, res, next);
    const fields = new URLSearchParams((await readBody(req, MAX_FORM_BYTES, 'the form')).toString('utf8'));
    const token = fields.get('token');
    if (token === null) return header(req, res, next);
    const back = FORM_PAGES.has(fields.get('back') ?? '') ? fields.get('back')! : '/-/ui';
    const done = (flash: string) => {
      res.setHeader('Cache-Control', 'no-store');
      res.redirect(303, `${back}?flash=${encodeURIComponent(flash)}`);
    };
    const verdict = check(token);
    if (verdict !== 'ok') return done(verdict === 'disabled' ? 'admin-disabled' : 'wrong-token');
    res.locals.form = { fields, done } satisfies AdminForm;
    next();
  };
}

/**
 * Runs a long job for an HTTP caller and streams its events as NDJSON (one BundleEvent a line), so that a command
 * asking the server (export, import) shows the same progress as when it does the work itself. A failure after the
 * answer began is sent as a last {"type":"error"} line; the job ends with its 'summary' event.
 */
export async function streamEvents(res: Response, job: (onEvent: OnEvent) => Promise<void>): Promise<void> {
  res.status(200).setHeader('Content-Type', 'application/x-ndjson');
  res.setHeader('Cache-Control', 'no-store');
  const send = (line: unknown) => void (res.destroyed || res.write(`${JSON.stringify(line)}\n`));
  try {
    await job(send);
  } catch (err) {
    const e = toMirrorError(err);
    send({ type: 'error', status: e.status, message: e.kind === 'internal' ? (err as Error).message : e.message });
  }
  res.end();
}

export function opsFace({ status, metrics, ready, prefetchNow, startVerify, exportBundle, importBundle, log, adminToken }: OpsFaceOptions): Router {
  const router = Router();
  const admin = requireAdmin(adminToken);
  const adminViaForm = adminOrForm(adminToken); // the status page's forms, or the header
  const formOf = (res: Response) => res.locals.form as AdminForm | undefined;
  router.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  /** Ready for traffic: storage writable and config loaded. Never depends on the upstream (offline is a valid state). */
  router.get('/ready', async (_req, res) => {
    const r = await ready();
    res.status(r.ready ? 200 : 503).setHeader('Cache-Control', 'no-store');
    res.json(r.ready ? { status: 'ready', checks: r.checks } : { status: 'not ready', reasons: r.reasons, checks: r.checks });
  });
  router.get('/status', async (_req, res) => {
    res.json(await status());
  });
  router.get('/metrics', async (_req, res) => {
    res.type('text/plain; version=0.0.4; charset=utf-8').send(await metrics());
  });
  /**
   * Starts a run over the followed packages and answers at once (see /-/status). Triggers while a run is under way
   * join it (Prefetcher.run), so a burst of them costs one run.
   */
  router.post('/prefetch', adminViaForm, (_req, res) => {
    const form = formOf(res);
    if (!prefetchNow) {
      if (form) return form.done('prefetch-offline');
      throw new MirrorError('unavailable', 'the mirror is offline: there is nothing to prefetch from');
    }
    void prefetchNow(form ? 'status page' : 'http').catch(() => {});
    if (form) return form.done('prefetch-started');
    res.status(202).json({ status: 'started' });
  });
  /**
   * Rehashes every archive at the scrub rate (with ?repair=true also removing what else is off) and answers at once:
   * the report is archives.scrub.lastRun in /-/status once lastRun.startedAt is the startedAt answered here.
   */
  router.post('/verify', adminViaForm, (req, res) => {
    const form = formOf(res);
    const repair = req.query.repair === 'true' || form?.fields.get('repair') === 'true';
    const startedAt = startVerify(repair);
    if (form) return form.done(repair ? 'verify-repair-started' : 'verify-started');
    res.status(202).json({ status: 'started', startedAt });
  });
  /**
   * Exports a bundle beside the running server, into a folder on its host (the paths in the body are absolute), with
   * the server's own leases on what it carries: eviction and deletes meanwhile cannot break the bundle.
   */
  router.post('/export', admin, express.json({ limit: '1mb' }), async (req, res) => {
    const request = exportRequestOf(req.body);
    await streamEvents(res, async (onEvent) => void (await exportBundle(request, onEvent)));
  });
  /**
   * Imports a bundle from a folder on the server's host: {"dir": absolute path, "trustedKeys"?: [PEM], "allowPartial"?,
   * "dryRun"?}. The events stream as NDJSON (streamEvents); what it adds is in the server's answers at once.
   */
  router.post('/import', admin, async (req, res) => {
    if (!importBundle) throw new MirrorError('not-found', 'this server does not import bundles');
    const body = importRequest(await readBody(req, 1 << 20, 'the import request'));
    await streamEvents(res, async (onEvent) => void (await importBundle(body.dir, body, onEvent)));
  });
  router.use((req: Request) => {
    throw new MirrorError('not-found', `no such endpoint: ${req.method} ${req.originalUrl.split('?')[0]}`);
  });
  router.use(errorHandler(log, (res, e) => res.status(e.status).json({ message: e.message, error: e.kind })));
  return router;
}

/** The body of POST /-/import, checked. */
function importRequest(raw: Buffer): { dir: string; trustedKeys?: string[]; allowPartial: boolean; dryRun: boolean } {
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new MirrorError('bad-request', 'the import request must be JSON: {"dir": "/absolute/path", ...}');
  }
  const o = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  if (typeof o.dir !== 'string' || !isAbsolute(o.dir)) throw new MirrorError('bad-request', '"dir" must be the absolute path of the bundle\'s folder on the server\'s host');
  for (const flag of ['allowPartial', 'dryRun']) {
    if (o[flag] !== undefined && typeof o[flag] !== 'boolean') throw new MirrorError('bad-request', `"${flag}" must be true or false`);
  }
  let trustedKeys: string[] | undefined;
  if (o.trustedKeys !== undefined) {
    // An empty list would turn trust off for this import: leave the field out to use the configured keys.
    if (!Array.isArray(o.trustedKeys) || o.trustedKeys.length === 0) throw new MirrorError('bad-request', '"trustedKeys", when given, must be a list of PEM public keys, at least one');
    try {
      trustedKeys = o.trustedKeys.map((k, i) => checkedKey(typeof k === 'string' ? k : '', `trustedKeys[${i}]`));
    } catch (err) {
      throw new MirrorError('bad-request', (err as Error).message);
    }
  }
  return { dir: o.dir, trustedKeys, allowPartial: o.allowPartial === true, dryRun: o.dryRun === true };
}
