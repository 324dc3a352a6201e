// Replicas on one PostgreSQL database (issue 14 part 2), coordinated by SESSION advisory locks: the database releases
// them when the session ends, however the replica dies, so none is ever left held (Athens' distributed single-flight,
// pkg/stash/with_redis.go, without a second engine).
//   - Key locks (Fleet.exclusive): one dedicated connection holds this replica's locks; a lock is taken with
//     pg_try_advisory_lock, polled with a doubling delay for at most lockWaitMs (a blocking pg_advisory_lock would
//     hold a connection per waiter). Losing the connection loses its locks: work under way goes on unlocked.
//   - The leader lease: another dedicated connection tries the leader lock every leaseCheckMs and, holding it, pings
//     the connection as often; a failed ping or a lost connection ends the leadership at once. The server notices a
//     dead replica's session by TCP keepalives set on the session (about 25 s), so a new leader is elected within a
//     minute. The leader's application_name carries its replica id, which pg_locks and pg_stat_activity tell others.
// Both kinds of lock use the two-int4 form: (namespace, key hash); pg_locks shows them with classid = the namespace.
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Fleet, FleetStatus } from '../core/fleet.js';
import type { Logger } from '../log.js';

/** pg_locks' classid of the fills' and refreshes' key locks, and of the leader lock. */
export const KEY_LOCKS = 0x53524d;
export const LEADER_LOCK = 0x53524e;

export interface FleetLimits {
  /** The longest a fill or refresh waits for another replica's to end before it goes ahead without the lock. */
  readonly lockWaitMs: number;
  /** How often the leader lock is tried (and held, checked). */
  readonly leaseCheckMs: number;
  /** How long one statement on a lock connection may take before the connection counts as lost. */
  readonly queryTimeoutMs: number;
  /** Whether to run for leader at all (a server does; a command does not). */
  readonly campaign: boolean;
}

export const DEFAULT_FLEET_LIMITS: FleetLimits = { lockWaitMs: 60_000, leaseCheckMs: 15_000, queryTimeoutMs: 5_000, campaign: true };

/** First and longest pause between two tries of a key lock. */
const POLL_MIN_MS = 20;
const POLL_MAX_MS = 500;
/** application_name is cut at 63 bytes by the server. */
const LEADER_NAME = 'srm-mirror leader ';

/** The int4 a key hashes to (a collision only makes two keys share a lock). */
export function keyHash(key: string): number {
  return createHash('sha256').update(key).digest().readInt32BE(0);
}

interface Session {
  readonly client: pg.Client;
  alive: boolean;
  /** end() was called, or the connection ended by itself (pg: a second end() never resolves). */
  ended: boolean;
}

export class PostgresFleet implements Fleet {
  private keys: Promise<Session> | undefined;
  private leaderSession: Session | undefined;
  private leading = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private lockTimeouts = 0;
  private failure: string | undefined;

  constructor(
    readonly replica: string,
    private readonly connection: pg.ClientConfig,
    private readonly limits: FleetLimits,
    private readonly log: Logger,
  ) {
    this.exclusive = this.exclusive.bind(this);
    if (limits.campaign) void this.campaign();
  }

  isLeader(): boolean {
    return this.leading && this.leaderSession?.alive === true;
  }

  async exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const held = await this.acquire(keyHash(key));
    try {
      return await fn();
    } finally {
      await held?.();
    }
  }

  /**
   * The replicas serving on this database now: every server keeps a session named for its replica (it campaigns for
   * the lead), which pg_stat_activity lists until the server stops or its host dies.
   */
  async servingReplicas(): Promise<string[]> {
    const { client } = await this.keySession();
    const { rows } = await client.query<{ name: string }>(
      `SELECT application_name AS name FROM pg_stat_activity WHERE datname = current_database() AND starts_with(application_name, $1)`,
      [LEADER_NAME],
    );
    return rows.map((r) => r.name.slice(LEADER_NAME.length));
  }

  async status(): Promise<FleetStatus> {
    let leaderReplica: string | undefined;
    try {
      const session = await this.keySession();
      const { rows } = await session.client.query<{ name: string }>(
        `SELECT a.application_name AS name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = 0 AND l.objsubid = 2`,
        [LEADER_LOCK],
      );
      const name = rows[0]?.name;
      leaderReplica = name?.startsWith(LEADER_NAME) ? name.slice(LEADER_NAME.length) : undefined;
    } catch (err) {
      this.failed(err);
    }
    return { replica: this.replica, leader: this.isLeader(), leaderReplica, shared: true, lockTimeouts: this.lockTimeouts, problem: this.failure };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.leading = false;
    const sessions = [this.leaderSession, await this.keys?.catch(() => undefined)];
    await Promise.all(sessions.map((s) => s && end(s)));
  }

  /** Takes a key lock: resolves with its release, or undefined when it could not be had in time (or at all). */
  private async acquire(hash: number): Promise<(() => Promise<void>) | undefined> {
    const deadline = Date.now() + this.limits.lockWaitMs;
    for (let pause = POLL_MIN_MS; ; pause = Math.min(POLL_MAX_MS, pause * 2)) {
      let session: Session;
      try {
        session = await this.keySession();
        const { rows } = await session.client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [KEY_LOCKS, hash]);
        if (rows[0]?.ok) {
          this.failure = undefined;
          return () => this.unlock(session, hash);
        }
      } catch (err) {
        this.failed(err);
        return undefined; // the database is failing: go ahead without
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        this.lockTimeouts++;
        this.log.warn('fleet lock not had in time: going ahead without it (a second upstream fetch is possible)', { waitedMs: this.limits.lockWaitMs });
        return undefined;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(left, pause / 2 + Math.random() * (pause / 2))));
    }
  }

  private async unlock(session: Session, hash: number): Promise<void> {
    if (!session.alive) return; // its session is gone, and its locks with it
    try {
      await session.client.query('SELECT pg_advisory_unlock($1, $2)', [KEY_LOCKS, hash]);
    } catch (err) {
      this.failed(err);
      await end(session); // the sure way to release it
    }
  }

  /** The connection that holds this replica's key locks (a new one once it is lost). */
  private keySession(): Promise<Session> {
    const current = this.keys;
    if (current) return current.then((s) => (s.alive ? s : this.reconnectKeys(current)));
    return this.reconnectKeys(current);
  }

  private reconnectKeys(old: Promise<Session> | undefined): Promise<Session> {
    if (this.keys !== old) return this.keySession(); // another caller reconnected already
    const next = this.connect(`srm-mirror locks ${this.replica}`);
    this.keys = next;
    next.catch(() => {
      if (this.keys === next) this.keys = undefined; // the next caller tries again
    });
    return next;
  }

  private async connect(name: string): Promise<Session> {
    if (this.closed) throw new Error('the fleet coordination is closed');
    const client = new pg.Client({
      ...this.connection,
      application_name: name.slice(0, 63),
      query_timeout: this.limits.queryTimeoutMs,
      // The server's own keepalives: it ends (and unlocks) a session whose host died within about 25 s.
      options: '-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3',
    });
    const session: Session = { client, alive: true, ended: false };
    const lost = (err?: unknown) => {
      if (!session.alive) return;
      session.alive = false;
      if (err !== undefined) this.failed(err);
      if (session === this.leaderSession && this.leading) {
        this.leading = false;
        this.log.warn('no longer leading the fleet-wide jobs: the leader connection was lost', { replica: this.replica });
      }
    };
    client.on('error', lost); // without a listener an 'error' would crash the process
    client.on('end', () => {
      session.ended = true;
      lost();
    });
    try {
      await client.connect();
    } catch (err) {
      await end(session);
      throw err;
    }
    return session;
  }

  /** Tries the leader lock (or, leading, checks the connection), then again after leaseCheckMs, until closed. */
  private async campaign(): Promise<void> {
    try {
      if (!this.leaderSession?.alive) {
        this.leading = false;
        this.leaderSession = await this.connect(LEADER_NAME + this.replica);
      }
      const { client } = this.leaderSession;
      if (this.leading) await client.query('SELECT 1');
      else {
        const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, 0) AS ok', [LEADER_LOCK]);
        if (rows[0]?.ok && !this.closed) {
          this.leading = true;
          this.log.info('leading the fleet-wide jobs', { replica: this.replica });
        }
      }
    } catch (err) {
      this.failed(err);
      if (this.leaderSession) await end(this.leaderSession); // a query that failed or timed out: the session is not to be trusted
    }
    if (!this.closed) {
      this.timer = setTimeout(() => void this.campaign(), this.limits.leaseCheckMs);
      this.timer.unref();
    }
  }

  private failed(err: unknown): void {
    const message = (err as Error)?.message ?? String(err);
    if (this.failure !== message) this.log.warn('fleet coordination failing (fills and refreshes go ahead unlocked)', { error: message });
    this.failure = message;
  }
}

/** Ends a session (its 'end' event marks it lost). */
async function end(session: Session): Promise<void> {
  if (session.ended) return;
  session.ended = true;
  await session.client.end().catch(() => {});
  session.alive = false;
}
