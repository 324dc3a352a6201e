import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { removeTempDirs, tempDir } from '../helpers.js';

afterAll(removeTempDirs);

describe('loadConfig', () => {
  it('has working defaults: port 8080, ./data, the public registry, 10 minutes', () => {
    const c = loadConfig({ env: {}, cwd: '/srv' });
    expect(c).toMatchObject({ port: 8080, dataDir: '/srv/data', publicUrl: undefined, trustProxy: false });
    expect(c.upstream).toMatchObject({ url: 'https://api.devsapp.cn/v3', type: 'serverless-v3', concurrency: 16 });
    expect(c.cache.maxAgeMs).toBe(600_000);
    expect(Object.isFrozen(c.upstream)).toBe(true);
  });

  it('bounds the wait with a stale copy (2 s) and follows requested packages for 30 days by default', () => {
    const c = loadConfig({ env: {} });
    expect([c.upstream.staleAfterMs, c.prefetch.followForMs]).toEqual([2000, 30 * 86_400_000]);
    const set = loadConfig({ flags: { 'stale-after': '200ms' }, env: { SRM_MIRROR_FOLLOW_FOR: '0' } });
    expect([set.upstream.staleAfterMs, set.prefetch.followForMs]).toEqual([200, 0]);
  });

  it('takes file < environment < flags, in that order of precedence', async () => {
    const dir = await tempDir();
    const file = join(dir, 'c.json');
    await writeFile(file, JSON.stringify({ port: 1000, upstream: { concurrency: 3 }, cache: { maxAge: '1h' } }));
    const fromFile = loadConfig({ flags: { config: file }, env: {} });
    expect([fromFile.port, fromFile.upstream.concurrency, fromFile.cache.maxAgeMs]).toEqual([1000, 3, 3_600_000]);
    const fromEnv = loadConfig({ flags: { config: file }, env: { PORT: '2000', SRM_MIRROR_MAX_AGE: '30s' } });
    expect([fromEnv.port, fromEnv.cache.maxAgeMs]).toEqual([2000, 30_000]);
    expect(loadConfig({ env: { PORT: '2000', SRM_MIRROR_PORT: '3000' } }).port).toBe(3000);
    const fromFlags = loadConfig({ flags: { config: file, port: '4000', 'trust-proxy': true }, env: { PORT: '2000' } });
    expect([fromFlags.port, fromFlags.trustProxy]).toEqual([4000, true]);
  });

  it.each([
    [{ flags: { port: '70000' } }, /"--port": expected a whole number from 0 to 65535, got "70000"/],
    [{ flags: { 'max-age': 'soon' } }, /"--max-age": expected a duration .* got "soon"/],
    [{ flags: { upstream: 'ftp://x' } }, /"--upstream": expected an http\(s\) URL/],
    [{ flags: { upstream: 'https://user:secret@registry.example/v3' } }, /"--upstream": expected an http\(s\) URL without query, fragment or credentials/],
    [{ flags: { 'upstream-type': 'npm' } }, /"--upstream-type": expected one of serverless-v3, srm, got "npm"/],
    [{ env: { SRM_MIRROR_UPSTREAM_CONCURRENCY: '0' } }, /"SRM_MIRROR_UPSTREAM_CONCURRENCY": expected a whole number from 1 to 1024, got "0"/],
    [{ env: { SRM_MIRROR_TRUST_PROXY: 'maybe' } }, /"SRM_MIRROR_TRUST_PROXY": expected true or false, got "maybe"/],
    [{ flags: { 'public-url': 'not a url' } }, /"--public-url": expected an http\(s\) URL/],
    [{ flags: { config: '/nonexistent/c.json' } }, /"config": expected a readable JSON file/],
    [{ flags: { 'stale-after': 'briefly' } }, /"--stale-after": expected a duration/],
    [{ env: { SRM_MIRROR_FOLLOW_FOR: '-1d' } }, /"SRM_MIRROR_FOLLOW_FOR": expected a duration/],
    [{ flags: { 'upstream-deadline': '0s' } }, /"--upstream-deadline": expected a duration above 0 such as "30s", got "0s"/],
    [{ flags: { 'max-json-size': '0' } }, /"--max-json-size": expected a size above 0/],
    [{ env: { SRM_MIRROR_MAX_BODY_SIZE: 'huge' } }, /"SRM_MIRROR_MAX_BODY_SIZE": expected a size such as "20GB"/],
    [{ flags: { 'archive-hosts': 'cdn.example.com,bad host' } }, /"--archive-hosts": expected a list of host names such as/],
    [{ flags: { 'writes-concurrency': '0' } }, /"--writes-concurrency": expected a whole number from 1 to 256, got "0"/],
    [{ flags: { 'max-connections': 'lots' } }, /"--max-connections": expected a whole number/],
    [{ flags: { 'shutdown-grace': 'soon' } }, /"--shutdown-grace": expected a duration/],
    [{ flags: { 'memory-archives': 'lots' } }, /"--memory-archives": expected a size such as "20GB".*got "lots"/],
    [{ env: { SRM_MIRROR_MEMORY_ARCHIVES: '-1MB' } }, /"SRM_MIRROR_MEMORY_ARCHIVES": expected a size/],
    [{ flags: { 'memory-archive-max-size': '0' } }, /"--memory-archive-max-size": expected a size above 0/],
    [{ env: { SRM_MIRROR_MEMORY_ARCHIVE_MAX_SIZE: 'big' } }, /"SRM_MIRROR_MEMORY_ARCHIVE_MAX_SIZE": expected a size/],
  ])('refuses a bad value and names it: %j', (sources, message) => {
    expect(() => loadConfig({ env: {}, ...sources })).toThrow(message);
  });

  it('has bounded defaults for issue 9 settings, and reads host lists comma-separated', () => {
    const c = loadConfig({ env: {} });
    expect(c).toMatchObject({ adminToken: undefined, shutdownGraceMs: 8000, server: { maxConnections: 2048 } });
    expect(c.upstream).toMatchObject({ deadlineMs: 30_000, maxJsonBytes: 8_000_000, allowPrivateHosts: false });
    expect(c.writes).toEqual({ concurrency: 4, bodyTimeoutMs: 30_000, maxBodyBytes: 100_000_000 });
    const flags = loadConfig({ flags: { 'archive-hosts': ' CDN.example.com, *.oss.example.net ', 'allow-private-hosts': true }, env: {} });
    expect(flags.upstream).toMatchObject({ archiveHosts: ['cdn.example.com', '*.oss.example.net'], allowPrivateHosts: true });
  });

  it('holds small hot archives in memory by default, within a bounded budget; flags and env set it', () => {
    expect(loadConfig({ env: {} }).cache).toMatchObject({ memoryArchivesBytes: 8_000_000, memoryArchiveMaxBytes: 2_000_000 });
    const set = loadConfig({ flags: { 'memory-archives': '0' }, env: { SRM_MIRROR_MEMORY_ARCHIVE_MAX_SIZE: '512KiB' } });
    expect(set.cache).toMatchObject({ memoryArchivesBytes: 0, memoryArchiveMaxBytes: 512 * 1024 });
  });

  it('refuses a short admin token without repeating it', () => {
    let message = '';
    try {
      loadConfig({ env: { SRM_MIRROR_ADMIN_TOKEN: 'hunter2' } });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/"SRM_MIRROR_ADMIN_TOKEN": expected a token of at least 16 characters without spaces, got "a 7-character value"/);
    expect(message).not.toContain('hunter2');
    expect(loadConfig({ flags: { 'admin-token': 'a-long-enough-admin-token' }, env: {} }).adminToken).toBe('a-long-enough-admin-token');
  });

  it('refuses unknown keys in a config file (typos must not pass silently)', async () => {
    const file = join(await tempDir(), 'c.json');
    await writeFile(file, JSON.stringify({ upstream: { ur1: 'x' } }));
    expect(() => loadConfig({ flags: { config: file }, env: {} })).toThrow(/"upstream.ur1": expected a known setting/);
    await writeFile(file, '{ not json');
    expect(() => loadConfig({ flags: { config: file }, env: {} })).toThrow(/expected a JSON object/);
  });

  it('keeps the metadata in LevelDB unless a PostgreSQL URL is given, and refuses any other URL without repeating its password', () => {
    expect(loadConfig({ env: {} }).databaseUrl).toBeUndefined();
    const url = 'postgresql://srm:s3cret-pass@db.internal:5432/srm?sslmode=require';
    expect(loadConfig({ env: { SRM_MIRROR_DATABASE_URL: url } }).databaseUrl).toBe(url);
    expect(loadConfig({ env: {}, flags: { 'database-url': 'postgres://db/srm' } }).databaseUrl).toBe('postgres://db/srm');
    for (const [bad, source] of [
      ['mysql://srm:s3cret-pass@db/srm', 'SRM_MIRROR_DATABASE_URL'],
      ['postgres://?password=s3cret-pass', 'SRM_MIRROR_DATABASE_URL'],
      ['db.internal:5432', 'SRM_MIRROR_DATABASE_URL'],
    ] as const) {
      const message = (() => {
        try {
          loadConfig({ env: { [source]: bad } });
        } catch (err) {
          return (err as Error).message;
        }
        return 'accepted';
      })();
      expect(message).toMatch(/invalid setting "SRM_MIRROR_DATABASE_URL": expected a PostgreSQL URL such as "postgres:\/\/.*", got "/);
      expect(message).not.toContain('s3cret-pass');
    }
  });

  it('strips a trailing slash from URLs', () => {
    expect(loadConfig({ flags: { upstream: 'http://up.example/v3/', 'public-url': 'https://m.example/' }, env: {} })).toMatchObject({
      upstream: { url: 'http://up.example/v3' },
      publicUrl: 'https://m.example',
    });
  });
});
