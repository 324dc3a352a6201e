// The composition root: builds the stores, the upstream, the caches and the faces from a Config. The layers,
// from the outside in:
//   faces (v3, srm, ops; express routers, rendering only)
//     → Registry (use cases)
//       → MetadataCache (freshness, single-flight, stale-if-error) → MemoryCachedStore (LRU) → LevelMetadataStore
//       → ArchiveCache (one fill per archive, readers follow it)   → FsArchiveStore (sha256, commit/abort)
//       → Upstream adapter (serverless-v3 | srm) → UpstreamHttp (undici Agent + p-queue: all upstream traffic)
import express, { type Express } from 'express';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from './config/config.js';
import { ArchiveCache } from './core/archive-cache.js';
import { MetadataCache } from './core/metadata-cache.js';
import { Registry } from './core/registry.js';
import { opsFace } from './faces/ops.js';
import { forwarder } from './faces/forward.js';
import { srmFace } from './faces/srm.js';
import { v3Face } from './faces/v3.js';
import { accessLog, type Logger } from './log.js';
import { FsArchiveStore } from './stores/archive-store.js';
import { LevelMetadataStore, MemoryCachedStore } from './stores/metadata-store.js';
import { UpstreamHttp } from './upstreams/http.js';
import { ServerlessV3Upstream } from './upstreams/serverless-v3.js';
import { SrmUpstream } from './upstreams/srm.js';

export interface Mirror {
  readonly app: Express;
  readonly registry: Registry;
  /** Lets fills under way finish (for at most graceMs), then closes the upstream client and the stores. */
  close(graceMs?: number): Promise<void>;
}

export async function createMirror(config: Config, log: Logger): Promise<Mirror> {
  await mkdir(config.dataDir, { recursive: true });
  const store = new MemoryCachedStore(await LevelMetadataStore.open(join(config.dataDir, 'meta')), config.cache.memoryEntries);
  const archives = await FsArchiveStore.open(join(config.dataDir, 'archives'));
  const http = new UpstreamHttp(config.upstream);
  const isV3 = config.upstream.type === 'serverless-v3';
  if (config.offline) log.info('offline mode: the upstream is never contacted');
  const upstream = isV3 ? new ServerlessV3Upstream(config.upstream.url, http) : new SrmUpstream(config.upstream.url, http);
  const metadata = new MetadataCache(store, config.cache);
  const archiveCache = new ArchiveCache(store, archives, log);
  const registry = new Registry(upstream, metadata, archiveCache, config.offline);
  const status = () => ({
    offline: config.offline,
    upstream: { url: config.upstream.url, type: config.upstream.type, circuit: http.circuit, requests: http.pending },
    archives: archiveCache.status(),
  });

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.set('trust proxy', config.trustProxy);
  if (log.enabled('debug')) app.use(accessLog(log));
  const { publicUrl } = config;
  app.use('/-', opsFace({ status }));
  app.use('/v3', v3Face({ registry, publicUrl, log, forward: isV3 && !config.offline ? forwarder(http, config.upstream.url) : undefined }));
  app.use(srmFace({ registry, publicUrl, log }));

  return {
    app,
    registry,
    async close(graceMs = 10_000) {
      await archiveCache.drain(graceMs);
      await http.close();
      await store.close();
    },
  };
}
