// The metadata store on PostgreSQL (--database-url), for several replicas sharing one database: the same contract as
// LevelMetadataStore. One table of key → JSON text (postgres-migrations.ts), keys in byte order (COLLATE "C"). Every
// write is one statement (so atomic), and NOTIFYs the keys it changed in the same transaction (postgres-listener.ts),
// which keeps other replicas' in-memory caches honest. Every wait is bounded: the pool's size and the time to get a
// connection, and each statement's time on the server and on the client.
import pg from 'pg';
import { redactUrl } from '../config/config.js';
import { type Batch, type MetadataProblem, type MetadataStore, ProblemTracker } from './metadata-store.js';
import { CHANNEL, ChangeListener, changePayloads, type ListenerLimits } from './postgres-listener.js';
import { METADATA_TABLE, migrateSql } from './postgres-migrations.js';

export interface PostgresLimits extends ListenerLimits {
  /** Connections at most (the change listener's own one besides). */
  readonly poolSize: number;
  /** Longest wait for a connection (a new one, or a free one of the pool). */
  readonly connectTimeoutMs: number;
  /** Longest a statement may run on the server (the client gives up a little later). */
  readonly statementTimeoutMs: number;
}

export const DEFAULT_LIMITS: PostgresLimits = {
  poolSize: 10,
  connectTimeoutMs: 10_000,
  statementTimeoutMs: 30_000,
  retryMinMs: 250,
  retryMaxMs: 30_000,
  pingMs: 15_000,
  pingTimeoutMs: 5_000,
};

export interface PostgresMetadataStoreOptions {
  /** Told of the first failure of each spell of failures (to log it once). */
  readonly onProblem?: (error: string) => void;
  readonly now?: () => number;
  readonly limits?: Partial<PostgresLimits>;
}

/** Rows per page of a scan: a scan holds one page in memory, and no connection between pages. */
const KEYS_PAGE = 1000;
const ENTRIES_PAGE = 100;

// One statement per write: deletes and upserts (of disjoint keys) and the notifications, committed together.
const WRITE = `WITH gone AS (DELETE FROM ${METADATA_TABLE} WHERE key = ANY($1::text[])),
  written AS (INSERT INTO ${METADATA_TABLE} (key, value) SELECT * FROM unnest($2::text[], $3::text[])
              ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value)
  SELECT pg_notify($4, payload) FROM unnest($5::text[]) AS payload`;

export class PostgresMetadataStore implements MetadataStore {
  private readonly problems: ProblemTracker;
  private readonly watchers = new Set<(keys: readonly string[] | 'all') => void>();
  private listener: ChangeListener | undefined;
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    /** How to connect (for the sessions of its own that stores/postgres-fleet.ts opens). */
    readonly connection: pg.ClientConfig,
    private readonly limits: PostgresLimits,
    options: PostgresMetadataStoreOptions,
  ) {
    this.problems = new ProblemTracker(options.now, options.onProblem);
    // A connection of the pool that fails while idle emits 'error': without a listener it would crash the process.
    pool.on('error', (err) => this.problems.failed(err));
  }

  /** Connects to the database at url and brings its SQL layout up to date; a clear error when it cannot. */
  static async open(url: string, options: PostgresMetadataStoreOptions = {}): Promise<PostgresMetadataStore> {
    const limits = { ...DEFAULT_LIMITS, ...options.limits };
    const connection: pg.ClientConfig = {
      connectionString: url,
      connectionTimeoutMillis: limits.connectTimeoutMs,
      statement_timeout: limits.statementTimeoutMs,
      query_timeout: limits.statementTimeoutMs + 5_000,
      idle_in_transaction_session_timeout: limits.statementTimeoutMs,
      keepAlive: true,
      application_name: 'srm-mirror',
    };
    const pool = new pg.Pool({ ...connection, max: limits.poolSize, idleTimeoutMillis: 30_000 });
    pool.on('error', () => {}); // until the store's own handler is attached
    try {
      const { rows } = await pool.query<{ server_encoding: string }>('SHOW server_encoding');
      // Prefix scans bound keys with "\uffff", as LevelDB's do: the database must hold any Unicode key.
      if (rows[0]?.server_encoding !== 'UTF8') throw new Error(`its encoding is ${rows[0]?.server_encoding}, and srm-mirror needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')`);
      await migrateSql(pool);
    } catch (err) {
      await pool.end().catch(() => {});
      throw new Error(`cannot use the metadata database ${redactUrl(url)}: ${(err as Error).message}`, { cause: err });
    }
    return new PostgresMetadataStore(pool, connection, limits, options);
  }

  async get<T>(key: string): Promise<T | undefined> {
    const { rows } = await this.watch(this.pool.query<{ value: string }>(`SELECT value FROM ${METADATA_TABLE} WHERE key = $1`, [key]));
    return rows[0] === undefined ? undefined : this.decode<T>(rows[0].value);
  }

  async put(key: string, value: unknown): Promise<void> {
    await this.write([[key, value]], []);
  }

  async putMany(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void> {
    await this.write(entries, []);
  }

  async del(key: string): Promise<void> {
    await this.write([], [key]);
  }

  /** Every commit is durable (synchronous_commit's default) whether asked or not. */
  async apply({ put = [], del = [] }: Batch): Promise<void> {
    await this.write(put, del);
  }

  async *keys(prefix: string): AsyncIterable<string> {
    for await (const row of this.scan(prefix, false)) yield row.key;
  }

  async *entries<T>(prefix: string): AsyncIterable<readonly [string, T]> {
    for await (const row of this.scan(prefix, true)) yield [row.key, this.decode<T>(row.value!)] as const;
  }

  problem(): MetadataProblem | undefined {
    return this.problems.problem();
  }

  watchChanges(onChange: (keys: readonly string[] | 'all') => void): () => void {
    this.watchers.add(onChange);
    this.listener ??= new ChangeListener(
      this.connection,
      (keys) => {
        for (const watcher of this.watchers) watcher(keys);
      },
      (err) => this.problems.failed(err),
      this.limits,
    );
    return () => {
      this.watchers.delete(onChange);
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.listener?.stop();
    await this.pool.end();
  }

  /** Level applies a batch in order, puts before deletes: the last put of a key wins, and a delete after it removes it. */
  private async write(put: ReadonlyArray<readonly [string, unknown]>, del: readonly string[]): Promise<void> {
    const values = new Map<string, string>();
    for (const [key, value] of put) values.set(key, JSON.stringify(value));
    for (const key of del) values.delete(key);
    const changed = [...new Set([...put.map(([key]) => key), ...del])];
    await this.watch(this.pool.query(WRITE, [del, [...values.keys()], [...values.values()], CHANNEL, changePayloads(changed)]));
  }

  /** Pages of rows in key order, each page its own query (keyset pagination: "after the last key seen"). */
  private async *scan(prefix: string, withValues: boolean): AsyncIterable<{ key: string; value?: string }> {
    const page = withValues ? ENTRIES_PAGE : KEYS_PAGE;
    const columns = withValues ? 'key, value' : 'key';
    // "\uffff" sorts after every character a key of ours can hold (the bound LevelMetadataStore uses).
    const end = `${prefix}\uffff`;
    // The first page from the prefix itself, each next one after the last key seen.
    let [from, op] = [prefix, '>='];
    for (;;) {
      const { rows } = await this.watch(
        this.pool.query<{ key: string; value?: string }>(`SELECT ${columns} FROM ${METADATA_TABLE} WHERE key ${op} $1 AND key < $2 ORDER BY key LIMIT ${page}`, [from, end]),
      );
      yield* rows;
      if (rows.length < page) return;
      [from, op] = [rows[rows.length - 1]!.key, '>'];
    }
  }

  private decode<T>(text: string): T {
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw this.problems.failed(err);
    }
  }

  private async watch<T>(op: Promise<T>): Promise<T> {
    try {
      return await op;
    } catch (err) {
      throw this.problems.failed(err);
    }
  }
}
