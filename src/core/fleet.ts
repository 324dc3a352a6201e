// What replicas of one mirror share beyond the stores (issue 14 part 2): a lock per key across the fleet (one upstream
// fetch of an archive or a metadata document for all replicas), and one leader for the fleet-wide jobs (prefetch,
// quota eviction, collection, scrub). A lone mirror (LevelDB) is a fleet of one: its lock is in-process single-flight
// alone (the callers' own) and it always leads; on PostgreSQL, stores/postgres-fleet.ts does both with advisory locks.
import { hostname } from 'node:os';

/**
 * Runs fn holding `key`'s lock across the fleet. Whatever fn guards may have been written by another replica while
 * this one waited: fn looks in the store again first. When the lock cannot be had (the wait is over, the database is
 * down), fn runs all the same: a second upstream fetch is better than no answer.
 */
export type Exclusive = <T>(key: string, fn: () => Promise<T>) => Promise<T>;

/** No lock: the process is the whole fleet (its callers' single-flight suffices). */
export const unshared: Exclusive = (_key, fn) => fn();

export interface FleetStatus {
  readonly replica: string;
  /** Whether this replica runs the fleet-wide jobs now. */
  readonly leader: boolean;
  /** The replica that leads, as the database says (undefined: none, or it cannot say). */
  readonly leaderReplica: string | undefined;
  readonly shared: boolean;
  /** Fleet locks not had in time (the fill or refresh went ahead without: a possible second upstream fetch), since start. */
  readonly lockTimeouts: number;
  /** Why the coordination is failing, when it is. */
  readonly problem: string | undefined;
}

export interface Fleet {
  readonly replica: string;
  readonly exclusive: Exclusive;
  /** Whether this replica is to run a fleet-wide job now (a lone mirror always is). */
  isLeader(): boolean;
  status(): Promise<FleetStatus>;
  close(): Promise<void>;
}

/** A mirror alone on its data folder (LevelDB): it leads, and locks nothing beyond its own process. */
export function loneMirror(replica: string): Fleet {
  return {
    replica,
    exclusive: unshared,
    isLeader: () => true,
    status: async () => ({ replica, leader: true, leaderReplica: replica, shared: false, lockTimeouts: 0, problem: undefined }),
    close: async () => {},
  };
}

/** The default replica id: the host's name and the process id (unique while it runs; a restart is a new replica). */
export function defaultReplicaId(): string {
  return `${hostname()}-${process.pid}`;
}
