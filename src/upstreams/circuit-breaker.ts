// Marks the upstream down after a run of failures, so that while it is down no request waits for a timeout:
// callers fail at once (and the caches answer from what they have). After a backoff window, which doubles on
// every failed probe up to a ceiling, a single request probes the upstream; its success closes the circuit.
import { MirrorError } from '../model/errors.js';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. */
  readonly threshold: number;
  readonly minBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly now?: () => number;
}

export interface CircuitStatus {
  readonly state: 'closed' | 'open' | 'half-open';
  readonly consecutiveFailures: number;
  /** When the next probe may go, while open. */
  readonly retryAt: string | undefined;
  readonly backoffMs: number;
  readonly lastError: string | undefined;
}

export class CircuitBreaker {
  private failures = 0;
  private openUntil = 0;
  private backoffMs: number;
  private probing = false;
  private lastError: string | undefined;
  private readonly now: () => number;

  constructor(private readonly options: CircuitBreakerOptions) {
    this.backoffMs = options.minBackoffMs;
    this.now = options.now ?? Date.now;
  }

  /** Runs fn unless the circuit is open; fn's outcome is recorded (only upstream failures count as failures). */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const probe = this.admit();
    try {
      const result = await fn();
      this.succeeded();
      return result;
    } catch (err) {
      if (err instanceof MirrorError && err.isUpstreamFailure) this.failed(err, probe);
      else this.succeeded(); // the upstream answered, if not with what we wanted
      throw err;
    } finally {
      if (probe) this.probing = false;
    }
  }

  status(): CircuitStatus {
    const open = this.failures >= this.options.threshold;
    return {
      state: !open ? 'closed' : this.probing || this.now() >= this.openUntil ? 'half-open' : 'open',
      consecutiveFailures: this.failures,
      retryAt: open ? new Date(this.openUntil).toISOString() : undefined,
      backoffMs: this.backoffMs,
      lastError: this.lastError,
    };
  }

  /** Throws while open; returns true when this call is the one probe of a half-open circuit. */
  private admit(): boolean {
    if (this.failures < this.options.threshold) return false;
    const wait = this.openUntil - this.now();
    if (wait > 0 || this.probing) {
      const retry = Math.max(0, Math.ceil(wait / 1000));
      throw new MirrorError('unavailable', `the upstream is down (${this.failures} failures in a row: ${this.lastError}); next try in ${retry}s`);
    }
    this.probing = true;
    return true;
  }

  private succeeded(): void {
    this.failures = 0;
    this.backoffMs = this.options.minBackoffMs;
  }

  private failed(err: MirrorError, probe: boolean): void {
    this.lastError = err.message;
    this.failures++;
    if (probe) {
      this.backoffMs = Math.min(this.backoffMs * 2, this.options.maxBackoffMs); // still down: wait longer
      this.openUntil = this.now() + this.backoffMs;
    } else if (this.failures === this.options.threshold) {
      this.openUntil = this.now() + this.backoffMs;
    }
  }
}
