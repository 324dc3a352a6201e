// Whether stored bytes still match their digest. Hashing a file before every serve would cost a read of it each
// time, so a verified file is remembered by the store's version of it (inode, times, size) and trusted while that
// version stands. Like git's "racy clean" rule, a version whose change time lies within RACY_MS of the moment it
// was recorded is not trusted: a rewrite within the same timestamp tick would leave it unchanged.
import { createHash } from 'node:crypto';
import type { ArchiveReader, ArchiveStat, StoredReader } from '../../stores/archive-store.js';
import { SingleFlight } from '../single-flight.js';

/** Timestamps coarser than this (1 s on some filesystems) cannot hide a change from us. */
const RACY_MS = 2000;
/**
 * On a folder shared by replicas on several hosts (issue 14), a file's times are the file server's clock and `at` is
 * this host's: their skew (NTP keeps it within seconds; 30 s allowed) and the client's attribute cache (acregmax, 30 s
 * by default) add to the window. Every replica hashes what it writes before its atomic rename, and a digest's file is
 * only ever replaced by bytes of that digest; what a version may miss across hosts is a change outside the mirror
 * (a rewrite in place, a torn file), and a file is trusted only once its change lies further back than this.
 */
export const SHARED_RACY_MS = 60_000;
const CHUNK = 256 * 1024;

/** Waits as long as reading `bytes` more may take at the allowed rate (the scrub's throttle). */
export type Throttle = (bytes: number) => Promise<void>;

export class ArchiveVerifier {
  /** Versions of archives whose bytes were hashed (or written by us) and matched, and when that was recorded. */
  private readonly verified = new Map<string, { version: string; at: number }>();
  private readonly hashing = new SingleFlight<boolean>();

  constructor(
    private readonly now: () => number = Date.now,
    /** How long after its change a file's version is not trusted (RACY_MS; SHARED_RACY_MS on a shared folder). */
    private readonly racyMs = RACY_MS,
  ) {}

  /** Records bytes known to match their digest (just hashed, or just committed) by the stat taken right after. */
  record(digest: string, stat: ArchiveStat): void {
    this.verified.set(digest, { version: stat.version, at: this.now() });
  }

  forget(digest: string): void {
    this.verified.delete(digest);
  }

  /** True when a recorded version vouches for these bytes without reading them. */
  trusts(digest: string, stat: ArchiveStat): boolean {
    const seen = this.verified.get(digest);
    return seen !== undefined && seen.version === stat.version && seen.at - stat.changedMs >= this.racyMs;
  }

  /** True when the opened bytes match their digest: trusted by version, or hashed (once for concurrent callers). */
  async check(digest: string, reader: StoredReader, throttle?: Throttle): Promise<boolean> {
    if (this.trusts(digest, reader.stat)) return true;
    return this.hashing.run(`${digest}:${reader.stat.version}`, async () => {
      const ok = (await sha256Of(reader, throttle)) === digest;
      if (ok) this.record(digest, reader.stat);
      else this.forget(digest);
      return ok;
    });
  }
}

/** The sha256 of everything a reader reads, from the start. */
export async function sha256Of(reader: ArchiveReader, throttle?: Throttle): Promise<string> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(CHUNK);
  for (let pos = 0, n = await reader.read(buf, 0); n > 0; n = await reader.read(buf, pos)) {
    hash.update(buf.subarray(0, n));
    pos += n;
    await throttle?.(n);
  }
  return hash.digest('hex');
}

/**
 * A reader of an archive that is hashed while it is read from start to end, and that never hands out the last
 * bytes unless the whole matches the digest (cache.verifyOnServe): a corrupt file's download fails instead of
 * completing. Reads out of order (ranges) are passed through unhashed.
 */
export function verifyingReader(reader: ArchiveReader, digest: string, size: number, onCorrupt: () => void): ArchiveReader {
  let hash: ReturnType<typeof createHash> | undefined = createHash('sha256');
  let next = 0;
  return {
    async read(buf, pos) {
      const n = await reader.read(buf, pos);
      if (!hash) return n;
      if (pos !== next) {
        hash = undefined; // not a whole read from the start: nothing to vouch for
        return n;
      }
      hash.update(buf.subarray(0, n));
      next += n;
      if (next >= size) {
        const whole = hash.digest('hex');
        hash = undefined;
        if (whole !== digest) {
          onCorrupt();
          throw new Error(`archive ${digest} is corrupt on disk`);
        }
      }
      return n;
    },
    close: () => reader.close(),
  };
}
