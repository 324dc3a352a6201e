// The archive lifecycle's promises, driven directly with real LevelDB and real files, a store whose timestamps can be
// made coarse and whose reads can be held, and an injected clock: what the verifier trusts, what the scrub finds,
// what is checked before anything is stored or passed through, a disk that fails, that readers keep what they read
// while eviction and deletes run, what collection and repair may remove. In process, so mutation runs see it.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { setTimeout } from 'node:timers/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ArchiveCache, type ArchiveHandle, type ArchiveSource } from '../../src/core/archives/archive-cache.js';
import { DISK_RETRY_MS, KEPT_TAIL, type ContentCheck } from '../../src/core/archives/archive-filler.js';
import { rateLimit, type Clock } from '../../src/core/archives/archive-scrub.js';
import { createLogger } from '../../src/log.js';
import { checkZip, checkZipTail } from '../../src/model/zip.js';
import { FsArchiveStore, type ArchiveStat, type ArchiveStore, type ArchiveWriter, type StoredReader } from '../../src/stores/archive-store.js';
import { LevelMetadataStore, type MetadataStore } from '../../src/stores/metadata-store.js';
import { sha256 } from '../fakes/upstream.js';
import { componentZip } from '../fakes/zips.js';
import { removeTempDirs, tempDir, until } from '../helpers.js';

const ZIP = componentZip('fc3', '1.0.0', { payload: randomBytes(300_000) });
const ID = 'fc3@1.0.0';

/**
 * A store over real files whose timestamps are as coarse as a filesystem that keeps seconds (or an NFS attribute
 * cache): a rewrite of the same size leaves its version unchanged. Reads of opened archives can be held.
 */
class CoarseStore implements ArchiveStore {
  private held: Promise<void> | undefined;
  private releaseHeld: (() => void) | undefined;

  constructor(readonly inner: FsArchiveStore, readonly root: string) {}

  hold(): void {
    this.held = new Promise((resolve) => (this.releaseHeld = resolve));
  }

  release(): void {
    this.releaseHeld?.();
    this.held = undefined;
  }

  file(digest: string): string {
    return join(this.root, 'sha256', digest.slice(0, 2), digest);
  }

  private coarse(stat: ArchiveStat): ArchiveStat {
    return { ...stat, version: `size:${stat.size}` };
  }

  async stat(digest: string) {
    const s = await this.inner.stat(digest);
    return s && this.coarse(s);
  }

  async open(digest: string): Promise<StoredReader | undefined> {
    const reader = await this.inner.open(digest);
    if (!reader) return undefined;
    const held = this.held;
    return {
      stat: this.coarse(reader.stat),
      read: async (buf, pos) => {
        await held;
        return reader.read(buf, pos);
      },
      close: () => reader.close(),
    };
  }

  /** Writers whose commits report the coarse version too, as such a filesystem would. */
  async createWriter(): Promise<ArchiveWriter> {
    const writer = await this.inner.createWriter();
    return {
      get written() {
        return writer.written;
      },
      get received() {
        return writer.received;
      },
      get state() {
        return writer.state;
      },
      write: (chunk) => writer.write(chunk),
      abort: (reason) => writer.abort(reason),
      reader: () => writer.reader(),
      commit: async (expected, moved) => {
        const { ref, stat } = await writer.commit(expected, moved && ((r, s) => moved(r, this.coarse(s))));
        return { ref, stat: this.coarse(stat) };
      },
    };
  }
  delete = (digest: string) => this.inner.delete(digest);
  list = () => this.inner.list();
  tempFiles = () => this.inner.tempFiles();
  deleteTemp = (name: string) => this.inner.deleteTemp(name);
  quarantine = (digest: string) => this.inner.quarantine(digest);
  quarantined = () => this.inner.quarantined();
  deleteQuarantined = (digest: string) => this.inner.deleteQuarantined(digest);
}

let db: LevelMetadataStore;
let store: CoarseStore;
let clock: Clock & { advance(ms: number): void; slept: number[] };
let downloads = 0;

const source: ArchiveSource = async (consume) => {
  downloads++;
  return consume({ body: Readable.from([ZIP.subarray(0, 1000), ZIP.subarray(1000)]), length: ZIP.length, headers: {} });
};

/** An archive cache over the test's database and store (or those given); `logs` collects its warnings. */
function cacheOf(
  options: { verifyOnServe?: boolean; indexIntact?: boolean; quotaBytes?: number; metadata?: MetadataStore; archives?: ArchiveStore; logs?: string[]; contentCheck?: ContentCheck } = {},
): ArchiveCache {
  const log = options.logs ? createLogger('warn', { write: (line) => options.logs!.push(line) }) : createLogger('error', { write: () => {} });
  return new ArchiveCache(options.metadata ?? db, options.archives ?? store, log, {
    quotaBytes: options.quotaBytes ?? 0,
    indexIntact: options.indexIntact ?? true,
    verifyOnServe: options.verifyOnServe ?? false,
    scrubRate: 0,
    contentCheck: options.contentCheck ?? { file: checkZip, stream: checkZipTail },
    clock,
  });
}

async function readAll(handle: ArchiveHandle): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(64 * 1024);
  try {
    for (let pos = 0, n = await handle.reader.read(buf, 0); n > 0; n = await handle.reader.read(buf, pos)) {
      chunks.push(Buffer.from(buf.subarray(0, n)));
      pos += n;
    }
  } finally {
    handle.close();
  }
  return Buffer.concat(chunks);
}

/** The same size, other bytes: what a rewrite in one timestamp tick, or bit rot, leaves behind. */
async function corrupt(digest: string): Promise<void> {
  const bad = Buffer.from(ZIP);
  bad[ZIP.length >> 1] = bad[ZIP.length >> 1]! ^ 0xff;
  await writeFile(store.file(digest), bad);
}

beforeEach(async () => {
  const dir = await tempDir();
  db = await LevelMetadataStore.open(join(dir, 'meta'));
  store = new CoarseStore(await FsArchiveStore.open(join(dir, 'archives')), join(dir, 'archives'));
  let t = Date.now(); // file timestamps are the real clock's: start there, move on by hand
  clock = { now: () => t, sleep: async (ms) => void clock.slept.push(ms), advance: (ms) => void (t += ms), slept: [] };
  downloads = 0;
});

afterEach(async () => {
  store.release();
  await db.close();
  await removeTempDirs();
});

describe('the verifier', () => {
  it('does not trust a file version recorded within the racy window: a same-size rewrite in that tick is caught', async () => {
    const cache = cacheOf();
    expect(await readAll(await cache.open(ID, source))).toEqual(ZIP); // MISS, committed and recorded now
    await corrupt(sha256(ZIP)); // same version for this store: only the racy rule can see it
    const again = await cache.open(ID, source);
    expect(again.status).toBe('MISS'); // dropped and fetched again, never served
    expect(await readAll(again)).toEqual(ZIP);
    expect(downloads).toBe(2);
  });

  it('a corrupt file is out of the index before the fill that replaces it looks, however slow the database', async () => {
    await readAll(await cacheOf().open(ID, source));
    // A database whose deletes lag (a busy disk): the fill must not find the corrupt file's entry still there.
    const slowDeletes = new Proxy(db, {
      get: (target, prop) =>
        prop === 'del' ? async (k: string) => (await setTimeout(50), target.del(k)) : (Reflect.get(target, prop) as unknown),
    });
    await corrupt(sha256(ZIP));
    const again = await cacheOf({ metadata: slowDeletes }).open(ID, source);
    expect([again.status, await readAll(again), downloads]).toEqual(['MISS', ZIP, 2]);
  });

  it('trusts a version recorded well after its change time, without reading the file again', async () => {
    const cache = cacheOf();
    await readAll(await cache.open(ID, source));
    clock.advance(5_000);
    await readAll(await cache.open(ID, source)); // hashed once more, recorded outside the racy window
    store.hold(); // from now on, any read of the file would wait
    const hit = await cache.open(ID, source); // resolves: no hash was needed
    expect(hit.status).toBe('HIT');
    store.release();
    expect(await readAll(hit)).toEqual(ZIP);
  });

  it('with verifyOnServe, a corrupt file whose version is trusted never reaches a client complete, and is dropped', async () => {
    const cache = cacheOf({ verifyOnServe: true });
    await readAll(await cache.open(ID, source));
    clock.advance(5_000);
    await readAll(await cache.open(ID, source));
    await corrupt(sha256(ZIP));
    const hit = await cache.open(ID, source);
    expect(hit.status).toBe('HIT'); // the version vouches for it...
    await expect(readAll(hit)).rejects.toThrow(/corrupt/); // ...but its last bytes are held back
    await until(async () => (await cache.index.get(ID)) === undefined);
    const refetched = await cache.open(ID, source);
    expect([refetched.status, await readAll(refetched)]).toEqual(['MISS', ZIP]);
  });
});

describe('the scrub', () => {
  it('finds a corruption no timestamp shows, with no client request at all, and drops it', async () => {
    const cache = cacheOf();
    await readAll(await cache.open(ID, source));
    clock.advance(5_000);
    await readAll(await cache.open(ID, source)); // trusted from now on
    await corrupt(sha256(ZIP));
    const report = await cache.scrub({ trigger: 'test' });
    expect(report.corrupt).toEqual([sha256(ZIP)]);
    expect(cache.status().scrub.corruptFound).toBe(1);
    expect(existsSync(store.file(sha256(ZIP)))).toBe(false);
    const next = await cache.open(ID, source);
    expect([next.status, await readAll(next)]).toEqual(['MISS', ZIP]);
  });

  it('reports what nothing points at and what is gone; only repair removes them, and never with a lost index', async () => {
    const [other, kept] = [componentZip('other', '1.0.0'), componentZip('kept', '1.0.0')];
    const cache = cacheOf();
    await readAll(await cache.open(ID, source));
    await readAll(await cache.open('other@1.0.0', sourceOf(other)));
    await readAll(await cache.open('kept@1.0.0', sourceOf(kept))); // as it should be: in no list
    await cache.drain(5_000); // the fills are over: indexed
    await cache.index.remove('other@1.0.0'); // its file stays: unreferenced
    await rm(store.file(sha256(ZIP))); // fc3's entry stays: missing
    const temp = await store.createWriter();
    await temp.write(Buffer.from('a fill cut by a crash'));

    clock.advance(1234);
    const started = clock.now();
    const found = await cache.scrub({ trigger: 'test', tempFiles: true });
    expect(found).toMatchObject({ archives: 2, bytes: other.length + kept.length, corrupt: [], unreferenced: [sha256(other)], missing: [ID], repaired: false });
    expect([found.tempFiles.length, existsSync(store.file(sha256(other))), await cache.index.get(ID)]).toEqual([1, true, expect.anything()]);

    // While the index is marked lost, an unreferenced archive may be one it lost: none is removed. An entry whose
    // file is gone goes.
    const lost = await cacheOf({ indexIntact: false }).scrub({ trigger: 'test', repair: true });
    expect([lost.unreferenced, lost.missing, existsSync(store.file(sha256(other))), await cache.index.get(ID)]).toEqual([[sha256(other)], [ID], true, undefined]);
    expect(lost.tempFiles).toEqual([]); // not asked for: a running server's temp files are fills under way

    clock.advance(500);
    const repaired = await cache.scrub({ trigger: 'test', repair: true, tempFiles: true });
    expect(repaired).toMatchObject({ unreferenced: [sha256(other)], repaired: true, durationMs: 0, startedAt: new Date(started + 500).toISOString() });
    expect([existsSync(store.file(sha256(other))), await store.tempFiles()]).toEqual([false, []]);
    await expect(cache.scrub({ trigger: 'test' })).resolves.toMatchObject({ archives: 1, unreferenced: [], missing: [], tempFiles: [] });
    expect(await cache.versions('kept')).toEqual(['1.0.0']);
    await temp.abort().catch(() => {});
  });

  it('reads at the configured rate at most', async () => {
    const throttle = rateLimit(1_000_000, clock);
    for (let i = 0; i < 4; i++) await throttle(500_000); // 2 MB at 1 MB/s: due at 0.5, 1, 1.5 and 2 s
    expect(clock.slept).toEqual([500, 1000, 1500, 2000]);
    clock.advance(3_000);
    await throttle(500_000); // behind schedule: no wait
    expect(clock.slept).toHaveLength(4);
  });
});

describe('readers hold what they read', () => {
  it('eviction during a first-serve hash: the reader finishes with correct bytes, the file goes after it', async () => {
    await readAll(await cacheOf().open(ID, source));
    const restarted = cacheOf(); // nothing verified yet: the next HIT hashes first
    await restarted.init();
    store.hold();
    const opening = restarted.open(ID, source); // leased, opened, hashing (held)
    await until(() => restarted.reclaimer.isLeased(sha256(ZIP)));
    await restarted.reclaimer.remove(sha256(ZIP)); // eviction while the hash runs
    expect(existsSync(store.file(sha256(ZIP)))).toBe(true);
    store.release();
    const hit = await opening;
    expect(hit.status).toBe('HIT');
    expect(await readAll(hit)).toEqual(ZIP);
    expect(existsSync(store.file(sha256(ZIP)))).toBe(false); // gone with its last reader
    expect(restarted.status().quota).toEqual({ maxBytes: 0, usedBytes: 0, archives: 0 });
  });

  it('a delete through the mirror during a slow download: the download finishes, the file goes after it', async () => {
    const cache = cacheOf();
    await readAll(await cache.open(ID, source));
    const hit = await cache.open(ID, source);
    await cache.unlink(ID);
    expect(await cache.index.get(ID)).toBeUndefined(); // no new reader finds it
    expect(existsSync(store.file(sha256(ZIP)))).toBe(true);
    expect(await readAll(hit)).toEqual(ZIP);
    expect(existsSync(store.file(sha256(ZIP)))).toBe(false);
    expect(cache.status().quota.usedBytes).toBe(0);
  });

  it('followers of a fill lease the new archive: the quota cannot evict it from under them', async () => {
    const cache = cacheOf({ quotaBytes: 1000 }); // smaller than the archive: evictable as soon as it is not in use
    const miss = await cache.open(ID, source);
    expect(miss.status).toBe('MISS');
    const bytes = await (async () => {
      const buf = Buffer.alloc(ZIP.length);
      let pos = 0;
      for (let n = await miss.reader.read(buf, 0); n > 0; n = await miss.reader.read(buf.subarray(pos), pos)) pos += n;
      return buf.subarray(0, pos);
    })();
    expect(bytes).toEqual(ZIP);
    expect(existsSync(store.file(sha256(ZIP)))).toBe(true); // committed, over quota, but still read
    miss.close();
    await until(() => !existsSync(store.file(sha256(ZIP)))); // evicted once its last reader is gone
    expect(cache.status().quota.usedBytes).toBe(0);
  });
});

describe('leases and shared archives', () => {
  it('an archive two versions share stays while one of them is deleted', async () => {
    const cache = cacheOf();
    await readAll(await cache.open(ID, source));
    await readAll(await cache.open('fc3@1.0.0-again', source)); // the same bytes under another version
    await cache.drain(5_000);
    await cache.unlink(ID);
    expect(existsSync(store.file(sha256(ZIP)))).toBe(true);
    const other = await cache.open('fc3@1.0.0-again', source);
    expect([other.status, await readAll(other)]).toEqual(['HIT', ZIP]);
    await cache.unlink('fc3@1.0.0-again');
    expect(existsSync(store.file(sha256(ZIP)))).toBe(false); // the last version gone, the file goes
    expect(cache.status().quota.usedBytes).toBe(0);
  });

  it('a file removed while several readers hold it goes with the last of them; releasing twice counts once', async () => {
    const cache = cacheOf();
    await readAll(await cache.open(ID, source));
    const [a, b] = [await cache.open(ID, source), await cache.open(ID, source)];
    await cache.reclaimer.remove(sha256(ZIP));
    a.close();
    a.close(); // a second close must not release b's lease
    expect(existsSync(store.file(sha256(ZIP)))).toBe(true);
    expect(await readAll(b)).toEqual(ZIP);
    expect(existsSync(store.file(sha256(ZIP)))).toBe(false);
    expect(cache.reclaimer.isLeased(sha256(ZIP))).toBe(false);
  });
});

/** A download of `bytes` (in `chunks`, by default two), with the upstream's headers. */
function sourceOf(bytes: Buffer, headers: Record<string, string> = {}, opts: { length?: number; chunks?: Buffer[] } = {}): ArchiveSource {
  return async (consume) => {
    downloads++;
    const body = Readable.from(opts.chunks ?? [bytes.subarray(0, 1000), bytes.subarray(1000)]);
    return consume({ body, length: opts.length ?? bytes.length, headers });
  };
}

/** The test's store, whose writers cannot be made while `full` (ENOSPC, as a full disk answers). */
function fullDisk(): ArchiveStore & { full: boolean; writers: number } {
  const disk = Object.assign(Object.create(store) as CoarseStore, { full: true, writers: 0 });
  disk.createWriter = async () => {
    disk.writers++;
    if (disk.full) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    return store.createWriter();
  };
  return disk;
}

describe('what the upstream sends is checked before it is stored', () => {
  it('a body sent with a Content-Encoding the mirror did not ask for is refused, even when it is the right zip; identity is not', async () => {
    const cache = cacheOf();
    await expect(cache.open(ID, sourceOf(ZIP, { 'content-encoding': 'gzip' }))).rejects.toThrow(/Content-Encoding gzip/);
    expect(await cache.index.get(ID)).toBeUndefined();
    for (const identity of [' Identity ', '']) {
      const h = await cache.open('fc3@' + (identity || 'empty'), sourceOf(ZIP, { 'content-encoding': identity }));
      expect([h.status, await readAll(h)]).toEqual(['MISS', ZIP]);
    }
  });

  it('the sha256 stated in x-checksum-sha256 (any case) or a chained mirror\'s ETag must match; a header that is not a sha256 states nothing', async () => {
    const cache = cacheOf();
    const wrong = 'ab'.repeat(32);
    const stating: Array<Record<string, string>> = [{ 'x-checksum-sha256': wrong.toUpperCase() }, { etag: `"${wrong}"` }];
    for (const headers of stating) {
      const h = await cache.open(ID, sourceOf(ZIP, headers)); // a MISS: the bytes are checked as they end
      await expect(readAll(h)).rejects.toThrow(/expected sha256/);
    }
    expect(await cache.index.get(ID)).toBeUndefined();
    const ignored: Array<Record<string, string>> = [{ 'x-checksum-sha256': `${wrong}00` }, { 'x-checksum-sha256': `sha256:${wrong}` }, { etag: `W/"${wrong}"` }, { etag: `"${wrong}00"` }];
    const right: Array<Record<string, string>> = [{ 'x-checksum-sha256': sha256(ZIP).toUpperCase() }, { etag: `"${sha256(ZIP)}"` }];
    for (const [i, headers] of [...ignored, ...right].entries()) {
      const h = await cache.open(`fc3@${i}.0.0`, sourceOf(ZIP, headers));
      expect([h.status, await readAll(h)]).toEqual(['MISS', ZIP]);
    }
    expect(cache.status().rejected).toBe(2);
  });
});

describe('a disk that cannot be written', () => {
  it('passes downloads through uncached (BYPASS), says so once, and tries the disk again only once the retry window has passed', async () => {
    const disk = fullDisk();
    const logs: string[] = [];
    const cache = cacheOf({ archives: disk, logs });
    const notUsable = () => logs.filter((l) => l.includes('archive cache not usable')).length;
    const first = await cache.open(ID, source);
    expect([first.status, await readAll(first), await cache.index.get(ID)]).toEqual(['BYPASS', ZIP, undefined]);
    const problem = cache.status().diskProblem;
    expect(problem?.error).toMatch(/^ENOSPC: no space left/);

    clock.advance(DISK_RETRY_MS - 1);
    const within = await cache.open(ID, source);
    expect([within.status, await readAll(within), disk.writers]).toEqual(['BYPASS', ZIP, 1]); // the disk was not tried

    clock.advance(1);
    const stillFull = await cache.open(ID, source);
    expect([stillFull.status, await readAll(stillFull), disk.writers]).toEqual(['BYPASS', ZIP, 2]); // tried, and full
    expect([notUsable(), cache.status().diskProblem?.since]).toEqual([1, problem?.since]); // the same condition: said once

    disk.full = false;
    clock.advance(DISK_RETRY_MS);
    const filled = await cache.open(ID, source);
    expect([filled.status, await readAll(filled)]).toEqual(['MISS', ZIP]);
    await until(() => cache.status().diskProblem === undefined); // once the fill is over
    expect(logs.filter((l) => l.includes('archive cache writable again'))).toHaveLength(1);
    const hit = await cache.open(ID, source);
    // Each request that tried the disk downloaded twice: the fill's answer is dropped when no writer can be made.
    expect([hit.status, await readAll(hit), downloads]).toEqual(['HIT', ZIP, 6]);
  });

  it('a passed-through download is checked as far as a stream can be: its last bytes never reach a client unless they check out', async () => {
    const cache = cacheOf({ archives: fullDisk() });
    const notZip = randomBytes(ZIP.length);
    const bad: Array<[string, ArchiveSource]> = [
      ['shorter than its Content-Length', sourceOf(ZIP, {}, { length: ZIP.length + 10 })],
      ['not the stated sha256', sourceOf(ZIP, { 'x-checksum-sha256': 'ab'.repeat(32) })],
      ['not a zip', sourceOf(notZip)],
    ];
    for (const [what, bytes] of bad) {
      const h = await cache.open(ID, bytes);
      expect(h.status, what).toBe('BYPASS');
      await expect(readAll(h), what).rejects.toThrow(/refused/);
    }
    await expect(cache.open(ID, sourceOf(ZIP, { 'content-encoding': 'br' }))).rejects.toThrow(/Content-Encoding br/);
    expect(cache.status().rejected).toBe(4);
    const good = await cache.open(ID, source);
    expect([good.status, await readAll(good)]).toEqual(['BYPASS', ZIP]);
  });

  it('the zip check of a passed-through download sees its last KEPT_TAIL bytes, and no more is kept', async () => {
    const big = componentZip('fc3', '1.0.0', { payload: randomBytes(3 << 20) });
    const chunks: Buffer[] = []; // 64 KiB chunks, the last one whole too: the tail is exactly whole chunks
    for (let end = big.length; end > 0; end -= 1 << 16) chunks.unshift(big.subarray(Math.max(0, end - (1 << 16)), end));
    const tails: Buffer[] = [];
    const contentCheck: ContentCheck = { file: checkZip, stream: (tail, size) => (tails.push(tail), checkZipTail(tail, size)) };
    const h = await cacheOf({ archives: fullDisk(), contentCheck }).open(ID, sourceOf(big, {}, { chunks }));
    expect([h.status, sha256(await readAll(h))]).toEqual(['BYPASS', sha256(big)]);
    expect(tails).toHaveLength(1);
    expect(tails[0]!.equals(big.subarray(big.length - KEPT_TAIL))).toBe(true);
  });
});

describe('a file that is not what the index says', () => {
  it('gone or cut short behind the mirror\'s back: not listed as cached, and fetched again (MISS), never served', async () => {
    const cache = cacheOf();
    await readAll(await cache.open(ID, source));
    await readAll(await cache.open('fc3@2.0.0', source));
    await until(async () => (await cache.versions('fc3')).length === 2); // indexed as the fill ends
    await rm(store.file(sha256(ZIP))); // both versions are this file
    expect(await cache.versions('fc3')).toEqual([]);
    const again = await cache.open(ID, source);
    expect([again.status, await readAll(again), downloads]).toEqual(['MISS', ZIP, 3]);
    await writeFile(store.file(sha256(ZIP)), ZIP.subarray(0, 1000));
    expect(await cache.versions('fc3')).toEqual([]);
    const cut = await cache.open(ID, source);
    expect([cut.status, await readAll(cut), downloads, cache.status().scrub.corruptFound]).toEqual(['MISS', ZIP, 4, 1]);
  });

  it('a file the disk cannot read (EIO) is no HIT: the download passes through and the disk is marked failing; a bug is no disk error', async () => {
    const cache = cacheOf();
    await readAll(await cache.open(ID, source));
    let failure: Error = Object.assign(new Error('i/o error'), { code: 'EIO' });
    const unreadable = Object.assign(Object.create(store) as CoarseStore, { open: async () => Promise.reject(failure), createWriter: () => Promise.reject(failure) });
    const broken = cacheOf({ archives: unreadable });
    const h = await broken.open(ID, source);
    expect([h.status, await readAll(h), broken.status().diskProblem?.error]).toEqual(['BYPASS', ZIP, 'EIO: i/o error']);
    failure = new TypeError('not a disk error');
    await expect(cacheOf({ archives: unreadable }).open(ID, source)).rejects.toThrow('not a disk error');
  });
});

describe('collecting what nothing points at', () => {
  it('removes an archive no version points at once it is a minute old; never a younger one (a fill may be about to index it), nor a leased or a referenced one', async () => {
    const kept = componentZip('kept', '1.0.0');
    const cache = cacheOf();
    await readAll(await cache.open(ID, source));
    await readAll(await cache.open('kept@1.0.0', sourceOf(kept)));
    await cache.drain(5_000);
    await cache.index.remove(ID); // fc3's file stays, unreferenced
    const collect = async () => (await cache.reclaimer.enforce()).unreferenced.removed;
    expect(await collect()).toBe(0); // just written
    clock.advance(5 * 60_000);
    const release = cache.reclaimer.lease(sha256(ZIP));
    expect(await collect()).toBe(0); // a reader holds it
    release();
    expect(await collect()).toBe(1);
    expect([existsSync(store.file(sha256(ZIP))), existsSync(store.file(sha256(kept)))]).toEqual([false, true]);
  });
});

describe('rebuilding the index from the archives (repair)', () => {
  it('indexes each archive by its publish.yaml once it is hashed; quarantines a corrupt one; forgets versions whose file is gone', async () => {
    const [kept, other] = [componentZip('kept', '1.0.0'), componentZip('other', '1.0.0', { payload: randomBytes(1000) })];
    const cache = cacheOf();
    for (const [id, zip] of [[ID, ZIP], ['kept@1.0.0', kept], ['other@1.0.0', other]] as const) await readAll(await cache.open(id, sourceOf(zip)));
    await cache.drain(5_000);
    await cache.index.remove(ID); // lost: found again from its publish.yaml
    await cache.index.remove('other@1.0.0');
    const bad = Buffer.from(other);
    bad[other.length >> 1] = bad[other.length >> 1]! ^ 0xff; // its publish.yaml still reads: only its hash tells
    await writeFile(store.file(sha256(other)), bad);
    await cache.index.put('gone@1.0.0', { digest: 'cd'.repeat(32), size: 10 });

    const report = await cache.rebuildIndex();
    expect(report).toMatchObject({ archives: 3, recovered: [ID], indexed: 1, forgotten: ['gone@1.0.0'] });
    expect(report.quarantined).toEqual([{ digest: sha256(other), reason: 'corrupt: its bytes do not match its digest' }]);
    expect([await cache.index.get(ID), await cache.index.get('other@1.0.0'), await cache.index.get('gone@1.0.0')]).toEqual([{ digest: sha256(ZIP), size: ZIP.length }, undefined, undefined]);
    expect((await store.quarantined()).map((q) => q.digest)).toEqual([sha256(other)]);
    const hit = await cache.open(ID, undefined); // offline: served from the rebuilt index
    expect([hit.status, await readAll(hit)]).toEqual(['HIT', ZIP]);
  });
});

describe('a lost index', () => {
  it('collects and evicts nothing: every archive looks unreferenced then', async () => {
    const first = cacheOf();
    await readAll(await first.open(ID, source));
    await first.drain(5_000); // its index entry is written
    await db.del(`archive:${ID}`); // as if the index were gone
    const lost = cacheOf({ indexIntact: false, quotaBytes: 1 });
    await lost.init();
    clock.advance(10 * 60_000);
    const { unreferenced, evicted } = await lost.reclaimer.enforce();
    expect([unreferenced.removed, evicted.removed]).toEqual([0, 0]);
    expect(existsSync(store.file(sha256(ZIP)))).toBe(true);
    const intact = cacheOf({ quotaBytes: 0 });
    await intact.init();
    expect((await intact.reclaimer.enforce()).unreferenced.removed).toBe(1); // the control: an intact index collects it
  });
});

describe('the leases of an export', () => {
  const zipOf = (version: string) => componentZip('fc3', version, { payload: randomBytes(300_000) });

  it('pass the archives they hold over for eviction, and are no use for the LRU: once released, the eviction order stays', async () => {
    const [older, newer, third, fourth] = [zipOf('1.0.0'), zipOf('2.0.0'), zipOf('3.0.0'), zipOf('4.0.0')];
    const cache = cacheOf({ quotaBytes: Math.round(older.length * 2.5) });
    await readAll(await cache.open('fc3@1.0.0', sourceOf(older)));
    clock.advance(1000);
    await readAll(await cache.open('fc3@2.0.0', sourceOf(newer)));
    await cache.drain(5_000);
    clock.advance(1000);
    const leased = await cache.leasedEntries((_name, version) => version === '1.0.0');
    expect(leased.map((l) => [l.name, l.version, l.ref.digest])).toEqual([['fc3', '1.0.0', sha256(older)]]);
    clock.advance(1000);
    for (const l of leased) l.release();
    // The least recently used archive is still the one the export held: a third archive evicts it, not the newer.
    await readAll(await cache.open('fc3@3.0.0', sourceOf(third)));
    await until(() => !existsSync(store.file(sha256(older))));
    expect(existsSync(store.file(sha256(newer)))).toBe(true);
    // Held, the least recently used is passed over: the next one goes instead.
    const held = await cache.leasedEntries((_name, version) => version === '2.0.0');
    clock.advance(1000);
    await readAll(await cache.open('fc3@4.0.0', sourceOf(fourth)));
    await until(() => !existsSync(store.file(sha256(third))));
    const reader = await cache.openStored(sha256(newer));
    expect(reader?.stat.size).toBe(newer.length);
    reader?.close();
    for (const l of held) l.release();
  });

  it('a lease released while an eviction runs is not lost on it: one more run follows, and the quota holds again', async () => {
    const cache = cacheOf({ quotaBytes: Math.round(ZIP.length * 1.5) });
    await readAll(await cache.open(ID, source));
    await until(() => !cache.reclaimer.isLeased(sha256(ZIP))); // the fill's own lease is gone
    const release = cache.reclaimer.lease(sha256(ZIP));
    const other = 'f'.repeat(64); // another archive's bytes, held too: the quota is over, and nothing may go
    cache.reclaimer.quota.added(other, ZIP.length);
    const releaseOther = cache.reclaimer.lease(other);
    const running = cache.reclaimer.evict(); // finds both held
    release(); // during that run: its eviction must not be lost on it
    expect((await running).removed).toBe(0);
    await until(() => !existsSync(store.file(sha256(ZIP))));
    expect(cache.reclaimer.quota.overQuota).toBe(false);
    releaseOther();
  });

  it('a lease on an archive no longer stored is not taken', async () => {
    const cache = cacheOf();
    expect(await cache.leaseStored({ digest: sha256(ZIP), size: ZIP.length })).toBeUndefined();
    expect(cache.reclaimer.isLeased(sha256(ZIP))).toBe(false);
    await readAll(await cache.open(ID, source));
    // The fill keeps its own lease until its index write is done, a moment after the client has the last byte.
    await until(() => !cache.reclaimer.isLeased(sha256(ZIP)));
    const release = await cache.leaseStored({ digest: sha256(ZIP), size: ZIP.length });
    await cache.unlink(ID);
    expect(existsSync(store.file(sha256(ZIP)))).toBe(true);
    release!();
    expect(existsSync(store.file(sha256(ZIP)))).toBe(false);
  });
});
