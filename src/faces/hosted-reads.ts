// Who may read hosted components, for the v3 and SRM faces: anyone, or (hosted.anonymousRead false) a user of this
// mirror, or a download link handed to one. Such a user's answers carry signed zipball URLs, since the `s` client
// sends no credentials with a download.
import type { IncomingMessage } from 'node:http';
import type { Access } from '../core/hosted/access.js';
import type { DownloadLinks } from '../core/hosted/download-links.js';
import type { HostedComponents } from '../core/hosted/hosted-components.js';
import type { Users } from '../core/hosted/users.js';

export class HostedReads {
  constructor(
    readonly components: HostedComponents,
    private readonly users: Pick<Users, 'authenticate'>,
    private readonly access: Access,
    private readonly links: DownloadLinks,
  ) {}

  /** Throws 401 unless the request may read package `name` (for a zipball: `version`, which a link may grant). */
  async check(req: IncomingMessage, name: string, zipball?: { version: string; query: Record<string, unknown> }): Promise<void> {
    if (this.open(name)) return;
    if (zipball && this.links.valid(name, zipball.version, zipball.query.expires, zipball.query.signature)) return;
    this.access.read(await this.users.authenticate(req.headers));
  }

  /** Whether anyone may read package `name` (check passes whatever the request). */
  open(name: string): boolean {
    return !this.access.readNeedsUser || !this.components.isHosted(name);
  }

  /** The query a zipball URL of `name@version` needs for a client that sends no credentials with downloads ('' if none). */
  linkQuery(name: string, version: string): string {
    return this.open(name) ? '' : this.links.query(name, version);
  }
}
