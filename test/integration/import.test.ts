// Importing bundles (issue 11) into real data folders (LevelDB, files), through the same entry point as the
// executable, and what a mirror then serves over HTTP: everything of a full bundle, offline; tampered volumes, edited
// manifests, unsigned bundles and hostile tar entries refused; volumes one per run, in any order; conflicts; an
// incremental bundle whose base is missing; dry runs; free space.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newKeyPair } from '../../src/bundles/manifest.js';
import { formatBytes, type BundleEvent } from '../../src/bundles/progress.js';
import { main } from '../../src/cli.js';
import { createMirror } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import { cached, generic, hosted, writeBundle, type Item } from '../fakes/bundles.js';
import { componentZip } from '../fakes/zips.js';
import { request } from 'undici';
import { get, recordSecrets, removeTempDirs, startMirror, tempDir, type TestMirror } from '../helpers.js';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
/** Nothing listens there: an offline mirror never asks it, and a test that did would fail loudly. */
const DEAD_UPSTREAM = 'http://127.0.0.1:9/v3';

const SITE_A = newKeyPair();
const STRANGER = newKeyPair();

const FC3_100 = componentZip('fc3', '1.0.0', { payload: randomBytes(20_000) });
const FC3_110 = componentZip('fc3', '1.1.0', { payload: randomBytes(30_000) });
const DOMAIN = componentZip('fc3-domain', '0.0.9', { payload: randomBytes(10_000) });
const CORP = componentZip('corp-tool', '1.0.0', { payload: randomBytes(15_000) });
const TOOL = randomBytes(40_000);

function fullState(): Item[] {
  return [
    cached('fc3', '1.0.0', FC3_100),
    cached('fc3', '1.1.0', FC3_110, { description: 'Function Compute' }),
    cached('fc3-domain', '0.0.9', DOMAIN),
    hosted('corp-tool', '1.0.0', CORP, 'alice'),
    generic('alice', 'tool', '1.4.2', 'tool-linux-amd64', TOOL),
  ];
}

let data: string;
let work: string;
let trust: string;
const mirrors: TestMirror[] = [];

beforeEach(async () => {
  data = await tempDir();
  work = await tempDir();
  trust = join(work, 'trusted');
  await mkdir(trust);
  await writeFile(join(trust, 'site-a.pub'), SITE_A.publicPem);
});

afterEach(async () => {
  for (const m of mirrors.splice(0)) await m.close();
  await removeTempDirs();
});

/** Runs `srm-mirror ARGS` in this process on the test's data folder (offline, no upstream); collects what it prints. */
async function run(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main([...args, '--data', data, '--offline', '--upstream', DEAD_UPSTREAM, '--log-level', 'error'], {
    isTTY: false,
    write: (t) => void (stdout += t),
    error: (t) => void (stderr += t),
  });
  return { code, stdout, stderr };
}

/** `import --json`: the exit code and the events. */
async function importJson(dir: string, ...more: string[]) {
  const r = await run('import', dir, '--json', ...more);
  const events = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as BundleEvent);
  const summary = events.find((e) => e.type === 'summary')?.summary as Record<string, unknown> | undefined;
  const notes = events.flatMap((e) => (e.type === 'note' ? [e.message] : []));
  return { ...r, events, summary, notes };
}

async function serve(): Promise<TestMirror> {
  const m = await startMirror(DEAD_UPSTREAM, { data, offline: true });
  mirrors.push(m);
  return m;
}

const body = (res: { body: Buffer }) => (JSON.parse(res.body.toString()) as { body: Record<string, unknown> }).body;

/** Every file under a folder, relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).map((d) => join(d.parentPath, d.name).slice(dir.length + 1)).sort();
}

describe('a full bundle into an offline mirror', () => {
  it('imports everything, signed by a trusted key; the mirror serves every version, hosted stays hosted, the generic file downloads', async () => {
    const bundle = await writeBundle(join(work, 'b'), { id: 'full-1', items: fullState(), volumes: 2, signWith: [SITE_A.privatePem] });
    const r = await importJson(bundle.dir, '--trust', trust);
    expect(r.code).toBe(0);
    expect(r.summary).toMatchObject({ bundle: 'full-1', status: 'complete', added: { cached: 3, hosted: 1, generic: 1 }, unchanged: 0, conflicts: [], refusedBlobs: [] });
    expect(r.summary!.signature).toMatch(/^signed by trusted key [0-9a-f]{16}$/);
    expect(r.events.some((e) => e.type === 'progress')).toBe(true);

    const m = await serve();
    const latest = await get(`${m.url}/v3/packages/fc3/release/latest`);
    expect([latest.status, latest.headers.get('x-cache')]).toEqual([200, 'OFFLINE']);
    expect(body(latest)).toMatchObject({ tag_name: '1.1.0', description: 'Function Compute', created_at: '2026-01-02T03:04:05Z' });
    expect(body(await get(`${m.url}/v3/packages/fc3/release/tags/1.0.0`))).toMatchObject({ tag_name: '1.0.0' });
    for (const [path, bytes] of [['fc3/zipball/1.0.0', FC3_100], ['fc3/zipball/1.1.0', FC3_110], ['fc3-domain/zipball/0.0.9', DOMAIN]] as const) {
      const zip = await get(`${m.url}/v3/packages/${path}`);
      expect([zip.status, sha256(zip.body)]).toEqual([200, sha256(bytes)]);
    }
    const corp = await get(`${m.url}/v3/packages/corp-tool/release/latest`);
    expect([corp.status, corp.headers.get('x-cache'), body(corp).tag_name]).toEqual([200, 'HOSTED', '1.0.0']);
    const corpZip = await get(`${m.url}/v3/packages/corp-tool/zipball/1.0.0`);
    expect([corpZip.headers.get('x-cache'), sha256(corpZip.body)]).toEqual(['HOSTED', sha256(CORP)]);
    const list = JSON.parse((await get(`${m.url}/v3/packages/releases?search=corp`)).body.toString()) as { body: Array<Record<string, unknown>> };
    expect(list.body.find((p) => p.name === 'corp-tool')).toMatchObject({ user: { username: 'alice' }, description: 'corp-tool from the other site' });
    const tool = await get(`${m.url}/api/packages/alice/generic/tool/1.4.2/tool-linux-amd64`);
    expect([tool.status, sha256(tool.body)]).toEqual([200, sha256(TOOL)]);
  });

  it('twice is once: the second run changes nothing and duplicates nothing', async () => {
    const bundle = await writeBundle(join(work, 'b'), { id: 'full-2', items: [...fullState(), generic('alice', 'tool', '1.4.2', 'copy-of-corp.zip', CORP)] });
    expect((await importJson(bundle.dir)).summary).toMatchObject({ status: 'complete', added: { cached: 3, hosted: 1, generic: 2 } });
    const before = await filesUnder(data);
    const again = await importJson(bundle.dir);
    expect(again.summary).toMatchObject({ status: 'complete', added: { cached: 0, hosted: 0, generic: 0 }, unchanged: 6, blobs: 0, bytes: 0 });
    expect((await filesUnder(data)).filter((f) => !f.startsWith('meta/'))).toEqual(before.filter((f) => !f.startsWith('meta/')));
    const m = await serve();
    const files = JSON.parse((await get(`${m.url}/api/v1/packages/alice/generic/tool/1.4.2/files`)).body.toString()) as unknown[];
    expect(files).toHaveLength(2);
    // The hosted component's zip and the generic file with the same bytes: one blob in the hosted store.
    expect((await filesUnder(join(data, 'hosted', 'sha256'))).length).toBe(2);
  });

  it('without trusted keys an unsigned bundle is imported, saying that nothing vouches for it', async () => {
    const bundle = await writeBundle(join(work, 'b'), { items: fullState() });
    const r = await importJson(bundle.dir);
    expect(r.summary).toMatchObject({ status: 'complete', signature: 'unsigned (no trusted keys configured)' });
    expect(r.notes.join('\n')).toMatch(/unsigned and no trusted keys are configured: nothing vouches/);
  });

  it('prints plain lines and a summary for a person', async () => {
    const bundle = await writeBundle(join(work, 'b'), { items: fullState(), signWith: [SITE_A.privatePem] });
    const r = await run('import', bundle.dir, '--trust', trust);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^status: complete$/m);
    expect(r.stdout).toMatch(/blobs \d+\/\d+ volumes/);
    expect(r.stdout).not.toContain('\r');
  });
});

describe('trust and tampering', () => {
  it('refuses, with three different messages: an edited manifest, an unsigned bundle with trust configured, a stranger\'s signature', async () => {
    const signed = await writeBundle(join(work, 'signed'), { items: fullState(), signWith: [SITE_A.privatePem] });
    const edited = signed.manifestText.replace('"1.1.0"', '"1.1.1"');
    await writeFile(join(signed.dir, 'manifest.json'), edited);
    const altered = await run('import', signed.dir, '--trust', trust);
    expect(altered.code).toBe(1);
    expect(altered.stderr).toMatch(/the manifest was altered or its signature is broken/);
    // Altered is refused even with no trusted keys at all.
    expect((await run('import', signed.dir)).stderr).toMatch(/the manifest was altered or its signature is broken/);

    const unsigned = await writeBundle(join(work, 'unsigned'), { items: fullState() });
    const u = await run('import', unsigned.dir, '--trust', trust);
    expect(u.code).toBe(1);
    expect(u.stderr).toMatch(/the bundle is unsigned, and this mirror imports only bundles signed by a trusted key/);

    const stranger = await writeBundle(join(work, 'stranger'), { items: fullState(), signWith: [STRANGER.privatePem] });
    const s = await run('import', stranger.dir, '--trust', trust);
    expect(s.code).toBe(1);
    expect(s.stderr).toMatch(/the bundle is not signed by a trusted key: it is signed by "[0-9a-f]{16}"/);

    for (const message of [altered.stderr, u.stderr, s.stderr]) expect([altered.stderr, u.stderr, s.stderr].filter((m) => m === message)).toHaveLength(1);
    // Nothing was written: no blob, no record.
    expect(await filesUnder(join(data, 'archives', 'sha256')).catch(() => [])).toEqual([]);
    expect(await readdir(data)).not.toContain('imports');
  });

  it('trust from the import.trustedKeys setting (a folder of .pub files), as from --trust', async () => {
    const config = join(work, 'config.json');
    await writeFile(config, JSON.stringify({ import: { trustedKeys: [trust] } }));
    const unsigned = await writeBundle(join(work, 'unsigned'), { items: fullState() });
    expect((await run('import', unsigned.dir, '--config', config)).stderr).toMatch(/the bundle is unsigned/);
    const signed = await writeBundle(join(work, 'signed'), { items: fullState(), signWith: [STRANGER.privatePem, SITE_A.privatePem] });
    expect((await importJson(signed.dir, '--config', config)).summary).toMatchObject({ status: 'complete' });
  });

  it('refuses an unknown format version', async () => {
    const bundle = await writeBundle(join(work, 'b'), { items: fullState() });
    await writeFile(join(bundle.dir, 'manifest.json'), bundle.manifestText.replace('"format": 1', '"format": 2'));
    const r = await run('import', bundle.dir);
    expect([r.code, r.stderr]).toEqual([1, expect.stringMatching(/unknown bundle format 2: this srm-mirror reads format 1; upgrade it/)]);
  });

  it('one byte flipped in a volume: that blob is refused, the version needing it stays invisible, the rest is imported', async () => {
    const items = fullState();
    const bundle = await writeBundle(join(work, 'b'), { items, signWith: [SITE_A.privatePem] });
    const volume = join(bundle.dir, bundle.volumes[0]!);
    const bytes = await readFile(volume);
    const at = bytes.indexOf(FC3_110.subarray(5000, 5064)) + 10; // inside fc3@1.1.0's zip
    bytes[at] = bytes[at]! ^ 0xff;
    await writeFile(volume, bytes);

    const r = await importJson(bundle.dir, '--trust', trust);
    expect(r.code).toBe(0);
    expect(r.summary).toMatchObject({ status: 'partial', added: { cached: 2, hosted: 1, generic: 1 }, volumes: { damaged: [bundle.volumes[0]] } });
    expect(r.summary!.refusedBlobs).toEqual([{ volume: 'vol-0001.tar', entry: `"blobs/sha256/${sha256(FC3_110)}"`, reason: expect.stringMatching(/sha256/) }]);
    expect(r.summary!.notImported).toEqual([{ entry: 'cached:fc3@1.1.0', reason: expect.stringMatching(/^its blob was refused/) }]);
    expect(r.notes.join('\n')).toMatch(/vol-0001\.tar is \d+ bytes with sha256 [0-9a-f]{64}, the manifest says .*damaged or altered/);

    const m = await serve();
    expect(body(await get(`${m.url}/v3/packages/fc3/release/latest`)).tag_name).toBe('1.0.0');
    expect((await get(`${m.url}/v3/packages/fc3/release/tags/1.1.0`)).status).toBe(404);
    expect((await get(`${m.url}/v3/packages/fc3/zipball/1.1.0`)).status).toBe(404);
    expect(sha256((await get(`${m.url}/v3/packages/fc3/zipball/1.0.0`)).body)).toBe(sha256(FC3_100));
  });
});

describe('hostile volumes', () => {
  it('refuses tar entries that are not blobs (../x, /etc/x, links, folders), unlisted, duplicate or mis-sized ones; nothing lands outside the stores', async () => {
    expect(existsSync('/etc/x')).toBe(false);
    const items = fullState();
    const text = (s: string) => Buffer.from(s);
    const toolEntry = `blobs/sha256/${sha256(TOOL)}`;
    const bundle = await writeBundle(join(work, 'b'), {
      items,
      signWith: [SITE_A.privatePem],
      raw: [
        { volume: 0, header: { name: '../x', size: 3 }, data: text('bad') },
        { volume: 0, header: { name: '/etc/x', size: 3 }, data: text('bad') },
        { volume: 0, header: { name: `blobs/sha256/${sha256(text('a link'))}`, type: 'symlink', linkname: '/etc/passwd' } },
        { volume: 0, header: { name: `blobs/sha256/${sha256(text('a hard link'))}`, type: 'link', linkname: '../../x' } },
        { volume: 0, header: { name: 'blobs/sha256/', type: 'directory' } },
        { volume: 0, header: { name: `blobs/sha256/${sha256(text('unlisted'))}`, size: 8 }, data: text('unlisted') },
        { volume: 0, header: { name: `blobs/sha256/${sha256(DOMAIN)}`, size: 5 }, data: text('short') },
        // A good copy of a listed blob first: it is read, and the exporter's own entry after it is a duplicate.
        { volume: 0, header: { name: toolEntry, size: TOOL.length }, data: TOOL },
      ],
    });
    const r = await importJson(bundle.dir, '--trust', trust);
    expect(r.code).toBe(0);
    const refused = r.summary!.refusedBlobs as Array<{ entry: string; reason: string }>;
    expect(refused.map((x) => [JSON.parse(x.entry) as string, x.reason])).toEqual([
      ['../x', 'not a blobs/sha256/<64 hex> name'],
      ['/etc/x', 'not a blobs/sha256/<64 hex> name'],
      [`blobs/sha256/${sha256(text('a link'))}`, 'a symlink entry: only files are read'],
      [`blobs/sha256/${sha256(text('a hard link'))}`, 'a link entry: only files are read'],
      ['blobs/sha256/', 'a directory entry: only files are read'],
      [`blobs/sha256/${sha256(text('unlisted'))}`, 'a blob the manifest does not list for this volume'],
      [`blobs/sha256/${sha256(DOMAIN)}`, `5 bytes, the manifest says ${DOMAIN.length}`],
      [`blobs/sha256/${sha256(DOMAIN)}`, 'a second entry of that name'],
      [toolEntry, 'a second entry of that name'],
    ]);
    // The exporter's entry of fc3-domain came after the mis-sized one, under the same name: a duplicate too.
    expect(r.summary).toMatchObject({ status: 'partial', added: { cached: 2, hosted: 1, generic: 1 } });
    expect(existsSync('/etc/x')).toBe(false);
    expect(await filesUnder(work)).toEqual(['b/manifest.json', 'b/manifest.sig', 'b/vol-0001.tar', 'trusted/site-a.pub']);
    expect(existsSync(join(data, '..', 'x'))).toBe(false);
    for (const f of await filesUnder(data)) expect(f).toMatch(/^(meta|archives\/sha256|hosted\/sha256|imports)\//);
  });

  it('a bundle id is never a path: an id that is not plain is recorded under its sha256', async () => {
    const bundle = await writeBundle(join(work, 'b'), { id: '../../evil', items: [cached('fc3', '1.0.0', FC3_100)] });
    expect((await importJson(bundle.dir)).summary).toMatchObject({ bundle: '../../evil', status: 'complete' });
    expect(await readdir(join(data, 'imports'))).toEqual([`sha256-${sha256(Buffer.from('../../evil'))}.json`]);
    expect(existsSync(join(data, '..', '..', 'evil.json'))).toBe(false);
  });

  it('a blob the manifest lists for a volume that does not hold it: its entry is reported, the rest imported', async () => {
    const lost = cached('fc3', '1.1.0', FC3_110);
    const bundle = await writeBundle(join(work, 'b'), { items: [cached('fc3', '1.0.0', FC3_100), { ...lost, carried: false }], extraListed: [{ digest: lost.entry.digest, size: lost.entry.size, volume: 0 }] });
    const r = await importJson(bundle.dir);
    expect(r.summary).toMatchObject({ status: 'partial', added: { cached: 1 }, notImported: [{ entry: 'cached:fc3@1.1.0', reason: 'its blob is listed for vol-0001.tar but is not in it' }] });
  });

  it('a volume cut short: the blobs before the cut are kept, the rest waits for a good copy', async () => {
    const bundle = await writeBundle(join(work, 'b'), { items: fullState() });
    const volume = join(bundle.dir, bundle.volumes[0]!);
    const bytes = await readFile(volume);
    await writeFile(volume, bytes.subarray(0, bytes.indexOf(CORP.subarray(0, 64)) + 1000)); // in the middle of corp-tool's zip
    const r = await importJson(bundle.dir);
    expect(r.code).toBe(0);
    expect(r.summary).toMatchObject({ status: 'partial', added: { cached: 3, hosted: 0, generic: 0 }, volumes: { damaged: ['vol-0001.tar'] } });
    expect(r.notes.join('\n')).toMatch(/vol-0001\.tar could not be read to its end/);
    expect(r.summary!.notImported).toEqual([
      { entry: 'hosted:corp-tool@1.0.0', reason: 'its blob was not found in vol-0001.tar, which is damaged' },
      { entry: 'generic:alice/tool/1.4.2/tool-linux-amd64', reason: 'its blob was not found in vol-0001.tar, which is damaged' },
    ]);
    expect(await readdir(join(data, 'hosted', 'tmp'))).toEqual([]);
    await writeFile(volume, bytes); // the good copy
    expect((await importJson(bundle.dir)).summary).toMatchObject({ status: 'complete', added: { cached: 0, hosted: 1, generic: 1 }, unchanged: 3 });
  });
});

describe('volumes from separate media', () => {
  it('one volume per run, in any order: partial with what is pending, then complete', async () => {
    const full = await writeBundle(join(work, 'full'), { id: 'media', items: fullState(), volumes: 3, signWith: [SITE_A.privatePem] });
    /** The bundle as one medium brings it: the manifest, its signature, and one volume. */
    const medium = async (volume: string) => {
      const dir = join(work, volume.replace('.tar', ''));
      await mkdir(dir);
      for (const f of ['manifest.json', 'manifest.sig', volume]) await copyFile(join(full.dir, f), join(dir, f));
      return dir;
    };
    const visible = async () => {
      const m = await serve();
      const paths = ['fc3/release/tags/1.0.0', 'fc3/release/tags/1.1.0', 'fc3-domain/release/tags/0.0.9', 'corp-tool/release/tags/1.0.0'];
      const seen = [];
      for (const p of paths) if ((await get(`${m.url}/v3/packages/${p}`)).status === 200) seen.push(p.replace('/release/tags/', '@'));
      if ((await get(`${m.url}/api/packages/alice/generic/tool/1.4.2/tool-linux-amd64`)).status === 200) seen.push('tool');
      await m.close();
      mirrors.splice(mirrors.indexOf(m), 1);
      return seen;
    };

    // Blobs are dealt round-robin: vol-0001 fc3@1.0.0 and corp-tool, vol-0002 fc3@1.1.0 and the tool, vol-0003 fc3-domain.
    const third = await importJson(await medium('vol-0003.tar'), '--trust', trust);
    expect(third.summary).toMatchObject({ status: 'partial', waiting: 4, volumes: { total: 3, read: ['vol-0003.tar'], pending: ['vol-0001.tar', 'vol-0002.tar'] } });
    expect(third.notes).toContain('2 of 3 volumes pending: vol-0001.tar, vol-0002.tar (import again with them; what is here stays)');
    expect(await visible()).toEqual(['fc3-domain@0.0.9']);

    const first = await importJson(await medium('vol-0001.tar'), '--trust', trust);
    expect(first.summary).toMatchObject({ status: 'partial', unchanged: 1, volumes: { read: ['vol-0001.tar'], pending: ['vol-0002.tar'] } });
    expect(first.notes).toContain('1 of 3 volumes pending: vol-0002.tar (import again with them; what is here stays)');
    expect(await visible()).toEqual(['fc3@1.0.0', 'fc3-domain@0.0.9', 'corp-tool@1.0.0']);

    const second = await importJson(await medium('vol-0002.tar'), '--trust', trust);
    expect(second.summary).toMatchObject({ status: 'complete', added: { cached: 1, hosted: 0, generic: 1 }, unchanged: 3, volumes: { pending: [] } });
    expect(await visible()).toEqual(['fc3@1.0.0', 'fc3@1.1.0', 'fc3-domain@0.0.9', 'corp-tool@1.0.0', 'tool']);
    const record = JSON.parse(await readFile(join(data, 'imports', 'media.json'), 'utf8')) as Record<string, unknown>;
    expect(record).toMatchObject({ bundle: 'media', status: 'complete', volumesDone: ['vol-0001.tar', 'vol-0002.tar', 'vol-0003.tar'], entriesPresent: 5 });
  });
});

describe('conflicts', () => {
  it('a version here with other bytes is reported and never overwritten, whatever its kind; the rest is imported', async () => {
    const first = await writeBundle(join(work, 'first'), { items: fullState() });
    expect((await importJson(first.dir)).code).toBe(0);
    const other = (name: string, version: string) => componentZip(name, version, { payload: randomBytes(5_000) });
    const second = await writeBundle(join(work, 'second'), {
      items: [
        cached('fc3', '1.0.0', other('fc3', '1.0.0')),
        hosted('corp-tool', '1.0.0', other('corp-tool', '1.0.0')),
        hosted('corp-tool', '2.0.0', other('corp-tool', '2.0.0'), 'bob'),
        cached('corp-tool', '3.0.0', other('corp-tool', '3.0.0')),
        generic('alice', 'tool', '1.4.2', 'tool-linux-amd64', randomBytes(100)),
        cached('fc3', '1.2.0', other('fc3', '1.2.0')),
      ],
    });
    const r = await importJson(second.dir);
    expect(r.code).toBe(0);
    expect(r.summary).toMatchObject({ status: 'complete', added: { cached: 1, hosted: 0, generic: 0 } });
    expect(r.summary!.conflicts).toEqual([
      { entry: 'cached:fc3@1.0.0', reason: `the mirror has fc3@1.0.0 as sha256 ${sha256(FC3_100)}` },
      { entry: 'hosted:corp-tool@1.0.0', reason: `corp-tool@1.0.0 is published here as sha256 ${sha256(CORP)}` },
      { entry: 'hosted:corp-tool@2.0.0', reason: 'corp-tool is owned by alice here, not by bob' },
      { entry: 'cached:corp-tool@3.0.0', reason: 'corp-tool is hosted on this mirror, not cached' },
      { entry: 'generic:alice/tool/1.4.2/tool-linux-amd64', reason: `tool-linux-amd64 of alice/tool 1.4.2 is here as sha256 ${sha256(TOOL)}` },
    ]);
    expect(r.notes.filter((n) => n.startsWith('conflict: '))).toHaveLength(5);
    const m = await serve();
    expect(sha256((await get(`${m.url}/v3/packages/fc3/zipball/1.0.0`)).body)).toBe(sha256(FC3_100));
    expect(sha256((await get(`${m.url}/v3/packages/corp-tool/zipball/1.0.0`)).body)).toBe(sha256(CORP));
    expect((await get(`${m.url}/v3/packages/corp-tool/release/tags/2.0.0`)).status).toBe(404);
    expect(sha256((await get(`${m.url}/api/packages/alice/generic/tool/1.4.2/tool-linux-amd64`)).body)).toBe(sha256(TOOL));
    expect(body(await get(`${m.url}/v3/packages/fc3/release/latest`)).tag_name).toBe('1.2.0');
  });
});

describe('incremental bundles', () => {
  const baseItems = (): Item[] => [cached('fc3', '1.0.0', FC3_100), hosted('corp-tool', '1.0.0', CORP), generic('alice', 'tool', '1.4.2', 'tool-linux-amd64', TOOL)];
  const incremental = () =>
    writeBundle(join(work, 'inc'), {
      id: 'inc-2',
      base: 'base-1',
      items: [...baseItems().map((i) => ({ ...i, carried: false })), cached('fc3', '1.1.0', FC3_110), cached('fc3-domain', '0.0.9', DOMAIN)],
    });

  it('whose base content is missing here fails listing it; --allow-partial imports the rest; the base, imported later, completes it', async () => {
    const inc = await incremental();
    const refused = await run('import', inc.dir);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('(was its base bundle "base-1" imported here?)');
    for (const id of ['cached:fc3@1.0.0', 'hosted:corp-tool@1.0.0', 'generic:alice/tool/1.4.2/tool-linux-amd64']) expect(refused.stderr).toContain(`"${id}"`);
    expect(refused.stderr).toMatch(/--allow-partial/);
    expect(await filesUnder(join(data, 'archives', 'sha256'))).toEqual([]);

    const partial = await importJson(inc.dir, '--allow-partial');
    expect(partial.code).toBe(0);
    expect(partial.summary).toMatchObject({ status: 'partial', added: { cached: 2, hosted: 0, generic: 0 } });
    expect((partial.summary!.notImported as Array<{ entry: string }>).map((p) => p.entry)).toEqual(['cached:fc3@1.0.0', 'hosted:corp-tool@1.0.0', 'generic:alice/tool/1.4.2/tool-linux-amd64']);
    const m = await serve();
    expect(body(await get(`${m.url}/v3/packages/fc3/release/latest`)).tag_name).toBe('1.1.0');
    expect((await get(`${m.url}/v3/packages/fc3/zipball/1.0.0`)).status).toBe(404);
    await m.close();
    mirrors.pop();

    const base = await writeBundle(join(work, 'base'), { id: 'base-1', items: baseItems() });
    expect((await importJson(base.dir)).summary).toMatchObject({ status: 'complete', added: { cached: 1, hosted: 1, generic: 1 } });
    expect((await importJson(inc.dir)).summary).toMatchObject({ status: 'complete', added: { cached: 0, hosted: 0, generic: 0 }, unchanged: 5 });
  });

  it('deletions apply: cached versions go; hosted ones only while they are what the base had, else they are kept and reported', async () => {
    const base = await writeBundle(join(work, 'base'), { id: 'base-1', items: [...baseItems(), cached('fc3', '1.1.0', FC3_110), generic('alice', 'tool', '1.4.2', 'notes.txt', Buffer.from('v1'))] });
    expect((await importJson(base.dir)).summary).toMatchObject({ status: 'complete' });
    // Here, notes.txt is replaced after the base was imported.
    const m = await serve();
    const secret = await m.mirror.users.add('alice', 'publisher');
    recordSecrets(secret);
    const auth = { authorization: `Basic ${Buffer.from(`alice:${secret}`).toString('base64')}` };
    const notes = `${m.url}/api/packages/alice/generic/tool/1.4.2/notes.txt`;
    expect((await request(notes, { method: 'DELETE', headers: auth })).statusCode).toBe(204);
    const put = await request(notes, { method: 'PUT', headers: auth, body: 'v2, written here' });
    await put.body.dump();
    expect(put.statusCode).toBe(201);
    await m.close();
    mirrors.pop();

    const inc = await writeBundle(join(work, 'inc'), {
      id: 'inc-2',
      base: 'base-1',
      items: [{ ...cached('fc3', '1.1.0', FC3_110), carried: false }],
      deletions: ['cached:fc3@1.0.0', 'hosted:corp-tool@1.0.0', 'generic:alice/tool/1.4.2/tool-linux-amd64', 'generic:alice/tool/1.4.2/notes.txt'],
    });
    const r = await importJson(inc.dir);
    expect(r.summary).toMatchObject({ status: 'complete', unchanged: 1, deletions: { applied: 3, kept: [{ entry: 'generic:alice/tool/1.4.2/notes.txt', reason: 'it changed here since the base bundle' }] } });
    const after = await serve();
    expect((await get(`${after.url}/v3/packages/fc3/release/tags/1.0.0`)).status).toBe(404);
    expect((await get(`${after.url}/v3/packages/fc3/zipball/1.0.0`)).status).toBe(404);
    expect((await get(`${after.url}/v3/packages/corp-tool/release/tags/1.0.0`)).status).toBe(404);
    expect((await get(`${after.url}/api/packages/alice/generic/tool/1.4.2/tool-linux-amd64`)).status).toBe(404);
    expect((await get(`${after.url}/api/packages/alice/generic/tool/1.4.2/notes.txt`)).body.toString()).toBe('v2, written here');
    expect(body(await get(`${after.url}/v3/packages/fc3/release/latest`)).tag_name).toBe('1.1.0');
  });
});

describe('dry runs and free space', () => {
  it('a dry run reports new, unchanged and conflicting versions, missing volumes and the space needed, and writes nothing', async () => {
    const first = await writeBundle(join(work, 'first'), { items: [cached('fc3', '1.0.0', componentZip('fc3', '1.0.0', { payload: randomBytes(100) })), cached('fc3-domain', '0.0.9', DOMAIN)] });
    await importJson(first.dir);
    const before = (await filesUnder(data)).filter((f) => !f.startsWith('meta/'));
    const bundle = await writeBundle(join(work, 'b'), { items: fullState(), volumes: 3 });
    await rm(join(bundle.dir, 'vol-0002.tar'));
    const r = await importJson(bundle.dir, '--dry-run');
    expect(r.code).toBe(0);
    expect(r.summary).toMatchObject({
      dryRun: true,
      status: 'partial',
      new: { cached: 1, hosted: 1, generic: 1 },
      unchanged: 1,
      conflicts: [{ entry: 'cached:fc3@1.0.0', reason: expect.stringMatching(/^the mirror has fc3@1\.0\.0 as sha256/) }],
      waiting: 2,
      volumes: { total: 3, present: 2, pending: ['vol-0002.tar'] },
      blobs: 1, // fc3@1.0.0 is a conflict and fc3-domain is here: of vol-0001 and vol-0003, only corp-tool
      bytes: CORP.length,
      bytesNeeded: Math.ceil(CORP.length * 1.01) + 64 * 2 ** 20,
    });
    expect(r.summary!.freeBytes).toBeGreaterThan(0);
    expect((await filesUnder(data)).filter((f) => !f.startsWith('meta/'))).toEqual(before);
    const m = await serve();
    expect((await get(`${m.url}/v3/packages/corp-tool/release/latest`)).status).toBe(404);
  });

  // The check reads statfs of the data folder (every other test runs it for real, on a disk with room). A small disk
  // is simulated by injecting the free-bytes reading the composition root hands the import.
  it('refuses to start when the disk lacks room for the blobs plus a margin, saying how much; a dry run says so too', async () => {
    const bundle = await writeBundle(join(work, 'b'), { items: fullState() });
    const config = loadConfig({ flags: { data, offline: true, upstream: DEAD_UPSTREAM }, env: {} });
    const quiet = createLogger('error', { write: () => {} });
    const blobBytes = fullState().reduce((n, i) => n + i.bytes.length, 0);
    const small = await createMirror(config, quiet, { role: 'command', freeBytes: async () => 64 * 2 ** 20 + blobBytes }); // the margin's 1 % short
    try {
      await expect(small.importBundle(bundle.dir, {}, () => {})).rejects.toThrow(
        `it writes ${formatBytes(blobBytes)} of blobs and keeps 67.1 MB free besides, 67.2 MB in all, and 67.2 MB are free. Free some space, or import fewer volumes`,
      );
      const notes: string[] = [];
      await small.importBundle(bundle.dir, { dryRun: true }, (e) => void (e.type === 'note' && notes.push(e.message)));
      expect(notes).toContain('not enough free space: a run would need 67.2 MB, 67.2 MB are free');
    } finally {
      await small.close();
    }
    expect(await filesUnder(join(data, 'archives', 'sha256'))).toEqual([]);
    expect(await readdir(data)).not.toContain('imports');
    const roomy = await createMirror(config, quiet, { role: 'command', freeBytes: async () => 64 * 2 ** 20 + blobBytes * 2 });
    try {
      expect(await roomy.importBundle(bundle.dir, {}, () => {})).toMatchObject({ status: 'complete' });
    } finally {
      await roomy.close();
    }
  });
});

describe('srm-mirror import, misused', () => {
  it('exits 2 with the usage: no folder, two folders, an unusable --trust; 1 for a folder that is no bundle', async () => {
    for (const args of [['import'], ['import', 'a', 'b'], ['import', work, '--trust', join(work, 'nowhere')]]) {
      const r = await run(...args);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^srm-mirror import: .*\nusage: srm-mirror import DIR \[--trust DIR\]/);
    }
    expect((await run('import', work, '--trust', join(work, 'nowhere'))).stderr).toMatch(/--trust: .*nowhere: no such file or folder/);
    const none = await run('import', work);
    expect([none.code, none.stderr]).toEqual([1, expect.stringMatching(/holds no manifest\.json: not a bundle, or an export still under way/)]);
  });
});
