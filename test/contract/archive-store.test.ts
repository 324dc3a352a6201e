// One contract, run against every ArchiveStore implementation.
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import type { Readable } from 'node:stream';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { FsArchiveStore, readerStream, type ArchiveStore } from '../../src/stores/archive-store.js';
import { removeTempDirs, tempDir, until } from '../helpers.js';

const implementations: Array<[string, (dir: string) => Promise<ArchiveStore & { tempFiles(): Promise<string[]> }>]> = [
  ['FsArchiveStore', (dir) => FsArchiveStore.open(dir)],
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
