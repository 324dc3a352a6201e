// The hot path: a face's GET (and HEAD) routes answered without express's dispatch, whose per-request work (the app's
// layers and the router's, each matched in turn, and their promise chains) cost about 80 µs a request here: more
// than a cached answer itself. One table of routes feeds both: the face registers them on its express router, and the
// hot path matches the same patterns and runs the same handlers, on node's own request and response with what express
// would have given them (params, query, the URL as sent). Not express's objects: giving node's objects express's
// prototypes (as express does) costs more than all the rest of a cached answer (50 to 80 µs a request here).
// Express still answers everything else: other methods, requests with credentials (they may need the face's private
// pass-through, which forwards the request as express mounted it), and paths no route takes as they are (a trailing
// slash, another letter case, a malformed percent-escape), so that those answers come from one place.
import type { Request, Response, Router } from 'express';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseQuery } from 'node:querystring';
import { hasCredentials } from './forward.js';

/** What express gives a route handler beyond node's request. */
export interface RouteContext {
  readonly params: Readonly<Record<string, string>>;
  /** Parsed as express's 'simple' query parser does (the app's setting). */
  readonly query: Readonly<Record<string, unknown>>;
  /** The URL as the client sent it (express's originalUrl). */
  readonly url: string;
  /** Express's request and response, when express routed it; never on the hot path, which takes no request with credentials. */
  readonly express?: { readonly req: Request; readonly res: Response };
}

export interface ReadRoute {
  /** An express path, relative to the face's mount, whose `:params` are whole path segments ("/packages/:name/release/latest"). */
  readonly path: string;
  /** Answers; a promise when it does not at once (a failure, thrown or rejected, goes to the face's error answer). */
  readonly handle: (req: IncomingMessage, res: ServerResponse, at: RouteContext) => Promise<void> | void;
}

export interface HotRoutes {
  /** Where the face's router is mounted ("/v3"). */
  readonly mount: string;
  /** Tried in order, as express would. */
  readonly reads: readonly ReadRoute[];
  /** The face's error answer (what its router's error handler does). */
  readonly fail: (req: IncomingMessage, res: ServerResponse, err: unknown) => void;
}

/** Registers the routes on the face's router: express's half of the table. */
export function registerReads(router: Router, reads: readonly ReadRoute[]): void {
  for (const r of reads) {
    router.get(r.path, (req, res) => r.handle(req, res, { params: req.params as Record<string, string>, query: req.query, url: req.originalUrl, express: { req, res } }));
  }
}

interface Compiled {
  readonly face: HotRoutes;
  readonly route: ReadRoute;
  readonly pattern: RegExp;
  readonly params: readonly string[];
}

const escape = (literal: string) => literal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function compile(face: HotRoutes, route: ReadRoute): Compiled {
  const params: string[] = [];
  const source = `${face.mount}${route.path}`
    .split('/')
    .map((seg) => (seg.startsWith(':') ? (params.push(seg.slice(1)), '([^/]+)') : escape(seg)))
    .join('/');
  return { face, route, pattern: new RegExp(`^${source}$`), params };
}

const NO_QUERY: Readonly<Record<string, unknown>> = Object.freeze({});

/** The hot path over the faces' routes: true when it took the request (and answers it), false when express is to. */
export function hotPath(faces: readonly HotRoutes[]): (req: IncomingMessage, res: ServerResponse) => boolean {
  const routes = faces.flatMap((face) => face.reads.map((route) => compile(face, route)));
  return (req, res) => {
    if ((req.method !== 'GET' && req.method !== 'HEAD') || hasCredentials(req)) return false;
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    for (const { face, route, pattern, params } of routes) {
      const match = pattern.exec(path);
      if (!match) continue;
      const values: Record<string, string> = {};
      try {
        for (let i = 0; i < params.length; i++) {
          const value = match[i + 1]!;
          values[params[i]!] = value.includes('%') ? decodeURIComponent(value) : value;
        }
      } catch {
        return false; // express answers a malformed escape in its own words
      }
      const at = { params: values, query: q < 0 ? NO_QUERY : parseQuery(url.slice(q + 1)), url };
      let later: Promise<void> | void;
      try {
        later = route.handle(req, res, at);
      } catch (err) {
        face.fail(req, res, err);
        return true;
      }
      later?.catch((err: unknown) => face.fail(req, res, err));
      return true;
    }
    return false;
  };
}
