// Reading what an export wrote, independently of the exporter: every volume through tar-stream's extract, checked
// against the manifest the way an importer would.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { extract } from 'tar-stream';
import { expect } from 'vitest';
import { BLOB_ENTRY, checkSignatures, MANIFEST, parseManifest, SIGNATURES, type Manifest } from '../../src/bundles/manifest.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A volume's entries: name → sha256 of the bytes. */
export async function readVolume(path: string): Promise<Map<string, { sha256: string; size: number; type: string }>> {
  const entries = new Map<string, { sha256: string; size: number; type: string }>();
  const tar = extract();
  createReadStream(path).pipe(tar);
  for await (const entry of tar) {
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of entry) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    expect(entries.has(entry.header.name), `${entry.header.name} twice in ${path}`).toBe(false);
    entries.set(entry.header.name, { sha256: hash.digest('hex'), size, type: entry.header.type });
  }
  return entries;
}

/**
 * Checks a bundle folder as an importer would, and resolves with its manifest: it parses; every blob listed is in
 * exactly the volume named, once, with its bytes; volumes hold only blobs/sha256/<hex> entries, all listed; their
 * sizes and sha256 are the manifest's; every entry's blob is carried or in `baseDigests`; the signature checks.
 */
export async function checkBundle(dir: string, { baseDigests = new Set<string>(), trusted = [] as string[] } = {}): Promise<Manifest> {
  const bytes = await readFile(join(dir, MANIFEST));
  const manifest = parseManifest(bytes.toString('utf8'));
  const carried = new Map<string, string>();
  for (const v of manifest.volumes) {
    const path = join(dir, v.name);
    expect((await stat(path)).size).toBe(v.size);
    expect(sha256(await readFile(path))).toBe(v.sha256);
    for (const [name, e] of await readVolume(path)) {
      const digest = BLOB_ENTRY.exec(name)?.[1];
      expect(digest, `entry ${name} of ${v.name}`).toBeDefined();
      expect(e.type).toBe('file');
      expect(e.sha256).toBe(digest);
      expect(carried.has(digest!), `${digest} in two volumes`).toBe(false);
      carried.set(digest!, v.name);
      expect(manifest.blobs.find((b) => b.digest === digest)).toEqual({ digest, size: e.size, volume: v.name });
    }
  }
  expect(manifest.blobs.length).toBe(carried.size);
  for (const e of manifest.entries) expect(carried.has(e.digest) || baseDigests.has(e.digest), `the blob of ${e.kind} ${e.name}@${e.version}`).toBe(true);
  const sig = await readFile(join(dir, SIGNATURES), 'utf8').catch(() => undefined);
  expect(checkSignatures(bytes, sig, trusted).status).not.toBe('invalid');
  return manifest;
}
