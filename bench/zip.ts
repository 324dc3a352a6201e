// The benches' archives are zips of one stored entry (the mirror stores only structurally valid zips): the header
// before the data and the central directory after it, for data of a given size and CRC-32.

/** The local file header + name, then the central directory + end record for `dataSize` bytes of stored data. */
export function storedZip(entryName: string, dataSize: number, crc: number): { head: Buffer; tail: Buffer } {
  const name = Buffer.from(entryName);
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(20, 4); // version needed
  local.writeUInt32LE(crc, 14);
  local.writeUInt32LE(dataSize, 18); // compressed size (stored)
  local.writeUInt32LE(dataSize, 22);
  local.writeUInt16LE(name.length, 26);
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(20, 4);
  central.writeUInt16LE(20, 6);
  central.writeUInt32LE(crc, 16);
  central.writeUInt32LE(dataSize, 20);
  central.writeUInt32LE(dataSize, 24);
  central.writeUInt16LE(name.length, 28);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(1, 8);
  end.writeUInt16LE(1, 10);
  end.writeUInt32LE(46 + name.length, 12);
  end.writeUInt32LE(30 + name.length + dataSize, 16); // where the central directory starts
  return { head: Buffer.concat([local, name]), tail: Buffer.concat([central, name, end]) };
}

/** How many data bytes make a zip of `size` bytes in all. */
export function dataSizeFor(entryName: string, size: number): number {
  const n = Buffer.byteLength(entryName);
  return size - (30 + n) - (46 + n) - 22;
}
