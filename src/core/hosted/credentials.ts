// The credentials a request may carry for a user of this mirror, as read from its headers, and the checks of the
// `s` client's signed headers: the signature, the clock window, and a memory of nonces against replays.
//
// The `s` client (@serverless-devs/s 3.1.10, lib/index.js, minified; names restored) signs every registry read
// with the secret S it keeps in ~/.s/serverless-devs-platform-V3.dat (written verbatim by `s registry login
// --token S`) or $serverless_devs_registry_token:
//
//   getSignHeaders = () => { let t = getToken(); if (!t) return {};
//     let r = md5(t), n = `${parseInt(`${new Date().getTime()/1e3}`, 10)}`, u = randomString({length: 15});
//     return { sign_code: sha256hex(t, u, n), nonce: u, timestamp: n, token: r } }
//   sha256hex = (e, t, r) => { let n = `${e}${t}${r}`, u = crypto.createHash("sha256"); u.update(n); return u.digest("hex") }
//
// So token = md5 of S's UTF-8 bytes (the `md5` package, lower-case hex), timestamp = whole unix seconds, nonce =
// 15 characters of [0-9A-Za-z] (Math.random), sign_code = sha256 hex of S + nonce + timestamp. Note that its
// zipball download masks the headers in place before sending them (fieldEncryption: "abc****xyz", meant for its
// debug log), so an `s` download carries a token that names nobody: it is anonymous here.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { MirrorError } from '../../model/errors.js';

export interface SignedCredential {
  readonly kind: 'signed';
  /** md5(secret), hex: which user signed. */
  readonly token: string;
  readonly nonce: string | undefined;
  readonly timestamp: string | undefined;
  readonly signCode: string | undefined;
}

export type Credential =
  | SignedCredential
  | { readonly kind: 'basic'; readonly name: string; readonly secret: string }
  /** A bare secret: `Authorization: token|Bearer`, or a GitLab-style token header. */
  | { readonly kind: 'secret'; readonly secret: string };

/** GitLab's token headers (personal, CI job and deploy tokens). */
const TOKEN_HEADERS = ['private-token', 'job-token', 'deploy-token'];

/** A signed request's timestamp may be this far from the mirror's clock, either way. */
export const SIGNATURE_WINDOW_MS = 5 * 60_000;

export function unauthorized(reason: string): MirrorError {
  return new MirrorError('unauthorized', reason);
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  const text = Array.isArray(value) ? value.join(', ') : value;
  return text?.trim() || undefined;
}

/**
 * The request's credentials, undefined when it carries none of a form this mirror knows. The first form present
 * decides, in this order: Authorization (Basic, token, Bearer; another scheme is not ours and is passed over), the
 * GitLab token headers, the `s` client's signed headers.
 */
export function readCredential(headers: IncomingHttpHeaders): Credential | undefined {
  const authorization = /^(\S+)\s+(\S+)$/.exec(header(headers, 'authorization') ?? '');
  const scheme = authorization?.[1]!.toLowerCase();
  if (scheme === 'basic') {
    const decoded = Buffer.from(authorization![2]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 1) throw unauthorized('malformed Basic credentials: expected base64 of NAME:SECRET');
    return { kind: 'basic', name: decoded.slice(0, colon), secret: decoded.slice(colon + 1) };
  }
  if (scheme === 'token' || scheme === 'bearer') return { kind: 'secret', secret: authorization![2]! };
  for (const name of TOKEN_HEADERS) {
    const secret = header(headers, name);
    if (secret) return { kind: 'secret', secret };
  }
  const token = header(headers, 'token');
  if (token) return { kind: 'signed', token, nonce: header(headers, 'nonce'), timestamp: header(headers, 'timestamp'), signCode: header(headers, 'sign_code') };
  return undefined;
}

/** The `token` header the `s` client sends for a secret. */
export function signedToken(secret: string): string {
  return createHash('md5').update(secret, 'utf8').digest('hex');
}

/**
 * Checks a signed request of the user whose secret is given (its token matched): the signature, the timestamp
 * against `now`, and that its nonce is new. Throws MirrorError('unauthorized') saying which failed.
 */
export function verifySigned(c: SignedCredential, user: { name: string; secret: string }, now: number, nonces: NonceMemory): void {
  if (c.signCode === undefined || c.nonce === undefined || c.timestamp === undefined) {
    throw unauthorized('incomplete signed request: token, sign_code, nonce and timestamp go together');
  }
  const expected = Buffer.from(createHash('sha256').update(`${user.secret}${c.nonce}${c.timestamp}`, 'utf8').digest('hex'));
  const given = Buffer.from(c.signCode.toLowerCase());
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw unauthorized('bad signature (sign_code)');
  if (!/^\d{1,12}$/.test(c.timestamp)) throw unauthorized('bad timestamp: expected unix seconds');
  const signedAt = Number(c.timestamp) * 1000;
  if (Math.abs(now - signedAt) > SIGNATURE_WINDOW_MS) {
    throw unauthorized('the signed request is more than 5 minutes away from the mirror\'s clock: check the clocks, and sign again');
  }
  // Bounded: every nonce is remembered, and so occupies memory, until its request could no longer be accepted.
  if (!/^[\x21-\x7e]{8,64}$/.test(c.nonce)) throw unauthorized('bad nonce: expected 8 to 64 visible ASCII characters');
  const seen = nonces.record(`${user.name}\n${c.nonce}`, signedAt + SIGNATURE_WINDOW_MS, now);
  if (seen === 'replayed') throw unauthorized('nonce already used: a signed request is accepted once');
  if (seen === 'full') throw unauthorized('too many signed requests in the last 5 minutes to remember them all: try again shortly');
}

/** The nonces of signed requests accepted in the window, each until its request would be refused as too old. */
export class NonceMemory {
  /** Key → when it expires (ms). Kept in insertion order, which is roughly the order of expiry. */
  private readonly expiries = new Map<string, number>();
  /** While full: no sweep can free a place before this. */
  private fullUntil = 0;

  constructor(readonly capacity = 100_000) {}

  get size(): number {
    return this.expiries.size;
  }

  /** Remembers a key until `expires` (inclusive); 'replayed' if it is remembered already, 'full' when no place is free. */
  record(key: string, expires: number, now: number): 'recorded' | 'replayed' | 'full' {
    for (const [k, e] of this.expiries) {
      if (e >= now) break; // cheap pruning from the front; sweep() catches what is out of order
      this.expiries.delete(k);
    }
    const seen = this.expiries.get(key);
    if (seen !== undefined && seen >= now) return 'replayed';
    this.expiries.delete(key);
    if (this.expiries.size >= this.capacity && !this.sweep(now)) return 'full';
    this.expiries.set(key, expires);
    return 'recorded';
  }

  /** Drops every expired key; whether a place is free after. */
  private sweep(now: number): boolean {
    if (now < this.fullUntil) return false;
    let soonest = Infinity;
    for (const [k, e] of this.expiries) {
      if (e < now) this.expiries.delete(k);
      else soonest = Math.min(soonest, e);
    }
    if (this.expiries.size < this.capacity) return true;
    this.fullUntil = soonest + 1;
    return false;
  }
}
