// Opening the metadata database: the schema record, migrations from the layout before it, a lost archive index,
// and a damaged database (refused, then repaired). Real LevelDB in temp folders.
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { key } from '../../src/stores/keys.js';
import { DataFolderLockedError, LevelMetadataStore, MetadataDamagedError, type MetadataStore } from '../../src/stores/metadata-store.js';
import { markIndexIntact, openMetadata, repairMetadata, SCHEMA_VERSION } from '../../src/stores/schema.js';
import { removeTempDirs, tempDir } from '../helpers.js';

afterAll(removeTempDirs);

function logger() {
  const lines: string[] = [];
  return { log: createLogger('debug', { write: (l: string) => lines.push(l) }), lines };
}

const NOW = Date.parse('2026-03-01T00:00:00Z');

async function open(dir: string, hasArchives = false, lines?: string[]) {
  const { log, lines: own } = logger();
  const opened = await openMetadata(dir, { hasArchives: async () => hasArchives, log, now: () => NOW });
  lines?.push(...own);
  return opened;
}

async function all(store: MetadataStore, prefix: string): Promise<Array<readonly [string, unknown]>> {
  const out: Array<readonly [string, unknown]> = [];
  for await (const e of store.entries(prefix)) out.push(e);
  return out;
}

/** A database as the mirror wrote it before schema records: archive records, no reverse index, follows with `since`. */
async function legacy(dir: string, archives: number): Promise<void> {
  const store = await LevelMetadataStore.open(dir);
  const digest = (i: number) => i.toString(16).padStart(64, '0');
  await store.putMany(Array.from({ length: archives }, (_, i) => [key.archive(`pkg${i}@1.0.0`), { digest: digest(i % 1000), size: 10 }] as const));
  await store.put(key.latest('pkg0'), { value: { version: '1.0.0' }, fetchedAt: 1 });
  await store.put(key.follow('pkg0'), { since: '2024-01-01T00:00:00.000Z' });
  await store.close();
}

describe('openMetadata', () => {
  it('a new data folder: writes the schema record, index intact', async () => {
    const dir = join(await tempDir(), 'meta');
    const { store, index } = await open(dir);
    expect(index).toBe('intact');
    expect(await store.get(key.schema)).toEqual({ version: SCHEMA_VERSION });
    await store.close();
  });

  it('migrates the layout before schema records: builds the reverse archive index in batches, dates follows', async () => {
    const dir = join(await tempDir(), 'meta');
    await legacy(dir, 1200); // more than two batches
    const lines: string[] = [];
    const { store, index } = await open(dir, true, lines);
    try {
      expect(index).toBe('intact');
      expect(await store.get(key.schema)).toEqual({ version: SCHEMA_VERSION });
      const digests = await all(store, 'digest:');
      expect(digests).toHaveLength(1200);
      expect(await store.get(key.digest((1005 % 1000).toString(16).padStart(64, '0'), 'pkg1005@1.0.0'))).toBe(1);
      expect(await store.get(key.follow('pkg0'))).toEqual({ since: '2024-01-01T00:00:00.000Z', lastRequested: NOW });
      expect(await store.get(key.latest('pkg0'))).toEqual({ value: { version: '1.0.0' }, fetchedAt: 1 }); // left alone
      expect(lines.filter((l) => l.includes('metadata database migrated'))).toHaveLength(SCHEMA_VERSION);
    } finally {
      await store.close();
    }
  });

  it('runs only the steps after the version it finds', async () => {
    const dir = join(await tempDir(), 'meta');
    await legacy(dir, 3);
    const raw = await LevelMetadataStore.open(dir);
    await raw.put(key.schema, { version: 1 }); // says: reverse index built already (here it is not)
    await raw.close();
    const { store } = await open(dir);
    try {
      expect(await all(store, 'digest:')).toEqual([]);
      expect(await store.get(key.follow('pkg0'))).toMatchObject({ lastRequested: NOW });
      expect(await store.get(key.schema)).toEqual({ version: SCHEMA_VERSION });
    } finally {
      await store.close();
    }
  });

  it('an empty database with archives on disk: the index was lost; it stays lost across restarts until marked intact', async () => {
    const dir = join(await tempDir(), 'meta');
    const lines: string[] = [];
    let { store, index } = await open(dir, true, lines);
    expect(index).toBe('lost');
    expect(await store.get(key.schema)).toBeUndefined(); // not taken for intact on the next start
    expect(lines.join('\n')).toMatch(/archive index is lost.*srm-mirror repair/);
    await store.put(key.latest('fc3'), { value: {}, fetchedAt: 1 }); // the mirror keeps working meanwhile
    await store.close();

    ({ store, index } = await open(dir, true));
    expect(index).toBe('lost'); // documents written meanwhile do not pass for the layout before schema records
    await markIndexIntact(store); // the archive side rebuilt the index
    await store.close();

    ({ store, index } = await open(dir, true));
    expect(index).toBe('intact');
    expect(await store.get(key.indexLost)).toBeUndefined();
    await store.close();
  });

  it('refuses a database written by a newer srm-mirror', async () => {
    const dir = join(await tempDir(), 'meta');
    const raw = await LevelMetadataStore.open(dir);
    await raw.put(key.schema, { version: SCHEMA_VERSION + 1 });
    await raw.close();
    await expect(open(dir)).rejects.toThrow(/newer srm-mirror/);
    // ...and lets go of it: it can be opened again.
    await (await LevelMetadataStore.open(dir)).close();
  });

  it('a folder with LevelDB files but no CURRENT is refused untouched; repair recovers it and reports what it holds', async () => {
    const dir = join(await tempDir(), 'meta');
    await legacy(dir, 5);
    const first = await open(dir);
    await first.store.close();
    await rm(join(dir, 'CURRENT'));
    const before = (await readdir(dir)).sort();
    await expect(open(dir)).rejects.toThrow(MetadataDamagedError);
    await expect(open(dir)).rejects.toThrow(new RegExp(`${dir}.*srm-mirror repair`));
    expect((await readdir(dir)).sort()).toEqual(before);

    const report = await repairMetadata(dir);
    expect(report).toMatchObject({ found: true, records: { archive: 5, digest: 5, follow: 1, latest: 1, schema: 1 }, schema: SCHEMA_VERSION, indexLost: false });
    const { store, index } = await open(dir);
    expect(index).toBe('intact');
    expect(await store.get(key.archive('pkg3@1.0.0'))).toMatchObject({ size: 10 });
    await store.close();
  });

  it('repair of a folder that is not there does nothing', async () => {
    const dir = join(await tempDir(), 'meta');
    expect(await repairMetadata(dir)).toMatchObject({ found: false, records: {} });
    await expect(readdir(dir)).rejects.toThrow(/ENOENT/);
  });

  it('repair refuses while a process holds the database', async () => {
    const dir = join(await tempDir(), 'meta');
    const { store } = await open(dir);
    try {
      await expect(repairMetadata(dir)).rejects.toThrow(DataFolderLockedError);
    } finally {
      await store.close();
    }
  });
});
