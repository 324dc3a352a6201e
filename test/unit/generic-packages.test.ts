// GenericPackages over real LevelDB and real files: versions and their files, shared blobs, duplicates, deletes,
// atomic creation under parallel uploads, download counts and the status figures.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GenericPackages, type GenericCoords } from '../../src/core/hosted/generic-packages.js';
import { HostedBlobs } from '../../src/core/hosted/hosted-blobs.js';
import { createLogger } from '../../src/log.js';
import { MirrorError } from '../../src/model/errors.js';
import type { ArchiveRef } from '../../src/model/release.js';
import type { ArchiveReader } from '../../src/stores/archive-store.js';
import { FsArchiveStore } from '../../src/stores/archive-store.js';
import { LevelMetadataStore } from '../../src/stores/metadata-store.js';
import { manualClock, removeTempDirs, tempDir } from '../helpers.js';

const AT: GenericCoords = { owner: 'alice', name: 'tool', version: '1.0.0' };

let dir: string;
let db: LevelMetadataStore;
let packages: GenericPackages;
let blobs: RacingBlobs;

/** HostedBlobs with a hook that runs just before a blob is opened (to put a delete in between). */
class RacingBlobs extends HostedBlobs {
  beforeOpen: (() => Promise<unknown>) | undefined;

  override async open(ref: ArchiveRef, what: string) {
    await this.beforeOpen?.();
    return super.open(ref, what);
  }
}
const clock = manualClock(Date.parse('2026-11-21T10:00:00Z'));

/** Opens the stores in `dir` (again). */
async function open(): Promise<void> {
  db = await LevelMetadataStore.open(join(dir, 'meta'));
  const store = await FsArchiveStore.open(join(dir, 'hosted'), { durable: true });
  blobs = new RacingBlobs(db, store, createLogger('error', { write: () => {} }), { maxFileBytes: 1 << 20, maxTotalBytes: 0, now: clock.now });
  await blobs.init();
  packages = new GenericPackages(db, blobs, clock.now);
}

beforeEach(async () => {
  dir = await tempDir();
  await open();
});

afterEach(async () => {
  await db.close();
  await removeTempDirs();
});

async function put(fileName: string, bytes: string, at = AT, duplicates: 'refuse' | 'keep' = 'refuse') {
  return packages.add(at, fileName, await packages.receive(Readable.from([Buffer.from(bytes)])), duplicates);
}

async function readAll(reader: ArchiveReader, size: number): Promise<string> {
  const buf = Buffer.alloc(size);
  for (let pos = 0, n = 1; pos < size && n > 0; pos += n) n = await reader.read(buf.subarray(pos), pos);
  return buf.toString();
}

async function served(fileName: string, at = AT): Promise<string | undefined> {
  const found = await packages.open(at, fileName);
  if (!found) return undefined;
  try {
    return await readAll(found.handle.reader, found.file.size);
  } finally {
    found.handle.close();
  }
}

const blobFiles = async () => (await readdir(join(dir, 'hosted', 'sha256'), { recursive: true })).filter((f) => /[0-9a-f]{64}$/.test(f));
const tempFiles = async () => readdir(join(dir, 'hosted', 'tmp'));

describe('versions and files', () => {
  it('the first file creates the version; later ones join it, each with its own numeric id', async () => {
    const first = await put('a.txt', 'aaa');
    clock.advance(1000);
    const second = await put('b.bin', 'bbbb');
    expect(second.version.id).toBe(first.version.id);
    expect(second.version.createdAt).toBe('2026-11-21T10:00:00.000Z');
    expect(second.version.files.map((f) => [f.name, f.size, f.createdAt])).toEqual([
      ['a.txt', 3, '2026-11-21T10:00:00.000Z'],
      ['b.bin', 4, '2026-11-21T10:00:01.000Z'],
    ]);
    const ids = [first.file.id, first.version.id, second.file.id];
    expect(new Set(ids).size).toBe(3);
    expect(ids.every(Number.isInteger)).toBe(true);
    expect(await served('A.TXT')).toBe('aaa'); // names compare case-insensitively
    expect(await served('b.bin')).toBe('bbbb');
    expect(await packages.open(AT, 'c')).toBeUndefined();
    expect(await packages.open({ ...AT, version: '2' }, 'a.txt')).toBeUndefined();
  });

  it('a name already in the version is refused (case-insensitively), the upload dropped and nothing changed', async () => {
    await put('a.txt', 'first');
    const err = await put('A.txt', 'second').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MirrorError);
    expect((err as MirrorError).status).toBe(409);
    expect(await served('a.txt')).toBe('first');
    expect((await packages.version(AT))!.files).toHaveLength(1);
    expect(await tempFiles()).toEqual([]);
    expect(await blobFiles()).toHaveLength(1);
  });

  it('with duplicates kept, the newest file of a name is the one served', async () => {
    await put('a.txt', 'old', AT, 'keep');
    await put('a.txt', 'new', AT, 'keep');
    expect((await packages.version(AT))!.files.map((f) => f.name)).toEqual(['a.txt', 'a.txt']);
    expect(await served('a.txt')).toBe('new');
  });

  it('ids keep growing across versions and a reopened database', async () => {
    const one = await put('a', '1');
    const two = await put('a', '2', { ...AT, version: '2.0.0' });
    expect(two.file.id).toBeGreaterThan(one.version.id);
    await db.close();
    await open();
    const three = await put('a', '3', { ...AT, version: '3.0.0' });
    expect(three.file.id).toBeGreaterThan(two.version.id);
    expect(await served('a', { ...AT, version: '2.0.0' })).toBe('2');
  });
});

describe('blobs are shared and released', () => {
  it('the same bytes in two files are one blob; deleting one file keeps the other\'s bytes, the last takes the blob', async () => {
    await put('a.txt', 'same bytes');
    await put('copy.txt', 'same bytes', { ...AT, name: 'other' });
    expect(await blobFiles()).toHaveLength(1);
    expect(await packages.deleteFile(AT, 'a.txt')).toBe(true);
    expect(await served('copy.txt', { ...AT, name: 'other' })).toBe('same bytes');
    expect(await blobFiles()).toHaveLength(1);
    expect(await packages.deleteVersion({ ...AT, name: 'other' })).toBe(true);
    expect(await blobFiles()).toHaveLength(0);
  });

  it('deleting a file removes every file of that name; the last file removes the version', async () => {
    await put('a.txt', 'one', AT, 'keep');
    await put('a.txt', 'two', AT, 'keep');
    await put('b.txt', 'three');
    expect(await packages.deleteFile(AT, 'A.TXT')).toBe(true);
    expect((await packages.version(AT))!.files.map((f) => f.name)).toEqual(['b.txt']);
    expect(await packages.deleteFile(AT, 'a.txt')).toBe(false);
    expect(await packages.deleteFile(AT, 'b.txt')).toBe(true);
    expect(await packages.version(AT)).toBeUndefined();
    expect(await blobFiles()).toHaveLength(0);
    expect(await packages.deleteFile(AT, 'b.txt')).toBe(false);
    expect(await packages.deleteVersion(AT)).toBe(false);
  });

  it('deleting a version releases every file of it', async () => {
    await put('a', 'x');
    await put('b', 'y');
    expect(await packages.deleteVersion(AT)).toBe(true);
    expect(await packages.version(AT)).toBeUndefined();
    expect(await blobFiles()).toHaveLength(0);
  });
});

it('20 parallel uploads into a new version all land: one version, 20 files, 20 ids', async () => {
  const uploads = await Promise.all(Array.from({ length: 20 }, (_, i) => packages.receive(Readable.from([Buffer.from(`file ${i}`)]))));
  const added = await Promise.all(uploads.map((u, i) => packages.add(AT, `f${i}`, u, 'refuse')));
  const version = (await packages.version(AT))!;
  expect(version.files.map((f) => f.name).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `f${i}`).sort());
  expect(new Set(added.map((a) => a.version.id)).size).toBe(1);
  expect(new Set(version.files.map((f) => f.id)).size).toBe(20);
  for (let i = 0; i < 20; i++) expect(await served(`f${i}`)).toBe(`file ${i}`);
});

it('a file deleted between its look-up and its open is missing (404), not damaged (500)', async () => {
  await put('a', 'x');
  blobs.beforeOpen = () => packages.deleteVersion(AT);
  expect(await packages.open(AT, 'a')).toBeUndefined();
  blobs.beforeOpen = undefined;
  await put('a', 'y');
  blobs.beforeOpen = async () => {
    await packages.deleteVersion(AT);
    await put('a', 'z'); // and put again: another file of the same name
  };
  expect(await packages.open(AT, 'a')).toBeUndefined();
});

describe('download counts', () => {
  it('count per version; a deleted and recreated version starts from zero', async () => {
    await put('a', 'x');
    packages.countDownload(AT);
    packages.countDownload(AT);
    packages.countDownload({ ...AT, version: 'missing' }); // no version, no count
    expect(await packages.downloads(AT)).toBe(2);
    expect(await packages.downloads({ ...AT, version: 'missing' })).toBe(0);
    await packages.deleteVersion(AT);
    await put('a', 'x');
    expect(await packages.downloads(AT)).toBe(0);
  });
});

it('inventory: packages, versions, files and their bytes', async () => {
  expect(await packages.inventory()).toEqual({ packages: 0, versions: 0, files: 0, bytes: 0 });
  await put('a', '12345');
  await put('b', '12345');
  await put('a', '123', { ...AT, version: '2' });
  await put('a', '1', { ...AT, owner: 'bob' });
  expect(await packages.inventory()).toEqual({ packages: 2, versions: 3, files: 4, bytes: 14 });
});
