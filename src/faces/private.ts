// Private content: the mirror fills its shared cache with anonymous requests only. When the upstream refuses an
// anonymous read and the caller sent credentials, the caller's own request is passed through: the answer goes
// back as the upstream gave it, neither cached nor rewritten (x-cache: BYPASS).
import type { Request, Response } from 'express';
import { pipeline } from 'node:stream/promises';
import type { UpstreamHttp } from '../upstreams/http.js';

/** Forwards the request if it carries credentials; false when it does not (the caller answers then). */
export type PrivateForwarder = (req: Request, res: Response) => Promise<boolean>;

/** Headers the `s` client signs requests with (PROTOCOL.md §1), plus standard auth. */
export const CREDENTIAL_HEADERS = ['token', 'sign_code', 'nonce', 'timestamp', 'authorization'] as const;
const FORWARDED_HEADERS = [...CREDENTIAL_HEADERS, 'accept', 'user-agent', 'content-type', 'content-length'];
const RETURNED_HEADERS = ['content-type', 'content-length', 'content-encoding', 'location', 'www-authenticate'];

export function hasCredentials(req: Request): boolean {
  return req.headers.token !== undefined || req.headers.authorization !== undefined;
}

/** upstreamBase is where the router's mount point goes upstream, e.g. "https://api.devsapp.cn/v3" for /v3. */
export function privateForwarder(http: UpstreamHttp, upstreamBase: string): PrivateForwarder {
  return async (req, res) => {
    if (!hasCredentials(req)) return false;
    const answer = await http.forward({
      method: req.method,
      url: upstreamBase + req.url,
      headers: pick(req.headers, FORWARDED_HEADERS),
    });
    res.status(answer.status);
    for (const [k, v] of Object.entries(pick(answer.headers, RETURNED_HEADERS))) if (v !== undefined) res.setHeader(k, v);
    res.setHeader('x-cache', 'BYPASS');
    await pipeline(answer.body, res).catch(() => {});
    return true;
  };
}

function pick(headers: Record<string, string | string[] | undefined>, names: readonly string[]) {
  return Object.fromEntries(names.filter((n) => headers[n] !== undefined).map((n) => [n, headers[n]]));
}
