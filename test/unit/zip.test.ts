import { crc32 } from 'node:zlib';
import { strToU8, zipSync, type Zippable } from 'fflate';
import { describe, expect, it } from 'vitest';
import { checkZip, InvalidZipError, readZipEntry, type RandomAccess } from '../../src/model/zip.js';

const access = (bytes: Uint8Array): RandomAccess => ({
  read: async (buf, pos) => Buffer.from(bytes.subarray(pos, pos + buf.length)).copy(buf),
});
const check = (bytes: Uint8Array): Promise<void> => checkZip(access(bytes), bytes.length);
const read = (bytes: Uint8Array, wanted: (name: string) => boolean, maxBytes = 1 << 20) =>
  readZipEntry(access(bytes), bytes.length, wanted, maxBytes);
const isPublishYaml = (name: string): boolean => name === 'publish.yaml' || name.endsWith('/publish.yaml');

const PUBLISH_YAML = 'Edition: 3.0.0\nType: Component\nName: fc3\nVersion: 0.1.0\n';

/** A component zip as registries serve it: one top-level folder, stored and deflated entries, a file comment. */
function componentZip(): Uint8Array {
  return zipSync(
    {
      'fc3-0.1.0': {},
      'fc3-0.1.0/publish.yaml': [strToU8(PUBLISH_YAML), { level: 0 }],
      'fc3-0.1.0/dist/index.js': [strToU8('module.exports = {};\n'.repeat(200)), { comment: 'built' }],
      'fc3-0.1.0/README.md': strToU8('# fc3\n'),
    },
    { level: 6 },
  );
}

/** Little-endian view for patching fields in place. */
const view = (bytes: Uint8Array): DataView => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/** Offset of the end-of-central-directory record of a zip without an archive comment (fflate writes none). */
const eocdOf = (zip: Uint8Array): number => zip.length - 22;

function patched(zip: Uint8Array, patch: (v: DataView, eocd: number, cd: number) => void): Uint8Array {
  const copy = zip.slice();
  const eocd = eocdOf(copy);
  patch(view(copy), eocd, view(copy).getUint32(eocd + 16, true));
  return copy;
}

/** fflate only writes per-file comments: append an archive comment by setting the end record's comment length. */
function withArchiveComment(zip: Uint8Array, comment: Uint8Array): Uint8Array {
  const out = new Uint8Array(zip.length + comment.length);
  out.set(zip);
  out.set(comment, zip.length);
  view(out).setUint16(eocdOf(zip) + 20, comment.length, true);
  return out;
}

const concat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

/** Deterministic pseudo-random bytes (mulberry32), so a failure replays. */
function randomBytes(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let state = seed >>> 0;
  for (let i = 0; i < length; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (t ^ (t >>> 14)) & 0xff;
  }
  return out;
}

/**
 * A ZIP64 archive written by hand: one stored entry whose sizes and offset are all deferred to ZIP64 extra fields,
 * a ZIP64 end record and locator, and an end record with every count and offset saturated.
 */
function zip64(name: string, content: Uint8Array, locatorTarget?: bigint): Uint8Array {
  const nameBytes = strToU8(name);
  const crc = crc32(content);
  const local = Buffer.alloc(30 + nameBytes.length + 20);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(45, 4); // version needed: 4.5, ZIP64
  local.writeUInt16LE(0, 8); // method: stored
  local.writeUInt16LE(0x21, 12); // date: 1980-01-01
  local.writeUInt32LE(crc, 14);
  local.writeUInt32LE(0xffffffff, 18);
  local.writeUInt32LE(0xffffffff, 22);
  local.writeUInt16LE(nameBytes.length, 26);
  local.writeUInt16LE(20, 28);
  local.set(nameBytes, 30);
  const localExtra = 30 + nameBytes.length;
  local.writeUInt16LE(0x0001, localExtra);
  local.writeUInt16LE(16, localExtra + 2);
  local.writeBigUInt64LE(BigInt(content.length), localExtra + 4); // uncompressed
  local.writeBigUInt64LE(BigInt(content.length), localExtra + 12); // compressed

  const central = Buffer.alloc(46 + nameBytes.length + 28);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(45, 4);
  central.writeUInt16LE(45, 6);
  central.writeUInt16LE(0x21, 14);
  central.writeUInt32LE(crc, 16);
  central.writeUInt32LE(0xffffffff, 20);
  central.writeUInt32LE(0xffffffff, 24);
  central.writeUInt16LE(nameBytes.length, 28);
  central.writeUInt16LE(28, 30);
  central.writeUInt32LE(0xffffffff, 42); // local header offset
  central.set(nameBytes, 46);
  const centralExtra = 46 + nameBytes.length;
  central.writeUInt16LE(0x0001, centralExtra);
  central.writeUInt16LE(24, centralExtra + 2);
  central.writeBigUInt64LE(BigInt(content.length), centralExtra + 4); // uncompressed
  central.writeBigUInt64LE(BigInt(content.length), centralExtra + 12); // compressed
  central.writeBigUInt64LE(0n, centralExtra + 20); // local header offset

  const cdOffset = local.length + content.length;
  const record = Buffer.alloc(56);
  record.writeUInt32LE(0x06064b50, 0);
  record.writeBigUInt64LE(44n, 4); // size of the rest of the record
  record.writeUInt16LE(45, 12);
  record.writeUInt16LE(45, 14);
  record.writeBigUInt64LE(1n, 24);
  record.writeBigUInt64LE(1n, 32);
  record.writeBigUInt64LE(BigInt(central.length), 40);
  record.writeBigUInt64LE(BigInt(cdOffset), 48);

  const locator = Buffer.alloc(20);
  locator.writeUInt32LE(0x07064b50, 0);
  locator.writeBigUInt64LE(locatorTarget ?? BigInt(cdOffset + central.length), 8);
  locator.writeUInt32LE(1, 16);

  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(0xffff, 8);
  eocd.writeUInt16LE(0xffff, 10);
  eocd.writeUInt32LE(0xffffffff, 12);
  eocd.writeUInt32LE(0xffffffff, 16);
  return concat(local, content, central, record, locator, eocd);
}

/** Counts what checkZip asks of the file. */
function countingAccess(bytes: Uint8Array) {
  const stats = { reads: 0, bytesRead: 0, largestRead: 0 };
  const inner = access(bytes);
  const file: RandomAccess = {
    read: async (buf, pos) => {
      const n = await inner.read(buf, pos);
      stats.reads++;
      stats.bytesRead += n;
      stats.largestRead = Math.max(stats.largestRead, buf.length);
      return n;
    },
  };
  return { file, stats };
}

describe('checkZip accepts', () => {
  it('a component zip with stored and deflated entries, a folder entry and a file comment', async () => {
    await expect(check(componentZip())).resolves.toBeUndefined();
  });

  it('an empty zip (the end record alone)', async () => {
    const empty = zipSync({});
    expect(empty.length).toBe(22);
    await expect(check(empty)).resolves.toBeUndefined();
  });

  it.each([
    ['a short', strToU8('built by CI')],
    ['the longest', new Uint8Array(0xffff).fill(0x2a)],
    ['an end-record look-alike in the', concat(strToU8('PK\x05\x06'), new Uint8Array(30))],
  ])('a zip with %s archive comment', async (_, comment) => {
    await expect(check(withArchiveComment(componentZip(), comment))).resolves.toBeUndefined();
  });

  it('a zip whose files read back through short reads (a reader may return fewer bytes than asked)', async () => {
    const zip = componentZip();
    const dribble: RandomAccess = { read: async (buf, pos) => Buffer.from(zip.subarray(pos, pos + Math.min(7, buf.length))).copy(buf) };
    await expect(checkZip(dribble, zip.length)).resolves.toBeUndefined();
    expect((await readZipEntry(dribble, zip.length, isPublishYaml, 1024))?.toString()).toBe(PUBLISH_YAML);
  });

  it('a hand-written ZIP64 zip, whose entry also reads back', async () => {
    const zip = zip64('big/publish.yaml', strToU8(PUBLISH_YAML));
    await expect(check(zip)).resolves.toBeUndefined();
    expect((await read(zip, isPublishYaml))?.toString()).toBe(PUBLISH_YAML);
  });

  it('a zip of 20,000 entries, reading its central directory in bounded chunks', async () => {
    const files: Zippable = {};
    for (let i = 0; i < 20_000; i++) files[`pkg/node_modules/m${i}/index.js`] = [strToU8(`// ${i}\n`), { level: 0 }];
    const zip = zipSync(files);
    const { file, stats } = countingAccess(zip);
    await expect(checkZip(file, zip.length)).resolves.toBeUndefined();
    // The tail is the one read allowed to exceed 64 KiB (by the 21 bytes of an end record).
    expect(stats.largestRead).toBeLessThanOrEqual(65_557);
    const cdSize = view(zip).getUint32(eocdOf(zip) + 12, true);
    expect(cdSize).toBeGreaterThan(1_000_000);
    // Tail + central directory + one 4-byte read per local header for the first 10,000 entries.
    expect(stats.bytesRead).toBeLessThanOrEqual(65_557 + cdSize + 4 * 10_000);
    expect((await read(zip, (name) => name === 'pkg/node_modules/m19999/index.js'))?.toString()).toBe('// 19999\n');
  });

  it('a 20 MB zip without reading it whole: only the tail, the central directory and local headers', async () => {
    const zip = zipSync(
      { 'big/blob.bin': new Uint8Array(20 * 1024 * 1024).fill(7), 'big/publish.yaml': strToU8(PUBLISH_YAML) },
      { level: 0 },
    );
    const { file, stats } = countingAccess(zip);
    await checkZip(file, zip.length);
    expect(stats.bytesRead).toBeLessThan(200 * 1024);
    expect(stats.reads).toBeLessThan(10);
  });
});

describe('checkZip rejects', () => {
  it.each([0, 1, 21])('a file of %i bytes', async (size) => {
    await expect(check(new Uint8Array(size))).rejects.toThrow(InvalidZipError);
  });

  it('every truncation of a valid zip', async () => {
    for (const zip of [componentZip(), withArchiveComment(componentZip(), strToU8('comment')), zip64('a.txt', strToU8('abc'))]) {
      for (let length = 1; length < zip.length; length++) {
        await expect(check(zip.subarray(0, length)), `truncated at ${length} of ${zip.length}`).rejects.toThrow(InvalidZipError);
      }
    }
  });

  it('an HTML error page', async () => {
    const html = strToU8('<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>\n');
    await expect(check(html)).rejects.toThrow(/no end-of-central-directory record/);
  });

  it('random bytes, with and without an end record signature somewhere in them', async () => {
    for (let seed = 1; seed <= 200; seed++) {
      const bytes = randomBytes(seed, 22 + ((seed * 97) % 4000));
      await expect(check(bytes), `seed ${seed}`).rejects.toThrow(InvalidZipError);
      view(bytes).setUint32(bytes.length - 22 - (seed % 3), 0x06054b50, true);
      await expect(check(bytes), `seed ${seed} with a signature`).rejects.toThrow(InvalidZipError);
    }
  });

  it('a central directory offset past the end of the file', async () => {
    const zip = patched(componentZip(), (v, eocd) => v.setUint32(eocd + 16, 0x7fffffff, true));
    await expect(check(zip)).rejects.toThrow(/does not end where the end record starts/);
  });

  it('a central directory that does not end where the end record starts', async () => {
    const zip = componentZip();
    const shorter = patched(zip, (v, eocd) => v.setUint32(eocd + 12, v.getUint32(eocd + 12, true) - 1, true));
    await expect(check(shorter)).rejects.toThrow(InvalidZipError);
    // Junk between the central directory and the end record.
    const eocd = eocdOf(zip);
    const gap = concat(zip.subarray(0, eocd), new Uint8Array(8), zip.subarray(eocd));
    await expect(check(gap)).rejects.toThrow(/does not end where the end record starts/);
  });

  it('a central directory with bytes left over, whose size and end still agree', async () => {
    // Junk appended to the central directory and counted in its size: every entry parses, then 8 bytes remain.
    const zip = componentZip();
    const eocd = eocdOf(zip);
    const padded = concat(zip.subarray(0, eocd), new Uint8Array(8), zip.subarray(eocd));
    const v = view(padded);
    v.setUint32(eocd + 8 + 12, v.getUint32(eocd + 8 + 12, true) + 8, true);
    await expect(check(padded)).rejects.toThrow(/8 bytes left over/);
  });

  it.each([
    ['one more', 1],
    ['one fewer', -1],
  ])('an entry count of %s than there are', async (_, delta) => {
    const zip = patched(componentZip(), (v, eocd) => {
      v.setUint16(eocd + 8, v.getUint16(eocd + 8, true) + delta, true);
      v.setUint16(eocd + 10, v.getUint16(eocd + 10, true) + delta, true);
    });
    await expect(check(zip)).rejects.toThrow(InvalidZipError);
  });

  it('an absurd entry count', async () => {
    const zip = patched(componentZip(), (v, eocd) => {
      v.setUint16(eocd + 8, 0xfffe, true);
      v.setUint16(eocd + 10, 0xfffe, true);
    });
    await expect(check(zip)).rejects.toThrow(/cannot fit/);
  });

  it('entry counts that disagree (a multi-disk zip)', async () => {
    const zip = patched(componentZip(), (v, eocd) => v.setUint16(eocd + 8, 1, true));
    await expect(check(zip)).rejects.toThrow(/spans several disks/);
  });

  it.each([
    ['junk after the archive comment', withArchiveComment(componentZip(), strToU8('ok')), strToU8('junk')],
    ['junk after the end record', componentZip(), strToU8('\n')],
    ['a second copy of the zip after it', componentZip(), componentZip()],
  ])('%s', async (_, zip, junk) => {
    await expect(check(concat(zip, junk))).rejects.toThrow(InvalidZipError);
  });

  it('a central directory entry without its signature', async () => {
    const zip = patched(componentZip(), (v, _, cd) => v.setUint32(cd, 0x04034b50, true));
    await expect(check(zip)).rejects.toThrow(/entry 0 at byte \d+ has no central directory header signature/);
  });

  it('a central directory entry whose name runs past the directory', async () => {
    const zip = patched(componentZip(), (v, _, cd) => v.setUint16(cd + 28, 0xffff, true));
    await expect(check(zip)).rejects.toThrow(/runs past the end of the central directory/);
  });

  it('a local header offset inside the central directory', async () => {
    const zip = patched(componentZip(), (v, _, cd) => v.setUint32(cd + 42, cd, true));
    await expect(check(zip)).rejects.toThrow(/is not before the central directory/);
  });

  it('a local header offset that points at no local header', async () => {
    const zip = patched(componentZip(), (v, _, cd) => v.setUint32(cd + 42, 1, true));
    await expect(check(zip)).rejects.toThrow(/has no local header signature/);
  });

  it('a ZIP64 end record deferred to but missing, or outside the file', async () => {
    const zip = componentZip();
    const deferring = patched(zip, (v, eocd) => v.setUint32(eocd + 16, 0xffffffff, true));
    await expect(check(deferring)).rejects.toThrow(/no ZIP64 locator/);
    const good = zip64('a.txt', strToU8('abc'));
    await expect(check(zip64('a.txt', strToU8('abc'), BigInt(good.length)))).rejects.toThrow(/would not lie inside the file/);
    await expect(check(zip64('a.txt', strToU8('abc'), 2n ** 62n))).rejects.toThrow(/beyond any file/);
    await expect(check(zip64('a.txt', strToU8('abc'), 0n))).rejects.toThrow(/no ZIP64 end record/);
  });

  it('a file shorter than the size it is checked as', async () => {
    const zip = componentZip();
    await expect(checkZip(access(zip.subarray(0, zip.length - 30)), zip.length)).rejects.toThrow(/the file ends at byte/);
  });
});

describe('readZipEntry', () => {
  it('reads a publish.yaml under the top-level folder, stored or deflated', async () => {
    expect((await read(componentZip(), isPublishYaml))?.toString()).toBe(PUBLISH_YAML);
    const deflated = zipSync({ 'fc3-0.1.0/publish.yaml': strToU8(PUBLISH_YAML.repeat(50)) }, { level: 9 });
    expect(view(deflated).getUint16(8, true)).toBe(8); // really deflated
    expect((await read(deflated, isPublishYaml))?.toString()).toBe(PUBLISH_YAML.repeat(50));
  });

  it('picks the shallowest match, the first among equals', async () => {
    const zip = zipSync({
      'a/b/publish.yaml': strToU8('deep'),
      'x/publish.yaml': strToU8('first shallow'),
      'y/publish.yaml': strToU8('second shallow'),
    });
    expect((await read(zip, isPublishYaml))?.toString()).toBe('first shallow');
    const withRoot = zipSync({ 'x/publish.yaml': strToU8('nested'), 'publish.yaml': strToU8('root') });
    expect((await read(withRoot, isPublishYaml))?.toString()).toBe('root');
  });

  it('gives undefined when no entry is wanted, and every name to the filter', async () => {
    const names: string[] = [];
    expect(await read(componentZip(), (name) => (names.push(name), false))).toBeUndefined();
    expect(names).toEqual(['fc3-0.1.0/', 'fc3-0.1.0/publish.yaml', 'fc3-0.1.0/dist/index.js', 'fc3-0.1.0/README.md']);
    expect(await read(zipSync({}), () => true)).toBeUndefined();
  });

  it('reads an empty entry', async () => {
    expect((await read(zipSync({ 'empty.txt': new Uint8Array(0) }), () => true))?.length).toBe(0);
  });

  it('refuses an entry larger than maxBytes, stored or deflated', async () => {
    const big = new Uint8Array(10_000).fill(1);
    for (const level of [0, 6] as const) {
      const zip = zipSync({ 'big.bin': [big, { level }] });
      await expect(read(zip, () => true, 9_999)).rejects.toThrow(/is 10000 bytes, more than 9999/);
      expect((await read(zip, () => true, 10_000))?.length).toBe(10_000);
    }
  });

  it('refuses a deflated entry that lies about its size and inflates past maxBytes', async () => {
    const zip = patched(zipSync({ 'bomb.bin': new Uint8Array(1 << 18) }, { level: 9 }), (v, _, cd) => v.setUint32(cd + 24, 100, true));
    await expect(read(zip, () => true, 1000)).rejects.toThrow(/inflates to more than 1000 bytes/);
  });

  it('refuses other compression methods, encryption, corrupt data and a bad CRC', async () => {
    const zip = zipSync({ 'a.txt': strToU8('hello hello hello hello') }, { level: 6 });
    const localData = 30 + 'a.txt'.length;
    const cases: [RegExp, (v: DataView, cd: number) => void][] = [
      [/compression method 12/, (v, cd) => v.setUint16(cd + 10, 12, true)],
      [/is encrypted/, (v, cd) => v.setUint16(cd + 8, 1, true)],
      [/fails its CRC-32 check/, (v, cd) => v.setUint32(cd + 16, v.getUint32(cd + 16, true) ^ 1, true)],
      [/does not inflate/, (v) => v.setUint8(localData, 0xff)],
      [/no local header signature/, (v) => v.setUint32(0, 0, true)],
    ];
    for (const [message, patch] of cases) {
      await expect(read(patched(zip, (v, _, cd) => patch(v, cd)), () => true)).rejects.toThrow(message);
    }
  });

  it('refuses to read from an invalid zip', async () => {
    const zip = componentZip();
    await expect(read(zip.subarray(0, zip.length - 1), isPublishYaml)).rejects.toThrow(InvalidZipError);
  });
});
