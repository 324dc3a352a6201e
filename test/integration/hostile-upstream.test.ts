// Hostile clients and hostile upstreams on the transport side: nothing crashes the process, nothing waits without
// a bound, and the circuit breaker measures the upstream, not the clients.
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../fakes/upstream.js';
import { get, removeTempDirs, startMirror, type TestMirror } from '../helpers.js';

let fake: FakeUpstream;
const mirrors: TestMirror[] = [];

async function mirrorOf(upstream: string, flags: Record<string, string | boolean> = {}): Promise<TestMirror> {
  const m = await startMirror(upstream, { retries: '0', ...flags });
  mirrors.push(m);
  return m;
}

beforeEach(async () => {
  fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.2.0' }, { version: '1.1.0' }]);
});

afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.close()));
  await fake.close();
  await removeTempDirs();
});

/** A body of `size` bytes, produced in 64 KiB chunks as it is read. */
function bigBody(size: number): Readable {
  let sent = 0;
  const chunk = Buffer.alloc(64 * 1024, 'a');
  return new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      sent += chunk.length;
      this.push(chunk);
    },
  });
}

describe('large anonymous uploads refused early by the upstream', () => {
  it('do not crash the server: the same server keeps answering', async () => {
    const m = await mirrorOf(fake.v3);
    fake.inject(/\/v3\/packages\/releases/, { kind: 'status-early', status: 401 });
    const uploads = Array.from({ length: 4 }, () =>
      request(`${m.url}/v3/packages/releases`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(50 << 20) },
        body: bigBody(50 << 20),
      })
        .then(async (r) => ({ status: r.statusCode, text: await r.body.text() }))
        .catch((e: unknown) => e as Error),
    );
    // Each client gets the upstream's 401, or (when it had not finished sending) a closed connection.
    for (const u of await Promise.all(uploads)) if (!(u instanceof Error)) expect(u.status).toBe(401);
    const health = await get(`${m.url}/-/health`);
    expect(health.status).toBe(200);
    expect((await get(`${m.url}/v3/packages/fc3/release/latest`)).status).toBe(200);
    expect(m.server.listening).toBe(true);
  });
});
