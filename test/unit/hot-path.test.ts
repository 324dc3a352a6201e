// The hot path's dispatch (faces/hot-path.ts): which requests it takes from express, and what it hands the route.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { hotPath, type RouteContext } from '../../src/faces/hot-path.js';

describe('hotPath', () => {
  const seen: Array<[string, RouteContext]> = [];
  const failed: unknown[] = [];
  const take = hotPath([
    {
      mount: '/v3',
      reads: [
        { path: '/packages/releases', handle: async (_req, _res, at) => void seen.push(['list', at]) },
        { path: '/packages/:name/zipball/:version', handle: async (_req, _res, at) => void seen.push(['zipball', at]) },
        { path: '/packages/:name/release', handle: async () => Promise.reject(new Error('boom')) },
      ],
      fail: (_req, _res, err) => void failed.push(err),
    },
  ]);
  const req = (method: string, url: string, headers: Record<string, string> = {}) => ({ method, url, headers }) as unknown as IncomingMessage;
  const res = {} as ServerResponse;

  it('takes GET and HEAD of its routes, with decoded params and the simple query, the URL as sent', () => {
    expect(take(req('GET', '/v3/packages/fc%33/zipball/1.0.0?expires=1&signature=a&signature=b'), res)).toBe(true);
    expect(take(req('HEAD', '/v3/packages/releases'), res)).toBe(true);
    expect(seen).toEqual([
      ['zipball', { params: { name: 'fc3', version: '1.0.0' }, query: { expires: '1', signature: ['a', 'b'] }, url: '/v3/packages/fc%33/zipball/1.0.0?expires=1&signature=a&signature=b' }],
      ['list', { params: {}, query: {}, url: '/v3/packages/releases' }],
    ]);
  });

  it('leaves to express other methods, credentials, other paths and malformed escapes', () => {
    seen.length = 0;
    for (const r of [
      req('POST', '/v3/packages/releases'),
      req('GET', '/v3/packages/releases', { authorization: 'Basic x' }),
      req('GET', '/v3/packages/releases', { token: 'x' }),
      req('GET', '/v3/packages/releases/'),
      req('GET', '/V3/packages/releases'),
      req('GET', '/packages/releases'),
      req('GET', '/v3/packages/fc3/zipball'),
      req('GET', '/v3/packages/fc3/zipball/1.0.0/x'),
      req('GET', '/v3/packages/%E0%A4%A/zipball/1.0.0'),
    ]) {
      expect([r.method, r.url, take(r, res)]).toEqual([r.method, r.url, false]);
    }
    expect(seen).toEqual([]);
  });

  it("hands a route's failure to the face's error answer", async () => {
    expect(take(req('GET', '/v3/packages/fc3/release'), res)).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    expect(failed).toEqual([new Error('boom')]);
  });
});
