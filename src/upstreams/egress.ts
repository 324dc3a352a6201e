// How the mirror reaches its upstream from inside a corporate network (docs/corporate-network.md "Deploying inside a
// corporate network"): a forward proxy, extra trusted CAs, and the mirror's own upstream credentials.
//
// - Proxy: upstream.proxy for every request, else HTTPS_PROXY (https; HTTP_PROXY when it is unset, as undici reads
//   them) and HTTP_PROXY (http), minus NO_PROXY; through undici's own EnvHttpProxyAgent, given the values from the
//   config so that it never reads process.env itself. https targets go through a CONNECT tunnel; http targets as
//   absolute-form requests (as curl sends them: proxies often allow CONNECT to port 443 only). Credentials in the
//   proxy URL become undici's Proxy-Authorization; they are only ever shown through redactUrl.
// - CA: without upstream.ca, Node's own trust (its bundled roots plus NODE_EXTRA_CA_CERTS). With it, those plus its
//   files: a `ca` option replaces Node's defaults, so they are named again here.
// - Credentials: upstream.headers and upstream.token (Authorization: Bearer) go with the mirror's own requests to the
//   upstream's origins (upstream.url and upstream.commandsUrl), and with nothing else: not to a redirect target on
//   another origin (archive storage), and never with a client's request passed through (see UpstreamHttp.forward).
import { readFileSync } from 'node:fs';
import type { LookupFunction } from 'node:net';
import * as tls from 'node:tls';
import { Agent, EnvHttpProxyAgent, Pool, type Dispatcher } from 'undici';
import { redactUrl, type Config } from '../config/config.js';

export type EgressSettings = Pick<
  Config['upstream'],
  'url' | 'commandsUrl' | 'proxy' | 'httpsProxy' | 'httpProxy' | 'noProxy' | 'ca' | 'headers' | 'token' | 'connectTimeoutMs' | 'headersTimeoutMs' | 'bodyTimeoutMs'
>;

export interface Proxies {
  /** The proxy for https:// and http:// targets; undefined: direct. */
  readonly https: string | undefined;
  readonly http: string | undefined;
  /** Hosts reached directly, in NO_PROXY's syntax. */
  readonly noProxy: readonly string[];
}

/** The proxies in force, or undefined when every request goes direct. */
export function proxiesOf(u: Pick<EgressSettings, 'proxy' | 'httpsProxy' | 'httpProxy' | 'noProxy'>): Proxies | undefined {
  const https = u.proxy ?? u.httpsProxy ?? u.httpProxy;
  const http = u.proxy ?? u.httpProxy;
  return https || http ? { https, http, noProxy: u.noProxy } : undefined;
}

/** The proxies as they may be shown (logs, /-/status): credentials masked. */
export function describeProxies(u: Pick<EgressSettings, 'proxy' | 'httpsProxy' | 'httpProxy' | 'noProxy'>): Proxies | undefined {
  const p = proxiesOf(u);
  return p && { https: p.https && redactUrl(p.https), http: p.http && redactUrl(p.http), noProxy: p.noProxy };
}

/**
 * The CAs upstream TLS trusts: undefined (Node's defaults) without upstream.ca; with it, Node's defaults (bundled
 * roots and NODE_EXTRA_CA_CERTS) and the files' certificates.
 */
export function trustedCAs(files: readonly string[], env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  if (files.length === 0) return undefined;
  const own = (tls as { getCACertificates?: (type: 'default') => string[] }).getCACertificates; // Node >= 22.15
  const defaults = own ? own('default') : [...tls.rootCertificates, ...pems(env.NODE_EXTRA_CA_CERTS)];
  return [...defaults, ...files.flatMap((f) => pems(f))];
}

function pems(file: string | undefined): string[] {
  if (!file) return [];
  try {
    return readFileSync(file, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  } catch {
    return []; // Node itself only warns about an unreadable NODE_EXTRA_CA_CERTS; upstream.ca was read at start-up
  }
}

/**
 * The dispatcher upstream requests go out through: an Agent, or (with a proxy) undici's EnvHttpProxyAgent. `lookup`
 * checks the addresses of direct connections only (the egress policy for downloads); a proxy's own address is not
 * the policy's business (see EgressPolicy.checkBeforeProxy).
 */
export function egressDispatcher(u: EgressSettings, { lookup }: { lookup?: LookupFunction } = {}): Dispatcher {
  const ca = trustedCAs(u.ca);
  const timeouts = { headersTimeout: u.headersTimeoutMs, bodyTimeout: u.bodyTimeoutMs, keepAliveTimeout: 10_000 };
  const tlsOptions = { timeout: u.connectTimeoutMs, ...(ca && { ca }) };
  const connect = { ...tlsOptions, ...(lookup && { lookup }) };
  const proxies = proxiesOf(u);
  if (!proxies) return new Agent({ connect, ...timeouts });
  const options = {
    ...timeouts,
    connect, // direct connections (NO_PROXY)
    httpProxy: proxies.http ?? '', // '' rather than undefined: undici would read process.env
    httpsProxy: proxies.https ?? '',
    noProxy: proxies.noProxy.join(','),
    proxyTunnel: false, // http targets: absolute-form requests; https targets always tunnel
    requestTls: tlsOptions, // TLS to the upstream inside the tunnel
    proxyTls: tlsOptions, // an https:// proxy's own TLS (and the connect timeout to any proxy)
    factory: (origin: string | URL, opts: object) => new Pool(origin, { ...timeouts, ...opts }), // the timeouts reach proxied pools too
  };
  return new EnvHttpProxyAgent(options as EnvHttpProxyAgent.Options);
}

/** The mirror's own credentials for the upstream, as headers; empty without upstream.headers and upstream.token. */
export function credentialHeaders(u: Pick<EgressSettings, 'headers' | 'token'>): Record<string, string> {
  return { ...u.headers, ...(u.token !== undefined && { authorization: `Bearer ${u.token}` }) };
}

/**
 * An interceptor adding the credentials to requests for the upstream's own origins only. Composed below the
 * redirect interceptor (and called per hop by downloads), it sees every hop's origin: a redirect to archive
 * storage elsewhere goes without them.
 */
export function credentialsInterceptor(u: Pick<EgressSettings, 'url' | 'commandsUrl' | 'headers' | 'token'>): Dispatcher.DispatcherComposeInterceptor {
  const extra = credentialHeaders(u);
  const origins = new Set([new URL(u.url).origin, new URL(u.commandsUrl).origin]);
  return (dispatch) => (opts, handler) => {
    if (Object.keys(extra).length === 0 || !origins.has(originOf(opts.origin))) return dispatch(opts, handler);
    return dispatch({ ...opts, headers: { ...extra, ...headerObject(opts.headers) } }, handler);
  };
}

function originOf(origin: string | URL | undefined): string {
  try {
    return new URL(String(origin)).origin;
  } catch {
    return '';
  }
}

function headerObject(headers: Dispatcher.DispatchOptions['headers']): Record<string, string | string[] | undefined> {
  if (!headers) return {};
  if (Array.isArray(headers)) {
    const out: Record<string, string> = {};
    if (Array.isArray(headers[0])) for (const [k, v] of headers as unknown as Array<[string, string]>) out[k.toLowerCase()] = v;
    else for (let i = 0; i + 1 < headers.length; i += 2) out[String(headers[i]).toLowerCase()] = String(headers[i + 1]);
    return out;
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    return Object.fromEntries([...(headers as Iterable<[string, string]>)].map(([k, v]) => [k.toLowerCase(), v]));
  }
  return headers as Record<string, string | string[] | undefined>;
}

/** The values no message may repeat: the token, header values, and the proxies' credentials. */
export function secretsOf(u: Pick<EgressSettings, 'proxy' | 'httpsProxy' | 'httpProxy' | 'headers' | 'token'>): string[] {
  const fromProxy = [u.proxy, u.httpsProxy, u.httpProxy].flatMap((p) => {
    if (!p) return [];
    const url = new URL(p);
    return [url.password, safeDecode(url.password)];
  });
  return [...new Set([u.token, ...Object.values(u.headers), ...fromProxy].filter((s): s is string => !!s && s.length >= 4))];
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** A message with every secret masked, and any URL's user:password@ too. */
export function scrub(message: string, secrets: readonly string[]): string {
  let out = message.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/gi, '$1***@');
  for (const s of secrets) out = out.split(s).join('***');
  return out;
}

const UNTRUSTED_CERTIFICATE = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
]);

/** What a transport failure means for whoever configures egress, when it is one of theirs to fix. */
export function egressHint(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    const message = e instanceof Error ? e.message : '';
    if (typeof code === 'string' && UNTRUSTED_CERTIFICATE.has(code)) {
      return "the upstream's TLS certificate is not trusted: add the CA that issued it to upstream.ca (or NODE_EXTRA_CA_CERTS)";
    }
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return "the upstream's TLS certificate does not name the host in the URL";
    if (code === 'CERT_HAS_EXPIRED') return "the upstream's TLS certificate has expired";
    const proxy = /Proxy response \((\d+)\)|Proxy Authentication Required \((\d+)\)/.exec(message);
    if (proxy) {
      const status = Number(proxy[1] ?? proxy[2]);
      return status === 407 || status === 401
        ? `the proxy refused the mirror's credentials (${status}): check user:password in upstream.proxy or HTTPS_PROXY`
        : `the proxy would not open a tunnel (${status}): it may not allow CONNECT to this host or port`;
    }
  }
  return undefined;
}
