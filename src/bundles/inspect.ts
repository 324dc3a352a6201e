// What a bundle folder holds, read without importing anything: its manifest's summary, which of its volumes are in
// the folder, and who signed it (and whether a trusted key did). `srm-mirror bundle inspect`.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BundleError, checkSignatures, MANIFEST, parseManifest, SIGNATURES, type Entry, type SignatureVerdict } from './manifest.js';

export interface BundleReport {
  readonly id: string;
  readonly createdAt: string;
  readonly source: { readonly mirror: string; readonly upstream: string };
  readonly base: string | null;
  readonly entries: Record<Entry['kind'], number>;
  readonly deletions: readonly string[];
  readonly blobs: number;
  readonly bytes: number;
  /** Volumes in the folder with their manifest size, missing, or there with another size. */
  readonly volumes: { readonly total: number; readonly present: string[]; readonly missing: string[]; readonly wrongSize: string[] };
  /** The signatures' verdict; `error`: manifest.sig could not be read as signatures at all. */
  readonly signature: SignatureVerdict | { readonly status: 'invalid'; readonly error: string };
}

/** Reads a bundle folder; throws a BundleError when it holds no (valid) manifest. */
export async function inspectBundle(dir: string, trustedPems: readonly string[] = []): Promise<BundleReport> {
  let bytes: Buffer;
  try {
    bytes = await readFile(join(dir, MANIFEST));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    throw new BundleError(`${dir} holds no ${MANIFEST}: not a bundle, or an export not finished yet`);
  }
  const m = parseManifest(bytes.toString('utf8'));
  const sigText = await readFile(join(dir, SIGNATURES), 'utf8').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
  let signature: BundleReport['signature'];
  try {
    signature = checkSignatures(bytes, sigText, trustedPems);
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    signature = { status: 'invalid', error: err.message };
  }
  const volumes = { total: m.volumes.length, present: [] as string[], missing: [] as string[], wrongSize: [] as string[] };
  for (const v of m.volumes) {
    const s = await stat(join(dir, v.name)).catch(() => undefined);
    (s === undefined ? volumes.missing : s.size === v.size ? volumes.present : volumes.wrongSize).push(v.name);
  }
  const entries = { cached: 0, hosted: 0, generic: 0 };
  for (const e of m.entries) entries[e.kind]++;
  return {
    id: m.id,
    createdAt: m.createdAt,
    source: m.source,
    base: m.base ?? null,
    entries,
    deletions: m.deletions,
    blobs: m.blobs.length,
    bytes: m.blobs.reduce((n, b) => n + b.size, 0),
    volumes,
    signature,
  };
}

