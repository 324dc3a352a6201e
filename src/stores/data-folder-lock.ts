// Who owns a data folder. With LevelDB under the metadata, its LOCK file does it. On PostgreSQL nothing does, yet the
// archive store is not safe to share (until the shared archive store of issue 14, part 2): so a mirror on PostgreSQL
// holds an exclusive lock in data/lock. It is LevelDB's LOCK (an fcntl lock on data/lock/LOCK, an otherwise empty
// database): the operating system releases it when the process dies, however it dies, so no stale lock is left.
import { join } from 'node:path';
import { Level } from 'level';
import { DataFolderLockedError } from './metadata-store.js';

/** Takes the data folder's lock; resolves with its release. Throws DataFolderLockedError while another process holds it. */
export async function lockDataFolder(dataDir: string): Promise<() => Promise<void>> {
  const db = new Level(join(dataDir, 'lock'));
  try {
    await db.open();
  } catch (err) {
    if ((err as { cause?: { code?: string } }).cause?.code === 'LEVEL_LOCKED') throw new DataFolderLockedError(dataDir, 'the data folder');
    throw err;
  }
  return () => db.close();
}
