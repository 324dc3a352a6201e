// Change notifications between replicas: every write to the metadata table NOTIFYs CHANNEL (in its own transaction,
// so only committed writes are told) with the keys it changed, and each replica LISTENs on a connection of its own
// to drop those keys from its in-memory cache. A replica hears its own writes too, which is harmless (a dropped key
// is read again). Notifications sent while the connection is down are lost: so losing it, and getting it back, both
// count as "everything may have changed". The connection is checked with a ping (a silent half-open TCP connection
// raises no error), and reconnected with a doubling, jittered, capped delay, for as long as the store is open.
import pg from 'pg';

export const CHANNEL = 'srm_mirror_keys';
/** The listening connection's application_name (in pg_stat_activity). */
export const LISTENER_NAME = 'srm-mirror listen';
/** The payload meaning "any key may have changed": too many keys to name. */
const FLUSH = '*';
/** NOTIFY's payload must be shorter than 8000 bytes. */
const MAX_PAYLOAD_BYTES = 7999;
/** Notifications one write sends at most (a batch of access times names thousands of keys); beyond: one flush. */
const MAX_NOTIFICATIONS = 32;

/** The payloads that tell listeners these keys changed: JSON arrays of keys, each under NOTIFY's limit, or a flush. */
export function changePayloads(keys: readonly string[]): string[] {
  const payloads: string[] = [];
  let chunk: string[] = [];
  let bytes = 2;
  for (const key of keys) {
    const size = Buffer.byteLength(JSON.stringify(key)) + 1;
    if (size + 2 > MAX_PAYLOAD_BYTES) return [FLUSH];
    if (bytes + size > MAX_PAYLOAD_BYTES) {
      payloads.push(JSON.stringify(chunk));
      if (payloads.length >= MAX_NOTIFICATIONS) return [FLUSH];
      [chunk, bytes] = [[], 2];
    }
    chunk.push(key);
    bytes += size;
  }
  if (chunk.length) payloads.push(JSON.stringify(chunk));
  return payloads;
}

/** The keys a payload names, or 'all' (a flush, or a payload not of ours). */
export function changedKeys(payload: string | undefined): readonly string[] | 'all' {
  if (payload === undefined || payload === FLUSH) return 'all';
  try {
    const keys: unknown = JSON.parse(payload);
    if (Array.isArray(keys) && keys.every((k) => typeof k === 'string')) return keys as string[];
  } catch {
    // not ours: treated as a flush below
  }
  return 'all';
}

export interface ListenerLimits {
  /** First and longest wait before connecting again. */
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  /** How often the connection is checked, and how long the check may take. */
  readonly pingMs: number;
  readonly pingTimeoutMs: number;
}

export class ChangeListener {
  private stopped = false;
  /** Resolves when stop() is called: whatever the loop waits for (a connection, a loss, a delay) gives way to it. */
  private readonly stopping: Promise<void>;
  private stop$!: () => void;
  private readonly running: Promise<void>;

  /**
   * config: the connection's settings; onChange: told of the keys changed ('all': on connection loss and recovery);
   * onFailure: told why the connection failed or was lost.
   */
  constructor(
    private readonly config: pg.ClientConfig,
    private readonly onChange: (keys: readonly string[] | 'all') => void,
    private readonly onFailure: (err: unknown) => void,
    private readonly limits: ListenerLimits,
  ) {
    this.stopping = new Promise((resolve) => (this.stop$ = resolve));
    this.running = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stop$();
    await this.running;
  }

  private async run(): Promise<void> {
    let delay = this.limits.retryMinMs;
    while (!this.stopped) {
      const client = new pg.Client({ ...this.config, application_name: LISTENER_NAME, query_timeout: this.limits.pingTimeoutMs });
      const lost = new Promise<unknown>((resolve) => {
        // An 'error' without a listener would crash the process.
        client.on('error', resolve);
        client.on('end', () => resolve(new Error('the connection ended')));
      });
      let ping: NodeJS.Timeout | undefined;
      try {
        await Promise.race([client.connect(), this.stopping]);
        if (this.stopped) break;
        client.on('notification', (n) => {
          if (n.channel === CHANNEL) this.onChange(changedKeys(n.payload));
        });
        await client.query(`LISTEN ${CHANNEL}`);
        // What was cached before this LISTEN took effect may have missed a notification.
        this.onChange('all');
        delay = this.limits.retryMinMs;
        const pinged = new Promise<unknown>((resolve) => {
          ping = setInterval(() => void client.query('SELECT 1').catch(resolve), this.limits.pingMs);
        });
        const why = await Promise.race([lost, pinged, this.stopping]);
        if (!this.stopped) this.onFailure(new Error(`the change notifications connection was lost (${(why as Error)?.message ?? String(why)}): reconnecting`));
      } catch (err) {
        if (!this.stopped) this.onFailure(err);
      } finally {
        clearInterval(ping);
        await client.end().catch(() => {}); // once only: a second end() of a pg client never resolves
      }
      if (this.stopped) return;
      this.onChange('all'); // notifications may be missed until the next LISTEN
      const wait = delay / 2 + Math.random() * (delay / 2);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([new Promise((resolve) => (timer = setTimeout(resolve, wait))), this.stopping]);
      clearTimeout(timer);
      delay = Math.min(this.limits.retryMaxMs, delay * 2);
    }
  }
}
