import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { QUIET_MS, RECLAIM_BYTES, ReadBuffers } from '../../src/read-buffers.js';

const chunk = 64 * 1024;
const minor = { type: 'minor', execution: 'async' };
const major = { type: 'major', execution: 'async' };

describe('read buffers', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('asks for one minor, asynchronous collection each time the bytes streamed since the last reach RECLAIM_BYTES', () => {
    const asked: NodeJS.GCOptions[] = [];
    const buffers = new ReadBuffers((options) => asked.push(options));
    for (let sent = 0; sent < 3 * RECLAIM_BYTES - chunk; sent += chunk) buffers.streamed(chunk);
    expect(asked).toEqual([minor, minor]);
    buffers.streamed(chunk);
    expect(asked).toEqual([minor, minor, minor]);
  });

  it('asks for one full collection once nothing has been streamed for QUIET_MS, and none while streams go on', () => {
    const asked: NodeJS.GCOptions[] = [];
    const buffers = new ReadBuffers((options) => asked.push(options));
    // A slow stream: a chunk every half QUIET_MS, for ten times QUIET_MS.
    for (let i = 0; i < 20; i++) {
      buffers.streamed(chunk);
      vi.advanceTimersByTime(QUIET_MS / 2);
    }
    expect(asked).toEqual([]);
    vi.advanceTimersByTime(QUIET_MS / 2 - 1);
    expect(asked).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(asked).toEqual([major]);
    // Quiet on: no more; the next burst gets its own.
    vi.advanceTimersByTime(10 * QUIET_MS);
    expect(asked).toEqual([major]);
    buffers.streamed(chunk);
    vi.advanceTimersByTime(QUIET_MS);
    expect(asked).toEqual([major, major]);
  });

  it('keeps nothing that holds the process open', () => {
    vi.useRealTimers();
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    new ReadBuffers(() => {}).streamed(chunk);
    expect(timers()).toBe(before);
  });

  it('does nothing where node runs without --expose-gc', () => {
    expect(() => new ReadBuffers(undefined).streamed(10 * RECLAIM_BYTES)).not.toThrow();
    expect(vi.getTimerCount()).toBe(0);
  });
});
