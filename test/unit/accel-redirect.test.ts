// nginx offload: the settings' validation, and which answers become an X-Accel-Redirect (with the lease that keeps
// the file for nginx). The real nginx is in test/integration/accel-redirect.test.ts.
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import type { ArchiveHandle } from '../../src/core/archives/archive-cache.js';
import { accelRedirected, GRACE_MS, offloadVia, type AccelRedirect } from '../../src/faces/accel-redirect.js';

describe('server.accelRedirect settings', () => {
  const load = (flags: Record<string, string | boolean>) => loadConfig({ flags, env: {} });

  it('is off by default, with a 1MB threshold', () => {
    expect(load({}).server).toMatchObject({ accelRedirect: undefined, accelRedirectMinSize: 1_000_000 });
  });

  it('takes a prefix and a size from flags and the environment', () => {
    expect(load({ 'accel-redirect': '/_srm/archives/', 'accel-redirect-min-size': '0' }).server).toMatchObject({ accelRedirect: '/_srm/archives/', accelRedirectMinSize: 0 });
    const env = { SRM_MIRROR_ACCEL_REDIRECT: '/internal/', SRM_MIRROR_ACCEL_REDIRECT_MIN_SIZE: '8MiB' };
    expect(loadConfig({ env }).server).toMatchObject({ accelRedirect: '/internal/', accelRedirectMinSize: 8 * 2 ** 20 });
  });

  it.each(['_srm/archives/', '/_srm/archives', '/', '/a/../b/', '/a..b/', '/a b/', '/a\tb/', '/a\nb/', '/a?b/', '/a%2e/', '//'])(
    'refuses the prefix %j, naming the setting, what it expects and what it got',
    (value) => {
      expect(() => load({ 'accel-redirect': value })).toThrow(`invalid setting "--accel-redirect": expected a URI prefix such as "/_srm/archives/"`);
      expect(() => load({ 'accel-redirect': value })).toThrow(`got ${JSON.stringify(value)}`);
    },
  );

  it('refuses a threshold that is not a size', () => {
    expect(() => loadConfig({ env: { SRM_MIRROR_ACCEL_REDIRECT_MIN_SIZE: 'big' } })).toThrow('invalid setting "SRM_MIRROR_ACCEL_REDIRECT_MIN_SIZE": expected a size');
  });

  it('refuses offloading together with verify-on-serve (nginx would send unhashed bytes)', () => {
    expect(() => load({ 'accel-redirect': '/_srm/archives/', 'verify-on-serve': 'true' })).toThrow('invalid setting "server.accelRedirect": expected no offload to nginx when cache.verifyOnServe is true');
    expect(load({ 'verify-on-serve': 'true' }).cache.verifyOnServe).toBe(true);
  });
});

describe('accelRedirected', () => {
  afterEach(() => void vi.useRealTimers());
  const digest = 'ab'.padEnd(64, '0');
  const leases: string[] = [];
  const released: string[] = [];
  const accel: AccelRedirect = {
    prefix: '/_srm/archives/',
    minSize: 1000,
    locate: (d) => `${d.slice(0, 2)}/${d}`,
    lease: (d) => {
      leases.push(d);
      return () => void released.push(d);
    },
  };
  const handle = (status: ArchiveHandle['status'], size: number, ref = true): ArchiveHandle => ({
    status,
    ref: ref ? { digest, size } : undefined,
    size,
    reader: { read: () => Promise.reject(new Error('never read')), close: () => {} },
    close: () => {},
  });
  const response = (offload = true) => {
    const res = new ServerResponse(new IncomingMessage(new Socket()));
    res.setHeader('Cache-Control', 'public, max-age=31536000, immutable');
    res.setHeader('Content-Disposition', 'attachment; filename="x.zip"');
    res.setHeader('Accept-Ranges', 'bytes');
    res.setHeader('ETag', `"${digest}"`);
    if (offload) offloadVia(res, accel);
    return res;
  };

  it('answers a HIT of at least minSize with the redirect, no body, and the headers nginx would put on an error moved', () => {
    const res = response();
    expect(accelRedirected(res, handle('HIT', 1000))).toBe(true);
    expect(res.writableEnded).toBe(true);
    expect(res.getHeader('X-Accel-Redirect')).toBe(`/_srm/archives/ab/${digest}`);
    expect(res.getHeader('Content-Length')).toBe(0);
    expect(res.getHeader('ETag')).toBe(`"${digest}"`);
    expect(res.getHeader('Cache-Control')).toBeUndefined();
    expect(res.getHeader('X-Srm-Cache-Control')).toBe('public, max-age=31536000, immutable');
    expect(res.getHeader('Content-Disposition')).toBeUndefined();
    expect(res.getHeader('X-Srm-Content-Disposition')).toBe('attachment; filename="x.zip"');
    expect(res.getHeader('Accept-Ranges')).toBeUndefined();
  });

  it('keeps a lease on the file for GRACE_MS after the answer, for nginx to open it', () => {
    vi.useFakeTimers();
    leases.length = released.length = 0;
    accelRedirected(response(), handle('HIT', 5000));
    expect(leases).toEqual([digest]);
    vi.advanceTimersByTime(GRACE_MS - 1);
    expect(released).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(released).toEqual([digest]);
  });

  it.each([
    ['a MISS', handle('MISS', 5000, false)],
    ['a BYPASS', handle('BYPASS', 5000, false)],
    ['a hosted file', handle('HOSTED', 5000)],
    ['a HIT below minSize', handle('HIT', 999)],
  ])('leaves %s to the mirror', (_what, h) => {
    leases.length = 0;
    const res = response();
    expect(accelRedirected(res, h)).toBe(false);
    expect(res.writableEnded).toBe(false);
    expect(res.getHeader('X-Accel-Redirect')).toBeUndefined();
    expect(res.getHeader('Cache-Control')).toBe('public, max-age=31536000, immutable');
    expect(leases).toEqual([]);
  });

  it('leaves every answer to the mirror when the setting is off', () => {
    const res = response(false);
    expect(accelRedirected(res, handle('HIT', 5000))).toBe(false);
    expect(res.getHeader('X-Accel-Redirect')).toBeUndefined();
  });
});
