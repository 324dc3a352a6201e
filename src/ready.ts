// GET /-/ready: whether this mirror can do its job, for a load balancer or an orchestrator's readiness probe. Ready
// means the config was loaded (the mirror would not exist otherwise) and its storage takes writes now: a probe key
// is written to and deleted from the metadata database, and a probe file to and from the data folder. It never asks
// the upstream: a mirror whose upstream is down, or that runs offline, serves what it has and is ready.
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SingleFlight } from './core/single-flight.js';
import { key } from './stores/keys.js';
import type { MetadataStore } from './stores/metadata-store.js';

export interface Readiness {
  readonly ready: boolean;
  /** Each check: "ok" (or "loaded"), else what failed. */
  readonly checks: { readonly config: string; readonly metadata: string; readonly dataDir: string; readonly shutdown: string };
  /** Why it is not ready (empty when it is). */
  readonly reasons: readonly string[];
}

/** The name of the probe file in the data folder (written and removed by each check). */
export const PROBE_FILE = '.ready-probe';

export interface ReadinessOptions {
  readonly dataDir: string;
  /** The metadata database itself (not a cache in front of it). */
  readonly store: Pick<MetadataStore, 'put' | 'del' | 'problem'>;
  /** True once the mirror is shutting down. */
  readonly closing: () => boolean;
}

/** A check of readiness; concurrent calls share one probe. */
export function readiness({ dataDir, store, closing }: ReadinessOptions): () => Promise<Readiness> {
  const flight = new SingleFlight<Readiness>();
  const why = (err: unknown) => {
    const e = err as { code?: string; message?: string };
    return e.code ? `${e.code}: ${e.message}` : String(e.message ?? err);
  };
  const probeMetadata = async (): Promise<string> => {
    try {
      await store.put(key.readyProbe, { at: new Date().toISOString() });
      await store.del(key.readyProbe);
    } catch (err) {
      return `the metadata database does not take writes (${why(err)})`;
    }
    // A failure of reads (a corrupt block) within the store's problem window counts too.
    const problem = store.problem();
    return problem ? `the metadata database is failing since ${problem.since} (${problem.error})` : 'ok';
  };
  const probeDataDir = async (): Promise<string> => {
    const file = join(dataDir, PROBE_FILE);
    try {
      await writeFile(file, 'ready\n');
      await rm(file);
      return 'ok';
    } catch (err) {
      return `the data folder ${dataDir} is not writable (${why(err)})`;
    }
  };
  const check = async (): Promise<Readiness> => {
    const shutdown = closing() ? 'the mirror is shutting down' : 'ok';
    const [metadata, dir] = await Promise.all([probeMetadata(), probeDataDir()]);
    const checks = { config: 'loaded', metadata, dataDir: dir, shutdown };
    const reasons = [shutdown, metadata, dir].filter((c) => c !== 'ok');
    return { ready: reasons.length === 0, checks, reasons };
  };
  return () => flight.run('ready', check);
}
