// Archives: served from the store when cached (HIT); otherwise one fill per (package, version) downloads from the
// upstream into an ArchiveWriter, and every client that asks meanwhile, the first included, reads the bytes as they
// land on disk (MISS). The fill has its own lifetime: clients that go away do not stop it, and when it fails every
// reader's stream fails with it, so no client takes a short body for a whole one.
import type { Readable } from 'node:stream';
import type { ArchiveRef } from '../model/release.js';
import type { ArchiveStore, ArchiveWriter } from '../stores/archive-store.js';
import type { MetadataStore } from '../stores/metadata-store.js';
import type { UpstreamBody } from '../upstreams/http.js';
import { deferred } from './single-flight.js';

export type ArchiveHandle =
  | { readonly status: 'HIT'; readonly ref: ArchiveRef; readonly path: string }
  | { readonly status: 'MISS'; readonly size: number | undefined; readonly body: Readable };

/** Runs `consume` on the upstream's download of an archive. */
export type ArchiveSource = <T>(consume: (res: UpstreamBody) => Promise<T>) => Promise<T>;

type FillStart = { readonly ref: ArchiveRef } | { readonly writer: ArchiveWriter; readonly size: number | undefined };

export interface ArchiveLog {
  warn(msg: string, fields: Record<string, unknown>): void;
}

export class ArchiveCache {
  /** Fills under way, by key; each promise settles once the download's headers are in (or it failed). */
  private readonly fills = new Map<string, Promise<FillStart>>();

  constructor(
    private readonly refs: MetadataStore,
    private readonly store: ArchiveStore,
    private readonly log: ArchiveLog,
  ) {}

  async open(key: string, source: ArchiveSource): Promise<ArchiveHandle> {
    const ref = await this.lookup(key);
    const start = ref ? { ref } : await (this.fills.get(key) ?? this.fill(key, source));
    if ('ref' in start) return { status: 'HIT', ref: start.ref, path: this.store.path(start.ref.digest) };
    return { status: 'MISS', size: start.size, body: start.writer.follow() };
  }

  /** The archive a key points at, if its file is there whole. */
  async lookup(key: string): Promise<ArchiveRef | undefined> {
    const ref = await this.refs.get<ArchiveRef>(this.refKey(key));
    return ref && (await this.store.size(ref.digest)) === ref.size ? ref : undefined;
  }

  get fillsInProgress(): number {
    return this.fills.size;
  }

  private fill(key: string, source: ArchiveSource): Promise<FillStart> {
    const started = deferred<FillStart>();
    this.fills.set(key, started.promise);
    const run = async () => {
      // Looked up again: a fill that just finished may have stored it while our caller looked.
      const ref = await this.lookup(key);
      if (ref) return started.resolve({ ref });
      await source(async ({ body, length }) => {
        const writer = await this.store.createWriter();
        started.resolve({ writer, size: length });
        try {
          for await (const chunk of body) await writer.write(chunk as Buffer);
          const ref = await writer.commit({ size: length });
          await this.refs.put(this.refKey(key), ref);
        } catch (err) {
          await writer.abort(err as Error);
          throw err;
        }
      });
    };
    run()
      .catch((err: unknown) => {
        started.reject(err);
        this.log.warn('archive fill failed', { key, error: (err as Error).message });
      })
      .finally(() => this.fills.delete(key));
    return started.promise;
  }

  private refKey(key: string): string {
    return `archive:${key}`;
  }
}
