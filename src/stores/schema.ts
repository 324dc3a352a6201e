// The layout of the metadata database, and opening it safely. The database records its layout version under
// key.schema; a database of an older layout is migrated step by step on open (each step idempotent, the version
// written after each, so a crash mid-way resumes where it stopped). Opening also tells a lost archive index from a
// new data folder: LevelDB's files deleted (or never there) while archives are on disk means the (package, version)
// → archive records are gone, and until `srm-mirror repair` rebuilds them from the archive files the archive side
// must not take the archives for garbage. A database LevelDB cannot open as it is is refused, never replaced.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import { redactUrl } from '../config/config.js';
import type { Logger } from '../log.js';
import { lockDataFolder } from './data-folder-lock.js';
import { key, prefix } from './keys.js';
import { DataFolderLockedError, hasKeys, LevelMetadataStore, MetadataDamagedError, type MetadataStore } from './metadata-store.js';
import type { PostgresMetadataStore } from './postgres-metadata-store.js';

/** Whether the archive index (archive:, digest:) can be trusted, or was lost with the database and awaits repair. */
export type IndexState = 'intact' | 'lost';

export interface Schema {
  readonly version: number;
}

interface Migration {
  /** The version the database has once this step ran. */
  readonly to: number;
  readonly what: string;
  /** Idempotent; returns how many records it wrote. */
  run(store: MetadataStore, now: number): Promise<number>;
}

/** Records written per batch by a migration (a batch is held in memory and written atomically). */
const BATCH = 500;

/** Every layout change since the first release (version 0: no schema record), in order. */
const MIGRATIONS: readonly Migration[] = [
  {
    to: 1,
    what: 'build the reverse archive index (digest → versions) from the archive records',
    async run(store) {
      let written = 0;
      await inBatches(store, async function* () {
        for await (const [k, ref] of store.entries<{ digest?: unknown }>(prefix.archive())) {
          if (typeof ref?.digest !== 'string') continue;
          written++;
          yield [key.digest(ref.digest, k.slice(prefix.archive().length)), 1] as const;
        }
      });
      return written;
    },
  },
  {
    to: 2,
    what: 'give followed packages a last-requested time (now: none was recorded, so each gets a full prefetch.followFor)',
    async run(store, now) {
      let written = 0;
      await inBatches(store, async function* () {
        for await (const [k, doc] of store.entries<{ lastRequested?: unknown }>(prefix.follow)) {
          if (typeof doc?.lastRequested === 'number') continue;
          written++;
          yield [k, { ...doc, lastRequested: now }] as const;
        }
      });
      return written;
    },
  },
];

/** The layout this code writes. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.to;

export interface OpenMetadataOptions {
  /** Whether any archive file is on disk (asked only when the database turns out to be empty). */
  readonly hasArchives: () => Promise<boolean>;
  readonly log: Logger;
  readonly now?: () => number;
}

/** Where the metadata lives: the embedded LevelDB in dataDir/meta, or the PostgreSQL database at databaseUrl. */
export interface MetadataLocation {
  readonly dataDir: string;
  readonly databaseUrl: string | undefined;
}

/**
 * The one place the metadata engine is chosen: opens it, migrating its keyspace to SCHEMA_VERSION, and says whether
 * the archive index is intact. On PostgreSQL the data folder is locked first (data-folder-lock.ts), and released
 * when the store closes. Throws DataFolderLockedError when another process holds the data folder.
 */
export async function openMetadataStore({ dataDir, databaseUrl }: MetadataLocation, options: OpenMetadataOptions): Promise<{ store: MetadataStore; index: IndexState }> {
  if (databaseUrl === undefined) return openMetadata(join(dataDir, 'meta'), options);
  const location = redactUrl(databaseUrl);
  const release = await lockDataFolder(dataDir);
  let store: PostgresMetadataStore;
  try {
    // Loaded here, not at start: pg and its dependencies cost a LevelDB mirror megabytes of memory for nothing.
    const { PostgresMetadataStore } = await import('./postgres-metadata-store.js');
    store = await PostgresMetadataStore.open(databaseUrl, { now: options.now, onProblem: failing(options.log, location), onClose: release });
  } catch (err) {
    await release();
    throw err;
  }
  return settled(store, location, options);
}

/**
 * Opens the LevelDB metadata database at location, migrating it to SCHEMA_VERSION, and says whether its archive index
 * is intact. Throws MetadataDamagedError (nothing created or changed) when LevelDB's files are damaged, and
 * DataFolderLockedError when another process holds the database.
 */
export async function openMetadata(location: string, options: OpenMetadataOptions): Promise<{ store: LevelMetadataStore; index: IndexState }> {
  const store = await LevelMetadataStore.open(location, { now: options.now, onProblem: failing(options.log, location) });
  return settled(store, location, options);
}

function failing(log: Logger, location: string): (error: string) => void {
  return (error) => log.error('the metadata database is failing: answers pass through uncached where it does (see /-/status)', { location, error });
}

async function settled<S extends MetadataStore>(store: S, location: string, { hasArchives, log, now = Date.now }: OpenMetadataOptions): Promise<{ store: S; index: IndexState }> {
  try {
    return { store, index: await settle(store, location, { hasArchives, log, now }) };
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
}

async function settle(store: MetadataStore, location: string, { hasArchives, log, now }: Required<OpenMetadataOptions>): Promise<IndexState> {
  const lost = () => {
    log.error('the archive index is lost: the metadata database is empty but archives are on disk. Archives are kept (not collected); ' +
      'stop the mirror and run `srm-mirror repair` with the same --data folder to rebuild the index from the archive files', { location });
    return 'lost' as const;
  };
  let schema: Partial<Schema> | undefined;
  try {
    schema = await store.get<Partial<Schema>>(key.schema);
  } catch (err) {
    throw new MetadataDamagedError(location, `its schema record cannot be read: ${(err as Error).message}`, { cause: err });
  }
  if (schema !== undefined) {
    const version = schema?.version;
    if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) throw new MetadataDamagedError(location, `its schema record is not valid: ${JSON.stringify(schema)}`);
    if (version > SCHEMA_VERSION) {
      throw new Error(`the metadata database ${location} has layout ${version}, written by a newer srm-mirror (this one knows up to ${SCHEMA_VERSION}): run that version, or use another --data folder`);
    }
    await migrate(store, version, log, now);
    return 'intact';
  }
  // No schema record: a lost index not rebuilt yet, a new data folder, or the layout before schema records.
  if ((await store.get(key.indexLost)) !== undefined) return lost();
  if (!(await hasKeys(store))) {
    if (!(await hasArchives())) {
      await store.put(key.schema, { version: SCHEMA_VERSION } satisfies Schema);
      return 'intact';
    }
    // Remembered (instead of a schema record), so that what the mirror writes meanwhile does not pass for an index.
    await store.put(key.indexLost, { since: new Date(now()).toISOString() });
    return lost();
  }
  await migrate(store, 0, log, now);
  return 'intact';
}

/** Runs the migrations after `from`, writing the version reached after each one. */
async function migrate(store: MetadataStore, from: number, log: Logger, now: () => number): Promise<void> {
  for (const step of MIGRATIONS.filter((m) => m.to > from)) {
    const started = now();
    const written = await step.run(store, started);
    await store.put(key.schema, { version: step.to } satisfies Schema);
    log.info('metadata database migrated', { to: step.to, what: step.what, written, ms: now() - started });
  }
}

/** Says the archive index is whole again (the archive side calls it once it rebuilt the index from the archive files). */
export async function markIndexIntact(store: MetadataStore): Promise<void> {
  await store.put(key.schema, { version: SCHEMA_VERSION } satisfies Schema);
  await store.del(key.indexLost);
}

export interface RepairReport {
  /** Whether there was a database to repair (false: the folder is missing, and nothing was done). */
  readonly found: boolean;
  /** Records readable after the repair, by kind (the part of the key before its first ":"). */
  readonly records: Readonly<Record<string, number>>;
  /** The layout version found, if the schema record survived. */
  readonly schema: number | undefined;
  /** Whether the database says its archive index is lost (rebuild it from the archive files). */
  readonly indexLost: boolean;
  /** Files LevelDB could not use and set aside in {location}/lost (empty when none). */
  readonly setAside: readonly string[];
}

/**
 * Runs LevelDB's own repair on the database at location (it keeps every record it can read, sets unusable files aside
 * in lost/, and writes a new CURRENT and MANIFEST), then reports what the database holds. Refuses (DataFolderLockedError)
 * while a process holds the database. Run openMetadata afterwards: a schema record lost in the repair makes it migrate
 * from the first layout, which rebuilds what can be rebuilt from the remaining records.
 */
export async function repairMetadata(location: string): Promise<RepairReport> {
  if (!(await readdir(location).then(() => true, () => false))) return { found: false, records: {}, schema: undefined, indexLost: false, setAside: [] };
  await refuseIfLocked(location);
  await LevelMetadataStore.repair(location);
  const store = await LevelMetadataStore.open(location);
  try {
    const records: Record<string, number> = {};
    for await (const k of store.keys('')) {
      const kind = k.split(':')[0]!;
      records[kind] = (records[kind] ?? 0) + 1;
    }
    const schema = await store.get<Partial<Schema>>(key.schema).catch(() => undefined);
    const indexLost = (await store.get(key.indexLost).catch(() => undefined)) !== undefined;
    const setAside = await readdir(join(location, 'lost')).catch(() => []);
    return { found: true, records, schema: typeof schema?.version === 'number' ? schema.version : undefined, indexLost, setAside };
  } finally {
    await store.close();
  }
}

/** LevelDB's repair takes no lock: make sure no server has the database open first. */
async function refuseIfLocked(location: string): Promise<void> {
  const db = new Level(location, { createIfMissing: false });
  try {
    await db.open();
  } catch (err) {
    if ((err as { cause?: { code?: string } }).cause?.code === 'LEVEL_LOCKED') throw new DataFolderLockedError(location);
    return; // damaged or missing: that is what the repair is for
  }
  await db.close();
}

async function inBatches(store: MetadataStore, entries: () => AsyncIterable<readonly [string, unknown]>): Promise<void> {
  let batch: Array<readonly [string, unknown]> = [];
  for await (const entry of entries()) {
    batch.push(entry);
    if (batch.length >= BATCH) {
      await store.putMany(batch);
      batch = [];
    }
  }
  if (batch.length) await store.putMany(batch);
}
