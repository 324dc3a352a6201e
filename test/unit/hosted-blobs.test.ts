// HostedBlobs.receive over a real durable store: the size it counts is what arrived, not what the pipelined disk
// writes have put on disk so far.
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { HostedBlobs } from '../../src/core/hosted/hosted-blobs.js';
import { createLogger } from '../../src/log.js';
import { FsArchiveStore } from '../../src/stores/archive-store.js';
import { LevelMetadataStore } from '../../src/stores/metadata-store.js';
import { removeTempDirs, tempDir } from '../helpers.js';

let db: LevelMetadataStore;
let blobs: HostedBlobs;

beforeEach(async () => {
  const dir = await tempDir();
  db = await LevelMetadataStore.open(join(dir, 'meta'));
  blobs = new HostedBlobs(db, await FsArchiveStore.open(join(dir, 'hosted'), { durable: true }), createLogger('error', { write: () => {} }), { maxFileBytes: 100_000, maxTotalBytes: 0 });
  await blobs.init();
});

afterEach(async () => {
  await db.close();
  await removeTempDirs();
});

const chunks = (n: number, size: number) => Readable.from(Array.from({ length: n }, () => Buffer.alloc(size, 'a')));

it('an upload of its declared length is accepted, with its whole size', async () => {
  const upload = await blobs.receive(chunks(5, 10_000), 50_000);
  expect(upload.size).toBe(50_000);
  const ref = await blobs.change((c) => c.keep(upload, 'test'));
  expect(ref.size).toBe(50_000);
});

it('a body shorter than its declared length is refused (400)', async () => {
  await expect(blobs.receive(chunks(2, 10_000), 30_000)).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/after 20000 of the 30000 bytes/) });
});

it('a body growing past hosted.maxFileSize is refused (413) however far the disk writes trail', async () => {
  await expect(blobs.receive(chunks(11, 10_000))).rejects.toMatchObject({ status: 413 });
});

it('hosted.maxSize counts the blobs kept and frees what a release deleted', async () => {
  const full = new HostedBlobs(db, await FsArchiveStore.open(join(await tempDir(), 'hosted'), { durable: true }), createLogger('error', { write: () => {} }), {
    maxFileBytes: 100_000,
    maxTotalBytes: 25_000,
  });
  const first = await full.receive(chunks(2, 10_000));
  const { digest } = await full.change((c) => c.keep(first, 'one'));
  expect(full.status()).toEqual({ blobs: 1, bytes: 20_000 });
  await expect(full.receive(Readable.from([Buffer.alloc(10_000, 'b')]))).rejects.toMatchObject({ status: 403 });
  await full.change(async (c) => c.release(digest, 'one'));
  expect(full.status()).toEqual({ blobs: 0, bytes: 0 });
  const second = await full.receive(Readable.from([Buffer.alloc(10_000, 'b')]));
  await full.change((c) => c.keep(second, 'two'));
  expect(full.status()).toEqual({ blobs: 1, bytes: 10_000 });
});
