// The composition root: builds the stores, the upstream, the caches and the faces from a Config. The layers,
// from the outside in:
//   faces (v3, srm, ops, generic packages, the status page; express routers, rendering only)
//     → Registry (use cases; hosted names first: HostedComponents) and GenericPackages
//       → HostedBlobs (hosted content, its own durable store); Users and Access say who may do what
//       → MetadataCache (freshness, single-flight, stale-if-error) → MemoryCachedStore (LRU) → LevelMetadataStore or PostgresMetadataStore
//       → ArchiveCache (index, validated fills, verification, leases and quota, scrub) → FsArchiveStore (sha256)
//       → Upstream adapter (serverless-v3 | srm) → UpstreamHttp (undici Agent + p-queue + circuit breaker)
//   jobs: Prefetcher (cron) over the same Registry, its upstream requests at background priority; the scrub (cron)
//   bundles: export and import of air-gap bundles, over narrow ports into the parts above
// (server.ts adds proxy mode, intercept/, in front of the same request handler)
import express from 'express';
import type { IncomingMessage, RequestListener } from 'node:http';
import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Exporter, type ExportRequest } from './bundles/export.js';
import { ExportHistory } from './bundles/export-history.js';
import { redactUrl, type Config } from './config/config.js';
import type { DryRunSummary, ImportOptions, ImportSummary } from './bundles/import.js';
import type { OnEvent } from './bundles/progress.js';
import { readTrustedKeys } from './bundles/trust.js';
import cron from 'node-cron';
import { ArchiveCache, type ScrubReport } from './core/archives/archive-cache.js';
import { rateLimit, realClock } from './core/archives/archive-scrub.js';
import type { RecoveryReport } from './core/archives/archive-recovery.js';
import { Follows } from './core/follows.js';
import { defaultReplicaId, loneMirror, type Exclusive, type Fleet, type FleetStatus } from './core/fleet.js';
import { Access } from './core/hosted/access.js';
import { GenericPackages, type GenericInventory } from './core/hosted/generic-packages.js';
import { HostedBlobs, type HostedAudit } from './core/hosted/hosted-blobs.js';
import { HostedComponents } from './core/hosted/hosted-components.js';
import { DownloadLinks } from './core/hosted/download-links.js';
import { Users } from './core/hosted/users.js';
import { MetadataCache } from './core/metadata-cache.js';
import { Registry } from './core/registry.js';
import { offloadVia, type AccelRedirect } from './faces/accel-redirect.js';
import { opsFace } from './faces/ops.js';
import { uiFace } from './faces/ui.js';
import { Catalog } from './core/catalog.js';
import { forwarder } from './faces/forward.js';
import { HostedReads } from './faces/hosted-reads.js';
import { giteaGenericFace, giteaPackageApi, gitlabGenericFace } from './faces/generic.js';
import { srmFace } from './faces/srm.js';
import { RenderedAnswers } from './faces/json.js';
import { baseUrlOf } from './faces/render.js';
import { v3Face } from './faces/v3.js';
import { hotPath } from './faces/hot-path.js';
import type { Logger } from './log.js';
import { MirrorError } from './model/errors.js';
import { checkZip, checkZipTail } from './model/zip.js';
import { MirrorMetrics, requestObserver, type ImportTotals } from './metrics.js';
import { readiness, type Readiness } from './ready.js';
import { FsArchiveStore } from './stores/archive-store.js';
import { prefix } from './stores/keys.js';
import { DEFAULT_FLEET_LIMITS, PostgresFleet } from './stores/postgres-fleet.js';
import { PostgresMetadataStore } from './stores/postgres-metadata-store.js';
import { DataFolderLockedError, hasKeys, MemoryCachedStore, type MetadataProblem } from './stores/metadata-store.js';
import { markIndexIntact, openMetadataStore, type IndexState } from './stores/schema.js';
import { parseTarget, Prefetcher, type PrefetchSummary, type PrefetchTarget } from './jobs/prefetch.js';
import type { CircuitStatus } from './upstreams/circuit-breaker.js';
import { describeProxies } from './upstreams/egress.js';
import { UpstreamHttp } from './upstreams/http.js';
import { ServerlessV3Upstream } from './upstreams/serverless-v3.js';
import { SrmUpstream } from './upstreams/srm.js';

export interface Mirror {
  /** Answers one HTTP request (the hot path first, then the express app). */
  readonly handle: RequestListener;
  readonly registry: Registry;
  readonly archives: ArchiveCache;
  readonly prefetcher: Prefetcher;
  /** The users of hosted content (data/users.json). */
  readonly users: Users;
  /** Whether the archive index is intact, or was lost with the metadata database and awaits `srm-mirror repair`. */
  readonly metadataIndex: IndexState;
  /** What a scheduled prefetch covers: the configured packages and those clients asked for. */
  prefetchTargets(): PrefetchTarget[];
  /** Runs prefetch over the followed packages now (or joins the run under way). */
  prefetchNow(trigger: string): Promise<PrefetchSummary>;
  /** Rehashes every archive now (or joins the scrub under way); with repair, removes what else is off. */
  verifyNow(trigger: string, repair: boolean): Promise<VerifyReport>;
  /** Rebuilds the archive index from the archive files, then marks the index intact (`srm-mirror repair`). */
  rebuildArchiveIndex(): Promise<RecoveryReport>;
  /** `known`: the hosted figures a caller counted already (the status page's listing), not counted again. */
  status(known?: KnownInventories): Promise<MirrorStatus>;
  /** What GET /-/ready answers: storage writable and config loaded (never the upstream). */
  ready(): Promise<Readiness>;
  /** Writes a bundle of this mirror's content (bundles/export.ts); resolves with its summary, the last event. */
  exportBundle(request: ExportRequest, onEvent: OnEvent): Promise<Record<string, unknown>>;
  /**
   * Imports a bundle (src/bundles/import.ts), one import at a time; beside a server, its answers include what was
   * added at once. Without trustedKeys (PEM) the import.trustedKeys setting's keys are trusted.
   */
  importBundle(dir: string, options: MirrorImportOptions, onEvent: OnEvent): Promise<ImportSummary | DryRunSummary>;
  /**
   * Shuts down within graceMs in total (default: the shutdownGrace setting): upstream calls not started yet are
   * refused at once, fills and requests under way get until the deadline, what is left then is cut; then the stores
   * close. A server passes the promise of its connections being closed, which the stores wait for too.
   */
  close(graceMs?: number, serverClosed?: Promise<void>): Promise<void>;
}

export type MirrorImportOptions = Omit<ImportOptions, 'trustedKeys'> & { readonly trustedKeys?: readonly string[] };

/** A scrub of the cached archives, then an audit of the hosted files (which reports, and never removes). */
export type VerifyReport = ScrubReport & { readonly hosted: HostedAudit };

/** What GET /-/status and `srm-mirror status` show. */
export interface MirrorStatus {
  readonly dataDir: string;
  /** This replica, the fleet's leader, the coordination's state (a lone mirror on LevelDB: itself, always leading). */
  readonly fleet: FleetStatus & { readonly database: 'leveldb' | 'postgres' };
  readonly offline: boolean;
  /** `index: 'lost'`: the archive index went with the metadata database; archives are kept until a repair rebuilds it. */
  readonly metadata: { readonly packages: number; readonly versions: number; readonly index: IndexState };
  /** The metadata database is failing (reads and writes that fail pass through uncached); undefined when healthy. */
  readonly metadataProblem: MetadataProblem | undefined;
  readonly upstream: {
    readonly url: string;
    readonly type: string;
    readonly circuit: CircuitStatus;
    readonly requests: { running: number; waiting: number };
    /** Egress: where registry commands go, the proxies (credentials masked), the extra CA files; never the credentials. */
    readonly commandsUrl: string;
    readonly proxy: ReturnType<typeof describeProxies>;
    readonly ca: readonly string[];
  };
  readonly archives: ReturnType<ArchiveCache['status']>;
  /** Hosted content: blobs and their bytes on disk; generic packages as listed (undefined while the database fails). */
  /** Content this mirror owns; undefined parts: the metadata database cannot say (see metadataProblem). */
  readonly hosted: ReturnType<HostedBlobs['status']> & {
    readonly components: Awaited<ReturnType<HostedComponents['inventory']>> | undefined;
    readonly generic: GenericInventory | undefined;
  };
  readonly prefetch: {
    readonly enabled: boolean;
    readonly schedule: string;
    readonly running: boolean;
    readonly followed: number;
    readonly lastRun: PrefetchSummary | undefined;
  };
}

/** The hosted figures of MirrorStatus that take a scan of the metadata database. */
export type KnownInventories = Pick<MirrorStatus['hosted'], 'components' | 'generic'>;

export interface MirrorOptions {
  /**
   * A server runs the scheduled jobs (prefetch on its cron, saving access times) and clears temp files left by a
   * crash at start; a cache command does neither (`verify` reports leftover temp files).
   */
  readonly role: 'server' | 'command';
  /** The clock every time-based policy reads (freshness, 404 memory, follows, the archive verifier); tests drive it. */
  readonly now?: () => number;
  /** Free bytes on the data folder's file system, which an import checks first (statfs; tests pass a small disk). */
  readonly freeBytes?: (path: string) => Promise<number>;
}

/** How long fills cut at the shutdown deadline get to clean up before the stores close. */
const FILL_CLEANUP_MS = 250;

/**
 * Replicas on one archive folder: an archive used within this long is never evicted (another replica may be serving
 * it; its lease is out of the leader's sight). Past the access times' save interval and any download's length.
 */
const EVICTION_GRACE_MS = 10 * 60_000;
/** How often the archives' last-access times are saved (they are kept in memory in between). */
const SAVE_ACCESS_MS = 60_000;
/** How often expired lists and 404s are swept, and follows nobody asked for are dropped (each reads every record). */
const SWEEP_MS = 10 * 60_000;

export async function createMirror(config: Config, log: Logger, { role, now = Date.now, freeBytes }: MirrorOptions): Promise<Mirror> {
  await mkdir(config.dataDir, { recursive: true });
  // The database first: its lock says whether another process owns the data folder, before anything is touched.
  const hasArchives = async () => {
    for await (const _ of (await FsArchiveStore.open(join(config.dataDir, 'archives'), { removeTempFiles: false })).list()) return true;
    return false;
  };
  const metadata = await openMetadataStore(config, { hasArchives, log });
  if (config.databaseUrl !== undefined) log.info('metadata on PostgreSQL', { database: redactUrl(config.databaseUrl) }); // no password
  const store = new MemoryCachedStore(metadata.store, config.cache.memorySizeBytes);
  // Replicas on PostgreSQL share the data folder and coordinate in the database (core/fleet.ts); one place chooses.
  const replica = config.replicaId ?? defaultReplicaId();
  const onPostgres = metadata.store instanceof PostgresMetadataStore;
  const fleet: Fleet =
    metadata.store instanceof PostgresMetadataStore
      ? new PostgresFleet(replica, metadata.store.connection, { ...DEFAULT_FLEET_LIMITS, campaign: role === 'server' }, log)
      : loneMirror(replica);
  // A command (verify, gc, repair, an offline export or import...) needs the data folder alone, as LevelDB's lock
  // makes sure of; on PostgreSQL, servers share it, so a command refuses while any replica serves (and the commands
  // that can ask a running server, do).
  if (role === 'command' && fleet instanceof PostgresFleet) {
    const serving = await fleet.servingReplicas().catch((err: unknown) => err as Error);
    if (serving instanceof Error || serving.length > 0) {
      await fleet.close();
      await metadata.store.close();
      if (serving instanceof Error) throw serving;
      throw new DataFolderLockedError(`on PostgreSQL (serving replicas: ${serving.join(', ')})`);
    }
  }
  // Under the fleet's lock, the key is read from the database, not from this replica's memory (which hears of other
  // replicas' writes a moment later).
  const exclusive: Exclusive | undefined = onPostgres
    ? (key, fn) =>
        fleet.exclusive(key, () => {
          store.invalidate([key]);
          return fn();
        })
    : undefined;
  const shared = onPostgres ? replica : undefined; // the temp folder of this replica on a shared data folder
  const archiveStore = await FsArchiveStore.open(join(config.dataDir, 'archives'), { removeTempFiles: role === 'server', replica: shared, directWrites: config.cache.directWrites });
  const http = new UpstreamHttp({ ...config.upstream, writes: config.writes, now });
  const isV3 = config.upstream.type === 'serverless-v3';
  if (config.offline) log.info('offline mode: the upstream is never contacted');
  const upstreamOver = (h: UpstreamHttp) => (isV3 ? new ServerlessV3Upstream(config.upstream.url, h, config.upstream.commandsUrl) : new SrmUpstream(config.upstream.url, h));
  const proxies = describeProxies(config.upstream); // credentials masked
  if (proxies && !config.offline) log.info('upstream requests go through a forward proxy', { ...proxies });
  // Behind nginx with offload, nginx sends every HIT of accelRedirectMinSize and up from its file: holding such an
  // archive in memory as well would be memory spent for nothing.
  const { accelRedirect, accelRedirectMinSize } = config.server;
  const memoryArchiveMax = accelRedirect === undefined ? config.cache.memoryArchiveMaxBytes : Math.min(config.cache.memoryArchiveMaxBytes, accelRedirectMinSize - 1);
  const archives = new ArchiveCache(store, archiveStore, log, {
    quotaBytes: config.cache.maxSizeBytes,
    indexIntact: metadata.index === 'intact',
    verifyOnServe: config.cache.verifyOnServe,
    scrubRate: config.cache.scrubRateBytes,
    contentCheck: { file: checkZip, stream: checkZipTail }, // every archive the mirror serves is a component's zip
    memory: { maxBytes: config.cache.memoryArchivesBytes, maxArchiveBytes: memoryArchiveMax },
    clock: { ...realClock, now },
    exclusive,
    shared: onPostgres ? { leads: () => fleet.isLeader(), graceMs: EVICTION_GRACE_MS } : undefined,
  });
  await archives.init();
  // Hosted content: its own durable store, which nothing of the cache (quota, collection, scrub, repair) touches.
  const hostedStore = await FsArchiveStore.open(join(config.dataDir, 'hosted'), { removeTempFiles: role === 'server', durable: true, replica: shared, directWrites: config.cache.directWrites });
  const hostedBlobs = new HostedBlobs(store, hostedStore, log, { maxFileBytes: config.hosted.maxFileBytes, maxTotalBytes: config.hosted.maxSizeBytes, now });
  await hostedBlobs.init();
  const access = new Access(config.hosted);
  const users = await Users.open(config.dataDir, { now, log });
  const hostedComponents = new HostedComponents(store, hostedBlobs, access, {
    patterns: config.hosted.packages,
    offline: config.offline,
    // A release the upstream gave, or an archive of it.
    knownUpstream: async (name) => (await hasKeys(store, prefix.release(name))) || (await archives.versions(name)).length > 0,
    now,
  });
  const unread = await hostedComponents.init();
  if (unread) log.error('the names of hosted components cannot be read from the metadata database: only hosted.packages mark names as hosted until it is repaired', { error: String(unread) });
  // Another replica's publish makes a name hosted here on the next request: its write's notification rereads the names.
  const unwatchHosted = metadata.store.watchChanges?.((keys) => {
    if (keys !== 'all' && !keys.some((k) => k.startsWith(prefix.hostedComponent))) return;
    void hostedComponents.init().then((err) => err && log.warn('hosted names not read again', { error: String(err) }));
  });
  const generic = new GenericPackages(store, hostedBlobs, now);
  const follows = await Follows.open(store, { followForMs: config.prefetch.followForMs, now });
  const metadataCache = new MetadataCache(store, { ...config.cache, staleAfterMs: config.upstream.staleAfterMs, now, exclusive });
  const registry = new Registry(upstreamOver(http), metadataCache, archives, {
    offline: config.offline,
    onRequested: config.prefetch.followRequested ? (name) => follows.add(name) : undefined,
    hosted: hostedComponents,
    now,
  });
  // Prefetch shares the caches and the upstream queue, but always asks the upstream and waits behind live requests.
  const prefetcher = new Prefetcher(
    registry.with(upstreamOver(http.withPriority('background')), { alwaysRevalidate: true, onRequested: undefined }),
    { ...config.prefetch, onGone: (name) => follows.unfollow(name) },
    store,
    log,
  );
  const prefetchTargets = () => {
    const pinned = config.prefetch.packages.map(parseTarget);
    const named = new Set(pinned.map((t) => t.name));
    return [...pinned, ...follows.list().filter((n) => !named.has(n)).map((name) => ({ name }))];
  };
  const prefetchNow = (trigger: string) => prefetcher.run(prefetchTargets(), { trigger });
  // A server's temp files are fills under way: only a command on a stopped mirror reports (and removes) them.
  // Hosted files are rehashed after the archives, at the same rate; what is corrupt is reported, never removed.
  const auditHosted = (unthrottled = false) =>
    hostedBlobs.audit(unthrottled || !config.cache.scrubRateBytes ? undefined : rateLimit(config.cache.scrubRateBytes, { ...realClock, now }));
  const verifyNow = async (trigger: string, repair: boolean) => {
    const report = await archives.scrub(role === 'server' ? { trigger, repair } : { trigger, repair, tempFiles: true, unthrottled: true });
    return { ...report, hosted: await auditHosted(role !== 'server') };
  };
  // Imports, one at a time. A command holds the data folder alone: temp files there are a killed run's, cleared first.
  let importing = false;
  const imported = { runs: { complete: 0, partial: 0, dry_run: 0, failed: 0 }, blobs: 0, bytes: 0 } satisfies ImportTotals; // for /-/metrics
  const importNow = async (dir: string, options: MirrorImportOptions, onEvent: OnEvent): Promise<ImportSummary | DryRunSummary> => {
    if (importing) throw new MirrorError('conflict', 'an import is under way on this mirror: run this one when it has ended');
    importing = true;
    try {
      if (role === 'command') for (const s of [archiveStore, hostedStore]) for (const t of await s.tempFiles()) await s.deleteTemp(t);
      const trustedKeys = options.trustedKeys ?? readTrustedKeys(config.import.trustedKeys);
      const target = { dataDir: config.dataDir, archives, hosted: hostedBlobs, registry, components: hostedComponents, generic, freeBytes, now };
      const { importBundle } = await import('./bundles/import.js'); // tar-stream and the rest: loaded when used
      const summary = await importBundle(dir, { ...options, trustedKeys, target }, onEvent).catch((err: unknown) => {
        imported.runs.failed++;
        throw err;
      });
      if (summary.dryRun) imported.runs.dry_run++;
      else {
        imported.runs[summary.status]++;
        imported.blobs += summary.blobs;
        imported.bytes += summary.bytes;
      }
      return summary;
    } finally {
      importing = false;
    }
  };
  const status = async (known?: KnownInventories): Promise<MirrorStatus> => ({
    dataDir: config.dataDir,
    fleet: { ...(await fleet.status()), database: onPostgres ? 'postgres' : 'leveldb' },
    offline: config.offline,
    metadata: { ...(await registry.inventory()), index: metadata.index },
    metadataProblem: store.problem(),
    upstream: {
      url: config.upstream.url,
      type: config.upstream.type,
      circuit: http.circuit,
      requests: http.pending,
      commandsUrl: config.upstream.commandsUrl, proxy: proxies, ca: config.upstream.ca, // egress
    },
    archives: archives.status(),
    hosted: {
      ...hostedBlobs.status(),
      // A failing store is shown in metadataProblem.
      components: known ? known.components : await hostedComponents.inventory().catch(() => undefined),
      generic: known ? known.generic : await generic.inventory().catch(() => undefined),
    },
    prefetch: {
      enabled: config.prefetch.enabled && !config.offline,
      schedule: config.prefetch.schedule,
      running: prefetcher.isRunning,
      followed: prefetchTargets().length,
      lastRun: await prefetcher.lastRun().catch(() => undefined), // a failing store must not take /-/status down
    },
  });

  // Air-gap bundles (issue 11): export reads through core, leasing the cached archives it carries.
  const exporter = new Exporter({
    mirror: config.publicUrl ?? `${hostname()}:${config.dataDir}`,
    upstream: config.upstream.url,
    archives,
    registry,
    hostedComponents,
    generic,
    hostedBlobs,
    history: new ExportHistory(join(config.dataDir, 'exports')),
    now,
  });
  const exportBundle = (request: ExportRequest, onEvent: OnEvent) => exporter.run(request, onEvent);

  // Observability (issue 12): prom-client metrics on this mirror's own registry, read from its parts when scraped;
  // readiness (storage writable, config loaded; never the upstream).
  const metrics = new MirrorMetrics({ replica: onPostgres ? replica : undefined });
  http.observeWith(metrics.upstream);
  metrics.watch({
    upstream: () => ({ counts: http.counts, circuit: http.circuit, pending: http.pending }),
    archives: () => archives.status(),
    evicted: () => archives.reclaimer.evictedTotal,
    metadata: () => ({ coalesced: metadataCache.coalesced, problem: store.problem() !== undefined }),
    hosted: () => {
      const { blobs, bytes, lastAudit } = hostedBlobs.status();
      return { blobs, bytes, corrupt: lastAudit?.corrupt.length ?? 0, quotaBytes: config.hosted.maxSizeBytes };
    },
    prefetch: async () => ({
      followed: prefetchTargets().length,
      running: prefetcher.isRunning,
      totals: prefetcher.totals,
      lastRun: await prefetcher.lastRun().catch(() => undefined), // a failing store is in /-/status, not a 500 here
    }),
    imports: () => ({ ...imported, running: importing }),
  });
  let closing = false;
  const ready = readiness({ dataDir: config.dataDir, store: metadata.store, closing: () => closing });
  // End of the observability block.

  const jobs: Array<{ stop(): unknown }> = [];
  if (role === 'server') {
    // An archive whose key a crash kept from being written is garbage: collect it (and apply the quota) at start.
    // (Replicas: the leader does, after each save of the access times below.)
    const failedCleanUp = (err: unknown) => log.warn('clean-up of archives failed', { error: String(err) });
    if (!onPostgres) void archives.reclaimer.enforce().catch(failedCleanUp);
    // The fleet-wide jobs run on the leader alone (a lone mirror always leads).
    const scrub = () => fleet.isLeader() && void verifyNow('schedule', false).catch((err: unknown) => log.error('scrub failed', { error: String(err) }));
    jobs.push(cron.schedule(config.cache.scrubSchedule, scrub, { name: 'scrub', noOverlap: true }));
    if (config.prefetch.enabled && !config.offline) {
      const scheduled = () => fleet.isLeader() && void prefetchNow('schedule').catch((err: unknown) => log.error('prefetch run failed', { error: String(err) }));
      jobs.push(cron.schedule(config.prefetch.schedule, scheduled, { name: 'prefetch', noOverlap: true }));
    }
    const saveAccess = async () => {
      await archives.saveAccessTimes();
      if (onPostgres && fleet.isLeader()) await archives.reclaimer.enforce();
    };
    const saver = setInterval(() => void saveAccess().catch(failedCleanUp), SAVE_ACCESS_MS);
    const sweeper = setInterval(() => {
      const failed = (err: unknown) => log.warn('sweep failed', { error: String(err) });
      void metadataCache.sweep().catch(failed);
      void follows.prune().catch(failed);
    }, SWEEP_MS);
    for (const timer of [saver, sweeper]) {
      timer.unref();
      jobs.push({ stop: () => clearInterval(timer) });
    }
  }

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  const baseUrl = baseUrlOf(config.publicUrl, config.trustProxy);
  const startVerify = (repair: boolean) => {
    const run = archives.scrubber.start({ trigger: 'http', repair });
    run.done.then(() => auditHosted()).catch((err: unknown) => log.error('scrub failed', { error: String(err) }));
    return run.startedAt;
  };
  // The status page (issue 12): GET / and /-/ui, before the ops face (which answers the rest of /-/) and the SRM face.
  const catalog = new Catalog({ archives, components: hostedComponents, generic, registry });
  app.use(uiFace({ status, catalog, baseUrl, adminEnabled: config.adminToken !== undefined, log }));
  app.use('/-', opsFace({ status, metrics: () => metrics.text(), ready, log, prefetchNow: config.offline ? undefined : prefetchNow, startVerify, exportBundle, importBundle: importNow, adminToken: config.adminToken }));
  const reads = new HostedReads(hostedComponents, users, access, new DownloadLinks(now));
  const hostedV3 = {
    components: hostedComponents,
    users,
    access,
    reads,
    uploadLimits: { maxBodyBytes: config.hosted.maxFileBytes, bodyTimeoutMs: config.writes.bodyTimeoutMs, sizeSetting: 'hosted.maxFileSize' },
    formLimits: config.writes,
  };
  const forward = isV3 && !config.offline ? forwarder(http, config.upstream.url, config.writes, config.upstream.commandsUrl) : undefined;
  const genericFaces = {
    packages: generic,
    access,
    authenticate: (req: IncomingMessage) => users.authenticate(req.headers),
    log,
    body: { maxBodyBytes: config.hosted.maxFileBytes, bodyTimeoutMs: config.writes.bodyTimeoutMs, sizeSetting: 'hosted.maxFileSize' },
    rejectDuplicates: config.hosted.rejectDuplicates,
  };
  app.use('/api/packages', giteaGenericFace(genericFaces));
  app.use('/api/v1/packages', giteaPackageApi(genericFaces));
  app.use('/api/v4/projects', gitlabGenericFace(genericFaces));
  const renders = new RenderedAnswers();
  const v3 = v3Face({ registry, baseUrl, log, forward, hosted: hostedV3, renders });
  app.use(v3.hot.mount, v3.router);
  app.use(srmFace({ registry, baseUrl, reads, renders, log, providerless: isV3 })); // /simple/devsapp/NAME (s 2.x) is the v3 package NAME
  const hot = hotPath([v3.hot]);
  const observe = requestObserver(metrics, log, { accessLog: config.accessLog });
  // Behind nginx, big cached HITs are sent by nginx from the archive store's files (faces/accel-redirect.ts).
  const accel: AccelRedirect | undefined =
    accelRedirect === undefined ? undefined : { prefix: accelRedirect, minSize: accelRedirectMinSize, locate: (d) => archiveStore.location(d), lease: (d) => archives.reclaimer.lease(d, { touch: false }) };
  const handle: RequestListener = (req, res) => {
    // `s set registry http://host/v3/` makes clients ask for /v3//packages/...: the same path, whatever the slashes.
    // Not under /api/, where an empty segment is an (invalid) name: collapsing it would name another thing.
    if (req.url?.includes('//') && !req.url.startsWith('/api/')) {
      const q = req.url.indexOf('?');
      req.url = q < 0 ? req.url.replace(/\/{2,}/g, '/') : req.url.slice(0, q).replace(/\/{2,}/g, '/') + req.url.slice(q);
    }
    observe(req, res);
    if (accel) offloadVia(res, accel);
    if (!hot(req, res)) void app(req, res);
  };

  return {
    handle,
    registry,
    archives,
    prefetcher,
    users,
    metadataIndex: metadata.index,
    prefetchTargets,
    prefetchNow,
    verifyNow,
    async rebuildArchiveIndex() {
      const report = await archives.rebuildIndex();
      await markIndexIntact(store);
      return report;
    },
    status,
    ready,
    exportBundle,
    importBundle: importNow,
    async close(graceMs = config.shutdownGraceMs, serverClosed?: Promise<void>) {
      closing = true; // /-/ready says so from now on
      for (const job of jobs) job.stop();
      // Upstream calls not started are refused now; fills and requests under way (and the server's connections)
      // get until the deadline, when what is left is cut.
      await Promise.all([http.close(graceMs, serverClosed), archives.drain(graceMs)]);
      // Fills cut at the deadline get a moment to clean up (their temp files) before the stores close.
      await archives.drain(FILL_CLEANUP_MS);
      await archives.saveAccessTimes();
      await generic.settled(); // download counts queued by the last requests
      unwatchHosted?.();
      await fleet.close(); // its locks and the leadership go with its sessions
      await store.close();
    },
  };
}
