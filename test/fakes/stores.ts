// A MetadataStore double in front of a real one: it can fail reads or writes on demand (as a corrupt block or a
// failing disk does), hold a read or a write until the test lets it go (to set up an interleaving without sleeps),
// and counts what it was asked.
import type { Batch, MetadataProblem, MetadataStore } from '../../src/stores/metadata-store.js';
import { deferred } from '../../src/core/single-flight.js';

export class ControlledStore implements MetadataStore {
  failReads: ((key: string) => boolean) | undefined;
  failWrites = false;
  readonly puts: string[] = [];
  private readonly heldReads = new Map<string, Promise<void>>();
  private heldWrite: Promise<void> | undefined;
  private failure: MetadataProblem | undefined;

  constructor(readonly inner: MetadataStore) {}

  /** The next get of key reads the inner store at once, but answers only when release() is called. */
  holdRead(key: string): { readonly reading: Promise<void>; release(): void } {
    const gate = deferred<void>();
    const reading = deferred<void>();
    this.heldReads.set(key, gate.promise);
    this.readStarted.set(key, () => reading.resolve());
    return { reading: reading.promise, release: () => gate.resolve() };
  }

  /** The next write (put, putMany or del) waits for release() before it reaches the inner store. */
  holdWrite(): { readonly writing: Promise<void>; release(): void } {
    const gate = deferred<void>();
    const writing = deferred<void>();
    this.heldWrite = gate.promise;
    this.writeStarted = () => writing.resolve();
    return { writing: writing.promise, release: () => gate.resolve() };
  }

  private readonly readStarted = new Map<string, () => void>();
  private writeStarted: (() => void) | undefined;

  async get<T>(key: string): Promise<T | undefined> {
    if (this.failReads?.(key)) throw this.fail(`LEVEL_CORRUPTION: Corruption: block checksum mismatch reading ${key}`);
    const value = await this.inner.get<T>(key);
    const gate = this.heldReads.get(key);
    if (gate) {
      this.heldReads.delete(key);
      this.readStarted.get(key)?.();
      await gate;
    }
    return value;
  }

  async put(key: string, value: unknown): Promise<void> {
    await this.writing();
    this.puts.push(key);
    await this.inner.put(key, value);
  }

  async putMany(entries: ReadonlyArray<readonly [string, unknown]>): Promise<void> {
    await this.writing();
    this.puts.push(...entries.map(([k]) => k));
    await this.inner.putMany(entries);
  }

  async del(key: string): Promise<void> {
    await this.writing();
    await this.inner.del(key);
  }

  async apply(batch: Batch, options?: { durable?: boolean }): Promise<void> {
    await this.writing();
    this.puts.push(...(batch.put ?? []).map(([k]) => k));
    await this.inner.apply(batch, options);
  }

  keys(prefix: string): AsyncIterable<string> {
    return this.inner.keys(prefix);
  }

  entries<T>(prefix: string): AsyncIterable<readonly [string, T]> {
    return this.inner.entries<T>(prefix);
  }

  problem(): MetadataProblem | undefined {
    return this.failure ?? this.inner.problem();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async writing(): Promise<void> {
    if (this.failWrites) throw this.fail('LEVEL_IO_ERROR: IO error: No space left on device');
    const gate = this.heldWrite;
    if (gate) {
      this.heldWrite = undefined;
      this.writeStarted?.();
      await gate;
    }
  }

  private fail(message: string): Error {
    this.failure ??= { error: message, since: new Date(0).toISOString() };
    return new Error(message);
  }
}
