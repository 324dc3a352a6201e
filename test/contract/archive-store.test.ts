// One contract, run against every ArchiveStore implementation.
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { constants, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import type { Readable } from 'node:stream';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { FsArchiveStore, readerStream, type ArchiveStore } from '../../src/stores/archive-store.js';
import { removeTempDirs, tempDir, until } from '../helpers.js';

const implementations: Array<[string, (dir: string) => Promise<ArchiveStore & { tempFiles(): Promise<string[]> }>]> = [
  ['FsArchiveStore', (dir) => FsArchiveStore.open(dir)],
  ['FsArchiveStore, buffered writes', (dir) => FsArchiveStore.open(dir, { directWrites: false })],
];

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function readAll(store: ArchiveStore, digest: string): Promise<Buffer> {
  const reader = (await store.open(digest))!;
  try {
    return await collect(readerStream(reader));
  } finally {
    reader.close();
  }
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

afterAll(removeTempDirs);

describe.each(implementations)('%s', (_name, open) => {
  let dir: string;
  let store: Awaited<ReturnType<typeof open>>;

  beforeEach(async () => {
    dir = await tempDir();
    store = await open(dir);
  });

  it('commits an archive under its sha256, with its size', async () => {
    const data = randomBytes(100_000);
    const w = await store.createWriter();
    await w.write(data.subarray(0, 40_000));
    await w.write(data.subarray(40_000));
    const { ref, stat } = await w.commit({ size: data.length });
    expect(ref).toEqual({ digest: sha256(data), size: data.length });
    expect(await store.stat(ref.digest)).toEqual(stat); // the stat taken right after the move is the file's
    expect(await readAll(store, ref.digest)).toEqual(data);
    expect(await store.tempFiles()).toEqual([]);
  });

  it('takes chunks of any size, larger than what it holds back included, and copies them: the caller may reuse its buffer', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 7);
    const w = await store.createWriter();
    const scratch = Buffer.alloc(3 * 1024 * 1024); // one buffer for every chunk, overwritten once each write resolves
    for (let pos = 0, i = 0; pos < data.length; i++) {
      const n = Math.min(data.length - pos, [1, 65_536, 3 * 1024 * 1024, 777_777][i % 4]!);
      data.copy(scratch, 0, pos, pos + n);
      await w.write(scratch.subarray(0, n));
      scratch.fill(0xee, 0, n);
      pos += n;
    }
    const { ref } = await w.commit({ size: data.length });
    expect(ref).toEqual({ digest: sha256(data), size: data.length });
    expect((await readAll(store, ref.digest)).equals(data)).toBe(true);
  });

  it.each([
    ['too short', { size: 11 }],
    ['too long', { size: 9 }],
    ['wrong digest', { digests: ['a'.repeat(64)] }],
    ['failed content check', { check: () => Promise.reject(new Error('not a zip')) }],
  ])('rejects a %s download and stores nothing', async (_case, expected) => {
    const w = await store.createWriter();
    await w.write(Buffer.from('0123456789'));
    await expect(w.commit(expected)).rejects.toThrow(/archive rejected/);
    expect(await store.stat(sha256(Buffer.from('0123456789')))).toBeUndefined();
    expect(await store.tempFiles()).toEqual([]);
  });

  it('an aborted writer leaves nothing behind', async () => {
    const w = await store.createWriter();
    await w.write(Buffer.from('partial'));
    await w.abort();
    await w.abort(); // twice is fine
    expect(await store.stat(sha256(Buffer.from('partial')))).toBeUndefined();
    expect(await store.tempFiles()).toEqual([]);
  });

  it('stores the same bytes once, whatever the number of writers', async () => {
    const data = Buffer.from('same bytes');
    const refs = await Promise.all(
      [1, 2, 3].map(async () => {
        const w = await store.createWriter();
        await w.write(data);
        return w.commit();
      }),
    );
    expect(new Set(refs.map((r) => r.ref.digest)).size).toBe(1);
    expect(await readAll(store, refs[0]!.ref.digest)).toEqual(data);
    expect(await store.tempFiles()).toEqual([]);
  });

  it('followers read the bytes as they are written, and finish only after commit', async () => {
    const w = await store.createWriter();
    const early = collect(readerStream(w.reader()));
    await w.write(Buffer.from('hello '));
    const middle = collect(readerStream(w.reader(), 3));
    await w.write(Buffer.from('world'));
    await w.commit();
    const late = collect(readerStream(w.reader()));
    expect((await Promise.all([early, middle, late])).map(String)).toEqual(['hello world', 'hello world', 'hello world']);
  });

  it('hands followers the bytes not yet on disk from memory, and those already written from the file', async () => {
    const w = await store.createWriter();
    const chunks = Array.from({ length: 48 }, (_, i) => Buffer.alloc(64 * 1024, i)); // 3 MiB: some batches go to disk
    const early = w.reader();
    const buf = Buffer.alloc(100);
    await w.write(chunks[0]!);
    expect([await early.read(buf, 0), w.written]).toEqual([100, 0]); // read before any of it is on disk
    early.close();
    const first = collect(readerStream(w.reader(), 100_000));
    for (const chunk of chunks.slice(1, 40)) await w.write(chunk);
    await until(() => w.written >= 1 << 20); // a batch is on disk
    const late = collect(readerStream(w.reader(), 100_000)); // starts on disk, goes on in memory
    for (const chunk of chunks.slice(40)) await w.write(chunk);
    await w.commit();
    const whole = Buffer.concat(chunks);
    expect((await Promise.all([first, late])).map((b) => b.equals(whole))).toEqual([true, true]);
  });

  it('holds the last byte back until commit: a writer that aborts instead fails the read of it', async () => {
    const w = await store.createWriter();
    await w.write(Buffer.from('hello world'));
    expect(w.received).toBe(11); // every byte is in (in memory: the disk writes go in batches)
    const reader = w.reader();
    const last = expect(reader.read(Buffer.alloc(1), 10)).rejects.toThrow('the content check failed');
    await w.abort(new Error('the content check failed'));
    await last; // released early, it would have read 'd'
    reader.close();
  });

  it('followers fail when the writer aborts', async () => {
    const w = await store.createWriter();
    const reader = expect(text(readerStream(w.reader()))).rejects.toThrow('upstream reset');
    await w.write(Buffer.from('half'));
    await w.abort(new Error('upstream reset'));
    await reader;
    await expect(text(readerStream(w.reader()))).rejects.toThrow('upstream reset');
  });

  it('reads a committed archive into the caller\'s buffers, and has no reader for one it does not have', async () => {
    const w = await store.createWriter();
    await w.write(Buffer.from('0123456789'));
    const { digest } = (await w.commit()).ref;
    const reader = (await store.open(digest))!;
    expect(reader.stat.size).toBe(10);
    const buf = Buffer.alloc(4);
    expect([await reader.read(buf, 0), buf.toString()]).toEqual([4, '0123']);
    expect([await reader.read(buf, 8), buf.subarray(0, 2).toString()]).toEqual([2, '89']);
    expect(await reader.read(buf, 10)).toBe(0);
    reader.close();
    expect(await store.open('f'.repeat(64))).toBeUndefined();
  });

  it('deletes an archive at once; a reader opened before keeps reading its bytes', async () => {
    const w = await store.createWriter();
    await w.write(Buffer.from('still here'));
    const { digest } = (await w.commit()).ref;
    const reader = (await store.open(digest))!;
    const deleted = store.delete(digest);
    expect(await store.stat(digest)).toBeUndefined(); // before the promise settles
    await deleted;
    const buf = Buffer.alloc(20);
    expect(buf.subarray(0, await reader.read(buf, 0)).toString()).toBe('still here');
    reader.close();
  });

  it('a commit replaces whatever the store held under its digest with its own bytes, and calls back with the archive and its stat', async () => {
    const data = Buffer.from('the real bytes');
    const first = await store.createWriter();
    await first.write(data);
    const { digest } = (await first.commit()).ref;
    const old = (await store.open(digest))!;
    // Some other bytes of the same size end up under the digest (a rewrite, bit rot).
    await writeFile(join(dir, 'sha256', digest.slice(0, 2), digest), 'the fake bytez');
    const second = await store.createWriter();
    await second.write(data);
    let calledBack: unknown;
    const committed = second.commit({}, (ref, stat) => (calledBack = { ref, stat }));
    const result = await committed;
    expect(calledBack).toEqual(result);
    expect(await readAll(store, digest)).toEqual(data);
    expect((await store.stat(digest))?.version).not.toBe(old.stat.version);
    old.close();
  });

  it('moves an archive to quarantine: no longer stored, kept until deleted from there', async () => {
    const w = await store.createWriter();
    await w.write(Buffer.from('who am I'));
    const { digest, size } = (await w.commit()).ref;
    await store.quarantine(digest);
    expect(await store.stat(digest)).toBeUndefined();
    expect((await store.quarantined()).map((a) => [a.digest, a.size])).toEqual([[digest, size]]);
    await store.deleteQuarantined(digest);
    expect(await store.quarantined()).toEqual([]);
  });

  it('removes temp files left by a crash when it opens', async () => {
    const w = await store.createWriter();
    await w.write(Buffer.from('left behind'));
    expect(await store.tempFiles()).toHaveLength(1);
    await writeFile(join(dir, 'tmp', 'stray.part'), 'x');
    const reopened = await open(dir);
    expect(await reopened.tempFiles()).toEqual([]);
  });

  it('refuses digests that are not a sha256: no other string becomes a path', async () => {
    await expect(store.stat('../../etc/passwd')).rejects.toThrow(/not a sha256/);
    await expect(store.open('../../etc/passwd')).rejects.toThrow(/not a sha256/);
    await expect(store.delete('../x')).rejects.toThrow(/not a sha256/);
  });
});

describe('FsArchiveStore: how fills reach the disk', () => {
  const MiB = 1024 * 1024;
  /** Writes `data` in one chunk, commits, and checks that the store reads back those very bytes. */
  const storesWhole = async (store: FsArchiveStore, data: Buffer) => {
    const w = await store.createWriter();
    await w.write(data);
    const { ref } = await w.commit();
    expect((await readAll(store, ref.digest)).equals(data)).toBe(true);
  };
  /** This process's descriptors open with O_DIRECT on files under `folder`. */
  const directFds = (folder: string) =>
    readdirSync('/proc/self/fd').filter((fd) => {
      let target: string;
      try {
        target = readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return false; // closed meanwhile (the descriptor readdir itself used)
      }
      const flags = target.startsWith(folder) ? /flags:\s*(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] : undefined;
      return flags !== undefined && (parseInt(flags, 8) & constants.O_DIRECT) !== 0;
    }).length;

  it('writes past the page cache (O_DIRECT) where the file system allows it, from an aligned ring, the tail buffered', async () => {
    const dir = await tempDir();
    const store = await FsArchiveStore.open(dir);
    const data = randomBytes(3 * MiB + 1234); // batches of whole pages, then a tail of less than one
    const w = await store.createWriter();
    expect(directFds(join(dir, 'tmp'))).toBe(1);
    for (let pos = 0; pos < data.length; pos += 100_000) await w.write(data.subarray(pos, pos + 100_000));
    const { ref } = await w.commit({ size: data.length });
    expect(store.writesDirect).toBe(true); // no write was refused for its alignment
    expect(directFds(dir)).toBe(0); // closed at commit
    expect((await readAll(store, ref.digest)).equals(data)).toBe(true);
  });

  it('writes through the page cache when the setting is off', async () => {
    const dir = await tempDir();
    const store = await FsArchiveStore.open(dir, { directWrites: false });
    const w = await store.createWriter();
    expect(directFds(dir)).toBe(0);
    await w.abort();
    await storesWhole(store, randomBytes(3 * MiB + 1));
    expect(store.writesDirect).toBe(false);
  });

  // ramfs refuses O_DIRECT (tmpfs takes it since Linux 6.6); mounting one takes root.
  const ramfs = mkdtempSync(join(tmpdir(), 'srm-mirror-ramfs-'));
  const mounted = spawnSync('mount', ['-t', 'ramfs', 'ramfs', ramfs]).status === 0;
  if (!mounted) console.warn('the ramfs test is skipped: mount -t ramfs needs root');
  afterAll(() => {
    if (mounted) spawnSync('umount', [ramfs]);
    rmSync(ramfs, { recursive: true, force: true });
  });

  it.skipIf(!mounted)('writes through the page cache where the file system refuses O_DIRECT (ramfs)', async () => {
    const store = await FsArchiveStore.open(ramfs);
    expect(store.writesDirect).toBe(true); // it has not tried yet
    await storesWhole(store, randomBytes(3 * MiB + 1));
    expect(store.writesDirect).toBe(false);
  });

  it('paces a fill to a client reading close behind it: the client reads every byte from memory, none from the file', async () => {
    const store = await FsArchiveStore.open(await tempDir(), { followerPatienceMs: 60_000 });
    const data = randomBytes(16 * MiB);
    const w = await store.createWriter();
    const reader = w.reader();
    let lead = 0;
    const read = (async () => {
      const got: Buffer[] = [];
      for (let pos = 0; ; ) {
        const buf = Buffer.alloc(64 * 1024);
        const n = await reader.read(buf, pos);
        if (n === 0) break;
        lead = Math.max(lead, w.received - pos);
        got.push(buf.subarray(0, n));
        pos += n;
        await new Promise(setImmediate); // slower than the writer
      }
      reader.close();
      return Buffer.concat(got);
    })();
    for (let pos = 0; pos < data.length; pos += 256 * 1024) await w.write(data.subarray(pos, pos + 256 * 1024));
    await w.commit();
    expect((await read).equals(data)).toBe(true);
    expect(lead).toBeLessThanOrEqual(2 * MiB); // never further ahead than the ring: unpaced, it runs MiBs ahead
  });

  it('a write waiting for a client fails when the writer aborts meanwhile, and its ring serves the next writer untouched', async () => {
    const store = await FsArchiveStore.open(await tempDir(), { followerPatienceMs: 60_000 });
    const w = await store.createWriter();
    const reader = w.reader();
    await w.write(randomBytes(64 * 1024));
    await reader.read(Buffer.alloc(10), 0); // it follows, then stalls
    const waiting = expect(w.write(randomBytes(4 * MiB))).rejects.toThrow(/aborted/);
    await until(() => w.received >= 2 * MiB); // the ring is full of bytes the client has not read
    await w.abort(new Error('client gone'));
    await waiting;
    reader.close();
    await storesWhole(store, randomBytes(5 * MiB)); // the next writer takes the ring back from the pool
  });

  it('waits for a client that stops reading no longer than its patience; the client then reads the rest from the file', async () => {
    const store = await FsArchiveStore.open(await tempDir(), { followerPatienceMs: 200 });
    const data = randomBytes(6 * MiB);
    const w = await store.createWriter();
    const reader = w.reader();
    await w.write(data.subarray(0, 64 * 1024));
    const first = Buffer.alloc(1000);
    expect(await reader.read(first, 0)).toBe(1000); // it follows from here, then stalls
    const start = performance.now();
    await w.write(data.subarray(64 * 1024));
    const held = performance.now() - start;
    await w.commit();
    expect(held).toBeGreaterThanOrEqual(190); // it waited for the client...
    expect(held).toBeLessThan(30_000); // ...but not for ever
    const rest = await collect(readerStream({ read: (buf, pos) => reader.read(buf, pos + 1000), close: () => reader.close() }));
    expect(Buffer.concat([first, rest]).equals(data)).toBe(true);
  });
});
