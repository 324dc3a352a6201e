// How the normalized model is written for clients. Every zipball_url points at the mirror (base), never at the
// upstream, so downloads come through the mirror.
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Release } from '../model/release.js';

/** The base of the URLs the mirror hands out for a request, e.g. "https://mirror.example.com". */
export type BaseUrl = (req: IncomingMessage) => string;

/**
 * The configured public URL, or what the request was sent to: its Host (and scheme), or with trustProxy the
 * first X-Forwarded-Host / X-Forwarded-Proto, as a proxy in front of the mirror sets them.
 */
export function baseUrlOf(publicUrl: string | undefined, trustProxy: boolean): BaseUrl {
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)?.split(',')[0]?.trim() || undefined;
  const base: BaseUrl = publicUrl
    ? () => publicUrl
    : (req) => {
        const proto = (trustProxy && first(req.headers['x-forwarded-proto'])) || ((req.socket as TLSSocket).encrypted ? 'https' : 'http');
        const host = (trustProxy && first(req.headers['x-forwarded-host'])) || req.headers.host || `${req.socket.localAddress}:${req.socket.localPort}`;
        return `${proto}://${host}`;
      };
  return (req) => interceptedOrigins.get(req) ?? base(req);
}

/**
 * Proxy mode (src/intercept): a request the mirror took as a forward proxy, for a registry host, names that host's
 * origin here ("https://api.devsapp.cn"), and the URLs handed out for it name the same origin, whatever publicUrl
 * says: such a client reaches the mirror only as that host, through its proxy setting (it asks the proxy for the
 * zipball's host again, which is the mirror).
 */
const interceptedOrigins = new WeakMap<IncomingMessage, string>();

export function setInterceptedOrigin(req: IncomingMessage, origin: string): void {
  interceptedOrigins.set(req, origin);
}

/** `query`: a download link's signature (see core/hosted/download-links.ts), or ''. */
export function v3ZipballUrl(base: string, name: string, version: string, query = ''): string {
  return `${base}/v3/packages/${encodeURIComponent(name)}/zipball/${encodeURIComponent(version)}${query && `?${query}`}`;
}

export function srmPackagePath(pkg: string): string {
  return pkg.split('/').map(encodeURIComponent).join('/');
}

export function srmZipballUrl(base: string, pkg: string, version: string, query = ''): string {
  return `${base}/${srmPackagePath(pkg)}/zipball/${encodeURIComponent(version)}${query && `?${query}`}`;
}

/** A v3 release: the upstream's own fields as they came, with the mirror's zipball_url (and `name` for one release). */
export function v3Release(r: Release, base: string, name: string, withName: boolean, query = ''): Record<string, unknown> {
  return {
    ...r.fields,
    ...(withName ? { name } : {}),
    tag_name: r.version,
    created_at: r.createdAt,
    zipball_url: v3ZipballUrl(base, name, r.version, query),
  };
}

/** An SRM release: the spec's fields (GitHub's prerelease/draft flags kept where the upstream had them). */
export function srmRelease(r: Release, base: string, pkg: string, query = ''): Record<string, unknown> {
  const flags = Object.fromEntries(
    (['prerelease', 'draft'] as const).filter((k) => typeof r.fields[k] === 'boolean').map((k) => [k, r.fields[k]]),
  );
  return {
    tag_name: r.version,
    created_at: r.createdAt,
    zipball_url: srmZipballUrl(base, pkg, r.version, query),
    body: r.body,
    ...flags,
  };
}
