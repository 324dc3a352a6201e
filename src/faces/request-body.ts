// A client's request body, bounded: past maxBodyBytes, or when nothing arrives for bodyTimeoutMs while it is read,
// it fails with the reason (413, 408), so that no upload can hold a slot, a file or memory without end.
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { MirrorError } from '../model/errors.js';

export interface BodyLimits {
  readonly maxBodyBytes: number;
  readonly bodyTimeoutMs: number;
  /** The setting maxBodyBytes comes from, for the 413's message (default writes.maxBodySize). */
  readonly sizeSetting?: string;
}

/**
 * A request's body (or what peekBody left of it) through a BodyGuard. Not pipeline(req, ...): a failed guard must not
 * destroy the request, whose socket still has to carry the 413 (answer it with `Connection: close`).
 */
export function guardedBody(source: Readable, limits: BodyLimits): BodyGuard {
  const guard = new BodyGuard(limits);
  source.pipe(guard);
  source.once('error', (err) => guard.destroy(err)); // the client went away: whoever reads the body fails too
  return guard;
}

/**
 * Reads the start of a body until `enough` says so (or `max` bytes, or its end), to decide what to do with it, and
 * gives back the whole body (those bytes, then the rest) to stream on. Nothing arriving for `idleMs` is a 408.
 */
export async function peekBody(source: Readable, enough: (head: Buffer) => boolean, max: number, idleMs: number): Promise<{ head: Buffer; body: Readable }> {
  const chunks = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const next = async () => {
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new MirrorError('client-timeout', `the request body stalled: nothing arrived for ${idleMs / 1000}s`)), idleMs);
    });
    try {
      return await Promise.race([chunks.next(), idle]);
    } finally {
      clearTimeout(timer);
    }
  };
  let head = Buffer.alloc(0);
  let ended = false;
  while (head.length < max && !enough(head)) {
    const r = await next();
    if (r.done) {
      ended = true;
      break;
    }
    head = Buffer.concat([head, r.value]);
  }
  async function* whole() {
    if (head.length) yield head;
    for (let r = ended ? undefined : await chunks.next(); r && !r.done; r = await chunks.next()) yield r.value;
  }
  return { head, body: Readable.from(whole(), { objectMode: false }) };
}

/** All of a body, at most `max` bytes (a 413 past it). */
export async function readBody(body: Readable, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new MirrorError('too-large', `${what} is larger than ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Passes a request body on while counting it and timing it: past maxBodyBytes, or when the reader wants more and
 * nothing arrives for bodyTimeoutMs (the clock runs only while the reader is flowing, so neither time waiting for
 * a slot nor the upstream's own backpressure is held against the client), it fails with the reason in `failure`.
 */
export class BodyGuard extends Transform {
  failure: MirrorError | undefined;
  private size = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly limits: BodyLimits) {
    super();
    this.on('resume', () => this.touch());
    this.on('pause', () => this.stopTimer());
    this.once('error', () => this.stopTimer()); // also keeps a failure from being an uncaught 'error'
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.size += chunk.length;
    if (this.size > this.limits.maxBodyBytes) return done(this.fail(tooLarge(this.limits)));
    if (this.readableFlowing) this.touch();
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    this.stopTimer();
    done();
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    this.stopTimer();
    done(err);
  }

  private touch(): void {
    this.stopTimer();
    if (this.writableEnded) return; // the client has sent it all: nothing more to wait for
    const ms = this.limits.bodyTimeoutMs;
    this.timer = setTimeout(() => this.destroy(this.fail(new MirrorError('client-timeout', `the request body stalled: nothing arrived for ${ms / 1000}s (writes.bodyTimeout)`))), ms);
    this.timer.unref();
  }

  private stopTimer(): void {
    clearTimeout(this.timer);
  }

  private fail(err: MirrorError): MirrorError {
    this.failure ??= err;
    return err;
  }
}

export function tooLarge({ maxBodyBytes, sizeSetting = 'writes.maxBodySize' }: BodyLimits): MirrorError {
  return new MirrorError('too-large', `the request body is larger than ${maxBodyBytes} bytes (${sizeSetting})`);
}
