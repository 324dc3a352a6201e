// The exporter over stand-ins for the mirror's parts (real stores on disk, real files written): the snapshot, the
// plan, volumes, what a blob gone or corrupt meanwhile does, resuming, incremental bundles, dry runs, leases.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ExportHistory } from '../../src/bundles/export-history.js';
import { Exporter, PLAN, type ExportRequest, type ExportSource } from '../../src/bundles/export.js';
import { newKeyPair, parseManifest, type Entry } from '../../src/bundles/manifest.js';
import type { BundleEvent } from '../../src/bundles/progress.js';
import { entryBytes, END_BYTES } from '../../src/bundles/volumes.js';
import type { GenericCoords, GenericFile } from '../../src/core/hosted/generic-packages.js';
import type { HostedVersion } from '../../src/core/hosted/hosted-components.js';
import type { ArchiveRef, Release } from '../../src/model/release.js';
import { FsArchiveStore } from '../../src/stores/archive-store.js';
import { checkBundle } from '../fakes/bundle-check.js';
import { manualClock, removeTempDirs, tempDir } from '../helpers.js';

/** A mirror's content as the exporter sees it, in real stores; `leases` counts the archive leases held. */
async function contentOf() {
  const dir = await tempDir();
  const archives = await FsArchiveStore.open(join(dir, 'archives'));
  const hosted = await FsArchiveStore.open(join(dir, 'hosted'));
  const put = async (store: FsArchiveStore, bytes: Buffer) => {
    const w = await store.createWriter();
    await w.write(bytes);
    return (await w.commit()).ref;
  };
  const cached: Array<{ name: string; version: string; ref: ArchiveRef }> = [];
  const releases = new Map<string, Release>();
  const components: HostedVersion[] = [];
  const files: Array<GenericCoords & { file: GenericFile }> = [];
  const leases = new Map<string, number>();
  const clock = manualClock(Date.parse('2026-11-21T10:00:00Z'));
  let failFile: ((path: string) => boolean) | undefined;
  const leaseStored = async (ref: ArchiveRef) => {
    if ((await archives.stat(ref.digest))?.size !== ref.size) return undefined;
    leases.set(ref.digest, (leases.get(ref.digest) ?? 0) + 1);
    let released = false;
    return () => {
      if (!released) leases.set(ref.digest, leases.get(ref.digest)! - 1);
      released = true;
    };
  };
  const source: ExportSource = {
    mirror: 'mirror-a',
    upstream: 'http://upstream.invalid/v3',
    archives: {
      async leasedEntries(include) {
        const out = [];
        for (const c of cached) {
          if (!include(c.name, c.version)) continue;
          const release = await leaseStored(c.ref);
          if (release) out.push({ ...c, release });
        }
        return out;
      },
      leaseStored,
      openStored: (digest) => archives.open(digest),
    },
    registry: { storedRelease: async (name, version) => releases.get(`${name}@${version}`) },
    hostedComponents: { exportEntries: async (include) => components.filter((c) => include(c.name, c.version)) },
    generic: { exportEntries: async (include) => files.filter((f) => include(f)) },
    hostedBlobs: { openStored: (digest) => hosted.open(digest) },
    history: new ExportHistory(join(dir, 'exports')),
    now: clock.now,
    createFile: async (path) => {
      if (failFile?.(path)) throw Object.assign(new Error(`ENOSPC: no space left on device, open '${path}'`), { code: 'ENOSPC' });
      return open(path, 'w');
    },
  };
  return {
    dir,
    source,
    clock,
    leases,
    archives,
    hosted,
    failOnce(match: (path: string) => boolean) {
      failFile = (path) => {
        if (!match(path)) return false;
        failFile = undefined;
        return true;
      };
    },
    async cache(name: string, version: string, size = 20_000, withRelease = true) {
      const ref = await put(archives, randomBytes(size));
      cached.push({ name, version, ref });
      if (withRelease) releases.set(`${name}@${version}`, { version, createdAt: '2026-01-01T00:00:00Z', body: `notes of ${version}`, archiveUrl: 'http://x/z.zip', fields: { sha256: ref.digest } });
      return ref;
    },
    async host(name: string, version: string, size = 20_000) {
      const ref = await put(hosted, randomBytes(size));
      components.push({ name, version, ...ref, owner: 'alice', publisher: 'alice', createdAt: '2026-02-01T00:00:00Z', body: '', component: { type: 'Component', description: 'd', provider: [], tags: [] } });
      return ref;
    },
    async file(owner: string, name: string, version: string, file: string, bytes = randomBytes(5000)) {
      const ref = await put(hosted, bytes);
      files.push({ owner, name, version, file: { id: files.length + 1, name: file, ...ref, createdAt: '2026-03-01T00:00:00Z' } });
      return ref;
    },
    unhost(name: string, version: string) {
      components.splice(components.findIndex((c) => c.name === name && c.version === version), 1);
    },
  };
}

let content: Awaited<ReturnType<typeof contentOf>>;
let events: BundleEvent[];
const run = (request: ExportRequest) => new Exporter(content.source).run(request, (e) => void events.push(e));
const notes = () => events.filter((e) => e.type === 'note').map((e) => (e as { message: string }).message);

beforeEach(async () => {
  content = await contentOf();
  events = [];
  await content.cache('fc3', '1.0.0');
  await content.cache('fc3', '1.1.0', 30_000, false); // an archive the mirror has no release document for
  await content.host('corp-a', '1.0.0');
  await content.file('alice', 'tool', '1.4.2', 'tool-linux-amd64');
});

afterEach(removeTempDirs);

describe('export', () => {
  it('writes a bundle every blob of which is in one volume, with the full state and release metadata', async () => {
    const out = join(await tempDir(), 'bundle');
    const summary = await run({ out });
    const m = await checkBundle(out);
    expect(m.entries.map((e) => `${e.kind}:${e.name}@${e.version}`)).toEqual(['cached:fc3@1.0.0', 'cached:fc3@1.1.0', 'generic:tool@1.4.2', 'hosted:corp-a@1.0.0']);
    const [withDoc, without] = m.entries as Array<Extract<Entry, { kind: 'cached' }>>;
    expect(withDoc!.release).toMatchObject({ createdAt: '2026-01-01T00:00:00Z', body: 'notes of 1.0.0' });
    expect(without!.release).toEqual({ createdAt: '', body: '', fields: {} });
    expect(m.volumes.map((v) => v.name)).toEqual(['vol-0001.tar']);
    expect(m).toMatchObject({ base: undefined, deletions: [], source: { mirror: 'mirror-a', upstream: 'http://upstream.invalid/v3' } });
    expect(summary).toMatchObject({ status: 'written', bundle: m.id, entries: { cached: 2, hosted: 1, generic: 1 }, blobs: 4, volumes: 1, signedBy: null });
    expect(events.at(-1)).toEqual({ type: 'summary', summary });
    expect(events.filter((e) => e.type === 'progress').at(-1)).toMatchObject({ done: { blobs: 4, volumes: 1, bytes: 75_000 }, total: { blobs: 4, volumes: 1, bytes: 75_000 } });
    // Only the bundle's files are left: no plan, no partial file.
    expect((await readdir(out)).sort()).toEqual(['manifest.json', 'vol-0001.tar']);
    expect(JSON.parse(await readFile(join(content.dir, 'exports', `${m.id}.json`), 'utf8'))).toMatchObject({ id: m.id });
    expect([...content.leases.values()].every((n) => n === 0)).toBe(true);
  });

  it('signs the manifest with an Ed25519 key', async () => {
    const keys = newKeyPair();
    const keyFile = join(await tempDir(), 'site.key');
    await writeFile(keyFile, keys.privatePem);
    const out = join(await tempDir(), 'bundle');
    expect(await run({ out, signKey: keyFile })).toMatchObject({ signedBy: keys.keyId });
    await checkBundle(out, { trusted: [keys.publicPem] });
    await expect(run({ out: join(await tempDir(), 'b2'), signKey: join(content.dir, 'nope.key') })).rejects.toThrow(/cannot read the signing key/);
    await writeFile(keyFile, keys.publicPem);
    await expect(run({ out: join(await tempDir(), 'b3'), signKey: keyFile })).rejects.toThrow(/not a PEM private key/);
  });

  it('splits into volumes of at most maxVolumeBytes; a blob larger than that gets a volume of its own', async () => {
    await content.cache('big', '1.0.0', 200_000);
    const out = join(await tempDir(), 'bundle');
    const max = END_BYTES + entryBytes(30_000) + entryBytes(20_000);
    const m = await checkBundle((await run({ out, maxVolumeBytes: max }), out));
    expect(m.volumes.length).toBeGreaterThan(2);
    const big = m.blobs.find((b) => b.size === 200_000)!;
    expect(m.blobs.filter((b) => b.volume === big.volume)).toHaveLength(1);
    for (const v of m.volumes) if (v.name !== big.volume) expect(v.size).toBeLessThanOrEqual(max);
  });

  it('selects packages: NAME, NAME@VERSION, OWNER/NAME[@VERSION]; a selector that matches nothing is refused', async () => {
    const out = join(await tempDir(), 'bundle');
    await run({ out, packages: ['fc3@1.1.0', 'alice/tool'] });
    expect((await checkBundle(out)).entries.map((e) => `${e.kind}:${e.name}@${e.version}`)).toEqual(['cached:fc3@1.1.0', 'generic:tool@1.4.2']);
    await expect(run({ out: join(await tempDir(), 'b'), packages: ['fc3', 'nope', 'bob/tool'] })).rejects.toThrow(/holds nothing of nope, bob\/tool/);
    await expect(run({ out: join(await tempDir(), 'b'), packages: ['../etc'] })).rejects.toThrow(/invalid package "..\/etc": expected NAME/);
    await expect(run({ out: join(await tempDir(), 'b'), packages: ['fc3@..'] })).rejects.toThrow(/invalid version/);
    expect([...content.leases.values()].every((n) => n === 0)).toBe(true);
  });

  it('a dry run counts and writes nothing', async () => {
    const out = join(await tempDir(), 'bundle');
    const summary = await run({ out, dryRun: true, maxVolumeBytes: 40_000 });
    expect(summary).toMatchObject({ status: 'dry run', blobs: 4, bytes: 75_000, volumes: 3, entries: { cached: 2, hosted: 1, generic: 1 } });
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(content.dir, 'exports'))).toBe(false);
  });

  it('an incremental bundle carries only the blobs its base lacks, the full state, and the deletions', async () => {
    const first = join(await tempDir(), 'full');
    const base = await checkBundle((await run({ out: first }), first));
    content.clock.advance(60_000);
    const added = await content.cache('fc3', '1.2.0');
    content.unhost('corp-a', '1.0.0');
    const second = join(await tempDir(), 'incr');
    const summary = await run({ out: second, since: 'last' });
    const m = await checkBundle(second, { baseDigests: new Set(base.entries.map((e) => e.digest)) });
    expect(m.base).toBe(base.id);
    expect(m.blobs.map((b) => b.digest)).toEqual([added.digest]);
    expect(m.entries.map((e) => `${e.kind}:${e.name}@${e.version}`)).toEqual(['cached:fc3@1.0.0', 'cached:fc3@1.1.0', 'cached:fc3@1.2.0', 'generic:tool@1.4.2']);
    expect(m.deletions).toEqual(['hosted:corp-a@1.0.0']);
    expect(summary).toMatchObject({ base: base.id, deletions: 1, blobs: 1 });
    // By id too; nothing new since the second: no volume at all.
    const third = join(await tempDir(), 'none');
    expect(await run({ out: third, since: m.id })).toMatchObject({ blobs: 0, volumes: 0, base: m.id });
    expect((await checkBundle(third, { baseDigests: new Set(m.entries.map((e) => e.digest)) })).volumes).toEqual([]);
    await expect(run({ out: join(await tempDir(), 'x'), since: 'nope' })).rejects.toThrow(/made no export "nope"/);
    await expect(run({ out: join(await tempDir(), 'x'), since: '../x' })).rejects.toThrow(/--since takes "last" or a bundle id/);
  });

  it('--since last with no earlier export says to make a full one first', async () => {
    await expect(run({ out: join(await tempDir(), 'b'), since: 'last' })).rejects.toThrow(/no export yet .* make a full one first/);
  });

  it('a hosted file deleted while the export runs is left out, with its entries and a note', async () => {
    const gone = await content.file('bob', 'tmp', '1', 'scratch.bin');
    content.failOnce((path) => {
      if (path.endsWith('vol-0001.tar.partial')) void content.hosted.delete(gone.digest);
      return false;
    });
    const out = join(await tempDir(), 'bundle');
    const summary = await run({ out });
    const m = await checkBundle(out);
    expect(m.entries.some((e) => e.digest === gone.digest)).toBe(false);
    expect(m.blobs.some((b) => b.digest === gone.digest)).toBe(false);
    expect(summary).toMatchObject({ leftOut: 1, blobs: 4 });
    expect(notes()).toContainEqual(expect.stringMatching(/left out of the bundle: generic:bob\/tmp\/1\/scratch\.bin \(deleted from the mirror while the export ran\)/));
  });

  it('a blob whose bytes no longer match is left out: its volume is written again without it', async () => {
    const bad = await content.host('corp-b', '2.0.0');
    const path = join(content.dir, 'hosted', 'sha256', bad.digest.slice(0, 2), bad.digest);
    const bytes = await readFile(path);
    bytes.writeUInt8(bytes.readUInt8(100) ^ 0xff, 100);
    await writeFile(path, bytes);
    const out = join(await tempDir(), 'bundle');
    await run({ out });
    const m = await checkBundle(out);
    expect(m.entries.some((e) => e.name === 'corp-b')).toBe(false);
    expect(notes()).toContainEqual(expect.stringMatching(/left out of the bundle: hosted:corp-b@2\.0\.0 \(its stored bytes no longer match their sha256/));
  });

  it('an interrupted export, run again with the same folder, keeps the finished volumes and writes the rest', async () => {
    const out = join(await tempDir(), 'bundle');
    const max = END_BYTES + entryBytes(30_000);
    content.failOnce((path) => path.endsWith('vol-0002.tar.partial'));
    await expect(run({ out, maxVolumeBytes: max })).rejects.toThrow(/ENOSPC/);
    expect((await readdir(out)).sort()).toEqual([PLAN, 'vol-0001.tar']);
    expect([...content.leases.values()].every((n) => n === 0)).toBe(true);
    const before = await stat(join(out, 'vol-0001.tar'));
    // Content changing in between does not change the bundle: the plan fixed the snapshot.
    await content.cache('later', '1.0.0');
    events = [];
    const summary = await run({ out, maxVolumeBytes: max });
    const after = await stat(join(out, 'vol-0001.tar'));
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(summary).toMatchObject({ status: 'written', keptVolumes: 1, volumes: 3, blobs: 4 });
    expect(notes()[0]).toMatch(/continuing the unfinished export/);
    const m = await checkBundle(out);
    expect(m.entries.some((e) => e.name === 'later')).toBe(false);
    expect(await readdir(out)).not.toContain(PLAN);
  });

  it('a finished volume that changed since is written again; other options than the plan’s are refused', async () => {
    const out = join(await tempDir(), 'bundle');
    const max = END_BYTES + entryBytes(30_000);
    content.failOnce((path) => path.endsWith('vol-0003.tar.partial'));
    await expect(run({ out, maxVolumeBytes: max })).rejects.toThrow(/ENOSPC/);
    await expect(run({ out })).rejects.toThrow(/unfinished export asked with other options .*max volume size: \d+/);
    const vol = join(out, 'vol-0001.tar');
    const bytes = await readFile(vol);
    bytes.writeUInt8(bytes.readUInt8(600) ^ 1, 600);
    await writeFile(vol, bytes);
    expect(await run({ out, maxVolumeBytes: max })).toMatchObject({ keptVolumes: 1 }); // vol-0002 only
    await checkBundle(out);
  });

  it('a finished bundle folder: nothing to do when it is this export, refused otherwise; a foreign folder is refused', async () => {
    const out = join(await tempDir(), 'bundle');
    const first = await run({ out, since: undefined });
    events = [];
    expect(await run({ out })).toMatchObject({ status: 'unchanged', bundle: first.bundle });
    expect(notes()).toEqual([expect.stringMatching(/holds this export already/)]);
    // An incremental export into its own folder again: its base stays the one before it, not itself.
    const incr = join(await tempDir(), 'incr');
    await content.cache('fc3', '2.0.0');
    const made = await run({ out: incr, since: 'last' });
    expect(await run({ out: incr, since: 'last' })).toMatchObject({ status: 'unchanged', bundle: made.bundle });
    await content.cache('fc3', '3.0.0');
    await expect(run({ out })).rejects.toThrow(/holds the finished bundle .*, not what this export would write now/);
    const foreign = await tempDir();
    await writeFile(join(foreign, 'notes.txt'), 'mine');
    await expect(run({ out: foreign })).rejects.toThrow(/is not empty and holds no export/);
  });

  it('a crash between the manifest and remembering it: the rerun remembers it, and has nothing else to do', async () => {
    const history = content.source.history;
    const remember = history.remember.bind(history);
    history.remember = async () => {
      history.remember = remember;
      throw new Error('killed');
    };
    const out = join(await tempDir(), 'bundle');
    await expect(run({ out })).rejects.toThrow('killed');
    expect((await readdir(out)).sort()).toEqual(['manifest.json', PLAN, 'vol-0001.tar']);
    await content.cache('fc3', '9.0.0'); // the state moved on: still, that bundle is this mirror's, and remembered
    await expect(run({ out })).rejects.toThrow(/holds the finished bundle/);
    const id = parseManifest(await readFile(join(out, 'manifest.json'), 'utf8')).id;
    expect(existsSync(join(content.dir, 'exports', `${id}.json`))).toBe(true);
    expect(await readdir(out)).not.toContain(PLAN);
  });

  it('keeps the cached archives it carries leased until it ends', async () => {
    let during: number[] = [];
    content.failOnce((path) => {
      during = [...content.leases.values()];
      return path === '';
    });
    await run({ out: join(await tempDir(), 'bundle') });
    expect(during).toEqual([1, 1]);
    expect([...content.leases.values()]).toEqual([0, 0]);
  });
});

it('the manifest written is exactly what parseManifest reads back', async () => {
  const c = await contentOf();
  await c.cache('x', '1.0.0');
  const out = join(await tempDir(), 'b');
  await new Exporter(c.source).run({ out }, () => {});
  const text = await readFile(join(out, 'manifest.json'), 'utf8');
  expect(JSON.parse(text)).toMatchObject({ format: 1, base: null });
  expect(parseManifest(text).entries).toHaveLength(1);
  await removeTempDirs();
});
