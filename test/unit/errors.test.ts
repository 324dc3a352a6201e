// Turning a failed request into an answer (faces/errors.ts), over real HTTP: our faults are 500 and logged at error,
// the upstream's 5xx at warn, a client's mistakes 4xx and not logged; a client that hangs up mid-body is no fault of
// the mirror's; an answer already under way is cut, never finished as if whole.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { answerError } from '../../src/faces/errors.js';
import { createLogger } from '../../src/log.js';
import { MirrorError } from '../../src/model/errors.js';
import { until } from '../helpers.js';

let server: Server | undefined;

afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** A server whose every request fails with what `fail` throws; what it logs and what it answers are kept. */
async function failing(fail: (req: IncomingMessage, res: ServerResponse) => Promise<never>) {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger('info', { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const answered: Array<{ status: number; body: string }> = [];
  server = createServer((req, res) =>
    void fail(req, res).catch((err: unknown) =>
      answerError(log, req, res, err, (r, e) => {
        answered.push({ status: e.status, body: e.message });
        r.writeHead(e.status, { 'content-type': 'text/plain' }).end(e.message);
      }),
    ),
  );
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, lines, answered };
}

const bodyOf = async (req: IncomingMessage) => {
  for await (const _ of req);
};

describe('answerError', () => {
  it("answers an error of the mirror's own 500 with a safe message, and logs its cause at error", async () => {
    const s = await failing(async () => {
      throw new Error('disk on fire');
    });
    const res = await fetch(`http://127.0.0.1:${s.port}/x`);
    expect([res.status, await res.text()]).toEqual([500, 'internal error']);
    expect(s.lines.map((l) => [l.level, l.msg])).toEqual([['error', 'internal error']]);
    expect(String(s.lines[0]!.error)).toContain('disk on fire');
  });

  it("answers the upstream's failure with its status, logged at warn; a client's mistake 4xx, not logged", async () => {
    let next: MirrorError = new MirrorError('upstream-failed', 'upstream answered 503');
    const s = await failing(async () => {
      throw next;
    });
    expect((await fetch(`http://127.0.0.1:${s.port}/x`)).status).toBe(502);
    next = new MirrorError('bad-request', 'no such version');
    expect((await fetch(`http://127.0.0.1:${s.port}/x`)).status).toBe(400);
    expect(s.lines.map((l) => [l.level, l.msg])).toEqual([['warn', 'upstream problem']]);
  });

  it("takes express's own 4xx errors (a bad percent-escape) as a client's mistake, a 404 as not found", async () => {
    let status = 400;
    const s = await failing(async () => {
      throw Object.assign(new Error('Failed to decode param'), { status });
    });
    expect((await fetch(`http://127.0.0.1:${s.port}/x`)).status).toBe(400);
    status = 404;
    expect((await fetch(`http://127.0.0.1:${s.port}/x`)).status).toBe(404);
    status = 503; // not a client's mistake: ours
    expect((await fetch(`http://127.0.0.1:${s.port}/x`)).status).toBe(500);
    expect(s.lines.map((l) => l.level)).toEqual(['error']);
  });

  it('a client that hangs up before its body ended is answered bad-request and logged as nothing', async () => {
    let reading = false;
    const s = await failing(async (req) => {
      reading = true;
      await bodyOf(req); // fails with node's "aborted" when the client goes away
      throw new Error('unreachable: the body never ends');
    });
    const socket = connect(s.port, '127.0.0.1', () => socket.write('POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc'));
    await until(() => reading); // 3 bytes of 1000 arrived, and the rest never will
    socket.destroy();
    await until(() => s.answered.length === 1);
    expect(s.answered).toEqual([{ status: 400, body: 'the client went away before its request ended' }]);
    expect(s.lines).toEqual([]);
  });

  it('an answer already under way is cut, so that a partial body is never taken for a whole one', async () => {
    const s = await failing(async (_req, res) => {
      res.writeHead(200, { 'content-length': '100' }).write('partial');
      throw new Error('the source failed midway');
    });
    const got = await fetch(`http://127.0.0.1:${s.port}/x`).then((r) => r.text()).then(
      (text) => ({ text }),
      (err: unknown) => ({ failed: String(err) }),
    );
    expect(got).toHaveProperty('failed');
    expect(s.answered).toEqual([]);
  });
});
