// Generic packages hosted on the mirror: owner/name/version → files, whatever API put them there (Gitea's or
// GitLab's, faces/generic.ts). A version is one record holding its files; each file uses a blob of HostedBlobs by
// a reference of its own, so two files with the same bytes share one blob and deleting one leaves the other's.
//
// Every change of a record reads it and writes it inside one HostedBlobs change (they run one at a time), so that
// parallel uploads into a new version all land and none is lost. Download counts are not content: they are
// written without an fsync, in the same queue as the changes, so that a count never outlives its version.
import type { Readable } from 'node:stream';
import { MirrorError } from '../../model/errors.js';
import type { Adoption, ArchiveRef, Standing } from '../../model/release.js';
import { key, prefix } from '../../stores/keys.js';
import type { MetadataStore } from '../../stores/metadata-store.js';
import type { ArchiveHandle } from '../archives/archive-cache.js';
import type { HostedBlobs, HostedChange, Upload } from './hosted-blobs.js';

/** Where a version lives. Owner and name never contain "/" (the faces check), so the three are one key. */
export interface GenericCoords {
  readonly owner: string;
  readonly name: string;
  readonly version: string;
}

export interface GenericFile {
  /** Numeric, unique among every version and file of the mirror (GitLab shows it). */
  readonly id: number;
  readonly name: string;
  /** The sha256 of its bytes: the blob it uses. */
  readonly digest: string;
  readonly size: number;
  readonly createdAt: string;
}

export interface GenericVersion {
  readonly id: number;
  readonly createdAt: string;
  /** In upload order: the last of a name is the newest. */
  readonly files: readonly GenericFile[];
}

/** A generic package as the status page lists it: its versions in key order. */
export interface GenericListing {
  readonly owner: string;
  readonly name: string;
  readonly versions: Array<{ readonly version: string; readonly createdAt: string; readonly files: number; readonly bytes: number }>;
}

/** A second file of a name already in the version: refused (Gitea; GitLab with hosted.rejectDuplicates) or kept. */
export type Duplicates = 'refuse' | 'keep';

export interface GenericInventory {
  readonly packages: number;
  readonly versions: number;
  readonly files: number;
  /** Bytes of the files as listed (files sharing a blob count each; HostedBlobs' status has the disk's figure). */
  readonly bytes: number;
}

/** File names are compared case-insensitively, as Gitea does. */
const sameName = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

export class GenericPackages {
  /** Record changes and download counts, one after another. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: MetadataStore,
    private readonly blobs: HostedBlobs,
    private readonly now: () => number = Date.now,
  ) {}

  /** An upload's body into a temp file (see HostedBlobs.receive for its limits); then `add` it, or discard it. */
  receive(body: Readable, declaredSize?: number): Promise<Upload> {
    return this.blobs.receive(body, declaredSize);
  }

  version(at: GenericCoords): Promise<GenericVersion | undefined> {
    return this.db.get<GenericVersion>(key.hostedGeneric(at.owner, at.name, at.version));
  }

  /** The newest file of that name in the version, undefined when either is missing. */
  async file(at: GenericCoords, fileName: string): Promise<{ version: GenericVersion; file: GenericFile } | undefined> {
    const version = await this.version(at);
    const file = version?.files.findLast((f) => sameName(f.name, fileName));
    return version && file ? { version, file } : undefined;
  }

  /**
   * Adds an upload as a file of the version, creating the version if need be. Throws 409 (conflict) when a file of
   * that name is there and duplicates are refused. The upload is kept or discarded either way.
   */
  async add(at: GenericCoords, fileName: string, upload: Upload, duplicates: Duplicates): Promise<{ version: GenericVersion; file: GenericFile }> {
    try {
      return await this.changeRecord(async (change) => {
        const k = key.hostedGeneric(at.owner, at.name, at.version);
        const before = await this.db.get<GenericVersion>(k);
        if (duplicates === 'refuse' && before?.files.some((f) => sameName(f.name, fileName))) {
          throw new MirrorError('conflict', `package file already exists: ${fileName} is in ${describe(at)} already`);
        }
        let lastId = (await this.db.get<number>(key.hostedGenericIds)) ?? 0;
        const createdAt = new Date(this.now()).toISOString();
        const id = ++lastId;
        const ref = await change.keep(upload, fileRef(at, id));
        const file: GenericFile = { id, name: fileName, digest: ref.digest, size: ref.size, createdAt };
        const version: GenericVersion = before ? { ...before, files: [...before.files, file] } : { id: ++lastId, createdAt, files: [file] };
        // A new version starts counting afresh (no count of an earlier version of the same name survives).
        if (!before) change.del(key.hostedDownloads(at.owner, at.name, at.version));
        change.put(k, version);
        change.put(key.hostedGenericIds, lastId);
        return { version, file };
      });
    } finally {
      await upload.discard(); // nothing when it was kept
    }
  }

  /** How a file from elsewhere stands against the newest file of that name in the version here. */
  async standing(at: GenericCoords, fileName: string, digest: string): Promise<Standing> {
    const here = (await this.file(at, fileName))?.file;
    if (!here) return 'new';
    return here.digest === digest ? 'unchanged' : { conflict: `${fileName} of ${describe(at)} is here as sha256 ${here.digest}` };
  }

  /**
   * Adds a file from elsewhere (an imported bundle), its blob already stored (HostedBlobs.receiveBlob), creating the
   * version if need be; never over a file of that name (checked again within the change).
   */
  importFile(at: GenericCoords, fileName: string, blob: ArchiveRef, createdAt: string): Promise<Adoption> {
    return this.changeRecord(async (change): Promise<Adoption> => {
      const standing = await this.standing(at, fileName, blob.digest);
      if (standing !== 'new') return standing;
      if (!(await this.blobs.hasBlob(blob))) return 'missing';
      const k = key.hostedGeneric(at.owner, at.name, at.version);
      const before = await this.db.get<GenericVersion>(k);
      let lastId = (await this.db.get<number>(key.hostedGenericIds)) ?? 0;
      const id = ++lastId;
      await change.reference(blob, fileRef(at, id));
      const file: GenericFile = { id, name: fileName, digest: blob.digest, size: blob.size, createdAt };
      const version: GenericVersion = before ? { ...before, files: [...before.files, file] } : { id: ++lastId, createdAt, files: [file] };
      if (!before) change.del(key.hostedDownloads(at.owner, at.name, at.version));
      change.put(k, version);
      change.put(key.hostedGenericIds, lastId);
      return 'added';
    });
  }

  /** Removes a file a bundle says was deleted, only when the newest of that name is still the bytes the base had. */
  removeImported(at: GenericCoords, fileName: string, digest: string): Promise<'removed' | 'absent' | 'differs'> {
    return this.changeRecord(async (change) => {
      const before = await this.version(at);
      const here = before?.files.findLast((f) => sameName(f.name, fileName));
      if (!before || !here) return 'absent';
      if (here.digest !== digest) return 'differs';
      removeFiles(change, at, before, fileName);
      return 'removed';
    });
  }

  /** Removes a version and every file of it; false when there was no such version. */
  deleteVersion(at: GenericCoords): Promise<boolean> {
    return this.changeRecord(async (change) => {
      const before = await this.version(at);
      if (!before) return false;
      for (const f of before.files) change.release(f.digest, fileRef(at, f.id));
      change.del(key.hostedGeneric(at.owner, at.name, at.version));
      change.del(key.hostedDownloads(at.owner, at.name, at.version));
      return true;
    });
  }

  /** Removes every file of that name (there can be several through GitLab); the last file takes the version along. */
  deleteFile(at: GenericCoords, fileName: string): Promise<boolean> {
    return this.changeRecord(async (change) => {
      const before = await this.version(at);
      if (!before?.files.some((f) => sameName(f.name, fileName))) return false;
      removeFiles(change, at, before, fileName);
      return true;
    });
  }

  /**
   * Opens the newest file of that name to serve (checked: a corrupt or missing blob throws a 500, see
   * HostedBlobs.open); undefined when there is no such file.
   */
  async open(at: GenericCoords, fileName: string): Promise<{ version: GenericVersion; file: GenericFile; handle: ArchiveHandle } | undefined> {
    const found = await this.file(at, fileName);
    if (!found) return undefined;
    try {
      return { ...found, handle: await this.blobs.open({ digest: found.file.digest, size: found.file.size }, `file ${found.file.name} of ${describe(at)}`) };
    } catch (err) {
      // Deleted between the look-up and the open (its blob went with it): that is a 404, not damage.
      const now = await this.file(at, fileName);
      if (now?.file.id !== found.file.id) return undefined;
      throw err;
    }
  }

  /** Counts one download of the version (not waited for; a failure to count is no failure to serve). */
  countDownload(at: GenericCoords): void {
    void this.queue(async () => {
      const k = key.hostedDownloads(at.owner, at.name, at.version);
      if (!(await this.version(at))) return; // deleted meanwhile: no count for a version that is not there
      await this.db.put(k, ((await this.db.get<number>(k)) ?? 0) + 1);
    }).catch(() => {});
  }

  /** Downloads of the version so far (every count already asked for included). */
  downloads(at: GenericCoords): Promise<number> {
    return this.queue(async () => (await this.db.get<number>(key.hostedDownloads(at.owner, at.name, at.version))) ?? 0);
  }

  /** The newest file of each name in every version (of those `include` selects): what an export carries. */
  async exportEntries(include: (at: GenericCoords) => boolean): Promise<Array<GenericCoords & { file: GenericFile }>> {
    const out: Array<GenericCoords & { file: GenericFile }> = [];
    for await (const [k, v] of this.db.entries<GenericVersion>(prefix.hostedGeneric)) {
      const [owner = '', name = '', ...rest] = k.slice(prefix.hostedGeneric.length).split('/');
      const at = { owner, name, version: rest.join('/') };
      if (!include(at)) continue;
      const newest = new Map<string, GenericFile>(); // files are in upload order: the last of a name wins
      for (const f of v.files) newest.set(f.name.toLowerCase(), f);
      for (const file of newest.values()) out.push({ ...at, file });
    }
    return out;
  }

  /** Every package with its versions (files and bytes of each), in one scan of the version records (the status page). */
  async listing(): Promise<GenericListing[]> {
    const byPackage = new Map<string, GenericListing>();
    for await (const [k, v] of this.db.entries<GenericVersion>(prefix.hostedGeneric)) {
      const [owner = '', name = '', ...rest] = k.slice(prefix.hostedGeneric.length).split('/');
      const id = `${owner}/${name}`;
      let p = byPackage.get(id);
      if (!p) byPackage.set(id, (p = { owner, name, versions: [] }));
      p.versions.push({ version: rest.join('/'), createdAt: v.createdAt, files: v.files.length, bytes: v.files.reduce((n, f) => n + f.size, 0) });
    }
    return [...byPackage.values()];
  }

  /** Figures for /-/status: one scan of the version records. */
  async inventory(): Promise<GenericInventory> {
    const packages = new Set<string>();
    let versions = 0;
    let files = 0;
    let bytes = 0;
    for await (const [k, v] of this.db.entries<GenericVersion>(prefix.hostedGeneric)) {
      const [owner, name] = k.slice(prefix.hostedGeneric.length).split('/');
      packages.add(`${owner}/${name}`);
      versions++;
      files += v.files.length;
      for (const f of v.files) bytes += f.size;
    }
    return { packages: packages.size, versions, files, bytes };
  }

  private changeRecord<T>(fn: (change: HostedChange) => Promise<T>): Promise<T> {
    return this.queue(() => this.blobs.change(fn));
  }

  /** Resolves once the changes and download counts queued so far are written (before the store closes). */
  settled(): Promise<void> {
    return this.tail.then(() => {});
  }

  private queue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => {});
    return run;
  }
}

/** Removes every file of that name from the version, within a change; the last file takes the version along. */
function removeFiles(change: HostedChange, at: GenericCoords, before: GenericVersion, fileName: string): void {
  const gone = before.files.filter((f) => sameName(f.name, fileName));
  for (const f of gone) change.release(f.digest, fileRef(at, f.id));
  const files = before.files.filter((f) => !gone.includes(f));
  if (files.length > 0) {
    change.put(key.hostedGeneric(at.owner, at.name, at.version), { ...before, files });
  } else {
    change.del(key.hostedGeneric(at.owner, at.name, at.version));
    change.del(key.hostedDownloads(at.owner, at.name, at.version));
  }
}

/** A file's reference to its blob: unique per file, so that each file holds its blob on its own. */
function fileRef(at: GenericCoords, fileId: number): string {
  return `generic:${at.owner}/${at.name}/${at.version}/${fileId}`;
}

function describe(at: GenericCoords): string {
  return `${at.owner}/${at.name} ${at.version}`;
}
