// The mirror's configuration: one table of settings, read from config/default.json, an optional --config file,
// SRM_MIRROR_* environment variables and command-line flags (in rising precedence), validated once into a frozen
// object. Every setting is declared exactly once, in SETTINGS below.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import cron from 'node-cron';
import { readTrustedKeys, trustedKeyFiles } from '../bundles/trust.js';
import { checkConfiguredIdentity } from '../intercept/certificates.js';

export type UpstreamType = 'serverless-v3' | 'srm';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Config {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** The PostgreSQL database of the metadata (issue 14); undefined: LevelDB in dataDir. Shown only through redactUrl. */
  readonly databaseUrl: string | undefined;
  /** This replica's name among those sharing one database and data folder (issue 14); undefined: host name and pid. */
  readonly replicaId: string | undefined;
  /** Base URL for the URLs the mirror hands out; undefined = derived from each request. */
  readonly publicUrl: string | undefined;
  readonly trustProxy: boolean;
  /** Never contact the upstream: answer from the cache only. */
  readonly offline: boolean;
  readonly logLevel: LogLevel;
  /** One info line per request (issue 12); false leaves it out, for the last few percent of throughput. */
  readonly accessLog: boolean;
  /** Bearer token that mutating ops endpoints (POST /-/prefetch) require; undefined = they are refused. Never logged. */
  readonly adminToken: string | undefined;
  /** How long a shutdown lets work under way finish, in total, before cutting what is left. */
  readonly shutdownGraceMs: number;
  readonly server: {
    /** Open connections at most (node's server.maxConnections); more are refused at once. */
    readonly maxConnections: number;
    /** nginx offload: the internal location cached HITs are redirected to (X-Accel-Redirect); undefined = off. */
    readonly accelRedirect: string | undefined;
    /** Smaller HITs are sent by the mirror itself. */
    readonly accelRedirectMinSize: number;
  };
  readonly upstream: {
    readonly url: string;
    readonly type: UpstreamType;
    readonly concurrency: number;
    readonly connectTimeoutMs: number;
    readonly headersTimeoutMs: number;
    readonly bodyTimeoutMs: number;
    /** Further tries of a failed idempotent GET, and the first (jittered, doubling) delay between tries. */
    readonly retries: number;
    readonly retryDelayMs: number;
    /** Consecutive failures that mark the upstream down, and the bounds of the wait before probing it. */
    readonly breakerThreshold: number;
    readonly breakerMinMs: number;
    readonly breakerMaxMs: number;
    /** How long a client with a stale copy at hand waits for the upstream before it gets the copy (x-cache STALE). */
    readonly staleAfterMs: number;
    /** One upstream call (queueing and retries included) gets its answer's headers within this, or fails. */
    readonly deadlineMs: number;
    /** Upstream JSON answers larger than this fail (the body is not read further). */
    readonly maxJsonBytes: number;
    /** Hosts archives may be downloaded from besides the upstream's origin ("*.example.com" for subdomains). */
    readonly archiveHosts: readonly string[];
    /** Let downloads reach loopback, link-local and private addresses even when the upstream is not on one. */
    readonly allowPrivateHosts: boolean;
    // Egress (docs/corporate-network.md "Deploying inside a corporate network"). Proxy URLs may carry user:password@:
    // show them only through redactUrl. Headers and token are never logged, shown, or sent anywhere but the upstream's
    // origins.
    /** Where the registry commands go (list, detail, private list, publish, delete): see commandsUrlFor. */
    readonly commandsUrl: string;
    /** One forward proxy for every upstream request (over httpsProxy/httpProxy); undefined: those, or none. */
    readonly proxy: string | undefined;
    /** HTTPS_PROXY / HTTP_PROXY from the environment (only there: no config key). */
    readonly httpsProxy: string | undefined;
    readonly httpProxy: string | undefined;
    /** Hosts reached without the proxy (NO_PROXY's syntax, as undici reads it). */
    readonly noProxy: readonly string[];
    /** PEM files of CAs trusted for upstream TLS, on top of Node's own (absolute paths, each read at start-up). */
    readonly ca: readonly string[];
    /** Extra headers (names lower-case) and a bearer token for the mirror's own requests to the upstream's origins. */
    readonly headers: Readonly<Record<string, string>>;
    readonly token: string | undefined;
  };
  /** Pass-through requests (publish, delete, retoken, private reads): their own lane and limits. */
  readonly writes: {
    readonly concurrency: number;
    /** A request body on which nothing moves this long is cut (and the upstream request aborted). */
    readonly bodyTimeoutMs: number;
    readonly maxBodyBytes: number;
  };
  readonly cache: {
    readonly maxAgeMs: number;
    readonly notFoundTtlMs: number;
    /** Parsed metadata kept in memory in front of LevelDB, in bytes of its JSON. */
    readonly memorySizeBytes: number;
    /** Archives beyond this many bytes are evicted, least recently used first; 0 = no limit. */
    readonly maxSizeBytes: number;
    /** When the scrub rehashes every archive (cron), and how many bytes a second it reads at most (0: no limit). */
    readonly scrubSchedule: string;
    readonly scrubRateBytes: number;
    /** Hash every whole-archive HIT while it is sent, holding its last bytes until the digest matches. */
    readonly verifyOnServe: boolean;
    /** Fills write archives to the device directly (O_DIRECT) where the file system allows, not through the page cache. */
    readonly directWrites: boolean;
    /** Bytes of small hot archives held in memory (0: none), and the largest archive held. */
    readonly memoryArchivesBytes: number;
    readonly memoryArchiveMaxBytes: number;
  };
  /** Packages this mirror owns (see core/hosted): never read from, or sent to, the upstream. */
  readonly hosted: {
    /** Name patterns ("corp-*") of the v3 components that live here. */
    readonly packages: readonly string[];
    /** Hosted content may be read without credentials (false: by any user). */
    readonly anonymousRead: boolean;
    /** Generic-package owners besides each user's own name: group → its members. */
    readonly groups: Readonly<Record<string, readonly string[]>>;
    /** The GitLab API refuses a second file of the same name in a version (it keeps every one, newest served, otherwise). */
    readonly rejectDuplicates: boolean;
    readonly maxFileBytes: number;
    /** All hosted bytes together at most; 0 = no limit. */
    readonly maxSizeBytes: number;
  };
  /** Importing bundles (srm-mirror import, POST /-/import). */
  readonly import: {
    /** The .pub files (Ed25519) a bundle must be signed by; none: any bundle is imported, a signed one checked. */
    readonly trustedKeys: readonly string[];
  };
  /** Proxy mode (src/intercept): the mirror is also the forward proxy of clients that ignore `registry`. */
  readonly intercept: {
    /** Accept CONNECT (and absolute-form requests) for `hosts` and answer them with the mirror's own faces. */
    readonly enabled: boolean;
    /** The registry hosts answered here ("*.example.com" for subdomains). */
    readonly hosts: readonly string[];
    /** Pass CONNECT to any other host:443 through as a plain tunnel, instead of refusing it (403). */
    readonly tunnel: boolean;
    /** The operator's certificate (chain, PEM) and key for `hosts`; undefined: the mirror's own CA issues one. */
    readonly cert: string | undefined;
    readonly key: string | undefined;
  };
  readonly prefetch: {
    readonly enabled: boolean;
    /** A cron expression (node-cron, 5 or 6 fields). */
    readonly schedule: string;
    /** Packages always followed, as "name" or "name@version". */
    readonly packages: readonly string[];
    /** Also follow every package a client asked for through the mirror. */
    readonly followRequested: boolean;
    /** How many of the newest versions of each followed package to keep cached. */
    readonly versions: number;
    /** Packages refreshed at once (each holds at most one upstream request slot). */
    readonly concurrency: number;
    /** A requested package nobody asked for this long is no longer followed; 0 = followed for good. */
    readonly followForMs: number;
  };
}

export class ConfigError extends Error {
  constructor(setting: string, expected: string, got: unknown) {
    super(`invalid setting "${setting}": expected ${expected}, got ${describe(got)}`);
    this.name = 'ConfigError';
  }
}

function describe(value: unknown): string {
  return value === undefined ? 'nothing' : JSON.stringify(value);
}

type Parse<T> = (value: unknown, setting: string) => T;

const str: Parse<string> = (v, s) => {
  if (typeof v === 'string' && v.trim() !== '') return v;
  throw new ConfigError(s, 'a non-empty string', v);
};

/** A replica id names its temp folder and its database sessions: letters, digits, ".", "_" and "-". */
const replicaId: Parse<string | undefined> = (v, s) => {
  if (v === null || v === undefined || v === '') return undefined;
  if (typeof v === 'string' && /^[\w.-]{1,40}$/.test(v) && !/^\.+$/.test(v)) return v;
  throw new ConfigError(s, 'up to 40 letters, digits, ".", "_" or "-", such as "mirror-2"', v);
};

const optionalUrl: Parse<string | undefined> = (v, s) => (v === null || v === undefined || v === '' ? undefined : url(v, s));

function url(v: unknown, s: string): string {
  if (typeof v === 'string') {
    try {
      const u = new URL(v);
      // No user:password@: it would end up in logs and /-/status.
      if ((u.protocol === 'http:' || u.protocol === 'https:') && !u.search && !u.hash && !u.username && !u.password) return v.replace(/\/+$/, '');
    } catch {
      // fall through to the error below
    }
  }
  throw new ConfigError(s, 'an http(s) URL without query, fragment or credentials, e.g. "https://api.devsapp.cn/v3"', v);
}

function integer(min: number, max: number): Parse<number> {
  return (v, s) => {
    const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
    if (typeof n === 'number' && Number.isInteger(n) && n >= min && n <= max) return n;
    throw new ConfigError(s, `a whole number from ${min} to ${max}`, v);
  };
}

const bool: Parse<boolean> = (v, s) => {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && /^(1|true|yes|on)$/i.test(v)) return true;
  if (typeof v === 'string' && /^(0|false|no|off)$/i.test(v)) return false;
  throw new ConfigError(s, 'true or false', v);
};

function oneOf<T extends string>(...values: T[]): Parse<T> {
  return (v, s) => {
    if (typeof v === 'string' && (values as string[]).includes(v)) return v as T;
    throw new ConfigError(s, `one of ${values.join(', ')}`, v);
  };
}

const UNIT_BYTES: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** "20GB", "512MiB", "1.5TB", or a number of bytes; 0 means no limit. */
const bytes: Parse<number> = (v, s) => {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$/i.exec(v) : null;
  if (m) return Math.round(Number(m[1]) * UNIT_BYTES[(m[2] ?? 'b').toLowerCase()]!);
  throw new ConfigError(s, 'a size such as "20GB", "512MiB" or a number of bytes (0 for no limit)', v);
};

/** A size written as settings are ("4GB", "512MiB", bytes), for a command's own option; a ConfigError names it. */
export const parseSize = (value: string, option: string): number => bytes(value, option);

/** A size above zero (where 0 would mean "unbounded", which these limits must never be). */
const positiveBytes: Parse<number> = (v, s) => {
  const n = bytes(v, s);
  if (n > 0) return n;
  throw new ConfigError(s, 'a size above 0 such as "8MB" or "100MB"', v);
};

const positiveDuration: Parse<number> = (v, s) => {
  const ms = duration(v, s);
  if (ms > 0) return ms;
  throw new ConfigError(s, 'a duration above 0 such as "30s"', v);
};

const HOST = /^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$|^\[[0-9a-f:.]+\]$/;

/** A JSON array of host names ("*.example.com" for any subdomain), or a comma-separated string of them. */
const hostList: Parse<readonly string[]> = (v, s) => {
  const list = typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : v;
  if (Array.isArray(list) && list.every((x) => typeof x === 'string' && HOST.test(x.toLowerCase()))) return list.map((x: string) => x.toLowerCase());
  throw new ConfigError(s, 'a list of host names such as ["cdn.example.com", "*.example.com"]', v);
};

/** A secret of at least 16 characters, or nothing. The message never repeats a rejected value. */
const optionalSecret: Parse<string | undefined> = (v, s) => {
  if (v === null || v === undefined || v === '') return undefined;
  if (typeof v === 'string' && v.trim().length >= 16 && !/\s/.test(v)) return v;
  throw new ConfigError(s, 'a token of at least 16 characters without spaces', typeof v === 'string' ? `a ${v.length}-character value` : typeof v);
};

/** An nginx internal location's URI prefix ("/_srm/archives/"), or nothing: unreserved characters, "/" at both ends. */
const accelPrefix: Parse<string | undefined> = (v, s) => {
  if (v === null || v === undefined || v === '') return undefined;
  if (typeof v === 'string' && /^\/([A-Za-z0-9._~-]+\/)+$/.test(v) && !v.includes('..')) return v;
  throw new ConfigError(s, 'a URI prefix such as "/_srm/archives/": starting and ending with "/", of letters, digits and - . _ ~, without ".."', v);
};

// --- Egress settings (proxy, CA, upstream credentials): none of their messages repeats a credential. ---

/** A URL with its user:password@ (a proxy's or a database's credentials) and any ?password= masked, for messages, logs and /-/status. */
export function redactUrl(value: string): string {
  return value
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^/@]*@/i, (_m, scheme: string | undefined) => `${scheme ?? ''}***@`)
    .replace(/([?&]password=)[^&#]*/gi, '$1***');
}

/** A forward proxy: http(s)://[user:password@]host[:port], or host:port (taken as http://); nothing else. */
const proxyUrl: Parse<string | undefined> = (v, s) => {
  if (v === null || v === undefined || v === '') return undefined;
  if (typeof v === 'string') {
    const text = v.trim().includes('://') ? v.trim() : `http://${v.trim()}`;
    try {
      const u = new URL(text);
      if ((u.protocol === 'http:' || u.protocol === 'https:') && u.hostname && (u.pathname === '/' || u.pathname === '') && !u.search && !u.hash && !!u.username === !!u.password) {
        return text.replace(/\/+$/, '');
      }
    } catch {
      // reported below
    }
  }
  throw new ConfigError(s, 'a proxy URL such as "http://proxy.example.com:3128" or "http://user:password@proxy:3128"', typeof v === 'string' ? redactUrl(v) : v);
};

/** A PostgreSQL connection URL: postgres:// or postgresql://, with a host (its password is never repeated). */
const postgresUrl: Parse<string | undefined> = (v, s) => {
  if (v === null || v === undefined || v === '') return undefined;
  if (typeof v === 'string') {
    try {
      const u = new URL(v.trim());
      if ((u.protocol === 'postgres:' || u.protocol === 'postgresql:') && u.hostname && !u.hash) return v.trim();
    } catch {
      // reported below
    }
  }
  throw new ConfigError(s, 'a PostgreSQL URL such as "postgres://srm:secret@db.example.com:5432/srm_mirror"', typeof v === 'string' ? redactUrl(v) : v);
};

/** A PostgreSQL URL given to a command's own option (migrate-metadata --to); a ConfigError names the option. */
export const parsePostgresUrl = (value: unknown, option: string): string | undefined => postgresUrl(value, option);

/** NO_PROXY: names, ".suffix" or "*.suffix", "host:port", IP addresses, "*"; comma or space separated. */
const noProxyList: Parse<readonly string[]> = (v, s) => {
  const list = v === undefined || v === null ? [] : typeof v === 'string' ? v.split(/[,\s]+/).filter(Boolean) : v;
  if (Array.isArray(list) && list.every((x) => typeof x === 'string' && /^[^\s,]+$/.test(x))) return list.map((x: string) => x.toLowerCase());
  throw new ConfigError(s, 'a list of host names such as ["localhost", ".corp.example.com"]', v);
};

/** PEM files of CA certificates: each must be readable and hold at least one certificate. */
const caFiles: Parse<readonly string[]> = (v, s) => {
  const list = v === undefined || v === null ? [] : typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : v;
  if (!Array.isArray(list) || !list.every((x) => typeof x === 'string' && x.trim() !== '')) {
    throw new ConfigError(s, 'a list of PEM files of CA certificates, such as ["/etc/ssl/corp-root.pem"]', v);
  }
  return list as string[];
};

/** Reads the certificates of a PEM file (a ConfigError says which file, and why, when it has none). */
export function readPemCertificates(path: string, setting = 'upstream.ca'): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(setting, 'readable PEM files of CA certificates', `${path} (${(err as Error).message})`);
  }
  const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  try {
    for (const pem of pems) new X509Certificate(pem);
  } catch (err) {
    throw new ConfigError(setting, 'PEM files of valid CA certificates', `${path} (${(err as Error).message})`);
  }
  if (pems.length === 0) throw new ConfigError(setting, 'PEM files of CA certificates', `${path} (no PEM certificate in it)`);
  return pems;
}

/** Headers the transport owns, or that must not be set by hand. */
const RESERVED_HEADERS = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive', 'upgrade', 'te', 'trailer', 'expect', 'proxy-authorization', 'proxy-connection']);

/** An object of header names to values (a JSON string of one, from the environment); values are never repeated. */
const headerMap: Parse<Readonly<Record<string, string>>> = (v, s) => {
  let value: unknown = v ?? {};
  if (typeof v === 'string') {
    try {
      value = JSON.parse(v);
    } catch {
      value = undefined; // reported below
    }
  }
  const expected = 'an object of header names to values, such as {"x-api-key": "..."} (not Host, Connection, Content-Length or Proxy-Authorization)';
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(s, expected, 'something else');
  const headers: Record<string, string> = {};
  for (const [name, val] of Object.entries(value)) {
    const lower = name.toLowerCase();
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(lower) || RESERVED_HEADERS.has(lower)) throw new ConfigError(s, expected, `the header name ${name}`);
    if (typeof val !== 'string' || /[\r\n\0]/.test(val)) throw new ConfigError(s, expected, `an unusable value for ${lower}`);
    headers[lower] = val;
  }
  return headers;
};

/** A credential for the upstream: any non-empty string without whitespace. The message never repeats it. */
const upstreamToken: Parse<string | undefined> = (v, s) => {
  if (v === null || v === undefined || v === '') return undefined;
  if (typeof v === 'string' && !/\s/.test(v) && v.length <= 8192) return v;
  throw new ConfigError(s, 'a token without spaces', typeof v === 'string' ? `a ${v.length}-character value` : typeof v);
};

/** The public registry and the host `s` 3.1.7+ sends its registry commands to when no registry is set. */
export const PUBLIC_V3 = 'https://api.devsapp.cn/v3';
export const PUBLIC_V3_COMMANDS = 'https://server-serverlgistry-v-awljqvnszb.cn-hangzhou.fcapp.run/v3';

/** upstream.commandsUrl's default: the public commands host for the public registry, else the upstream itself. */
export function commandsUrlFor(upstreamUrl: string): string {
  return upstreamUrl === PUBLIC_V3 ? PUBLIC_V3_COMMANDS : upstreamUrl;
}

/** A path, or nothing. */
const optionalPath: Parse<string | undefined> = (v, s) => (v === null || v === undefined || v === '' ? undefined : str(v, s));

const cronExpression: Parse<string> = (v, s) => {
  if (typeof v === 'string' && cron.validate(v)) return v;
  throw new ConfigError(s, 'a cron expression such as "*/30 * * * *"', v);
};

/** A JSON array of package names (optionally name@version), or a comma-separated string of them. */
const packageList: Parse<readonly string[]> = (v, s) => {
  const list = typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : v;
  if (Array.isArray(list) && list.every((x) => typeof x === 'string' && /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?(@[A-Za-z0-9][\w.+-]*)?$/.test(x))) {
    return list as string[];
  }
  throw new ConfigError(s, 'a list of package names such as ["fc3", "fc3-domain@0.0.9"]', v);
};

const NAME_PATTERN = /^[A-Za-z0-9*][A-Za-z0-9._*-]{0,127}$/;

/** A JSON array of package-name patterns ("corp-*", "*-internal"), or a comma-separated string of them. */
const namePatterns: Parse<readonly string[]> = (v, s) => {
  const list = typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : v;
  if (Array.isArray(list) && list.every((x) => typeof x === 'string' && NAME_PATTERN.test(x))) return list as string[];
  throw new ConfigError(s, 'a list of package names, "*" matching any characters, such as ["corp-*", "tools"]', v);
};

/** A user (or group) name of hosted packages: the users file (core/hosted/users) and hosted.groups share it. */
export const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A JSON object of group names to lists of user names (a JSON string of one, from the environment). */
const groups: Parse<Readonly<Record<string, readonly string[]>>> = (v, s) => {
  let value = v;
  if (typeof v === 'string') {
    try {
      value = JSON.parse(v);
    } catch {
      // reported below
    }
  }
  if (
    value && typeof value === 'object' && !Array.isArray(value) &&
    Object.entries(value).every(([g, members]) => USER_NAME.test(g) && Array.isArray(members) && members.every((m) => typeof m === 'string' && USER_NAME.test(m)))
  ) {
    return value as Record<string, string[]>;
  }
  throw new ConfigError(s, 'an object of group names to lists of user names, such as {"platform": ["alice", "ci-bot"]}', v);
};

/** A JSON array of paths (key files, or folders of .pub files), or a comma-separated string of them; none by default. */
const pathList: Parse<readonly string[]> = (v, s) => {
  const list = v === undefined || v === null ? [] : typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : v;
  if (Array.isArray(list) && list.every((x) => typeof x === 'string' && x.trim() !== '')) return list as string[];
  throw new ConfigError(s, 'a folder of .pub files, or a list of paths to them, such as ["/etc/srm-mirror/trusted"]', v);
};

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "10m", "30s", "1h", "250ms", or a number of seconds. */
const duration: Parse<number> = (v, s) => {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return Math.round(v * 1000);
  const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(v) : null;
  if (m) return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 's']!);
  throw new ConfigError(s, 'a duration such as "30s", "10m", "1h" or "500ms"', v);
};

interface Setting {
  /** Dotted path in the config file, e.g. "upstream.url". */
  readonly key: string;
  readonly flag?: string;
  /** The flag takes no value (--trust-proxy). */
  readonly switch?: true;
  readonly env?: readonly string[];
  readonly parse: Parse<unknown>;
  /** Read from the environment only (a config file may not set it): HTTPS_PROXY and the like. */
  readonly envOnly?: true;
  /** Where the parsed value goes in Config, when it differs from key. */
  readonly target?: string;
  readonly help: string;
}

export const SETTINGS: readonly Setting[] = [
  { key: 'host', flag: 'host', env: ['SRM_MIRROR_HOST'], parse: str, help: 'address to listen on' },
  { key: 'port', flag: 'port', env: ['SRM_MIRROR_PORT', 'PORT'], parse: integer(0, 65535), help: 'port to listen on' },
  { key: 'dataDir', flag: 'data', env: ['SRM_MIRROR_DATA'], parse: str, help: 'folder for the metadata database and archives' },
  { key: 'databaseUrl', flag: 'database-url', env: ['SRM_MIRROR_DATABASE_URL'], parse: postgresUrl, help: 'keep the metadata in this PostgreSQL database (postgres://...) instead of LevelDB in the data folder' },
  { key: 'replicaId', flag: 'replica-id', env: ['SRM_MIRROR_REPLICA_ID'], parse: replicaId, help: 'this replica\'s name among those on one database and data folder (default: host name and pid)' },
  { key: 'publicUrl', flag: 'public-url', env: ['SRM_MIRROR_PUBLIC_URL'], parse: optionalUrl, help: 'base of the URLs handed to clients (default: from the request)' },
  { key: 'trustProxy', flag: 'trust-proxy', switch: true, env: ['SRM_MIRROR_TRUST_PROXY'], parse: bool, help: 'honour X-Forwarded-Proto/-Host' },
  { key: 'offline', flag: 'offline', switch: true, env: ['SRM_MIRROR_OFFLINE'], parse: bool, help: 'never contact the upstream; serve the cache only' },
  { key: 'logLevel', flag: 'log-level', env: ['SRM_MIRROR_LOG_LEVEL'], parse: oneOf<LogLevel>('debug', 'info', 'warn', 'error'), help: 'debug, info, warn or error' },
  { key: 'accessLog', flag: 'access-log', env: ['SRM_MIRROR_ACCESS_LOG'], parse: bool, help: 'log one info line per request (false: none)' },
  { key: 'upstream.url', flag: 'upstream', env: ['SRM_MIRROR_UPSTREAM'], parse: url, help: 'the upstream registry base URL' },
  { key: 'upstream.type', flag: 'upstream-type', env: ['SRM_MIRROR_UPSTREAM_TYPE'], parse: oneOf<UpstreamType>('serverless-v3', 'srm'), help: 'serverless-v3 or srm' },
  { key: 'upstream.concurrency', flag: 'upstream-concurrency', env: ['SRM_MIRROR_UPSTREAM_CONCURRENCY'], parse: integer(1, 1024), help: 'most upstream requests at once' },
  { key: 'upstream.connectTimeout', target: 'upstream.connectTimeoutMs', flag: 'connect-timeout', env: ['SRM_MIRROR_CONNECT_TIMEOUT'], parse: duration, help: 'upstream connect timeout' },
  { key: 'upstream.headersTimeout', target: 'upstream.headersTimeoutMs', flag: 'headers-timeout', env: ['SRM_MIRROR_HEADERS_TIMEOUT'], parse: duration, help: 'upstream response headers timeout' },
  { key: 'upstream.bodyTimeout', target: 'upstream.bodyTimeoutMs', flag: 'body-timeout', env: ['SRM_MIRROR_BODY_TIMEOUT'], parse: duration, help: 'upstream idle time between body bytes' },
  { key: 'upstream.retries', flag: 'retries', env: ['SRM_MIRROR_RETRIES'], parse: integer(0, 10), help: 'further tries of a failed upstream GET' },
  { key: 'upstream.retryDelay', target: 'upstream.retryDelayMs', flag: 'retry-delay', env: ['SRM_MIRROR_RETRY_DELAY'], parse: duration, help: 'base delay between tries (jittered, doubling)' },
  { key: 'upstream.breakerThreshold', flag: 'breaker-threshold', env: ['SRM_MIRROR_BREAKER_THRESHOLD'], parse: integer(1, 1000), help: 'upstream failures in a row that mark it down' },
  { key: 'upstream.breakerMinBackoff', target: 'upstream.breakerMinMs', flag: 'breaker-min-backoff', env: ['SRM_MIRROR_BREAKER_MIN_BACKOFF'], parse: duration, help: 'first wait before probing a down upstream' },
  { key: 'upstream.breakerMaxBackoff', target: 'upstream.breakerMaxMs', flag: 'breaker-max-backoff', env: ['SRM_MIRROR_BREAKER_MAX_BACKOFF'], parse: duration, help: 'longest wait between probes' },
  { key: 'upstream.staleAfter', target: 'upstream.staleAfterMs', flag: 'stale-after', env: ['SRM_MIRROR_STALE_AFTER'], parse: duration, help: 'longest wait for the upstream when a stale copy can answer' },
  { key: 'upstream.deadline', target: 'upstream.deadlineMs', flag: 'upstream-deadline', env: ['SRM_MIRROR_UPSTREAM_DEADLINE'], parse: positiveDuration, help: 'longest wait for an upstream answer, queueing and retries included' },
  { key: 'upstream.maxJsonSize', target: 'upstream.maxJsonBytes', flag: 'max-json-size', env: ['SRM_MIRROR_MAX_JSON_SIZE'], parse: positiveBytes, help: 'largest upstream JSON answer read, e.g. 8MB' },
  { key: 'upstream.archiveHosts', flag: 'archive-hosts', env: ['SRM_MIRROR_ARCHIVE_HOSTS'], parse: hostList, help: 'hosts archives may come from besides the upstream, comma-separated (*.example.com allowed)' },
  { key: 'upstream.allowPrivateHosts', flag: 'allow-private-hosts', switch: true, env: ['SRM_MIRROR_ALLOW_PRIVATE_HOSTS'], parse: bool, help: 'let downloads reach private, loopback and link-local addresses' },
  // Egress: docs/corporate-network.md "Deploying inside a corporate network".
  { key: 'upstream.commandsUrl', flag: 'commands-url', env: ['SRM_MIRROR_COMMANDS_URL'], parse: optionalUrl, help: 'where registry commands (list, detail, publish, delete) go (default: see docs/corporate-network.md)' },
  { key: 'upstream.proxy', flag: 'upstream-proxy', env: ['SRM_MIRROR_UPSTREAM_PROXY'], parse: proxyUrl, help: 'forward proxy for every upstream request, over HTTPS_PROXY/HTTP_PROXY' },
  { key: 'upstream.httpsProxy', envOnly: true, env: ['https_proxy', 'HTTPS_PROXY'], parse: proxyUrl, help: 'forward proxy for https upstream requests' },
  { key: 'upstream.httpProxy', envOnly: true, env: ['http_proxy', 'HTTP_PROXY'], parse: proxyUrl, help: 'forward proxy for http upstream requests (and https ones, without HTTPS_PROXY)' },
  { key: 'upstream.noProxy', flag: 'no-proxy', env: ['SRM_MIRROR_NO_PROXY', 'no_proxy', 'NO_PROXY'], parse: noProxyList, help: 'hosts reached without the proxy, comma-separated' },
  { key: 'upstream.ca', flag: 'upstream-ca', env: ['SRM_MIRROR_UPSTREAM_CA'], parse: caFiles, help: 'PEM files of CAs trusted for upstream TLS besides the usual ones, comma-separated' },
  { key: 'upstream.headers', env: ['SRM_MIRROR_UPSTREAM_HEADERS'], parse: headerMap, help: 'extra headers for the upstream, as JSON {"name": "value"}' },
  { key: 'upstream.token', env: ['SRM_MIRROR_UPSTREAM_TOKEN'], parse: upstreamToken, help: 'sent to the upstream as Authorization: Bearer' },
  { key: 'writes.concurrency', flag: 'writes-concurrency', env: ['SRM_MIRROR_WRITES_CONCURRENCY'], parse: integer(1, 256), help: 'most pass-through requests (publish, delete, ...) at once' },
  { key: 'writes.bodyTimeout', target: 'writes.bodyTimeoutMs', flag: 'write-body-timeout', env: ['SRM_MIRROR_WRITE_BODY_TIMEOUT'], parse: positiveDuration, help: 'a request body idle this long is cut' },
  { key: 'writes.maxBodySize', target: 'writes.maxBodyBytes', flag: 'max-body-size', env: ['SRM_MIRROR_MAX_BODY_SIZE'], parse: positiveBytes, help: 'largest request body passed through, e.g. 100MB' },
  { key: 'server.maxConnections', flag: 'max-connections', env: ['SRM_MIRROR_MAX_CONNECTIONS'], parse: integer(1, 1_000_000), help: 'most open client connections' },
  { key: 'server.accelRedirect', flag: 'accel-redirect', env: ['SRM_MIRROR_ACCEL_REDIRECT'], parse: accelPrefix, help: 'behind nginx: its internal location that sends cached archives (X-Accel-Redirect), e.g. /_srm/archives/' },
  { key: 'server.accelRedirectMinSize', flag: 'accel-redirect-min-size', env: ['SRM_MIRROR_ACCEL_REDIRECT_MIN_SIZE'], parse: bytes, help: 'smallest cached archive nginx sends, e.g. 1MB (0: every one)' },
  { key: 'adminToken', flag: 'admin-token', env: ['SRM_MIRROR_ADMIN_TOKEN'], parse: optionalSecret, help: 'bearer token for POST /-/prefetch (unset: refused)' },
  { key: 'shutdownGrace', target: 'shutdownGraceMs', flag: 'shutdown-grace', env: ['SRM_MIRROR_SHUTDOWN_GRACE'], parse: duration, help: 'time work under way gets to finish at shutdown, in total' },
  { key: 'cache.maxAge', target: 'cache.maxAgeMs', flag: 'max-age', env: ['SRM_MIRROR_MAX_AGE'], parse: duration, help: 'how long metadata is served without asking the upstream' },
  { key: 'cache.notFoundTtl', target: 'cache.notFoundTtlMs', flag: 'not-found-ttl', env: ['SRM_MIRROR_NOT_FOUND_TTL'], parse: duration, help: 'how long an upstream 404 is remembered' },
  { key: 'cache.maxSize', target: 'cache.maxSizeBytes', flag: 'max-size', env: ['SRM_MIRROR_MAX_SIZE'], parse: bytes, help: 'disk quota for archives, e.g. 20GB (0: none)' },
  { key: 'prefetch.enabled', flag: 'prefetch', env: ['SRM_MIRROR_PREFETCH'], parse: bool, help: 'run scheduled prefetch (true or false)' },
  { key: 'prefetch.schedule', flag: 'prefetch-schedule', env: ['SRM_MIRROR_PREFETCH_SCHEDULE'], parse: cronExpression, help: 'when prefetch runs (cron)' },
  { key: 'prefetch.packages', flag: 'prefetch-packages', env: ['SRM_MIRROR_PREFETCH_PACKAGES'], parse: packageList, help: 'packages always followed, comma-separated' },
  { key: 'prefetch.followRequested', flag: 'follow-requested', env: ['SRM_MIRROR_FOLLOW_REQUESTED'], parse: bool, help: 'also follow packages clients asked for (true or false)' },
  { key: 'prefetch.versions', flag: 'prefetch-versions', env: ['SRM_MIRROR_PREFETCH_VERSIONS'], parse: integer(1, 100), help: 'newest versions kept per followed package' },
  { key: 'prefetch.followFor', target: 'prefetch.followForMs', flag: 'follow-for', env: ['SRM_MIRROR_FOLLOW_FOR'], parse: duration, help: 'stop following a requested package nobody asked for this long (0: never)' },
  { key: 'prefetch.concurrency', flag: 'prefetch-concurrency', env: ['SRM_MIRROR_PREFETCH_CONCURRENCY'], parse: integer(1, 64), help: 'packages prefetched at once' },
  { key: 'cache.scrubSchedule', flag: 'scrub-schedule', env: ['SRM_MIRROR_SCRUB_SCHEDULE'], parse: cronExpression, help: 'when the scrub rehashes every archive (cron)' },
  { key: 'cache.scrubRate', target: 'cache.scrubRateBytes', flag: 'scrub-rate', env: ['SRM_MIRROR_SCRUB_RATE'], parse: bytes, help: 'bytes per second the scrub reads at most, e.g. 64MB (0: no limit)' },
  { key: 'cache.verifyOnServe', flag: 'verify-on-serve', env: ['SRM_MIRROR_VERIFY_ON_SERVE'], parse: bool, help: 'hash every cached archive while it is served (true or false)' },
  { key: 'cache.directWrites', flag: 'direct-writes', env: ['SRM_MIRROR_DIRECT_WRITES'], parse: bool, help: 'write archives past the page cache (O_DIRECT) where the file system allows (true or false)' },
  { key: 'hosted.packages', flag: 'hosted-packages', env: ['SRM_MIRROR_HOSTED_PACKAGES'], parse: namePatterns, help: 'names of the components hosted here, comma-separated ("corp-*" allowed)' },
  { key: 'hosted.anonymousRead', flag: 'hosted-anonymous-read', env: ['SRM_MIRROR_HOSTED_ANONYMOUS_READ'], parse: bool, help: 'hosted content readable without credentials (true or false)' },
  { key: 'hosted.groups', env: ['SRM_MIRROR_HOSTED_GROUPS'], parse: groups, help: 'generic-package groups, as JSON {"group": ["user", ...]}' },
  { key: 'hosted.rejectDuplicates', flag: 'hosted-reject-duplicates', env: ['SRM_MIRROR_HOSTED_REJECT_DUPLICATES'], parse: bool, help: 'the GitLab API refuses a file name already in the version' },
  { key: 'hosted.maxFileSize', target: 'hosted.maxFileBytes', flag: 'hosted-max-file-size', env: ['SRM_MIRROR_HOSTED_MAX_FILE_SIZE'], parse: positiveBytes, help: 'largest hosted file, e.g. 1GB' },
  { key: 'hosted.maxSize', target: 'hosted.maxSizeBytes', flag: 'hosted-max-size', env: ['SRM_MIRROR_HOSTED_MAX_SIZE'], parse: bytes, help: 'all hosted files together at most, e.g. 100GB (0: no limit)' },
  { key: 'import.trustedKeys', env: ['SRM_MIRROR_IMPORT_TRUSTED_KEYS'], parse: pathList, help: 'public keys bundles must be signed by: .pub files or folders of them' },
  // ---- proxy mode (issue 12, item 3) ----
  { key: 'intercept.enabled', flag: 'intercept', switch: true, env: ['SRM_MIRROR_INTERCEPT'], parse: bool, help: 'proxy mode: also be the forward proxy (`s set proxy`) of clients that ignore `registry`' },
  { key: 'intercept.hosts', flag: 'intercept-hosts', env: ['SRM_MIRROR_INTERCEPT_HOSTS'], parse: hostList, help: 'registry hosts answered in proxy mode, comma-separated' },
  { key: 'intercept.tunnel', flag: 'intercept-tunnel', switch: true, env: ['SRM_MIRROR_INTERCEPT_TUNNEL'], parse: bool, help: 'proxy mode: tunnel CONNECT to other hosts (port 443) instead of refusing it' },
  { key: 'intercept.cert', flag: 'intercept-cert', env: ['SRM_MIRROR_INTERCEPT_CERT'], parse: optionalPath, help: 'proxy mode: certificate (PEM) for the intercepted hosts (default: issued by the mirror\'s own CA)' },
  { key: 'intercept.key', flag: 'intercept-key', env: ['SRM_MIRROR_INTERCEPT_KEY'], parse: optionalPath, help: 'proxy mode: the private key (PEM) of intercept.cert' },
  // ---- end of proxy mode ----
  { key: 'cache.memorySize', target: 'cache.memorySizeBytes', flag: 'memory-size', env: ['SRM_MIRROR_MEMORY_SIZE'], parse: bytes, help: 'metadata kept parsed in memory, e.g. 64MB' },
  { key: 'cache.memoryArchives', target: 'cache.memoryArchivesBytes', flag: 'memory-archives', env: ['SRM_MIRROR_MEMORY_ARCHIVES'], parse: bytes, help: 'small hot archives held in memory, e.g. 8MB (0: none)' },
  { key: 'cache.memoryArchiveMaxSize', target: 'cache.memoryArchiveMaxBytes', flag: 'memory-archive-max-size', env: ['SRM_MIRROR_MEMORY_ARCHIVE_MAX_SIZE'], parse: positiveBytes, help: 'largest archive held in memory, e.g. 2MB' },
];

const DEFAULTS_FILE = new URL('../../config/default.json', import.meta.url);

type Tree = Record<string, unknown>;

export interface ConfigSources {
  /** Flag values by flag name (without "--"); a flag given without a value is true. */
  flags?: Record<string, string | boolean | undefined>;
  env?: NodeJS.ProcessEnv;
  /** Base folder for relative paths (dataDir, --config). */
  cwd?: string;
}

/** Builds the validated, frozen Config; throws ConfigError naming the first bad setting. */
export function loadConfig({ flags = {}, env = process.env, cwd = process.cwd() }: ConfigSources = {}): Config {
  const merged = readJson(DEFAULTS_FILE.pathname, 'config/default.json');
  const file = flags.config ?? env.SRM_MIRROR_CONFIG;
  if (typeof file === 'string') deepMerge(merged, readJson(resolve(cwd, file), file), file);
  else if (file !== undefined) throw new ConfigError('config', 'a file path', file);

  const known = new Set(['config', ...SETTINGS.flatMap((s) => (s.flag ? [s.flag] : []))]);
  for (const flag of Object.keys(flags)) {
    if (!known.has(flag)) throw new ConfigError(`--${flag}`, `one of --${[...known].join(', --')}`, flag);
  }

  const config: Tree = {};
  for (const s of SETTINGS) {
    let raw = s.envOnly ? undefined : getPath(merged, s.key);
    let source = s.key;
    for (const name of [...(s.env ?? [])].reverse()) {
      if (env[name] !== undefined && env[name] !== '') [raw, source] = [env[name], name];
    }
    if (s.flag && flags[s.flag] !== undefined) [raw, source] = [flags[s.flag], `--${s.flag}`];
    setPath(config, s.target ?? s.key, s.parse(raw, source));
  }
  (config as { dataDir: string }).dataDir = resolve(cwd, config.dataDir as string);
  // Egress: the commands' default follows the upstream; CA files are read once here, so that a bad one stops start-up.
  const upstream = config.upstream as { url: string; commandsUrl?: string; ca: readonly string[]; headers: Record<string, string>; token?: string };
  upstream.commandsUrl ??= commandsUrlFor(upstream.url);
  upstream.ca = upstream.ca.map((p) => resolve(cwd, p));
  for (const file of upstream.ca) readPemCertificates(file);
  if (upstream.token !== undefined && upstream.headers.authorization !== undefined) {
    throw new ConfigError('upstream.headers', 'no Authorization header when upstream.token is set (the token is sent as Authorization: Bearer)', 'both');
  }
  const imports = config.import as { trustedKeys: readonly string[] };
  try {
    // Each key is read once here, so that a missing or wrong key stops start-up rather than the first import.
    imports.trustedKeys = trustedKeyFiles(imports.trustedKeys.map((p) => resolve(cwd, p)));
    readTrustedKeys(imports.trustedKeys);
  } catch (err) {
    throw new ConfigError('import.trustedKeys', 'a folder of .pub files or a list of paths to Ed25519 public keys', (err as Error).message);
  }
  const { server, cache } = config as { server: { accelRedirect?: string }; cache: { verifyOnServe: boolean } };
  if (server.accelRedirect !== undefined && cache.verifyOnServe) {
    throw new ConfigError('server.accelRedirect', 'no offload to nginx when cache.verifyOnServe is true (nginx would send the bytes unhashed)', server.accelRedirect);
  }
  checkIntercept(config.intercept as { hosts: readonly string[]; cert?: string; key?: string }, cwd);
  return deepFreeze(config) as unknown as Config;
}

/** Proxy mode: the operator's certificate and key come together, and are read and checked at start-up. */
function checkIntercept(intercept: { hosts: readonly string[]; cert?: string; key?: string }, cwd: string): void {
  if (intercept.hosts.some((h) => h.startsWith('['))) throw new ConfigError('intercept.hosts', 'host names (a certificate names them)', intercept.hosts);
  if ((intercept.cert === undefined) !== (intercept.key === undefined)) {
    throw new ConfigError(intercept.cert === undefined ? 'intercept.cert' : 'intercept.key', 'both intercept.cert and intercept.key, or neither', 'one of them');
  }
  if (intercept.cert === undefined || intercept.key === undefined) return;
  intercept.cert = resolve(cwd, intercept.cert);
  intercept.key = resolve(cwd, intercept.key);
  try {
    checkConfiguredIdentity(intercept.cert, intercept.key, intercept.hosts);
  } catch (err) {
    throw new ConfigError('intercept.cert', 'a PEM certificate for every host of intercept.hosts, and its key in intercept.key', (err as Error).message);
  }
}

function readJson(path: string, label: string): Tree {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('config', 'a readable JSON file', `${label} (${(err as Error).message})`);
  }
  try {
    const value: unknown = JSON.parse(text);
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Tree;
  } catch {
    // reported below
  }
  throw new ConfigError('config', 'a JSON object', `unparseable contents in ${label}`);
}

/** Merges a config file over the defaults, refusing keys that no setting reads (typos must not pass silently). */
function deepMerge(into: Tree, from: Tree, label: string, prefix = ''): void {
  for (const [k, v] of Object.entries(from)) {
    const key = prefix + k;
    const isSection = SETTINGS.some((s) => s.key.startsWith(`${key}.`));
    if (isSection && v && typeof v === 'object' && !Array.isArray(v)) {
      into[k] ??= {};
      deepMerge(into[k] as Tree, v as Tree, label, `${key}.`);
    } else if (SETTINGS.some((s) => s.key === key && !s.envOnly)) {
      into[k] = v;
    } else {
      throw new ConfigError(key, `a known setting (${label} has an unknown key)`, k);
    }
  }
}

function getPath(tree: Tree, path: string): unknown {
  return path.split('.').reduce<unknown>((node, k) => (node && typeof node === 'object' ? (node as Tree)[k] : undefined), tree);
}

function setPath(tree: Tree, path: string, value: unknown): void {
  const keys = path.split('.');
  const last = keys.pop()!;
  let node = tree;
  for (const k of keys) node = (node[k] ??= {}) as Tree;
  node[last] = value;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
