// The bundle format (issue 11): what crosses an air gap. A bundle is a folder:
//
//   manifest.json   what the source mirror held (the full state: every version and generic file with its blob's
//                   sha256 and size), the blobs this bundle carries and which volume holds each, the volumes (size,
//                   sha256), and for an incremental bundle its base and what was deleted since
//   manifest.sig    Ed25519 signatures over manifest.json's exact bytes, with key ids
//   vol-NNNN.tar    volumes of content-addressed entries only (blobs/sha256/<hex>), no compression (zips are
//                   compressed already); each is importable on its own and in any order
//
// The manifest is written last, so a folder without one is an export still under way. Parsing is strict: a bundle
// comes from another site, and a manifest that is not exactly this format is refused, saying what is wrong.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import * as valid from '../model/validate.js';

export const BUNDLE_FORMAT = 1;
export const MANIFEST = 'manifest.json';
export const SIGNATURES = 'manifest.sig';

/** Names of the entries in a volume: nothing else is ever read from or written to one. */
export const BLOB_ENTRY = /^blobs\/sha256\/([0-9a-f]{64})$/;
export const blobEntry = (digest: string) => `blobs/sha256/${digest}`;
export const volumeName = (n: number) => `vol-${String(n).padStart(4, '0')}.tar`;
const VOLUME_NAME = /^vol-\d{4}\.tar$/;

/** A cached version: its archive, and the release metadata an offline mirror answers with. */
export interface CachedEntry {
  readonly kind: 'cached';
  readonly name: string;
  readonly version: string;
  readonly digest: string;
  readonly size: number;
  readonly release: { readonly createdAt: string; readonly body: string; readonly fields: Readonly<Record<string, unknown>> };
}

/** A version of a hosted component, with what its owner published. */
export interface HostedEntry {
  readonly kind: 'hosted';
  readonly name: string;
  readonly version: string;
  readonly digest: string;
  readonly size: number;
  readonly owner: string;
  readonly publisher: string;
  readonly createdAt: string;
  readonly body: string;
  /** The component's publish.yaml fields `s registry list` shows (type, description, category, provider, tags). */
  readonly component: Readonly<Record<string, unknown>>;
}

/** A generic-package file (the newest of its name in its version). */
export interface GenericEntry {
  readonly kind: 'generic';
  readonly owner: string;
  readonly name: string;
  readonly version: string;
  readonly file: string;
  readonly digest: string;
  readonly size: number;
  readonly createdAt: string;
}

export type Entry = CachedEntry | HostedEntry | GenericEntry;

/** What identifies an entry across bundles (and in deletions). */
export function entryId(e: Pick<Entry, 'kind'> & { name: string; version: string; owner?: string; file?: string }): string {
  return e.kind === 'generic' ? `generic:${e.owner}/${e.name}/${e.version}/${e.file}` : `${e.kind}:${e.name}@${e.version}`;
}

export interface Manifest {
  readonly format: typeof BUNDLE_FORMAT;
  readonly id: string;
  readonly createdAt: string;
  readonly source: { readonly mirror: string; readonly upstream: string };
  /** The bundle this one is incremental on: it carries only the blobs that bundle's state did not have. */
  readonly base: string | undefined;
  /** The full state of the source (for the packages exported). */
  readonly entries: readonly Entry[];
  /** Ids of entries in the base's state that are gone from this one. */
  readonly deletions: readonly string[];
  /** The blobs this bundle carries, and the volume that holds each. */
  readonly blobs: ReadonlyArray<{ readonly digest: string; readonly size: number; readonly volume: string }>;
  readonly volumes: ReadonlyArray<{ readonly name: string; readonly size: number; readonly sha256: string }>;
}

export class BundleError extends Error {
  override readonly name = 'BundleError';
}

/** Parses manifest.json, refusing anything that is not exactly this format (an unknown version says so). */
export function parseManifest(text: string): Manifest {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new BundleError('manifest.json is not valid JSON');
  }
  const m = object(doc, 'the manifest');
  if (m.format !== BUNDLE_FORMAT) throw new BundleError(`unknown bundle format ${JSON.stringify(m.format)}: this srm-mirror reads format ${BUNDLE_FORMAT}; upgrade it`);
  const source = object(m.source, 'source');
  const entries = array(m.entries, 'entries').map(parseEntry);
  const ids = new Set<string>();
  for (const e of entries) {
    const id = entryId(e);
    if (ids.has(id)) throw new BundleError(`entries: ${id} is listed twice`);
    ids.add(id);
  }
  const volumes = array(m.volumes, 'volumes').map((v, i) => {
    const o = object(v, `volumes[${i}]`);
    if (typeof o.name !== 'string' || !VOLUME_NAME.test(o.name)) throw new BundleError(`volumes[${i}].name must be vol-NNNN.tar`);
    return { name: o.name, size: size(o.size, `volumes[${i}].size`), sha256: digest(o.sha256, `volumes[${i}].sha256`) };
  });
  const volumeNames = new Set(volumes.map((v) => v.name));
  const blobs = array(m.blobs, 'blobs').map((b, i) => {
    const o = object(b, `blobs[${i}]`);
    if (typeof o.volume !== 'string' || !volumeNames.has(o.volume)) throw new BundleError(`blobs[${i}].volume names no volume of the manifest`);
    return { digest: digest(o.digest, `blobs[${i}].digest`), size: size(o.size, `blobs[${i}].size`), volume: o.volume };
  });
  return {
    format: BUNDLE_FORMAT,
    id: text_(m.id, 'id'),
    createdAt: text_(m.createdAt, 'createdAt'),
    source: { mirror: text_(source.mirror, 'source.mirror'), upstream: text_(source.upstream, 'source.upstream') },
    base: m.base === undefined || m.base === null ? undefined : text_(m.base, 'base'),
    entries,
    deletions: array(m.deletions, 'deletions').map((d, i) => text_(d, `deletions[${i}]`)),
    blobs,
    volumes,
  };
}

function parseEntry(value: unknown, i: number): Entry {
  const o = object(value, `entries[${i}]`);
  const at = (k: string) => `entries[${i}].${k}`;
  const common = { digest: digest(o.digest, at('digest')), size: size(o.size, at('size')) };
  const checked = <T>(check: () => T): T => {
    try {
      return check();
    } catch (err) {
      throw new BundleError(`entries[${i}]: ${(err as Error).message}`);
    }
  };
  switch (o.kind) {
    case 'cached': {
      const r = object(o.release, at('release'));
      return {
        kind: 'cached',
        name: checked(() => valid.packageName(text_(o.name, at('name')))),
        version: checked(() => valid.version(text_(o.version, at('version')))),
        ...common,
        release: { createdAt: string(r.createdAt, at('release.createdAt')), body: string(r.body, at('release.body')), fields: object(r.fields, at('release.fields')) },
      };
    }
    case 'hosted':
      return {
        kind: 'hosted',
        name: checked(() => valid.packageName(text_(o.name, at('name')))),
        version: checked(() => valid.version(text_(o.version, at('version')))),
        ...common,
        owner: text_(o.owner, at('owner')),
        publisher: text_(o.publisher, at('publisher')),
        createdAt: text_(o.createdAt, at('createdAt')),
        body: string(o.body, at('body')),
        component: object(o.component, at('component')),
      };
    case 'generic':
      return {
        kind: 'generic',
        owner: text_(o.owner, at('owner')),
        name: text_(o.name, at('name')),
        version: text_(o.version, at('version')),
        file: text_(o.file, at('file')),
        ...common,
        createdAt: text_(o.createdAt, at('createdAt')),
      };
    default:
      throw new BundleError(`${at('kind')} must be cached, hosted or generic`);
  }
}

function object(v: unknown, what: string): Record<string, unknown> {
  if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  throw new BundleError(`${what} must be an object`);
}
function array(v: unknown, what: string): unknown[] {
  if (Array.isArray(v)) return v;
  throw new BundleError(`${what} must be an array`);
}
function string(v: unknown, what: string): string {
  if (typeof v === 'string') return v;
  throw new BundleError(`${what} must be a string`);
}
function text_(v: unknown, what: string): string {
  if (typeof v === 'string' && v !== '' && v.length <= 1024) return v;
  throw new BundleError(`${what} must be a non-empty string`);
}
function size(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  throw new BundleError(`${what} must be a size in bytes`);
}
function digest(v: unknown, what: string): string {
  if (typeof v === 'string' && /^[0-9a-f]{64}$/.test(v)) return v;
  throw new BundleError(`${what} must be a sha256 (64 lower-case hex digits)`);
}

// ---- signatures --------------------------------------------------------------------------------------------------

export interface Signature {
  readonly keyId: string;
  readonly algorithm: 'ed25519';
  /** The signer's public key (SPKI PEM), so that any reader can check the signature; trust is by keyId. */
  readonly publicKey: string;
  /** base64 */
  readonly signature: string;
}

/** A public key's id: the first 16 hex digits of the sha256 of its DER (SPKI) form. */
export function keyId(key: KeyObject): string {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** A new Ed25519 key pair, as PEM. */
export function newKeyPair(): { privatePem: string; publicPem: string; keyId: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    keyId: keyId(publicKey),
  };
}

export function signManifest(manifest: Buffer, privatePem: string): Signature {
  const key = createPrivateKey(privatePem);
  if (key.asymmetricKeyType !== 'ed25519') throw new BundleError(`the signing key must be an Ed25519 key, not ${key.asymmetricKeyType}`);
  const publicKey = createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
  return { keyId: keyId(key), algorithm: 'ed25519', publicKey, signature: sign(null, manifest, key).toString('base64') };
}

/** manifest.sig's contents for these signatures. */
export function signaturesFile(signatures: readonly Signature[]): string {
  return `${JSON.stringify({ signatures }, null, 2)}\n`;
}

export type SignatureVerdict =
  | { readonly status: 'unsigned' }
  /** A signature does not match the manifest's bytes (or its key id): the manifest or the signature was altered. */
  | { readonly status: 'invalid'; readonly keyId: string }
  /** Every signature matches; `trustedBy` is the trusted key that signed, if any. */
  | { readonly status: 'valid'; readonly keyIds: readonly string[]; readonly trustedBy: string | undefined };

/**
 * Checks manifest.sig (its text, or undefined when absent): every signature must match the manifest's exact bytes
 * (whoever signed: an altered bundle is refused even with no trust configured); trust is a trusted key among them.
 */
export function checkSignatures(manifest: Buffer, sigText: string | undefined, trustedPems: readonly string[]): SignatureVerdict {
  if (sigText === undefined) return { status: 'unsigned' };
  let signatures: Signature[];
  try {
    const doc = object(JSON.parse(sigText), 'manifest.sig');
    signatures = array(doc.signatures, 'manifest.sig signatures').map((s, i) => {
      const o = object(s, `signatures[${i}]`);
      if (o.algorithm !== 'ed25519') throw new BundleError(`manifest.sig: signatures[${i}] has an unknown algorithm ${JSON.stringify(o.algorithm)}`);
      return { keyId: text_(o.keyId, `signatures[${i}].keyId`), algorithm: 'ed25519', publicKey: string(o.publicKey, `signatures[${i}].publicKey`), signature: text_(o.signature, `signatures[${i}].signature`) };
    });
  } catch (err) {
    if (err instanceof BundleError) throw err;
    throw new BundleError('manifest.sig is not valid JSON');
  }
  if (signatures.length === 0) return { status: 'unsigned' };
  for (const s of signatures) {
    let key: KeyObject;
    try {
      key = createPublicKey(s.publicKey);
    } catch {
      return { status: 'invalid', keyId: s.keyId };
    }
    if (key.asymmetricKeyType !== 'ed25519' || keyId(key) !== s.keyId || !verify(null, manifest, key, Buffer.from(s.signature, 'base64'))) {
      return { status: 'invalid', keyId: s.keyId };
    }
  }
  const trusted = new Set(trustedPems.map((pem) => keyId(createPublicKey(pem))));
  return { status: 'valid', keyIds: signatures.map((s) => s.keyId), trustedBy: signatures.find((s) => trusted.has(s.keyId))?.keyId };
}
