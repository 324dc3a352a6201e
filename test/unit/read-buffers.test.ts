import { describe, expect, it } from 'vitest';
import { RECLAIM_BYTES, ReadBuffers } from '../../src/read-buffers.js';

describe('read buffers: a young-generation collection every RECLAIM_BYTES streamed', () => {
  it('asks for one minor, asynchronous collection each time the bytes streamed since the last reach RECLAIM_BYTES', () => {
    const asked: NodeJS.GCOptions[] = [];
    const buffers = new ReadBuffers((options) => asked.push(options));
    const chunk = 64 * 1024;
    for (let sent = 0; sent < 3 * RECLAIM_BYTES - chunk; sent += chunk) buffers.streamed(chunk);
    expect(asked).toEqual([
      { type: 'minor', execution: 'async' },
      { type: 'minor', execution: 'async' },
    ]);
    buffers.streamed(chunk);
    expect(asked).toHaveLength(3);
  });

  it('does nothing where node runs without --expose-gc', () => {
    expect(() => new ReadBuffers(undefined).streamed(10 * RECLAIM_BYTES)).not.toThrow();
  });
});
