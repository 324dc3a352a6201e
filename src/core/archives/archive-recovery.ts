// Rebuilding the archive index from the archives themselves, after the metadata database was lost or repaired
// (`srm-mirror repair`). A component's zip carries its publish.yaml, whose Name and Version say which version the
// archive is. Every archive is hashed first; what is corrupt, or cannot be attributed to exactly one version, is
// moved to quarantine (kept, never served, removed only by `srm-mirror gc --quarantine`), never deleted.
import { componentIdentity, isPublishYaml, MAX_PUBLISH_YAML } from '../../model/publish-yaml.js';
import { readZipEntry } from '../../model/zip.js';
import type { ArchiveStore } from '../../stores/archive-store.js';
import type { ArchiveIndex } from './archive-index.js';
import { sha256Of } from './archive-verifier.js';

export interface RecoveryReport {
  readonly archives: number;
  /** Versions whose index entry was rebuilt from their archive (package@version). */
  readonly recovered: string[];
  /** Archives the index already pointed at. */
  readonly indexed: number;
  /** Archives moved to quarantine, and why. */
  readonly quarantined: Array<{ digest: string; reason: string }>;
  /** Versions whose archive file is gone (forgotten: fetched again when online). */
  readonly forgotten: string[];
}

export async function rebuildIndex(store: ArchiveStore, index: ArchiveIndex): Promise<RecoveryReport> {
  const report = { archives: 0, recovered: [] as string[], indexed: 0, quarantined: [] as Array<{ digest: string; reason: string }>, forgotten: [] as string[] };
  const forgotten = new Set<string>();
  for await (const [id, ref] of index.entries()) {
    if ((await store.stat(ref.digest))?.size !== ref.size) forgotten.add(id);
  }
  for (const id of forgotten) await index.remove(id);
  report.forgotten.push(...forgotten);

  const all: string[] = [];
  for await (const a of store.list()) all.push(a.digest);
  for (const digest of all) {
    report.archives++;
    const reason = await attribute(store, index, digest, report.recovered);
    if (reason === 'indexed') report.indexed++;
    else if (reason !== undefined) {
      await store.quarantine(digest);
      report.quarantined.push({ digest, reason });
    }
  }
  return report;
}

/** Indexes one archive; resolves with 'indexed' (already was), undefined (now is), or why it cannot be. */
async function attribute(store: ArchiveStore, index: ArchiveIndex, digest: string, recovered: string[]): Promise<string | undefined> {
  const reader = await store.open(digest);
  if (!reader) return 'gone while being read';
  try {
    if ((await sha256Of(reader)) !== digest) return 'corrupt: its bytes do not match its digest';
    if ((await index.versionsOf(digest)).length > 0) return 'indexed';
    const yaml = await readZipEntry(reader, reader.stat.size, isPublishYaml, MAX_PUBLISH_YAML).catch(
      (err: unknown) => (err as Error).message,
    );
    if (typeof yaml === 'string') return `not a readable zip: ${yaml}`;
    if (!yaml) return 'no publish.yaml in the archive';
    const identity = componentIdentity(yaml.toString('utf8'));
    if (!identity) return 'its publish.yaml names no valid Name and Version';
    const id = `${identity.name}@${identity.version}`;
    const existing = await index.get(id);
    if (existing) return `${id} already points at archive ${existing.digest}`;
    await index.put(id, { digest, size: reader.stat.size });
    recovered.push(id);
    return undefined;
  } finally {
    reader.close();
  }
}
