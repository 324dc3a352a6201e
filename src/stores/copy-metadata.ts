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
  // Deleting while scanning is safe: each page of the scan starts after the last key it saw.
  const removed = replace ? await inBatches(to.keys(''), (keys) => to.apply({ del: keys })) : 0;
  const copied: Record<string, number> = {};
  await inBatches(from.entries<unknown>(''), (entries) => {
    for (const [key] of entries) {
      const kind = key.split(':')[0]!;
      copied[kind] = (copied[kind] ?? 0) + 1;
    }
    return to.apply({ put: entries }, { durable: true });
  });
  return { copied, removed };
}

/** Hands `items` to `write` BATCH at a time (the last batch may be smaller); resolves with how many there were. */
async function inBatches<T>(items: AsyncIterable<T>, write: (batch: T[]) => Promise<void>): Promise<number> {
  let batch: T[] = [];
  let n = 0;
  for await (const item of items) {
    batch.push(item);
    n++;
    if (batch.length >= BATCH) {
      await write(batch);
      batch = [];
    }
  }
  if (batch.length) await write(batch);
  return n;
}
