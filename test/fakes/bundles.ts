// Bundles as the format says (src/bundles/manifest.ts), written here for the import tests: volumes of
// blobs/sha256/<hex> entries packed with tar-stream, manifest.json, and manifest.sig signed with Node's crypto.
// Tests add what no exporter writes (hostile tar entries, blobs left out) through the same helper.
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tar, { type Header } from 'tar-stream';
import { blobEntry, BUNDLE_FORMAT, MANIFEST, signaturesFile, signManifest, SIGNATURES, volumeName, type Entry } from '../../src/bundles/manifest.js';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** An entry of the state with its blob's bytes; `carried: false` leaves the blob out of the bundle (a base's). */
export interface Item {
  readonly entry: Entry;
  readonly bytes: Buffer;
  readonly carried?: boolean;
  /** The volume (0-based) that carries its blob; by default blobs are dealt out round-robin. */
  readonly volume?: number;
}

export function cached(name: string, version: string, bytes: Buffer, fields: Record<string, unknown> = {}): Item {
  return {
    entry: { kind: 'cached', name, version, digest: sha256(bytes), size: bytes.length, release: { createdAt: '2026-01-02T03:04:05Z', body: `notes of ${version}`, fields } },
    bytes,
  };
}

export function hosted(name: string, version: string, bytes: Buffer, owner = 'alice'): Item {
  return {
    entry: {
      kind: 'hosted',
      name,
      version,
      digest: sha256(bytes),
      size: bytes.length,
      owner,
      publisher: owner,
      createdAt: '2026-01-02T03:04:05Z',
      body: `hosted ${version}`,
      component: { type: 'Component', description: `${name} from the other site`, provider: ['alibaba'], tags: ['corp'] },
    },
    bytes,
  };
}

export function generic(owner: string, name: string, version: string, file: string, bytes: Buffer): Item {
  return { entry: { kind: 'generic', owner, name, version, file, digest: sha256(bytes), size: bytes.length, createdAt: '2026-01-02T03:04:05Z' }, bytes };
}

/** A raw tar entry put into a volume before its blobs (what no exporter writes). */
export interface RawEntry {
  readonly volume: number;
  readonly header: Partial<Header> & { name: string };
  readonly data?: Buffer;
}

export interface BundleSpec {
  readonly id?: string;
  readonly items: readonly Item[];
  readonly volumes?: number;
  readonly base?: string;
  readonly deletions?: readonly string[];
  /** Private keys (PEM) that sign the manifest; none: unsigned. */
  readonly signWith?: readonly string[];
  readonly raw?: readonly RawEntry[];
  /** Listed in the manifest for a volume without being in it, or the other way round: set by tests. */
  readonly extraListed?: ReadonlyArray<{ digest: string; size: number; volume: number }>;
}

export interface WrittenBundle {
  readonly dir: string;
  readonly manifestText: string;
  readonly volumes: string[];
  /** Which volume file carries each blob. */
  readonly volumeOf: Map<string, string>;
}

export async function writeBundle(dir: string, spec: BundleSpec): Promise<WrittenBundle> {
  await mkdir(dir, { recursive: true });
  const count = spec.volumes ?? 1;
  const blobs = new Map<string, { bytes: Buffer; volume: number }>();
  for (const item of spec.items) {
    if (item.carried === false || blobs.has(item.entry.digest)) continue;
    blobs.set(item.entry.digest, { bytes: item.bytes, volume: item.volume ?? blobs.size % count });
  }
  const volumes = [];
  for (let v = 0; v < count; v++) {
    const pack = tar.pack();
    for (const r of spec.raw ?? []) if (r.volume === v) pack.entry(r.header, r.data ?? Buffer.alloc(0));
    for (const [digest, b] of blobs) if (b.volume === v) pack.entry({ name: blobEntry(digest), size: b.bytes.length, mode: 0o644, mtime: new Date(0) }, b.bytes);
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const chunk of pack) chunks.push(chunk as Buffer);
    const bytes = Buffer.concat(chunks);
    const name = volumeName(v + 1);
    await writeFile(join(dir, name), bytes);
    volumes.push({ name, size: bytes.length, sha256: sha256(bytes) });
  }
  const manifest = {
    format: BUNDLE_FORMAT,
    id: spec.id ?? `bundle-${Date.now()}`,
    createdAt: '2026-11-20T12:00:00.000Z',
    source: { mirror: 'http://mirror-a.test', upstream: 'https://api.devsapp.cn/v3' },
    base: spec.base ?? null,
    entries: spec.items.map((i) => i.entry),
    deletions: spec.deletions ?? [],
    blobs: [
      ...[...blobs].map(([digest, b]) => ({ digest, size: b.bytes.length, volume: volumeName(b.volume + 1) })),
      ...(spec.extraListed ?? []).map((b) => ({ digest: b.digest, size: b.size, volume: volumeName(b.volume + 1) })),
    ],
    volumes,
  };
  const manifestText = `${JSON.stringify(manifest, null, 2)}\n`;
  await writeFile(join(dir, MANIFEST), manifestText);
  if (spec.signWith?.length) await writeFile(join(dir, SIGNATURES), signaturesFile(spec.signWith.map((k) => signManifest(Buffer.from(manifestText), k))));
  return { dir, manifestText, volumes: volumes.map((v) => v.name), volumeOf: new Map([...blobs].map(([d, b]) => [d, volumeName(b.volume + 1)])) };
}
