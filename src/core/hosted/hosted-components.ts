// Components that live on this mirror: published into it with `s registry publish`, never read from or sent to the
// upstream. A name is hosted when it matches hosted.packages, or once it was published here (offline, every
// publish is hosted). Its first publisher owns it; versions are immutable.
//
// Publishing is the `s` client's two steps: the signed form (checked here: the user, the publish.yaml, the name,
// the version) gets a one-time upload URL, and the PUT of the zip to it stores the version (a valid zip whose own
// publish.yaml, if it has one, names the same component and version), durably, before it is answered.
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { MirrorError } from '../../model/errors.js';
import { publishSpec, type PublishSpec } from '../../model/publish-spec.js';
import { componentIdentity, isPublishYaml, MAX_PUBLISH_YAML } from '../../model/publish-yaml.js';
import type { Adoption, ArchiveRef, PackageSummary, Release, Standing } from '../../model/release.js';
import { readZipEntry, checkZip } from '../../model/zip.js';
import { key, prefix } from '../../stores/keys.js';
import { hasKeys, type MetadataStore } from '../../stores/metadata-store.js';
import type { ArchiveHandle } from '../archives/archive-cache.js';
import { newestFirst } from '../versions.js';
import type { Access, Caller } from './access.js';
import type { HostedBlobs } from './hosted-blobs.js';

/** How long an upload URL handed out by step 1 stays good. */
const UPLOAD_TTL_MS = 15 * 60_000;
/** Upload URLs waiting at most (each is a few hundred bytes): past it, expired ones go, then the oldest. */
const MAX_PENDING_UPLOADS = 1000;

/** A hosted component: its owner and what `s registry list` shows of it (from its newest publish). */
interface ComponentRecord {
  readonly owner: string;
  readonly createdAt: string;
  readonly type: string;
  readonly description: string;
  readonly category: string | undefined;
  readonly provider: readonly string[];
  readonly tags: readonly string[];
}

/** A published version. */
interface ReleaseRecord extends ArchiveRef {
  readonly version: string;
  readonly createdAt: string;
  readonly body: string;
  readonly description: string;
  readonly publisher: string;
}

/** A hosted component as the status page lists it. */
export interface HostedListing {
  readonly name: string;
  readonly owner: string;
  readonly description: string;
  /** Newest first. */
  readonly versions: ReadonlyArray<{ readonly version: string; readonly size: number; readonly createdAt: string }>;
}

/** A published version as an export carries it. */
export interface HostedVersion extends ArchiveRef {
  readonly name: string;
  readonly version: string;
  readonly owner: string;
  readonly publisher: string;
  readonly createdAt: string;
  readonly body: string;
  /** What `s registry list` shows of the component: type, description, category, provider, tags. */
  readonly component: Readonly<Record<string, unknown>>;
}

interface PendingUpload {
  readonly spec: PublishSpec;
  readonly body: string;
  readonly caller: Caller;
  readonly expires: number;
}

/** A version published on another mirror, as a bundle brings it (see importVersion). */
export interface ImportedVersion {
  readonly name: string;
  readonly version: string;
  readonly archive: ArchiveRef;
  readonly owner: string;
  readonly publisher: string;
  readonly createdAt: string;
  readonly body: string;
  /** What `s registry list` shows of the component: type, description, category, provider, tags. */
  readonly component: Readonly<Record<string, unknown>>;
}

export interface HostedComponentsOptions {
  /** hosted.packages: name patterns, "*" for any characters. */
  readonly patterns: readonly string[];
  /** Offline, every publish is hosted. */
  readonly offline: boolean;
  /**
   * Whether the mirror holds content of an upstream package of that name. Offline, such a name is not taken over by
   * a publish (it would shadow the upstream's package for every client); hosted.packages can still claim it.
   */
  readonly knownUpstream?: (name: string) => Promise<boolean>;
  readonly now?: () => number;
}

export class HostedComponents {
  /**
   * Names published here (their records exist), lower-cased, kept in memory: every read asks isHosted, and "Corp-x"
   * must not slip past "corp-x" to an upstream that may not tell them apart.
   */
  private readonly published = new Set<string>();
  private readonly uploads = new Map<string, PendingUpload>();
  private readonly patterns: RegExp[];
  private readonly now: () => number;

  constructor(
    private readonly db: MetadataStore,
    private readonly blobs: HostedBlobs,
    private readonly access: Access,
    private readonly options: HostedComponentsOptions,
  ) {
    // Case-insensitive: "Corp-x" must not slip past "corp-*" to an upstream that may not tell them apart.
    this.patterns = options.patterns.map((p) => new RegExp(`^${p.split('*').map(escapeRegExp).join('.*')}$`, 'i'));
    this.now = options.now ?? Date.now;
  }

  /**
   * Reads the names published here; resolves with the error when the database cannot say (then only hosted.packages
   * apply, or the names read last). Read again when another replica publishes or deletes (app.ts).
   */
  async init(): Promise<unknown> {
    const names: string[] = [];
    try {
      for await (const k of this.db.keys(prefix.hostedComponent)) names.push(k.slice(prefix.hostedComponent.length).toLowerCase());
    } catch (err) {
      return err;
    }
    this.published.clear();
    for (const name of names) this.published.add(name);
    return undefined;
  }

  /** Whether a name lives here: answered from hosted content only, never read from or sent to the upstream. */
  isHosted(name: string): boolean {
    return this.published.has(name.toLowerCase()) || this.patterns.some((p) => p.test(name));
  }

  /** Its versions, newest first (none: the name is hosted, nothing is published yet). */
  async releases(name: string): Promise<Release[]> {
    const out: Release[] = [];
    for await (const [, r] of this.db.entries<ReleaseRecord>(prefix.hostedRelease(name))) out.push(asRelease(r));
    return out.sort(newestFirst);
  }

  async release(name: string, version: string): Promise<Release | undefined> {
    const r = await this.db.get<ReleaseRecord>(key.hostedRelease(name, version));
    return r && asRelease(r);
  }

  async archive(name: string, version: string): Promise<ArchiveHandle> {
    const r = await this.db.get<ReleaseRecord>(key.hostedRelease(name, version));
    if (!r) throw new MirrorError('not-found', `${name}@${version} is not published on this mirror`);
    return this.blobs.open(r, `the archive of ${name}@${version}`);
  }

  /** Every hosted component with a version, as `s registry list` shows them; or only those `owner` owns. */
  async summaries(owner?: string): Promise<PackageSummary[]> {
    const out: PackageSummary[] = [];
    for await (const [k, c] of this.db.entries<ComponentRecord>(prefix.hostedComponent)) {
      const name = k.slice(prefix.hostedComponent.length);
      if (owner !== undefined && c.owner !== owner) continue;
      if (!(await hasKeys(this.db, prefix.hostedRelease(name)))) continue; // nothing published (yet, or any more)
      out.push({
        name,
        type: c.type,
        description: c.description,
        provider: c.provider,
        tags: c.tags,
        category: c.category === undefined ? undefined : { name: c.category },
        user: { username: c.owner },
        show: true,
      });
    }
    return out;
  }

  /** Hosted components with a version, their versions and the bytes of their archives. */
  async inventory(): Promise<{ packages: number; versions: number; bytes: number }> {
    const packages = new Set<string>();
    let [versions, bytes] = [0, 0];
    for await (const [k, r] of this.db.entries<ReleaseRecord>(prefix.hostedRelease())) {
      packages.add(k.slice(prefix.hostedRelease().length, k.lastIndexOf(':')));
      versions++;
      bytes += r.size;
    }
    return { packages: packages.size, versions, bytes };
  }

  /**
   * Every hosted component with a version: its owner, description and versions (newest first), in one scan of the
   * components and one of the versions (the status page's listing; inventory() is its sums).
   */
  async listing(): Promise<HostedListing[]> {
    const components = new Map<string, ComponentRecord>();
    for await (const [k, c] of this.db.entries<ComponentRecord>(prefix.hostedComponent)) components.set(k.slice(prefix.hostedComponent.length), c);
    const versions = new Map<string, HostedListing['versions'][number][]>();
    const start = prefix.hostedRelease();
    for await (const [k, r] of this.db.entries<ReleaseRecord>(start)) {
      const name = k.slice(start.length, k.lastIndexOf(':'));
      let list = versions.get(name);
      if (!list) versions.set(name, (list = []));
      list.push({ version: r.version, size: r.size, createdAt: r.createdAt });
    }
    return [...versions].map(([name, list]) => {
      const c = components.get(name);
      return { name, owner: c?.owner ?? '', description: c?.description ?? '', versions: list.sort(newestFirst) };
    });
  }

  /**
   * Every published version (of those `include` selects) with what an export carries of it: its archive, who
   * published it, and its component's list fields (from the newest publish).
   */
  async exportEntries(include: (name: string, version: string) => boolean): Promise<HostedVersion[]> {
    const out: HostedVersion[] = [];
    const start = prefix.hostedRelease();
    for await (const [k, r] of this.db.entries<ReleaseRecord>(start)) {
      const name = k.slice(start.length, k.lastIndexOf(':'));
      if (!include(name, r.version)) continue;
      const c = await this.db.get<ComponentRecord>(key.hostedComponent(name));
      if (!c) continue; // a release record is written with its component's, in one batch: only damage parts them
      out.push({
        name,
        version: r.version,
        digest: r.digest,
        size: r.size,
        owner: c.owner,
        publisher: r.publisher,
        createdAt: r.createdAt,
        body: r.body,
        component: { type: c.type, description: c.description, ...(c.category === undefined ? {} : { category: c.category }), provider: c.provider, tags: c.tags },
      });
    }
    return out;
  }

  /**
   * Publish, step 1: the caller may publish, the form's publish.yaml is valid, its name is hosted here (or the mirror
   * is offline), owned by nobody else, and the version is new. Resolves with the one-time upload token.
   */
  async beginPublish(caller: Caller | undefined, form: URLSearchParams): Promise<string> {
    const spec = publishSpec(form.get('publish') ?? undefined);
    const what = `publishing ${spec.name}@${spec.version}`;
    const user = this.access.publish(caller, what);
    if (!this.isHosted(spec.name)) {
      if (!this.options.offline) {
        throw new MirrorError('forbidden', `${spec.name} is not hosted on this mirror (hosted.packages): it belongs to the upstream registry, publish it there`);
      }
      if (await this.options.knownUpstream?.(spec.name)) {
        throw new MirrorError('forbidden', `${spec.name} is a package of the upstream registry cached here: publishing it would shadow it for every client; add it to hosted.packages to host it on purpose`);
      }
    }
    await this.checkPublishable(user, spec);
    this.prune();
    const token = randomBytes(24).toString('base64url');
    this.uploads.set(token, { spec, body: form.get('version_body') ?? '', caller: user, expires: this.now() + UPLOAD_TTL_MS });
    return token;
  }

  /** Publish, step 2: the zip for an upload token (used once, whatever the outcome). */
  async finishPublish(token: string, body: Readable, declaredSize?: number): Promise<{ name: string; version: string }> {
    const pending = this.uploads.get(token);
    this.uploads.delete(token);
    if (!pending || pending.expires < this.now()) throw new MirrorError('not-found', 'this upload URL is unknown, used or expired: publish again');
    const { spec, caller } = pending;
    const upload = await this.blobs.receive(body, declaredSize);
    try {
      await this.blobs.change(async (change) => {
        await this.checkPublishable(caller, spec); // again: another publish may have won meanwhile
        const id = `${spec.name}@${spec.version}`;
        const ref = await change.keep(upload, `component:${id}`, { check: (content, size) => checkComponentZip(content, size, spec) });
        const owner = (await this.db.get<ComponentRecord>(key.hostedComponent(spec.name)))?.owner ?? caller.name;
        const createdAt = new Date(this.now()).toISOString();
        change.put(key.hostedComponent(spec.name), {
          owner,
          createdAt,
          type: spec.type,
          description: spec.description,
          category: spec.category,
          provider: spec.provider,
          tags: spec.tags,
        } satisfies ComponentRecord);
        change.put(key.hostedRelease(spec.name, spec.version), {
          ...ref,
          version: spec.version,
          createdAt,
          body: pending.body,
          description: spec.description,
          publisher: caller.name,
        } satisfies ReleaseRecord);
      });
    } finally {
      await upload.discard(); // nothing if it was kept
    }
    this.published.add(spec.name.toLowerCase());
    return { name: spec.name, version: spec.version };
  }

  /** `s registry delete`: the owner or an admin removes a version. */
  async remove(caller: Caller | undefined, name: string, version: string): Promise<void> {
    await this.blobs.change(async (change) => {
      const component = await this.db.get<ComponentRecord>(key.hostedComponent(name));
      const release = await this.db.get<ReleaseRecord>(key.hostedRelease(name, version));
      this.access.write(caller, component?.owner ?? caller?.name ?? '', `deleting ${name}@${version}`);
      if (!release) throw new MirrorError('not-found', `${name}@${version} is not published on this mirror`);
      change.del(key.hostedRelease(name, version));
      change.release(release.digest, `component:${name}@${version}`);
    });
  }

  /**
   * How a version published elsewhere stands against this mirror: a conflict when the version is published here
   * as other bytes, or the name is owned here by someone else.
   */
  async standing(name: string, version: string, archive: ArchiveRef, owner: string): Promise<Standing> {
    const release = await this.db.get<ReleaseRecord>(key.hostedRelease(name, version));
    if (release) return release.digest === archive.digest ? 'unchanged' : { conflict: `${name}@${version} is published here as sha256 ${release.digest}` };
    const component = await this.db.get<ComponentRecord>(key.hostedComponent(name));
    if (component && component.owner !== owner) return { conflict: `${name} is owned by ${component.owner} here, not by ${owner}` };
    return 'new';
  }

  /**
   * Adds a version published elsewhere (an imported bundle), its blob already stored (HostedBlobs.receiveBlob): the
   * name becomes hosted here, owned by its owner there; checked again within the change, so nothing is overwritten.
   */
  async importVersion(v: ImportedVersion): Promise<Adoption> {
    const done = await this.blobs.change(async (change): Promise<Adoption> => {
      const standing = await this.standing(v.name, v.version, v.archive, v.owner);
      if (standing !== 'new') return standing;
      if (!(await this.blobs.hasBlob(v.archive))) return 'missing';
      await change.reference(v.archive, `component:${v.name}@${v.version}`);
      const c = v.component;
      const strings = (x: unknown) => (Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : []);
      const description = typeof c.description === 'string' ? c.description : '';
      if (!(await this.db.get(key.hostedComponent(v.name)))) {
        change.put(key.hostedComponent(v.name), {
          owner: v.owner,
          createdAt: v.createdAt,
          type: typeof c.type === 'string' ? c.type : 'Component',
          description,
          category: typeof c.category === 'string' ? c.category : undefined,
          provider: strings(c.provider),
          tags: strings(c.tags),
        } satisfies ComponentRecord);
      }
      change.put(key.hostedRelease(v.name, v.version), {
        ...v.archive,
        version: v.version,
        createdAt: v.createdAt,
        body: v.body,
        description,
        publisher: v.publisher,
      } satisfies ReleaseRecord);
      return 'added';
    });
    if (done === 'added') this.published.add(v.name);
    return done;
  }

  /** Removes a version a bundle says was deleted, only when it is still the bytes the bundle's base had. */
  removeImported(name: string, version: string, digest: string): Promise<'removed' | 'absent' | 'differs'> {
    return this.blobs.change(async (change) => {
      const release = await this.db.get<ReleaseRecord>(key.hostedRelease(name, version));
      if (!release) return 'absent';
      if (release.digest !== digest) return 'differs';
      change.del(key.hostedRelease(name, version));
      change.release(release.digest, `component:${name}@${version}`);
      return 'removed';
    });
  }

  /** Throws unless `caller` may publish this version now: owner (or a new name), and a new version. */
  private async checkPublishable(caller: Caller, spec: PublishSpec): Promise<void> {
    const component = await this.db.get<ComponentRecord>(key.hostedComponent(spec.name));
    if (component) this.access.write(caller, component.owner, `publishing ${spec.name}`);
    if (await this.db.get(key.hostedRelease(spec.name, spec.version))) {
      throw new MirrorError('conflict', `${spec.name}@${spec.version} is already published: versions are immutable, publish a new version`);
    }
  }

  private prune(): void {
    const now = this.now();
    for (const [token, u] of this.uploads) if (u.expires < now) this.uploads.delete(token);
    while (this.uploads.size >= MAX_PENDING_UPLOADS) this.uploads.delete(this.uploads.keys().next().value!);
  }
}

/** A valid zip, whose own publish.yaml (when it has one) names the component and version of the form. */
async function checkComponentZip(content: Parameters<typeof checkZip>[0], size: number, spec: PublishSpec): Promise<void> {
  await checkZip(content, size);
  const yaml = await readZipEntry(content, size, isPublishYaml, MAX_PUBLISH_YAML);
  if (yaml === undefined) return;
  const id = componentIdentity(yaml.toString('utf8'));
  if (!id || id.name !== spec.name || id.version !== spec.version) {
    throw new Error(`the zip's publish.yaml names ${id ? `${id.name}@${id.version}` : 'no readable Name and Version'}, not ${spec.name}@${spec.version}`);
  }
}

function asRelease(r: ReleaseRecord): Release {
  return { version: r.version, createdAt: r.createdAt, body: r.body, archiveUrl: '', fields: { description: r.description, sha256: r.digest } };
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
