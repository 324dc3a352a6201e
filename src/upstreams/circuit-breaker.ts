// Marks the upstream down after a run of failures, so that while it is down no request waits for a timeout:
// callers fail at once (and the caches answer from what they have). After a backoff window, which doubles on
// every failed probe up to a ceiling, a single request probes the upstream; its success closes the circuit.
//
// It measures the upstream, not the clients: the caller reports each admitted call's outcome on its ticket, and
// only the upstream's own failures (no answer, a timeout, 5xx, 429) count. A call that ends for any other reason
// (a client went away, the mirror shut down, a refused URL) is reported as abandoned and changes nothing. A call is
// settled when its response headers arrive, not when its body has been read: a long download does not keep the
// one probe of a half-open circuit, and everyone else, waiting.
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

/** One admitted call. The first report counts; later ones are ignored. */
export interface Ticket {
  /** The upstream answered (whatever the status, unless it is one of its failures). */
  succeeded(): void;
  /** The upstream failed this call. */
  failed(err: MirrorError): void;
  /** The call ended without telling anything about the upstream. */
  abandoned(): void;
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

  /** Admits a call whose outcome counts: throws 'unavailable' while open; when half-open, only one call (the probe) goes. */
  admit(): Ticket {
    const probe = this.isOpen();
    if (probe) {
      this.refuseIfWaiting();
      this.probing = true;
    }
    let reported = false;
    const report = (outcome: () => void) => {
      if (reported) return;
      reported = true;
      if (probe) this.probing = false;
      outcome();
    };
    return {
      succeeded: () => report(() => this.succeeded()),
      failed: (err) => report(() => this.failed(err, probe)),
      abandoned: () => report(() => {}),
    };
  }

  /**
   * Throws 'unavailable' while the circuit is open, for calls whose outcome does not count (writes): they fail fast
   * while the upstream is down, but never take the probe's place nor tell the circuit anything.
   */
  check(): void {
    if (this.isOpen()) this.refuseIfWaiting();
  }

  status(): CircuitStatus {
    const open = this.isOpen();
    return {
      state: !open ? 'closed' : this.probing || this.now() >= this.openUntil ? 'half-open' : 'open',
      consecutiveFailures: this.failures,
      retryAt: open ? new Date(this.openUntil).toISOString() : undefined,
      backoffMs: this.backoffMs,
      lastError: this.lastError,
    };
  }

  private isOpen(): boolean {
    return this.failures >= this.options.threshold;
  }

  /** While open: refuses until the window has passed, and while the probe is out. */
  private refuseIfWaiting(): void {
    const wait = this.openUntil - this.now();
    if (wait > 0 || this.probing) {
      const retry = Math.max(0, Math.ceil(wait / 1000));
      throw new MirrorError('unavailable', `the upstream is down (${this.failures} failures in a row: ${this.lastError}); next try in ${retry}s`);
    }
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
