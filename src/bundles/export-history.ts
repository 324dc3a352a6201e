// The exports a mirror made, as their manifests ({dataDir}/exports/{id}.json, the exact bytes): what an incremental
// export (`--since last|ID`) is relative to. A bundle carries only the blobs its base's state did not have.
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MirrorError } from '../model/errors.js';
import { writeDurably } from './durable-files.js';
import { BundleError, parseManifest, type Manifest } from './manifest.js';

/** What a bundle id looks like (and so what may become a file name here). */
export const BUNDLE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class ExportHistory {
  constructor(private readonly dir: string) {}

  /** Remembers an export by its manifest's exact bytes. */
  async remember(manifest: Manifest, bytes: Uint8Array): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeDurably(this.path(manifest.id), bytes);
  }

  /** The manifest of export `id`; a not-found error when this mirror made no such export. */
  async find(id: string): Promise<Manifest> {
    const manifest = await this.read(id);
    if (!manifest) throw new MirrorError('not-found', `this mirror made no export ${JSON.stringify(id)} (its manifests are kept in ${this.dir})`);
    return manifest;
  }

  /** The newest export (by when it was made), leaving out `except`; undefined when there is none. */
  async last(except?: string): Promise<Manifest | undefined> {
    let newest: Manifest | undefined;
    const names = await readdir(this.dir).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? [] : Promise.reject(err)));
    for (const name of names) {
      const id = name.replace(/\.json$/, '');
      if (!name.endsWith('.json') || !BUNDLE_ID.test(id) || id === except) continue;
      const m = await this.read(id);
      if (m && (!newest || m.createdAt > newest.createdAt || (m.createdAt === newest.createdAt && m.id > newest.id))) newest = m;
    }
    return newest;
  }

  private async read(id: string): Promise<Manifest | undefined> {
    let text: string;
    try {
      text = await readFile(this.path(id), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      return parseManifest(text);
    } catch (err) {
      if (err instanceof BundleError) throw new BundleError(`${this.path(id)}: ${err.message}`);
      throw err;
    }
  }

  private path(id: string): string {
    if (!BUNDLE_ID.test(id)) throw new MirrorError('bad-request', `not a bundle id: ${JSON.stringify(id)}`);
    return join(this.dir, `${id}.json`);
  }
}
