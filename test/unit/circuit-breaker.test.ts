// The circuit breaker on an injected clock: it opens after a run of failures, lets one probe through once its
// window has passed, and only reported upstream failures move it.
import { describe, expect, it } from 'vitest';
import { MirrorError } from '../../src/model/errors.js';
import { CircuitBreaker } from '../../src/upstreams/circuit-breaker.js';

function breaker(threshold = 2) {
  const clock = { now: 1_000_000 };
  const b = new CircuitBreaker({ threshold, minBackoffMs: 10_000, maxBackoffMs: 40_000, now: () => clock.now });
  return { b, clock };
}

const down = new MirrorError('upstream-failed', 'upstream answered 503');

function open(b: CircuitBreaker, threshold = 2): void {
  for (let i = 0; i < threshold; i++) b.admit().failed(down);
}

describe('CircuitBreaker', () => {
  it('opens after threshold failures in a row and refuses at once while open', () => {
    const { b } = breaker();
    b.admit().failed(down);
    expect(b.status().state).toBe('closed');
    b.admit().failed(down);
    expect(b.status()).toMatchObject({ state: 'open', consecutiveFailures: 2, lastError: 'upstream answered 503' });
    expect(() => b.admit()).toThrow(/upstream is down .* next try in 10s/);
  });

  it('a success in between resets the run', () => {
    const { b } = breaker();
    b.admit().failed(down);
    b.admit().succeeded();
    b.admit().failed(down);
    expect(b.status().state).toBe('closed');
  });

  it('abandoned calls (a client gone, a refused URL) change nothing', () => {
    const { b } = breaker();
    b.admit().failed(down);
    for (let i = 0; i < 10; i++) b.admit().abandoned();
    expect(b.status().consecutiveFailures).toBe(1);
    b.admit().failed(down);
    expect(b.status().state).toBe('open');
  });

  it('half-open: exactly one probe goes; its success (headers in) closes the circuit', () => {
    const { b, clock } = breaker();
    open(b);
    clock.now += 10_000;
    expect(b.status().state).toBe('half-open');
    const probe = b.admit();
    expect(() => b.admit()).toThrow(/upstream is down/); // the probe is out
    probe.succeeded();
    expect(b.status().state).toBe('closed');
    b.admit().succeeded();
  });

  it('a failed probe doubles the window, up to the ceiling', () => {
    const { b, clock } = breaker();
    open(b);
    for (const window of [20_000, 40_000, 40_000]) {
      clock.now += b.status().backoffMs;
      b.admit().failed(down);
      expect(b.status()).toMatchObject({ state: 'open', backoffMs: window });
      clock.now += window - 1;
      expect(() => b.admit()).toThrow(/upstream is down/);
      clock.now += 1;
    }
  });

  it('an abandoned probe frees the probe slot without closing or extending the circuit', () => {
    const { b, clock } = breaker();
    open(b);
    clock.now += 10_000;
    b.admit().abandoned();
    expect(b.status()).toMatchObject({ state: 'half-open', backoffMs: 10_000 });
    b.admit().succeeded(); // the next caller probes
    expect(b.status().state).toBe('closed');
  });

  it('only the first report of a ticket counts', () => {
    const { b } = breaker(1);
    const t = b.admit();
    t.succeeded();
    t.failed(down);
    expect(b.status().state).toBe('closed');
  });

  it('check() (writes) refuses while open but never takes the probe nor moves the circuit', () => {
    const { b, clock } = breaker();
    open(b);
    expect(() => b.check()).toThrow(/upstream is down/);
    clock.now += 10_000;
    b.check(); // half-open, no probe out: a write may go
    b.check();
    const probe = b.admit(); // ...and the probe is still there to take
    expect(() => b.check()).toThrow(/upstream is down/);
    probe.succeeded();
    b.check();
  });
});
