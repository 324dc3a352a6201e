// nginx offload (docs/nginx.md "Behind nginx: offloading archive downloads"): behind nginx, a cached HIT of at least
// server.accelRedirectMinSize is answered with X-Accel-Redirect and no body, and nginx sends the archive's
// content-addressed file itself (sendfile; ranges and HEAD too) from an internal location aliased to the store.
//
// nginx copies some headers of the redirecting answer (Content-Type, Content-Disposition, Cache-Control, ...) onto
// whatever the internal location answers, a 404 too. So the two that must never go on an error (a year of caching, a
// file name) travel as X-Srm-*, and the internal location puts them back on successful answers only (add_header),
// with the mirror's ETag and x-cache, which nginx would otherwise replace with its own or drop.
//
// The mirror's answer ends before nginx opens the file: a lease keeps the file a few seconds more, so that neither
// eviction nor a delete takes it in between. Should it go anyway (nginx stalled past the grace), nginx answers 404:
// an error, never wrong bytes (the file is named by its sha256, and the mirror checked it as it answered).
// Only cached HITs: hosted files live in another store, whose deletes take no lease (docs/nginx.md says more). The
// memory cache holds no archive this redirects (app.ts caps its size below accelRedirectMinSize): behind nginx the
// mirror's answer goes through nginx anyway, and nginx reads a proxied megabyte in small buffers (bench, 1 MiB: 0.13x
// nginx streamed from the mirror's memory, 0.6-0.8x offloaded).
import type { ServerResponse } from 'node:http';
import type { ArchiveHandle } from '../core/archives/archive-cache.js';

export interface AccelRedirect {
  /** The internal location's URI prefix, "/" at both ends (server.accelRedirect). */
  readonly prefix: string;
  /** Smaller archives are sent by the mirror, which is as fast for them (server.accelRedirectMinSize). */
  readonly minSize: number;
  /** Where a committed archive's file is under the folder the internal location aliases: "<xx>/<digest>". */
  readonly locate: (digest: string) => string;
  /** Keeps an archive's file from eviction and deletes until the returned function is called. */
  readonly lease: (digest: string) => () => void;
}

/** How long a lease outlives the answer: nginx opens the file as soon as it reads the answer's headers. */
export const GRACE_MS = 5_000;

/** Headers nginx would copy onto an error too, sent under these names instead (see the top of this file). */
export const MOVED_HEADERS = { 'Cache-Control': 'X-Srm-Cache-Control', 'Content-Disposition': 'X-Srm-Content-Disposition' } as const;

const offloading = new WeakMap<ServerResponse, AccelRedirect>();

/** Lets this response's archive, if it is a big enough HIT, be offloaded to nginx (app.ts, when the setting is on). */
export function offloadVia(res: ServerResponse, accel: AccelRedirect): void {
  offloading.set(res, accel);
}

/**
 * Answers with X-Accel-Redirect and no body when this response may be offloaded and the archive is a big enough
 * HIT; otherwise sends nothing and returns false. Called once a HIT's headers are set and a 304 was not the answer.
 */
export function accelRedirected(res: ServerResponse, handle: ArchiveHandle): boolean {
  const accel = offloading.get(res);
  const ref = handle.ref;
  if (!accel || handle.status !== 'HIT' || !ref || ref.size < accel.minSize) return false;
  setTimeout(accel.lease(ref.digest), GRACE_MS).unref();
  for (const [name, moved] of Object.entries(MOVED_HEADERS)) {
    const value = res.getHeader(name);
    res.removeHeader(name);
    if (value !== undefined) res.setHeader(moved, value);
  }
  res.removeHeader('Accept-Ranges'); // nginx's static answer says it (twice, otherwise)
  res.setHeader('X-Accel-Redirect', accel.prefix + accel.locate(ref.digest));
  res.setHeader('Content-Length', 0);
  res.statusCode = 200;
  res.end();
  return true;
}
