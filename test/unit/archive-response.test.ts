// Sending an archive: whatever happens to the client, the handle (an open file and a lease) is closed exactly when
// the response is over, including when the client went away before the archive was even found.
import { createServer, type Server } from 'node:http';
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
});
