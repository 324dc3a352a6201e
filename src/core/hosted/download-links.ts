// Download links for hosted archives that need no credentials: the `s` client sends none with a download (it masks
// its signed headers), so when hosted reads need a user (hosted.anonymousRead false), the zipball_url handed to a user
// carries an expiring signature instead, as a pre-signed object-storage URL does. The key lives in memory: a restart
// voids the links out, and a client then asks for the release (and a new link) again.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** How long a link stays good: long enough for a slow CI job between resolving and downloading. */
const LINK_TTL_MS = 60 * 60_000;

export class DownloadLinks {
  private readonly key = randomBytes(32);

  constructor(private readonly now: () => number = Date.now) {}

  /** The query (without "?") that lets anyone download `name@version` for the next hour. */
  query(name: string, version: string): string {
    const expires = Math.floor((this.now() + LINK_TTL_MS) / 1000);
    return `expires=${expires}&signature=${this.signature(name, version, expires)}`;
  }

  /** Whether a request's expires and signature parameters are a link to `name@version` that is still good. */
  valid(name: string, version: string, expires: unknown, signature: unknown): boolean {
    if (typeof expires !== 'string' || typeof signature !== 'string' || !/^\d{1,12}$/.test(expires) || !/^[0-9a-f]{64}$/.test(signature)) return false;
    if (Number(expires) * 1000 < this.now()) return false;
    return timingSafeEqual(Buffer.from(signature, 'hex'), Buffer.from(this.signature(name, version, Number(expires)), 'hex'));
  }

  private signature(name: string, version: string, expires: number): string {
    return createHmac('sha256', this.key).update(`${name}@${version}:${expires}`).digest('hex');
  }
}
