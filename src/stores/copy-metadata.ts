// `srm-mirror migrate-metadata`: copies every record of one metadata store into another (LevelDB into PostgreSQL),
// in key order and in batches, so that memory stays bounded whatever the size of the store. Records are copied as
// they are: the keyspace's own migrations (schema.ts) run when a mirror opens the target.
import type { MetadataStore } from './metadata-store.js';

/** Records written per batch (each batch is one atomic write). */
const BATCH = 500;

export interface CopyReport {
  /** Records copied, by kind (the part of the key before its first ":"). */
  readonly copied: Readonly<Record<string, number>>;
  /** Records the target held before, removed first (replace only). */
  readonly removed: number;
}

/** How many records the store holds (a scan). */
export async function countRecords(store: MetadataStore): Promise<number> {
  let n = 0;
  for await (const _ of store.keys('')) n++;
  return n;
}

/** Copies every record of `from` into `to`; replace: removes what `to` held first (else its records are overwritten or kept). */
export async function copyMetadata(from: MetadataStore, to: MetadataStore, { replace = false } = {}): Promise<CopyReport> {
  let removed = 0;
  if (replace) {
    // Deleting while scanning is safe: each page of the scan starts after the last key it saw.
    let batch: string[] = [];
    for await (const key of to.keys('')) {
      batch.push(key);
      if (batch.length >= BATCH) {
        await to.apply({ del: batch });
        removed += batch.length;
        batch = [];
      }
    }
    if (batch.length) await to.apply({ del: batch });
    removed += batch.length;
  }
  const copied: Record<string, number> = {};
  let batch: Array<readonly [string, unknown]> = [];
  for await (const entry of from.entries<unknown>('')) {
    batch.push(entry);
    const kind = entry[0].split(':')[0]!;
    copied[kind] = (copied[kind] ?? 0) + 1;
    if (batch.length >= BATCH) {
      await to.apply({ put: batch }, { durable: true });
      batch = [];
    }
  }
  if (batch.length) await to.apply({ put: batch }, { durable: true });
  return { copied, removed };
}
