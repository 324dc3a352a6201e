// Files of a bundle that a crash must never leave half-written under their real names: each is written as
// NAME.partial, fsynced, renamed, and its folder fsynced, so a name that exists holds complete bytes.
import { open, rename, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

export const PARTIAL = '.partial';

/** Writes a whole file durably under `path` (through path.partial). */
export async function writeDurably(path: string, data: string | Uint8Array): Promise<void> {
  const file = await open(path + PARTIAL, 'w');
  try {
    await file.writeFile(data);
    await file.sync();
  } finally {
    await file.close();
  }
  await commitPartial(path);
}

/** Moves a complete (fsynced) path.partial to path, and puts the rename on disk. */
export async function commitPartial(path: string): Promise<void> {
  await rename(path + PARTIAL, path);
  await syncFolder(dirname(path));
}

/** Puts a folder's entries (a rename or a delete in it) on disk. */
export async function syncFolder(path: string): Promise<void> {
  const dir = await open(path, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Writes all of `chunk` at the file's position (a write may write less than asked). */
export async function writeAll(file: FileHandle, chunk: Uint8Array): Promise<void> {
  for (let off = 0; off < chunk.length; ) off += (await file.write(chunk, off, chunk.length - off)).bytesWritten;
}
