// Zip structure checks and single-entry reads, by hand on node:zlib so that no dependency parses untrusted archives.
// checkZip is what stops a truncated download, an HTML error page or a zip whose central directory points outside
// the file from being cached as an archive. It trusts only what the end-of-central-directory record and the
// central directory say, checks that every offset lies inside the file, and bounds its work: the tail, the central
// directory read front to back in 64 KiB chunks, and one 4-byte read per local header for the first entries.
// Layout reference: PKWARE APPNOTE.TXT (sections 4.3.6 to 4.3.16, 4.5.3).
import { crc32, inflateRawSync } from 'node:zlib';

/** Random access to a file's bytes: reads into buf from pos, resolves with how many (0 at the end). */
export interface RandomAccess {
  read(buf: Buffer, pos: number): Promise<number>;
}

export class InvalidZipError extends Error {
  override readonly name = 'InvalidZipError';
}

const EOCD_SIGNATURE = 0x06054b50;
const EOCD_SIZE = 22;
const COMMENT_MAX = 0xffff;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const ZIP64_EOCD_SIZE = 56;
const CENTRAL_SIGNATURE = 0x02014b50;
const CENTRAL_SIZE = 46;
const LOCAL_SIGNATURE = 0x04034b50;
const LOCAL_SIZE = 30;
const ZIP64_EXTRA_ID = 0x0001;
const U16_SATURATED = 0xffff;
const U32_SATURATED = 0xffffffff;
const CHUNK_SIZE = 64 * 1024;
/** Far beyond any component (they run to thousands of files); past it a count is a forgery, not an archive. */
const MAX_ENTRIES = 1_000_000;
/** Local headers checked per archive: one small read each, capped so a pathological zip stays cheap. */
const LOCAL_HEADER_CHECKS = 10_000;
const FLAG_ENCRYPTED = 0x0001;
const FLAG_STRONG_ENCRYPTION = 0x0040;
const METHOD_STORED = 0;
const METHOD_DEFLATE = 8;

/** Resolves when `file` (of `size` bytes) is a structurally valid zip; throws InvalidZipError otherwise. */
export async function checkZip(file: RandomAccess, size: number): Promise<void> {
  const layout = await readLayout(file, size);
  const localOffsets: number[] = [];
  for await (const entry of centralEntries(file, layout)) {
    if (localOffsets.length < LOCAL_HEADER_CHECKS) localOffsets.push(entry.localOffset);
  }
  const signature = Buffer.alloc(4);
  for (const [index, offset] of localOffsets.entries()) {
    await readFully(file, signature, offset);
    if (signature.readUInt32LE(0) !== LOCAL_SIGNATURE) {
      throw new InvalidZipError(`entry ${index}'s local header at byte ${offset} has no local header signature`);
    }
  }
}

/**
 * What can be checked of a zip that streams through without being kept whole: its end records and, when it lies
 * within `tail` (the stream's last bytes), its central directory; the whole check when `tail` is the whole file.
 * Throws InvalidZipError. Keep at least the last 65,557 bytes: the end record may sit anywhere in them.
 */
export async function checkZipTail(tail: Buffer, size: number): Promise<void> {
  const start = size - tail.length;
  const file: RandomAccess = {
    read: async (buf, pos) => {
      if (pos < start) throw new InvalidZipError(`the zip's end records point before the last ${tail.length} bytes kept of it`);
      return tail.copy(buf, 0, pos - start, Math.min(tail.length, pos - start + buf.length));
    },
  };
  if (start === 0) return checkZip(file, size);
  const layout = await readLayout(file, size);
  if (layout.cdOffset >= start) for await (const _ of centralEntries(file, layout));
}

/**
 * The uncompressed bytes of the first entry whose name `wanted` accepts (shallowest path first), or undefined.
 * The whole central directory is checked as checkZip does; the local header only of the entry read. Stored and
 * deflated entries are read; any other method, encryption, a bad CRC or more than maxBytes is an InvalidZipError.
 */
export async function readZipEntry(
  file: RandomAccess,
  size: number,
  wanted: (name: string) => boolean,
  maxBytes: number,
): Promise<Buffer | undefined> {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
    throw new RangeError(`maxBytes must be a whole number ≥ 0, not ${maxBytes}`);
  }
  const layout = await readLayout(file, size);
  let found: { entry: CentralEntry; depth: number } | undefined;
  for await (const entry of centralEntries(file, layout)) {
    if (!wanted(entry.name)) continue;
    const depth = entry.name.split('/').length;
    // Strictly shallower only: among equally deep names the first in the directory wins.
    if (found === undefined || depth < found.depth) found = { entry, depth };
  }
  return found && (await readEntryData(file, layout, found.entry, maxBytes));
}

/** Where the central directory is, from the (ZIP64) end-of-central-directory record. */
interface Layout {
  readonly cdOffset: number;
  readonly cdSize: number;
  readonly entryCount: number;
}

interface CentralEntry {
  readonly index: number;
  readonly name: string;
  readonly flags: number;
  readonly method: number;
  readonly crc32: number;
  /** Undefined when the header says 0xFFFFFFFF and no ZIP64 extra field gives the real value. */
  readonly compressedSize: number | undefined;
  readonly uncompressedSize: number | undefined;
  readonly localOffset: number;
}

async function readLayout(file: RandomAccess, size: number): Promise<Layout> {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`size must be a whole number ≥ 0, not ${size}`);
  if (size < EOCD_SIZE) throw new InvalidZipError(`${size} bytes is too short for a zip (at least ${EOCD_SIZE})`);

  // The record is 22 bytes plus a comment of at most 65,535: it starts somewhere in the last 65,557 bytes.
  const tailStart = Math.max(0, size - EOCD_SIZE - COMMENT_MAX);
  const tail = await readAt(file, tailStart, size - tailStart);
  let eocd = -1;
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    // The comment must run exactly to the end: a record followed by junk is not the end of a zip.
    if (tail.readUInt32LE(i) === EOCD_SIGNATURE && i + EOCD_SIZE + tail.readUInt16LE(i + 20) === tail.length) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    throw new InvalidZipError(`no end-of-central-directory record ending the file in its last ${tail.length} bytes`);
  }
  const eocdOffset = tailStart + eocd;
  const disk = tail.readUInt16LE(eocd + 4);
  const cdDisk = tail.readUInt16LE(eocd + 6);
  const diskEntries = tail.readUInt16LE(eocd + 8);
  const totalEntries = tail.readUInt16LE(eocd + 10);
  const cdSize = tail.readUInt32LE(eocd + 12);
  const cdOffset = tail.readUInt32LE(eocd + 16);
  const saturated =
    [disk, cdDisk, diskEntries, totalEntries].includes(U16_SATURATED) ||
    cdSize === U32_SATURATED ||
    cdOffset === U32_SATURATED;

  const zip64 = await readZip64Layout(file, tail, tailStart, eocdOffset, saturated);
  if (zip64 === undefined && saturated) {
    throw new InvalidZipError('the end-of-central-directory record defers to ZIP64 but no ZIP64 locator precedes it');
  }
  const layout = zip64 ?? { disk, cdDisk, diskEntries, entryCount: totalEntries, cdSize, cdOffset, cdEnd: eocdOffset };
  if (layout.disk !== 0 || layout.cdDisk !== 0 || layout.diskEntries !== layout.entryCount) {
    throw new InvalidZipError('the zip spans several disks');
  }
  if (layout.cdOffset + layout.cdSize !== layout.cdEnd) {
    const cd = `the central directory (${layout.cdSize} bytes at ${layout.cdOffset})`;
    throw new InvalidZipError(`${cd} does not end where the end record starts (${layout.cdEnd})`);
  }
  if (layout.entryCount > MAX_ENTRIES) {
    throw new InvalidZipError(`${layout.entryCount} entries is more than ${MAX_ENTRIES}`);
  }
  if (layout.entryCount * CENTRAL_SIZE > layout.cdSize) {
    throw new InvalidZipError(`${layout.entryCount} entries cannot fit in ${layout.cdSize} bytes of central directory`);
  }
  return { cdOffset: layout.cdOffset, cdSize: layout.cdSize, entryCount: layout.entryCount };
}

/** The end record's values, with where the central directory must end (where the end record starts). */
interface Zip64Layout extends Layout {
  readonly disk: number;
  readonly cdDisk: number;
  readonly diskEntries: number;
  readonly cdEnd: number;
}

/**
 * The ZIP64 end record's values, when a locator sits right before the end record. A locator look-alike that
 * points at no ZIP64 record is ignored unless the end record defers to ZIP64 (it could be the tail of the last
 * entry's comment); once `required`, anything wrong with the ZIP64 records is an InvalidZipError.
 */
async function readZip64Layout(
  file: RandomAccess,
  tail: Buffer,
  tailStart: number,
  eocdOffset: number,
  required: boolean,
): Promise<Zip64Layout | undefined> {
  const locatorOffset = eocdOffset - ZIP64_LOCATOR_SIZE;
  if (locatorOffset < 0) return undefined;
  const locator =
    locatorOffset >= tailStart
      ? tail.subarray(locatorOffset - tailStart, eocdOffset - tailStart)
      : await readAt(file, locatorOffset, ZIP64_LOCATOR_SIZE);
  if (locator.readUInt32LE(0) !== ZIP64_LOCATOR_SIGNATURE) return undefined;
  const recordOffset = uint64(locator, 8, 'ZIP64 end record offset');
  // The record must lie inside the file, before its locator.
  if (recordOffset + ZIP64_EOCD_SIZE > locatorOffset) {
    if (!required) return undefined;
    const where = `byte ${recordOffset}, the ZIP64 end record the locator points at`;
    throw new InvalidZipError(`${where} would not lie inside the file before the locator (byte ${locatorOffset})`);
  }
  const record = await readAt(file, recordOffset, ZIP64_EOCD_SIZE);
  if (record.readUInt32LE(0) !== ZIP64_EOCD_SIGNATURE) {
    if (!required) return undefined;
    throw new InvalidZipError(`the ZIP64 locator points at byte ${recordOffset}, where there is no ZIP64 end record`);
  }
  return {
    disk: record.readUInt32LE(16),
    cdDisk: record.readUInt32LE(20),
    diskEntries: uint64(record, 24, 'ZIP64 entry count'),
    entryCount: uint64(record, 32, 'ZIP64 entry count'),
    cdSize: uint64(record, 40, 'ZIP64 central directory size'),
    cdOffset: uint64(record, 48, 'ZIP64 central directory offset'),
    cdEnd: recordOffset,
  };
}

/** Walks the central directory front to back, checking each entry lies inside it and points before it. */
async function* centralEntries(file: RandomAccess, layout: Layout): AsyncGenerator<CentralEntry> {
  const cd = new SequentialReader(file, layout.cdOffset, layout.cdOffset + layout.cdSize);
  for (let index = 0; index < layout.entryCount; index++) {
    const at = cd.position;
    if (cd.remaining < CENTRAL_SIZE) {
      throw new InvalidZipError(`the central directory ends after ${index} of its ${layout.entryCount} entries`);
    }
    const header = await cd.take(CENTRAL_SIZE);
    if (header.readUInt32LE(0) !== CENTRAL_SIGNATURE) {
      throw new InvalidZipError(`entry ${index} at byte ${at} has no central directory header signature`);
    }
    const nameLength = header.readUInt16LE(28);
    const extraLength = header.readUInt16LE(30);
    const commentLength = header.readUInt16LE(32);
    if (cd.remaining < nameLength + extraLength + commentLength) {
      throw new InvalidZipError(`entry ${index} at byte ${at} runs past the end of the central directory`);
    }
    const rest = await cd.take(nameLength + extraLength + commentLength);
    const flags = header.readUInt16LE(8);
    const zip64 = zip64Extra(rest.subarray(nameLength, nameLength + extraLength), header);
    const localOffset = zip64.localOffset;
    if (localOffset === undefined) {
      throw new InvalidZipError(`entry ${index} defers its local header offset to a ZIP64 field it does not have`);
    }
    if (localOffset + LOCAL_SIZE > layout.cdOffset) {
      throw new InvalidZipError(`entry ${index}'s local header (byte ${localOffset}) is not before the central directory`);
    }
    yield {
      index,
      // Names not flagged UTF-8 (bit 11) are CP437 by the book, but today's writers put UTF-8 there regardless,
      // and ASCII, all a caller looks for, reads the same either way.
      name: rest.toString('utf8', 0, nameLength),
      flags,
      method: header.readUInt16LE(10),
      crc32: header.readUInt32LE(16),
      compressedSize: zip64.compressedSize,
      uncompressedSize: zip64.uncompressedSize,
      localOffset,
    };
  }
  if (cd.remaining > 0) {
    throw new InvalidZipError(
      `the central directory has ${cd.remaining} bytes left over after its ${layout.entryCount} entries`,
    );
  }
}

type EntryLocationField = 'uncompressedSize' | 'compressedSize' | 'localOffset';

/**
 * An entry's sizes and local header offset: the header's 32-bit values, or where one is 0xFFFFFFFF, the ZIP64 extra
 * field's 64-bit value (undefined when it is missing). That field holds only the saturated values, in this order.
 */
function zip64Extra(extra: Buffer, header: Buffer): Record<EntryLocationField, number | undefined> {
  const values: (number | undefined)[] = [header.readUInt32LE(24), header.readUInt32LE(20), header.readUInt32LE(42)];
  const saturated = values.flatMap((value, i) => (value === U32_SATURATED ? [i] : []));
  if (saturated.length > 0) {
    for (const i of saturated) values[i] = undefined;
    const data = extraField(extra, ZIP64_EXTRA_ID);
    saturated.forEach((i, slot) => {
      if (data !== undefined && data.length >= 8 * (slot + 1)) {
        values[i] = uint64(data, 8 * slot, 'ZIP64 size or offset');
      }
    });
  }
  const [uncompressedSize, compressedSize, localOffset] = values;
  return { uncompressedSize, compressedSize, localOffset };
}

/** The data of the extra field with this id. Fields are (id, length, data) blocks; a malformed tail ends the search. */
function extraField(extra: Buffer, id: number): Buffer | undefined {
  for (let at = 0; at + 4 <= extra.length; at += 4 + extra.readUInt16LE(at + 2)) {
    if (extra.readUInt16LE(at) === id) return extra.subarray(at + 4, at + 4 + extra.readUInt16LE(at + 2));
  }
  return undefined;
}

async function readEntryData(
  file: RandomAccess,
  layout: Layout,
  entry: CentralEntry,
  maxBytes: number,
): Promise<Buffer> {
  const what = `entry ${JSON.stringify(entry.name)}`;
  if (entry.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) throw new InvalidZipError(`${what} is encrypted`);
  if (entry.method !== METHOD_STORED && entry.method !== METHOD_DEFLATE) {
    throw new InvalidZipError(
      `${what} uses compression method ${entry.method}; only stored (0) and deflate (8) are read`,
    );
  }
  const { compressedSize, uncompressedSize } = entry;
  if (compressedSize === undefined || uncompressedSize === undefined) {
    throw new InvalidZipError(`${what} defers its sizes to a ZIP64 field it does not have`);
  }
  if (uncompressedSize > maxBytes) {
    throw new InvalidZipError(`${what} is ${uncompressedSize} bytes, more than ${maxBytes}`);
  }
  if (entry.method === METHOD_STORED && compressedSize !== uncompressedSize) {
    throw new InvalidZipError(`${what} is stored but its sizes differ (${compressedSize} and ${uncompressedSize})`);
  }
  // The stated size may lie, so bound the read too: deflate never needs much more than n bytes to hold n bytes
  // (zlib's worst case is n + n/4096 + 13).
  const deflateMax = maxBytes + Math.ceil(maxBytes / 1024) + 64;
  if (compressedSize > deflateMax) {
    throw new InvalidZipError(
      `${what} has ${compressedSize} compressed bytes, more than deflate needs for ${maxBytes} bytes`,
    );
  }

  const local = await readAt(file, entry.localOffset, LOCAL_SIZE);
  if (local.readUInt32LE(0) !== LOCAL_SIGNATURE) {
    throw new InvalidZipError(`${what}'s local header at byte ${entry.localOffset} has no local header signature`);
  }
  // The local name and extra field may differ in length from the central ones; the data follows them.
  const dataOffset = entry.localOffset + LOCAL_SIZE + local.readUInt16LE(26) + local.readUInt16LE(28);
  if (dataOffset + compressedSize > layout.cdOffset) {
    throw new InvalidZipError(
      `${what}'s data (${compressedSize} bytes at ${dataOffset}) runs into the central directory`,
    );
  }
  const compressed = await readAt(file, dataOffset, compressedSize);
  let data: Buffer;
  if (entry.method === METHOD_STORED) {
    data = compressed;
  } else {
    try {
      data = inflateRawSync(compressed, { maxOutputLength: Math.max(1, maxBytes) });
    } catch (error) {
      // maxOutputLength stops inflating early with ERR_BUFFER_TOO_LARGE; anything else is corrupt data.
      if ((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        throw new InvalidZipError(`${what} inflates to more than ${maxBytes} bytes`);
      }
      throw new InvalidZipError(`${what} does not inflate: ${(error as Error).message}`);
    }
  }
  if (data.length !== uncompressedSize) {
    throw new InvalidZipError(`${what} holds ${data.length} bytes, not the ${uncompressedSize} stated`);
  }
  if (crc32(data) !== entry.crc32) throw new InvalidZipError(`${what} fails its CRC-32 check`);
  return data;
}

/** Reads a byte range front to back through a bounded buffer: a large central directory never sits in memory whole. */
class SequentialReader {
  private buffer = Buffer.alloc(0);
  private used = 0;
  /** File position of the first byte in `buffer`. */
  private bufferStart: number;

  constructor(
    private readonly file: RandomAccess,
    start: number,
    private readonly end: number,
  ) {
    this.bufferStart = start;
  }

  get position(): number {
    return this.bufferStart + this.used;
  }

  get remaining(): number {
    return this.end - this.position;
  }

  /** The next n bytes (n ≤ remaining). Refills by 64 KiB, or by n when one entry is bigger. */
  async take(n: number): Promise<Buffer> {
    if (n > this.remaining) throw new RangeError(`${n} bytes asked for, ${this.remaining} left`);
    if (this.used + n > this.buffer.length) {
      const left = this.buffer.subarray(this.used);
      const next = Buffer.alloc(Math.min(Math.max(CHUNK_SIZE, n), this.remaining));
      left.copy(next);
      await readFully(this.file, next.subarray(left.length), this.position + left.length);
      this.bufferStart = this.position;
      this.buffer = next;
      this.used = 0;
    }
    const taken = this.buffer.subarray(this.used, this.used + n);
    this.used += n;
    return taken;
  }
}

async function readAt(file: RandomAccess, pos: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  await readFully(file, buf, pos);
  return buf;
}

/** Fills buf from pos; the file ending first means it is shorter than the size it was checked as. */
async function readFully(file: RandomAccess, buf: Buffer, pos: number): Promise<void> {
  for (let filled = 0; filled < buf.length; ) {
    const n = await file.read(buf.subarray(filled), pos + filled);
    if (n === 0) throw new InvalidZipError(`the file ends at byte ${pos + filled}, before the size it was given`);
    filled += n;
  }
}

function uint64(buf: Buffer, offset: number, what: string): number {
  const value = buf.readBigUInt64LE(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new InvalidZipError(`the ${what} (${value}) is beyond any file`);
  return Number(value);
}
