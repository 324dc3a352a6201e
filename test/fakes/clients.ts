// Clients, for the tests and the soak bench: what the `s` CLI sends (its signed headers, its publish form), and
// hostile or clumsy ones: large request bodies made as they are read, and raw sockets that send whatever bytes they
// are given and hang up when told.
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { recordSecrets } from '../helpers.js';

/**
 * Headers as a logged-in `s` client signs a request with its secret (PROTOCOL.md §1): token = md5(secret), a nonce
 * (15 random characters unless given), timestamp = unix seconds of `now`, sign_code = sha256(secret + nonce +
 * timestamp). The secret and what is derived from it are recorded for the suite's credential check.
 */
export function signed(secret = 'safety-code-under-test', { now = Date.now(), nonce = randomBytes(8).toString('hex').slice(0, 15) }: { now?: number; nonce?: string } = {}): Record<string, string> {
  const timestamp = String(Math.floor(now / 1000));
  const headers = {
    token: createHash('md5').update(secret).digest('hex'),
    nonce,
    timestamp,
    sign_code: createHash('sha256').update(secret + nonce + timestamp).digest('hex'),
  };
  recordSecrets(secret, headers.token, headers.sign_code);
  return headers;
}

export const FORM_HEADERS = { 'content-type': 'application/x-www-form-urlencoded' } as const;

export interface PublishFormOptions {
  /** The whole publish.yaml text, instead of the one made from the name, version and the fields below. */
  readonly yaml?: string;
  readonly type?: string;
  readonly description?: string;
  readonly versionBody?: string;
  readonly readme?: string;
}

/**
 * The body of `s registry publish`'s step 1 (POST /v3/packages/releases, x-www-form-urlencoded): publish.yaml first,
 * then the other files, the missing ones empty, as the client sends them.
 */
export function publishForm(name: string, version: string, o: PublishFormOptions = {}): string {
  const yaml =
    o.yaml ??
    [
      'Edition: 3.0.0',
      `Type: ${o.type ?? 'Component'}`,
      `Name: ${name}`,
      'Provider:',
      '  - 阿里云',
      `Version: ${version}`,
      ...(o.description === undefined ? [] : [`Description: ${o.description}`]),
      'Category: 基础云服务',
      'Effective: Public',
      '',
    ].join('\n');
  return new URLSearchParams({
    publish: yaml,
    publish_en: '',
    version_body: o.versionBody ?? 'notes',
    version_body_en: '',
    flowyaml: '',
    syaml: '',
    syaml_en: '',
    readme: o.readme ?? '# hi',
    readme_en: '',
  }).toString();
}

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
