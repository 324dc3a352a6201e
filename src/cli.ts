// The command line: `srm-mirror serve | prefetch | status | verify | repair | gc | user | export | keygen | bundle | migrate-metadata`, each taking the config
// flags. The cache commands work on the data folder directly; while a server holds it they refuse, saying what to
// do instead. `user` edits only the users file, which a running server rereads, so it works beside one.
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createMirror, type Mirror, type MirrorStatus, type VerifyReport } from './app.js';
import type { ExportRequest } from './bundles/export.js';
import { inspectBundle, type BundleReport } from './bundles/inspect.js';
import { newKeyPair } from './bundles/manifest.js';
import { formatBytes, printer, type BundleEvent, type OnEvent } from './bundles/progress.js';
import { readTrustedKeys, trustedKeyFiles } from './bundles/trust.js';
import { ConfigError, loadConfig, parsePostgresUrl, parseSize, redactUrl, SETTINGS, type Config } from './config/config.js';
import { Users, type Role } from './core/hosted/users.js';
import { loadOrCreateCa } from './intercept/certificates.js';
import { parseTarget, type PrefetchProgress, type PrefetchSummary } from './jobs/prefetch.js';
import { createLogger, stderrDestination } from './log.js';
import { MirrorError } from './model/errors.js';
import { srmPackage, version as validVersion } from './model/validate.js';
import { startServer } from './server.js';
import { copyMetadata, countRecords } from './stores/copy-metadata.js';
import { DataFolderLockedError, LevelMetadataStore, MetadataDamagedError } from './stores/metadata-store.js';
import { repairMetadata } from './stores/schema.js';

type Flags = Record<string, string | boolean | undefined>;

interface Command {
  readonly summary: string;
  readonly usage: string;
  /** Options of this command besides the config flags. */
  readonly options: Record<string, { type: 'boolean' | 'string'; help: string }>;
  readonly positionals?: boolean;
  run(config: Config, flags: Flags, args: string[], out: Output): Promise<number>;
}

export interface Output {
  readonly isTTY: boolean;
  write(text: string): void;
  error(text: string): void;
}

const COMMANDS: Record<string, Command> = {
  serve: {
    summary: 'run the mirror',
    usage: 'srm-mirror serve [options]',
    options: {},
    async run(config) {
      const log = createLogger(config.logLevel, stderrDestination());
      const running = await startServer(config, log);
      const signal = await new Promise<string>((resolve) => {
        process.once('SIGTERM', () => resolve('SIGTERM'));
        process.once('SIGINT', () => resolve('SIGINT'));
      });
      log.info('shutting down', { signal });
      await running.close();
      return 0;
    },
  },
  prefetch: {
    summary: 'warm the cache now: the named packages, or every followed one',
    usage: 'srm-mirror prefetch [NAME[@VERSION]...] [--from-file list.txt] [--all-versions] [options]',
    options: {
      'from-file': { type: 'string', help: 'read more NAME[@VERSION] lines from a file (# starts a comment)' },
      'all-versions': { type: 'boolean', help: 'every version of each package, not only the newest' },
    },
    positionals: true,
    async run(config, flags, args, out) {
      const specs = [...args];
      if (typeof flags['from-file'] === 'string') {
        const text = await readFile(flags['from-file'], 'utf8');
        specs.push(...text.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean));
      }
      const targets = specs.map((spec) => {
        const t = parseTarget(spec);
        srmPackage(t.name);
        if (t.version !== undefined) validVersion(t.version);
        return t;
      });
      return withMirror(config, async (mirror) => {
        const list = targets.length ? targets : mirror.prefetchTargets();
        if (list.length === 0) {
          out.write('nothing to prefetch: name packages, or configure prefetch.packages\n');
          return 0;
        }
        const progress = out.isTTY ? progressBar(out) : plainProgress(out);
        const summary = await mirror.prefetcher.run(list, { trigger: 'cli', allVersions: flags['all-versions'] === true, onProgress: progress });
        if (out.isTTY) out.write('\n');
        out.write(describeRun(summary) + '\n');
        return summary.failures.length ? 1 : 0;
      });
    },
  },
  status: {
    summary: 'packages, versions, archives, bytes on disk, quota, hosted content and the last prefetch run',
    usage: 'srm-mirror status [--json] [options]',
    options: { json: { type: 'boolean', help: 'print JSON (the same as GET /-/status)' } },
    async run(config, flags, _args, out) {
      return withMirror(config, async (mirror) => {
        const s = await mirror.status();
        if (flags.json) {
          out.write(`${JSON.stringify(s, null, 2)}\n`);
          return 0;
        }
        const { metadata, archives, hosted, prefetch } = s;
        const quota = archives.quota.maxBytes ? `${size(archives.quota.maxBytes)} quota` : 'no quota';
        const components = hosted.components ? `${hosted.components.packages} component(s), ${hosted.components.versions} version(s)` : 'components unreadable';
        const generic = hosted.generic ? `${hosted.generic.packages} generic package(s), ${hosted.generic.versions} version(s), ${hosted.generic.files} file(s)` : 'generic packages unreadable';
        out.write(
          [
            `data folder    ${config.dataDir}`,
            `packages       ${metadata.packages} known, ${prefetch.followed} followed`,
            `versions       ${metadata.versions} with metadata`,
            `archives       ${archives.quota.archives}, ${size(archives.quota.usedBytes)} on disk (${quota})`,
            `hosted         ${components}; ${generic}; ${hosted.blobs} blob(s), ${size(hosted.bytes)} on disk`,
            `last prefetch  ${prefetch.lastRun ? describeRun(prefetch.lastRun) : 'never'}`,
          ].join('\n') + '\n',
        );
        return 0;
      });
    },
  },
  verify: {
    summary: 'rehash every archive; report corrupt archives (dropped), orphaned archives, missing files and leftovers',
    usage: 'srm-mirror verify [--repair] [options]',
    options: { repair: { type: 'boolean', help: 'also remove orphaned archives, versions whose file is missing, and leftover temp files' } },
    async run(config, flags, _args, out) {
      const repair = flags.repair === true;
      let report: VerifyReport;
      try {
        report = await withMirror(config, (mirror) => mirror.verifyNow('cli', repair));
      } catch (err) {
        if (!(err instanceof DataFolderLockedError)) throw err;
        out.write('a server holds the data folder: asking it to verify (at its scrub rate)\n');
        report = await askServerToVerify(config, repair);
      }
      for (const digest of report.corrupt) out.write(`dropped corrupt archive: ${digest} (fetched again on the next request)\n`);
      const problems: Array<[string, string[]]> = [
        ['archive no version points at', report.unreferenced],
        ['version whose archive is missing', report.missing],
        ['leftover temp file', report.tempFiles],
      ];
      out.write(`checked ${report.archives} archives (${size(report.bytes)})\n`);
      for (const [what, items] of problems) for (const item of items) out.write(`${repair ? 'removed' : 'found'} ${what}: ${item}\n`);
      const count = problems.reduce((n, [, items]) => n + items.length, report.corrupt.length);
      // Hosted files exist nowhere else: a corrupt one is never removed, and no --repair fixes it.
      out.write(`checked ${report.hosted.checked} hosted file(s)\n`);
      for (const digest of report.hosted.corrupt) out.write(`CORRUPT hosted file (kept, answered 500; restore it from a backup): ${digest}\n`);
      out.write(count === 0 ? 'all good\n' : repair ? `repaired ${count} problem(s)\n` : `${count} problem(s); run with --repair to remove them\n`);
      return (count > 0 && !repair) || report.hosted.corrupt.length > 0 ? 1 : 0;
    },
  },
  repair: {
    summary: 'after a lost or damaged metadata database: repair it, and rebuild the archive index from the archives',
    usage: 'srm-mirror repair [options]',
    options: {},
    async run(config, _flags, _args, out) {
      const engine = config.databaseUrl === undefined ? await repairMetadata(join(config.dataDir, 'meta')) : undefined;
      if (!engine) out.write('the metadata is on PostgreSQL (its own recovery applies there): rebuilding the archive index only\n');
      else if (!engine.found) out.write('no metadata database: a new one is made, and the archive index rebuilt from the archives\n');
      else {
        const records = Object.values(engine.records).reduce((n, c) => n + c, 0);
        out.write(`metadata database repaired: ${records} record(s) readable${engine.setAside.length ? `, ${engine.setAside.length} damaged file(s) set aside in meta/lost` : ''}\n`);
      }
      return withMirror(config, async (mirror) => {
        const r = await mirror.rebuildArchiveIndex();
        out.write(`archives: ${r.archives}, ${r.indexed} already indexed, ${r.recovered.length} recovered from their publish.yaml\n`);
        for (const id of r.recovered) out.write(`recovered ${id}\n`);
        for (const id of r.forgotten) out.write(`forgot ${id}: its archive file is gone (fetched again when online)\n`);
        for (const q of r.quarantined) out.write(`quarantined ${q.digest}: ${q.reason}\n`);
        out.write('the archive index is intact again\n');
        return 0;
      });
    },
  },
  'migrate-metadata': {
    summary: "copy this data folder's LevelDB metadata into PostgreSQL (mirror stopped), then serve with --database-url",
    usage: 'srm-mirror migrate-metadata --to postgres://USER:PASSWORD@HOST/DB [--force] [options]',
    options: {
      to: { type: 'string', help: 'the PostgreSQL database to copy into (postgres:// or postgresql://)' },
      force: { type: 'boolean', help: 'replace what that database already holds (without it, a database with metadata is refused)' },
    },
    run: migrateMetadata,
  },
  gc: {
    summary: 'remove archives no version points at and apply the disk quota, now',
    usage: 'srm-mirror gc [--quarantine] [options]',
    options: { quarantine: { type: 'boolean', help: 'also delete the archives `repair` put in quarantine' } },
    async run(config, flags, _args, out) {
      return withMirror(config, async (mirror) => {
        if (!mirror.archives.reclaimer.indexIntact) out.write('the archive index is not known to be intact: nothing is collected until `srm-mirror repair` has run\n');
        const { unreferenced, evicted } = await mirror.archives.reclaimer.enforce();
        const quarantined = flags.quarantine === true ? await mirror.archives.emptyQuarantine() : { removed: 0, bytes: 0 };
        const q = mirror.archives.status().quota;
        out.write(
          `removed ${unreferenced.removed} unreferenced archive(s) (${size(unreferenced.bytes)}), ` +
            `evicted ${evicted.removed} (${size(evicted.bytes)}), deleted ${quarantined.removed} quarantined (${size(quarantined.bytes)}); ` +
            `${size(q.usedBytes)} in ${q.archives} archives${q.maxBytes ? ` of a ${size(q.maxBytes)} quota` : ''}\n`,
        );
        return 0;
      });
    },
  },
  import: {
    summary: 'import a bundle (signature first; resumable: run it again, e.g. with the next medium\'s volumes)',
    usage: 'srm-mirror import DIR [--trust DIR] [--allow-partial] [--dry-run] [--json] [options]',
    options: {
      trust: { type: 'string', help: 'the public keys it must be signed by: a .pub file or a folder of them (instead of import.trustedKeys)' },
      'allow-partial': { type: 'boolean', help: 'import what can be when content the bundle needs is neither in it nor here' },
      'dry-run': { type: 'boolean', help: 'say what would be added, what conflicts, which volumes are missing and the space needed; write nothing' },
      json: { type: 'boolean', help: 'print the events as JSON lines, the summary last' },
    },
    positionals: true,
    run: importCommand,
  },
  user: {
    summary: 'the users of hosted packages: add one (its secret is printed once), list them, remove one, or give one a new secret',
    usage: 'srm-mirror user add NAME [--role reader|publisher|admin] | list | remove NAME | reset NAME [options]',
    options: { role: { type: 'string', help: 'with add: reader, publisher (the default) or admin' } },
    positionals: true,
    run: manageUsers,
  },
  // ---- air-gap bundles (issue 11): export side ----
  export: {
    summary: 'write a bundle of what the mirror holds (cached and hosted packages, generic files) for a mirror across an air gap',
    usage:
      'srm-mirror export --out DIR [NAME[@VERSION] | OWNER/NAME[@VERSION]...] [--packages A,B] [--from-file F] [--since last|ID] ' +
      '[--max-volume-size 4GB] [--sign-key KEY.pem] [--dry-run] [--json] [options]',
    options: {
      out: { type: 'string', help: 'the bundle folder: new or empty, or the same folder again to finish an interrupted export' },
      packages: { type: 'string', help: 'comma-separated NAME[@VERSION] (components) and OWNER/NAME[@VERSION] (generic packages); default: everything' },
      'from-file': { type: 'string', help: 'read more packages, one a line, from a file (# starts a comment)' },
      since: { type: 'string', help: 'last, or the id of an earlier export of this mirror: carry only the blobs new since it (and list the deletions)' },
      'max-volume-size': { type: 'string', help: 'split into volumes of at most this size, e.g. 4GB (default: one volume)' },
      'sign-key': { type: 'string', help: 'sign the manifest with this Ed25519 private key (see keygen)' },
      'dry-run': { type: 'boolean', help: 'count entries, blobs, bytes and volumes; write nothing' },
      json: { type: 'boolean', help: 'print the events as JSON lines' },
    },
    positionals: true,
    run: exportBundle,
  },
  keygen: {
    summary: 'make an Ed25519 key pair to sign bundles with: NAME.key (private, mode 0600) and NAME.pub',
    usage: 'srm-mirror keygen --out NAME',
    options: { out: { type: 'string', help: 'the path of the two files, without .key or .pub' } },
    run: keygen,
  },
  bundle: {
    summary: 'look at a bundle folder without importing it: its contents, the volumes present, who signed it',
    usage: 'srm-mirror bundle inspect DIR [--trust KEYS_DIR] [--json]',
    options: {
      trust: { type: 'string', help: 'a folder of trusted public keys (*.pub): say whether one of them signed' },
      json: { type: 'boolean', help: 'print the report as JSON' },
    },
    positionals: true,
    run: inspect,
  },
  // ---- end of air-gap bundles: export side ----
  // ---- proxy mode (issue 12, item 3) ----
  ca: {
    summary: "print proxy mode's CA certificate (made in the data folder if it is not there yet), for clients that verify",
    usage: 'srm-mirror ca [--out FILE] [options]',
    options: { out: { type: 'string', help: 'write it to this file instead of printing it' } },
    run: printCa,
  },
  // ---- end of proxy mode ----
};

/** `ca`: the CA that issues the certificate of the intercepted hosts (not the operator's intercept.cert). */
async function printCa(config: Config, flags: Flags, _args: string[], out: Output): Promise<number> {
  if (config.intercept.cert) {
    out.error('srm-mirror ca: intercept.cert is set: proxy mode presents that certificate; give clients the CA that issued it\n');
    return 1;
  }
  const { cert } = await loadOrCreateCa(config.dataDir);
  if (typeof flags.out !== 'string') {
    out.write(cert);
    return 0;
  }
  await writeFile(flags.out, cert);
  out.write(`wrote proxy mode's CA certificate to ${flags.out}\n`);
  return 0;
}

/**
 * `migrate-metadata --to URL`: copies the data folder's LevelDB metadata into PostgreSQL, the mirror stopped (LevelDB's
 * lock says so). Exit 0 copied, 1 refused (nothing to copy, or a database that holds metadata without --force), 2 usage.
 */
async function migrateMetadata(config: Config, flags: Flags, _args: string[], out: Output): Promise<number> {
  let url: string | undefined;
  try {
    url = parsePostgresUrl(flags.to, '--to');
  } catch (err) {
    out.error(`srm-mirror migrate-metadata: ${(err as Error).message}\n`);
    return 2;
  }
  if (url === undefined) {
    out.error('srm-mirror migrate-metadata: --to postgres://... is required (the database to copy into)\n');
    return 2;
  }
  const location = join(config.dataDir, 'meta');
  if (!(await readdir(location).then((files) => files.includes('CURRENT'), () => false))) {
    out.error(`srm-mirror migrate-metadata: there is no LevelDB metadata database in ${location}: nothing to copy\n`);
    return 1;
  }
  const from = await LevelMetadataStore.open(location); // its lock: refused while a mirror runs on this folder
  try {
    const { PostgresMetadataStore } = await import('./stores/postgres-metadata-store.js'); // pg only when wanted
    const to = await PostgresMetadataStore.open(url);
    try {
      const target = redactUrl(url);
      const held = await countRecords(to);
      if (held > 0 && flags.force !== true) {
        out.error(`srm-mirror migrate-metadata: ${target} already holds ${held} metadata record(s); nothing was copied. Give --force to replace them with this data folder's\n`);
        return 1;
      }
      const report = await copyMetadata(from, to, { replace: held > 0 });
      const total = Object.values(report.copied).reduce((n, c) => n + c, 0);
      const kinds = Object.entries(report.copied).map(([kind, n]) => `${kind} ${n}`).join(', ');
      if (report.removed) out.write(`removed the ${report.removed} record(s) ${target} held\n`);
      out.write(`copied ${total} record(s) from ${location} to ${target}${kinds ? ` (${kinds})` : ''}\n`);
      out.write(`now start the mirror with --database-url (the same --data folder keeps its archives)\n`);
      return 0;
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}

/**
 * `import DIR`: on a stopped mirror it imports itself; beside a running server (with the admin token) the server
 * imports, so that its answers include the new content at once. Exit 0 complete or partial, 1 refused, 2 usage.
 */
async function importCommand(config: Config, flags: Flags, args: string[], out: Output): Promise<number> {
  const misuse = (why: string) => {
    out.error(`srm-mirror import: ${why}\nusage: ${COMMANDS.import!.usage}\n`);
    return 2;
  };
  if (args.length !== 1) return misuse(args.length === 0 ? 'name the bundle\'s folder' : 'one bundle folder at a time');
  const dir = resolve(args[0]!); // the server may run elsewhere in the file system: an absolute path
  let trustedKeys: string[] | undefined;
  if (typeof flags.trust === 'string') {
    try {
      trustedKeys = readTrustedKeys(trustedKeyFiles([resolve(flags.trust)]));
    } catch (err) {
      return misuse(`--trust: ${(err as Error).message}`);
    }
  }
  const onEvent = printer(out, { json: flags.json === true });
  const options = { trustedKeys, allowPartial: flags['allow-partial'] === true, dryRun: flags['dry-run'] === true };
  try {
    await withMirror(config, (mirror) => mirror.importBundle(dir, options, onEvent));
  } catch (err) {
    if (!(err instanceof DataFolderLockedError) || !config.adminToken) throw err;
    onEvent({ type: 'note', message: 'a server holds the data folder: asking it to import' });
    await askServerStreaming(config, '/-/import', { dir, ...options }, onEvent);
  }
  return 0;
}

const USER_ACTIONS: Record<string, { takesName: boolean }> = { add: { takesName: true }, list: { takesName: false }, remove: { takesName: true }, reset: { takesName: true } };

async function manageUsers(config: Config, flags: Flags, args: string[], out: Output): Promise<number> {
  const [action, name, ...extra] = args;
  const misuse = (why: string) => {
    out.error(`srm-mirror user: ${why}\nusage: ${COMMANDS.user!.usage}\n`);
    return 2;
  };
  const spec = action === undefined ? undefined : USER_ACTIONS[action];
  if (!spec) return misuse(action === undefined ? 'say what to do: add, list, remove or reset' : `unknown action ${JSON.stringify(action)}`);
  if (spec.takesName && name === undefined) return misuse(`${action} needs a user name`);
  if (extra.length || (!spec.takesName && name !== undefined)) return misuse(`too many arguments for ${action}`);
  if (flags.role !== undefined && action !== 'add') return misuse('--role goes with add only');
  const users = await Users.open(config.dataDir, { log: createLogger('warn') });
  try {
    switch (action) {
      case 'add': {
        const role = (flags.role ?? 'publisher') as Role;
        const secret = await users.add(name!, role);
        out.write(`added ${name} (${role}). Its secret, shown this once only:\n\n  ${secret}\n\n${howToUse(name!, secret)}`);
        return 0;
      }
      case 'reset': {
        const secret = await users.reset(name!);
        out.write(`new secret of ${name} (the old one no longer works), shown this once only:\n\n  ${secret}\n\n${howToUse(name!, secret)}`);
        return 0;
      }
      case 'remove':
        if (!(await users.remove(name!))) throw new MirrorError('not-found', `no user ${JSON.stringify(name)}`);
        out.write(`removed ${name}: its secret no longer works\n`);
        return 0;
      default: {
        const list = await users.list();
        if (list.length === 0) out.write(`no users yet (${users.file}); add one with: srm-mirror user add NAME\n`);
        const width = Math.max(4, ...list.map((u) => u.name.length));
        if (list.length) out.write([`${'NAME'.padEnd(width)}  ROLE       CREATED`, ...list.map((u) => `${u.name.padEnd(width)}  ${u.role.padEnd(9)}  ${u.createdAt}`)].join('\n') + '\n');
        return 0;
      }
    }
  } catch (err) {
    if (err instanceof MirrorError && err.kind === 'bad-request') return misuse(err.message);
    if (err instanceof MirrorError && (err.kind === 'not-found' || err.kind === 'conflict')) {
      out.error(`srm-mirror user ${action}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

// ---- air-gap bundles (issue 11): export side ----

/** `export`: on the data folder, or through the running server that holds it (POST /-/export, admin token). */
async function exportBundle(config: Config, flags: Flags, args: string[], out: Output): Promise<number> {
  const misuse = (why: string) => {
    out.error(`srm-mirror export: ${why}\nusage: ${COMMANDS.export!.usage}\n`);
    return 2;
  };
  const packages = [...args, ...(typeof flags.packages === 'string' ? flags.packages.split(',') : [])];
  if (typeof flags['from-file'] === 'string') packages.push(...(await readFile(flags['from-file'], 'utf8')).split('\n').map((l) => l.replace(/#.*/, '')));
  let maxVolumeBytes: number | undefined;
  try {
    if (typeof flags['max-volume-size'] === 'string') maxVolumeBytes = parseSize(flags['max-volume-size'], '--max-volume-size');
  } catch (err) {
    if (err instanceof ConfigError) return misuse(err.message);
    throw err;
  }
  const dryRun = flags['dry-run'] === true;
  if (typeof flags.out !== 'string' && !dryRun) return misuse('say where the bundle goes: --out DIR');
  // Paths are resolved here: a server asked to do the export reads them on its host, from its own working folder.
  const request: ExportRequest = {
    out: typeof flags.out === 'string' ? resolve(flags.out) : undefined,
    packages: packages.map((p) => p.trim()).filter(Boolean),
    since: typeof flags.since === 'string' ? flags.since : undefined,
    maxVolumeBytes,
    signKey: typeof flags['sign-key'] === 'string' ? resolve(flags['sign-key']) : undefined,
    dryRun,
  };
  const onEvent = printer(out, { json: flags.json === true });
  try {
    await withMirror(config, (mirror) => mirror.exportBundle(request, onEvent));
  } catch (err) {
    if (err instanceof MirrorError && err.kind === 'bad-request') return misuse(err.message);
    if (!(err instanceof DataFolderLockedError)) throw err;
    if (!config.adminToken) {
      out.error(`srm-mirror export: the data folder ${config.dataDir} is in use by a running srm-mirror: give this command its --admin-token to have the server export, or stop it\n`);
      return 3;
    }
    out.error(`the data folder ${config.dataDir} is in use by a running srm-mirror: asking it to export (into ${request.out ?? 'nowhere: a dry run'} on its host)\n`);
    await askServerStreaming(config, '/-/export', request, onEvent);
  }
  return 0;
}

/** `keygen --out NAME`: NAME.key (private, 0600) and NAME.pub; never over an existing file. */
async function keygen(_config: Config, flags: Flags, _args: string[], out: Output): Promise<number> {
  if (typeof flags.out !== 'string' || flags.out === '') {
    out.error(`srm-mirror keygen: say where the keys go: --out NAME\nusage: ${COMMANDS.keygen!.usage}\n`);
    return 2;
  }
  const [privatePath, publicPath] = [`${flags.out}.key`, `${flags.out}.pub`];
  const pair = newKeyPair();
  try {
    // 'wx': refuses an existing file; the mode applies from creation, so the key is never readable by others.
    await writeFile(privatePath, pair.privatePem, { mode: 0o600, flag: 'wx' });
    await writeFile(publicPath, pair.publicPem, { mode: 0o644, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    out.error(`srm-mirror keygen: ${(err as NodeJS.ErrnoException).path} exists already: it is not overwritten (a lost signing key cannot be replaced by the same one)\n`);
    return 1;
  }
  out.write(
    `key id ${pair.keyId}\n` +
      `private key: ${privatePath} (mode 0600; signs bundles: srm-mirror export --sign-key ${privatePath})\n` +
      `public key:  ${publicPath} (give it to the importing site, into its folder of trusted keys)\n`,
  );
  return 0;
}

/** `bundle inspect DIR`: the manifest's summary, the volumes present, the signatures; exit 1 when not to be trusted. */
async function inspect(_config: Config, flags: Flags, args: string[], out: Output): Promise<number> {
  const [action, dir, ...extra] = args;
  if (action !== 'inspect' || dir === undefined || extra.length) {
    out.error(`srm-mirror bundle: ${action === 'inspect' ? 'name one bundle folder' : 'the only action is inspect'}\nusage: ${COMMANDS.bundle!.usage}\n`);
    return 2;
  }
  const trusted = typeof flags.trust === 'string' ? readTrustedKeys(trustedKeyFiles([flags.trust])) : [];
  const report = await inspectBundle(dir, trusted);
  const s = report.signature;
  // Not to be trusted: a signature that does not match; with trusted keys given, also no trusted key among the signers.
  const untrusted = s.status === 'invalid' || (typeof flags.trust === 'string' && (s.status === 'unsigned' || !s.trustedBy));
  if (flags.json) out.write(`${JSON.stringify(report, null, 2)}\n`);
  else out.write(describeBundle(report, typeof flags.trust === 'string'));
  return untrusted ? 1 : 0;
}

function describeBundle(r: BundleReport, trustGiven: boolean): string {
  const { volumes: v, signature: s } = r;
  const listed = (what: string, names: string[]) => (names.length ? `, ${names.length} ${what} (${names.join(', ')})` : '');
  const signature =
    s.status === 'unsigned'
      ? `unsigned${trustGiven ? ': no trusted key signed it' : ''}`
      : s.status === 'invalid'
        ? `INVALID (${'error' in s ? s.error : `key ${s.keyId}`}): the manifest or its signature was altered`
        : `valid, by key(s) ${s.keyIds.join(', ')}${trustGiven ? (s.trustedBy ? `; trusted key ${s.trustedBy}` : '; NOT by a trusted key') : ''}`;
  return (
    [
      `bundle     ${r.id}`,
      `created    ${r.createdAt}`,
      `source     ${r.source.mirror} (upstream ${r.source.upstream})`,
      `base       ${r.base === null ? 'none: a full bundle' : `${r.base} (incremental: import that bundle first)`}`,
      `entries    ${r.entries.cached} cached, ${r.entries.hosted} hosted, ${r.entries.generic} generic`,
      `deletions  ${r.deletions.length}${r.deletions.length ? ` (${r.deletions.join(', ')})` : ''}`,
      `blobs      ${r.blobs}, ${formatBytes(r.bytes)}`,
      `volumes    ${v.total}: ${v.present.length} present${listed('missing', v.missing)}${listed('of the wrong size', v.wrongSize)}`,
      `signature  ${signature}`,
    ].join('\n') + '\n'
  );
}

// ---- end of air-gap bundles: export side ----

function howToUse(name: string, secret: string): string {
  return (
    `with the s CLI (its registry set to this mirror):  s registry login --token ${secret}\n` +
    `with curl or another HTTP client (Basic auth):      curl -u ${name}:${secret} ...\n`
  );
}

/** Opens the data folder for a cache command, and closes it after. */
async function withMirror<T>(config: Config, fn: (mirror: Mirror) => Promise<T>): Promise<T> {
  const mirror = await createMirror(config, createLogger('warn'), { role: 'command' });
  try {
    return await fn(mirror);
  } finally {
    await mirror.close(); // lets a fill finish its bookkeeping (the key to its archive) before the stores close
  }
}

/** An ops endpoint of the server running on this data folder, at the config's address (a wildcard is reached on loopback). */
function serverUrl(config: Config, path: string): string {
  const host = config.host === '0.0.0.0' ? '127.0.0.1' : config.host === '::' ? '::1' : config.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.port}${path}`;
}

/** Calls an ops endpoint of the running server (with the admin token); its JSON answer, or an error saying why not. */
async function askServer(config: Config, method: 'GET' | 'POST', path: string): Promise<unknown> {
  const url = serverUrl(config, path);
  let res: Response;
  try {
    res = await fetch(url, { method, headers: config.adminToken ? { authorization: `Bearer ${config.adminToken}` } : {}, signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new Error(`could not reach the server at ${url}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const body = (await res.json().catch(() => ({}))) as { message?: string };
  if (!res.ok) throw new Error(`the server at ${url} answered ${res.status}${body.message ? `: ${body.message}` : ''}`);
  return body;
}

/**
 * Asks the running server to do a long job (export, import) and prints its NDJSON events as they come; resolves with
 * the job's summary, or throws with the server's reason.
 */
export async function askServerStreaming(config: Config, path: string, body: unknown, onEvent: OnEvent): Promise<Record<string, unknown>> {
  const url = serverUrl(config, path);
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(config.adminToken ? { authorization: `Bearer ${config.adminToken}` } : {}) },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(`could not reach the server at ${url}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!res.ok || !res.body) {
    const answer = (await res.json().catch(() => ({}))) as { message?: string };
    throw new Error(`the server at ${url} answered ${res.status}${answer.message ? `: ${answer.message}` : ''}`);
  }
  let summary: Record<string, unknown> | undefined;
  let rest = '';
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    rest += Buffer.from(chunk).toString('utf8');
    const lines = rest.split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines.filter(Boolean)) {
      const event = JSON.parse(line) as BundleEvent | { type: 'error'; message: string };
      if (event.type === 'error') throw new Error(`the server failed: ${event.message}`);
      if (event.type === 'summary') summary = event.summary;
      onEvent(event);
    }
  }
  if (!summary) throw new Error(`the server at ${url} ended its answer before the job's summary`);
  return summary;
}

/** `prefetch` while a server holds the data folder: the server is asked to run prefetch. */
async function askServerToPrefetch(config: Config, names: string[], out: Output): Promise<number> {
  out.write(`the data folder ${config.dataDir} is in use by a running srm-mirror: asking it to prefetch\n`);
  if (names.length) out.write('note: the server prefetches the packages it follows; the names given here are not passed on\n');
  try {
    await askServer(config, 'POST', '/-/prefetch');
    out.write('the server started a prefetch run (or joined the one under way); see `srm-mirror status` or GET /-/status\n');
    return 0;
  } catch (err) {
    out.error(`srm-mirror prefetch: ${(err as Error).message}\n`);
    return 1;
  }
}

/**
 * `verify` while a server holds the data folder: the server runs (or joins) a scrub at its scrub rate, and its
 * report is read from /-/status once that run is over (polled: a scrub can outlast any one HTTP request).
 */
async function askServerToVerify(config: Config, repair: boolean, sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))): Promise<VerifyReport> {
  const { startedAt } = (await askServer(config, 'POST', `/-/verify${repair ? '?repair=true' : ''}`)) as { startedAt: string };
  for (;;) {
    const status = (await askServer(config, 'GET', '/-/status')) as MirrorStatus;
    const [last, hosted] = [status.archives.scrub.lastRun, status.hosted.lastAudit];
    // The hosted audit follows the archives' scrub: the run is over once an audit started no earlier than it.
    if (last?.startedAt === startedAt && hosted && hosted.startedAt >= startedAt) return { ...last, hosted };
    await sleep(500);
  }
}

function describeRun(s: PrefetchSummary): string {
  const failed = s.failures.length ? `, ${s.failures.length} FAILED (${s.failures.map((f) => `${f.target}: ${f.error}`).join('; ')})` : ', no failures';
  return (
    `${s.startedAt} (${s.trigger}): ${s.packagesChecked} package(s) checked, ${s.archivesFetched} archive(s) fetched ` +
    `(${size(s.bytes)}), ${s.archivesCached} already cached${failed}, ${(s.durationMs / 1000).toFixed(1)} s`
  );
}

function progressBar(out: Output): (p: PrefetchProgress) => void {
  const width = 30;
  return (p) => {
    const filled = Math.round((p.done / p.total) * width);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
    out.write(`\r\x1b[2K${bar} ${p.done}/${p.total} ${p.target}${p.error ? ' FAILED' : ''}`);
  };
}

function plainProgress(out: Output): (p: PrefetchProgress) => void {
  return (p) => out.write(`prefetch ${p.done}/${p.total} ${p.target} ${p.error ? `FAILED: ${p.error}` : 'ok'}\n`);
}

function size(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  for (; n >= 1000 && i < units.length - 1; i++) n /= 1000;
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function usage(): string {
  const configFlags = SETTINGS.filter((s) => s.flag)
    .map((s) => `  --${`${s.flag}${s.switch ? '' : ' VALUE'}`.padEnd(28)} ${s.help} [${s.env?.join(', ')}]`)
    .join('\n');
  const commands = Object.values(COMMANDS)
    .map((c) => {
      const own = Object.entries(c.options).map(([o, d]) => `\n      --${`${o}${d.type === 'string' ? ' VALUE' : ''}`.padEnd(24)} ${d.help}`);
      return `  ${c.usage}\n      ${c.summary}${own.join('')}`;
    })
    .join('\n');
  return `usage:\n${commands}\n\noptions of every command (also settable in a --config JSON file or the environment):\n  --${'config FILE'.padEnd(28)} a JSON config file (see config/default.json)\n${configFlags}\n`;
}

/** Runs a command line; resolves with the exit code. */
export async function main(argv: string[], out: Output): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    out.write(usage());
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    out.error(`srm-mirror: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  const options = {
    config: { type: 'string' as const },
    ...Object.fromEntries(SETTINGS.filter((s) => s.flag).map((s) => [s.flag!, { type: s.switch ? ('boolean' as const) : ('string' as const) }])),
    ...Object.fromEntries(Object.entries(command.options).map(([o, d]) => [o, { type: d.type }])),
  };
  let config: Config;
  let flags: Flags;
  let args: string[];
  try {
    const parsed = parseArgs({ args: rest, options, strict: true, allowPositionals: command.positionals ?? false });
    flags = parsed.values as Flags;
    args = parsed.positionals;
    const configFlags = Object.fromEntries(Object.entries(flags).filter(([k]) => !(k in command.options)));
    config = loadConfig({ flags: configFlags });
  } catch (err) {
    if (err instanceof ConfigError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      out.error(`srm-mirror: ${(err as Error).message}\nsee: srm-mirror --help\n`);
      return 2;
    }
    throw err;
  }
  try {
    return await command.run(config, flags, args, out);
  } catch (err) {
    if (err instanceof MetadataDamagedError) {
      out.error(`srm-mirror ${name}: ${err.message}\n`);
      return 4;
    }
    if (err instanceof DataFolderLockedError) {
      if (name === 'prefetch' && config.adminToken) return askServerToPrefetch(config, args, out);
      const hint = name === 'prefetch' || name === 'import' ? ` To have the running server ${name} instead, give this command its --admin-token.` : '';
      out.error(`srm-mirror ${name}: the data folder ${config.dataDir} is in use by a running srm-mirror. Stop it first, or point --data at another folder.${hint}\n`);
      return 3;
    }
    const message = err instanceof Error ? err.message : String(err);
    out.error(`srm-mirror ${name}: ${message}\n`);
    return 1;
  }
}
