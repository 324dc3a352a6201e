// Sending an archive: whatever happens to the client, the handle (an open file and a lease) is closed exactly when
// the response is over, including when the client went away before the archive was even found; and the transfer
// buffers of a response the client cut go back to the pool without one wrong byte reaching a later download.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, get as httpGet, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import type { ArchiveHandle } from '../../src/core/archives/archive-cache.js';
import { sendArchive } from '../../src/faces/archive-response.js';
import { until } from '../helpers.js';

let server: Server | undefined;

afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

function handleOf(bytes: Buffer, closed: () => void): ArchiveHandle {
  return {
    status: 'HIT',
    ref: { digest: 'a'.repeat(64), size: bytes.length },
    size: bytes.length,
    reader: { read: async (buf, pos) => bytes.copy(buf, 0, pos, Math.min(bytes.length, pos + buf.length)), close: () => {} },
    close: closed,
  };
}

describe('sendArchive', () => {
  it('closes the handle of a client that went away while the archive was being found', async () => {
    let closes = 0;
    let found!: () => void;
    const lookedUp = new Promise<void>((resolve) => (found = resolve));
    let [arrived, responseClosed] = [false, false];
    const app = express();
    app.get('/zip', async (req, res) => {
      arrived = true;
      res.once('close', () => (responseClosed = true));
      await lookedUp; // the lookup (index, open, hash) takes a while...
      await sendArchive(req, res, handleOf(Buffer.from('zip bytes'), () => closes++), 'x.zip');
    });
    server = createServer(app);
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const socket = connect(port, '127.0.0.1', () => socket.write('GET /zip HTTP/1.1\r\nHost: x\r\n\r\n'));
    await until(() => arrived);
    socket.destroy(); // ...and the client gives up meanwhile
    await until(() => responseClosed);
    found();
    await until(() => closes > 0);
    expect(closes).toBe(1);
  });

  it('reuses the transfer buffers of downloads the client cut, and later downloads get every byte right', async () => {
    const payload = randomBytes(4 << 20); // several chunks: a download alternates between two pool buffers
    const seen = new Set<ArrayBufferLike>(); // the memory each read went into
    let closes = 0;
    const handle = (): ArchiveHandle => {
      const h = handleOf(payload, () => closes++);
      const read = h.reader!.read;
      return { ...h, reader: { ...h.reader!, read: (buf, pos) => (seen.add(buf.buffer), read(buf, pos)) } };
    };
    const app = express();
    app.get('/zip', (req, res) => void sendArchive(req, res, handle(), 'x.zip'));
    server = createServer(app);
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const whole = () =>
      new Promise<Buffer>((resolve, reject) =>
        httpGet({ port, host: '127.0.0.1', path: '/zip' }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d)).on('end', () => resolve(Buffer.concat(parts))).on('error', reject);
        }).on('error', reject),
      );
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

    expect(sha(await whole())).toBe(sha(payload));
    const afterOne = seen.size;
    for (let i = 1; i <= 8; i++) {
      // A client that takes the first bytes and goes away mid-download.
      await new Promise<void>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => socket.write('GET /zip HTTP/1.1\r\nHost: x\r\n\r\n'));
        socket.once('data', () => (socket.destroy(), resolve())).once('error', reject);
      });
      await until(() => closes === 1 + i);
    }
    expect(sha(await whole())).toBe(sha(payload));
    // The cut downloads and the last one ran on the buffers the first one gave back (letting a cut download's
    // buffers go made each take new ones: 2 + 2 x 9 here).
    expect(seen.size).toBe(afterOne);
  });
});
