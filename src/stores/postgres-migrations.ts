// The SQL layout of the metadata store on PostgreSQL, versioned: each migration runs once, in a transaction of its own,
// and is recorded in srm_schema_migrations in that transaction. Replicas that start together take turns: each such
// transaction first takes a transaction-scoped advisory lock (released at commit, at rollback, or with a dead session),
// then looks again at what is applied. (The keyspace's own migrations, schema.ts, run over the store afterwards.)
import type pg from 'pg';

/** The advisory-lock class of srm-mirror ("srm\0"); the second key says what is locked. */
export const LOCK_CLASS = 0x73726d00;
const LOCK_MIGRATIONS = 1;

export const METADATA_TABLE = 'srm_metadata';
export const MIGRATIONS_TABLE = 'srm_schema_migrations';

interface SqlMigration {
  readonly version: number;
  readonly what: string;
  readonly sql: string;
}

const MIGRATIONS: readonly SqlMigration[] = [
  {
    version: 1,
    what: 'the key → document table',
    // COLLATE "C": keys in byte order, as LevelDB keeps them, and prefix ranges served by the primary key's index.
    // Documents as text (JSON.stringify's own output): jsonb would reorder object keys and refuse \u0000.
    sql: `CREATE TABLE ${METADATA_TABLE} (key text COLLATE "C" PRIMARY KEY, value text NOT NULL)`,
  },
];

export const SQL_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** Applies the migrations the database lacks; resolves with the versions applied now (none: it was up to date). */
export async function migrateSql(pool: pg.Pool): Promise<number[]> {
  const applied: number[] = [];
  for (const migration of MIGRATIONS) {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_CLASS, LOCK_MIGRATIONS]);
      await client.query(`CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (version integer PRIMARY KEY, what text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
      const { rows } = await client.query<{ latest: number | null; done: boolean }>(
        `SELECT max(version) AS latest, bool_or(version = $1) AS done FROM ${MIGRATIONS_TABLE}`,
        [migration.version],
      );
      const latest = rows[0]?.latest ?? 0;
      if (latest > SQL_SCHEMA_VERSION) {
        throw new Error(`the metadata database has SQL schema ${latest}, written by a newer srm-mirror (this one knows up to ${SQL_SCHEMA_VERSION}): run that version`);
      }
      if (!rows[0]?.done) {
        await client.query(migration.sql);
        await client.query(`INSERT INTO ${MIGRATIONS_TABLE} (version, what) VALUES ($1, $2)`, [migration.version, migration.what]);
        applied.push(migration.version);
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }
  return applied;
}
