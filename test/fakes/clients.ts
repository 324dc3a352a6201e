// Hostile and clumsy clients, for the tests and the soak bench: large request bodies made as they are read, and raw
// sockets that send whatever bytes they are given and hang up when told.
import { connect } from 'node:net';
import { Readable } from 'node:stream';

/** A body of `size` bytes, made in 64 KiB chunks as it is read (never held whole). */
export function bigBody(size: number): Readable {
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

export interface RawAnswer {
  /** The HTTP status of the answer's first line; 0 when none came. */
  readonly status: number;
  readonly received: number;
  /** The first 64 KiB received, as latin1. */
  readonly text: string;
  readonly how: 'closed' | 'left' | 'timeout' | 'error';
}

/**
 * Sends `head` (and then `body`, if given) over a raw socket to `base`'s host and port, and collects what comes
 * back until the server closes, `leaveAfter` bytes have arrived (then the client hangs up), or timeoutMs passes.
 */
export function rawRequest(base: string, head: string | Buffer, o: { body?: Buffer; leaveAfter?: number; timeoutMs?: number } = {}): Promise<RawAnswer> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const socket = connect(Number(port), hostname, () => {
      socket.write(head);
      if (o.body) socket.write(o.body);
    });
    const done = (how: RawAnswer['how']) => {
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0), received, text, how });
    };
    const timer = setTimeout(() => done('timeout'), o.timeoutMs ?? 5_000);
    socket.on('data', (c: Buffer) => {
      if (received < 1 << 16) chunks.push(c);
      received += c.length;
      if (o.leaveAfter !== undefined && received >= o.leaveAfter) done('left');
    });
    socket.on('end', () => done('closed'));
    socket.on('close', () => done('closed'));
    socket.on('error', () => done('error'));
  });
}
