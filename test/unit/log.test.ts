// The logger (pino behind the Logger interface), its redaction, request ids, and the route labels of the metrics.
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { accessLine, createLogger, loggedPath, redactQuery, requestIdOf } from '../../src/log.js';
import { MirrorMetrics, requestObserver, routeOf } from '../../src/metrics.js';
import { keepLog } from '../helpers.js';
import { parsePrometheusText } from '../prometheus-text.js';

function sink(level: 'debug' | 'info' | 'warn' = 'debug') {
  const lines: string[] = [];
  const log = createLogger(level, { write: (l: string) => void (lines.push(l), keepLog(l)) });
  return { log, lines, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('createLogger', () => {
  it('writes one JSON line per call: level as a word, ISO time, the message before the fields', () => {
    const { log, lines } = sink();
    log.warn('disk full', { dir: '/data', free: 0 });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\{"level":"warn","time":"\d{4}-\d\d-\d\dT[\d:.]+Z","msg":"disk full","dir":"\/data","free":0\}\n$/);
  });

  it('writes the access line as pino writes a line, valid JSON whatever the path holds, and only at info', () => {
    const { log, lines, parsed } = sink('info');
    const socket = { bytesWritten: 0 };
    const req = { method: 'GET', url: '', headers: {}, socket } as unknown as IncomingMessage;
    const res = { statusCode: 404 } as ServerResponse;
    const path = '/v3/packages/"quoted"\\back\u0001é/release/latest';
    accessLine(log, req, `${path}?token=s3cret-q`, res, 'id-1', { route: 'v3_release', cache: 'none', seconds: 0.01234, bytes: 321, aborted: true });
    log.info('request', { id: 'id-2' });
    expect(lines[0]).toMatch(/^\{"level":"info","time":"\d{4}-\d\d-\d\dT[\d:.]+Z","msg":"request","id":"id-1",/);
    expect(lines[0]!.endsWith('}\n')).toBe(true);
    expect(parsed()[0]).toEqual({ level: 'info', time: expect.any(String), msg: 'request', id: 'id-1', method: 'GET', route: 'v3_release', path, status: 404, cache: 'none', ms: 12.3, bytes: 321, aborted: true });
    expect(Object.keys(parsed()[1]!).slice(0, 3)).toEqual(Object.keys(parsed()[0]!).slice(0, 3));
    const quiet = sink('warn');
    accessLine(quiet.log, req, path, res, 'id-3', { route: 'other', cache: 'none', seconds: 0, bytes: 0, aborted: false });
    expect(quiet.lines).toEqual([]);
  });

  it('leaves out what is below its level', () => {
    const { log, lines } = sink('warn');
    log.debug('d');
    log.info('i');
    log.error('e');
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['e']);
    expect([log.enabled('info'), log.enabled('warn'), log.enabled('error')]).toEqual([false, true, true]);
  });

  it('redacts every credential header and the secrets of a URL query, as a second line of defence', () => {
    const { log, parsed } = sink();
    const headers = {
      authorization: 'Bearer s3cret-a',
      'proxy-authorization': 'Basic s3cret-b',
      cookie: 'sid=s3cret-c',
      token: 's3cret-d',
      sign_code: 's3cret-e',
      nonce: 's3cret-f',
      timestamp: '1732200000000',
      'private-token': 's3cret-g',
      'job-token': 's3cret-h',
      'deploy-token': 's3cret-i',
      accept: 'application/json',
    };
    log.info('headers', { headers, req: { headers, url: '/x?token=s3cret-j&page=2' } });
    log.info('a url', { url: 'https://oss.example/a.zip?OSSAccessKeyId=s3cret-k&Signature=s3cret-l&Expires=1', path: '/v3/x?access_token=s3cret-m' });
    log.info('fields', { token: 's3cret-n', authorization: 's3cret-o', 'private-token': 's3cret-p' });
    const text = JSON.stringify(parsed());
    expect(text).not.toMatch(/s3cret|1732200000000/);
    const [first, second] = parsed() as Array<Record<string, Record<string, unknown>>>;
    expect(first!.headers).toMatchObject({ authorization: '[Redacted]', sign_code: '[Redacted]', accept: 'application/json' });
    expect(first!.req).toMatchObject({ url: '/x?token=***&page=2' });
    expect(second!.url).toBe('https://oss.example/a.zip?OSSAccessKeyId=***&Signature=***&Expires=1');
  });

  it('loggedPath: never the query, never the token of a one-time upload URL', () => {
    expect(loggedPath('/v3/packages/fc3/release/latest?token=x')).toBe('/v3/packages/fc3/release/latest');
    expect(loggedPath('/v3/uploads/abc123/more?x=1')).toBe('/v3/uploads/***/more');
    expect(loggedPath('/uploads/abc123')).toBe('/uploads/***');
    expect(loggedPath(undefined)).toBe('');
  });

  it("the server's stderr destination writes every line, in order, also when the process exits at once", () => {
    const script = `import { createLogger, stderrDestination } from './src/log.ts';
      const log = createLogger('info', stderrDestination());
      for (let i = 0; i < 5000; i++) log.info('line', { i });
      setImmediate(() => { for (let i = 5000; i < 10000; i++) log.info('line', { i }); process.exit(0); });`;
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
    expect(run.status).toBe(0);
    const numbers = run.stderr.trimEnd().split('\n').map((l) => (JSON.parse(l) as { i: number }).i);
    expect(numbers).toEqual(Array.from({ length: 10_000 }, (_, i) => i));
  });

  it('redactQuery keeps the names and everything else', () => {
    expect(redactQuery('/a/b')).toBe('/a/b');
    expect(redactQuery('/a?X-Amz-Signature=x&X-Amz-Credential=y&X-Amz-Date=z#f')).toBe('/a?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Date=z#f');
  });
});

describe('request ids', () => {
  const req = (id?: string | string[]) => ({ headers: id === undefined ? {} : { 'x-request-id': id } }) as unknown as IncomingMessage;
  it('takes a valid x-request-id as it is', () => {
    for (const id of ['abc', 'lb-7f3a:42', 'Root=1-5f84c7a8-0f1e2d3c4b5a69788796a5b4;Parent=53995c3f42cd8ad8', 'a/b+c=', 'x'.repeat(128)]) expect(requestIdOf(req(id))).toBe(id);
  });
  it('makes a new one for none, an empty, a too long, a repeated one, or one with other characters', () => {
    const made = [undefined, '', 'x'.repeat(129), ['a', 'b'], 'a b', 'a"b', 'a\nb', 'ümlaut', '{"x":1}'].map((id) => requestIdOf(req(id)));
    for (const id of made) expect(id).toMatch(/^[0-9a-f]{12}-[0-9a-z]+$/);
    expect(new Set(made).size).toBe(made.length);
  });
});

describe('routeOf', () => {
  it('maps every request to one of a few labels, never a path', () => {
    const cases: Array<[string, string, string]> = [
      ['GET', '/v3/packages/fc3/release/latest', 'v3_release'],
      ['GET', '/v3/packages/fc3/release/tags/1.0.0', 'v3_release'],
      ['GET', '/v3/packages/fc3/release?page=2', 'v3_release'],
      ['HEAD', '/v3/packages/fc3/zipball/1.0.0', 'zipball'],
      ['GET', '/v3/packages/releases?search=x', 'v3_list'],
      ['POST', '/v3/packages/releases', 'other'],
      ['DELETE', '/v3/packages/fc3/release/tags/1.0.0', 'other'],
      ['GET', '/v3/user/check', 'other'],
      ['GET', '/fc3/releases', 'srm'],
      ['GET', '/devsapp/fc3/releases/latest', 'srm'],
      ['GET', '/devsapp/fc3/releases/tags/v1?x=1', 'srm'],
      ['GET', '/devsapp/fc3/zipball/1.0.0', 'zipball'],
      ['PUT', '/api/packages/alice/generic/p/1/f.bin', 'generic'],
      ['GET', '/api/v4/projects/1/packages/generic/p/1/f', 'generic'],
      ['GET', '/-/metrics', 'ops'],
      ['GET', '/', 'other'],
      ['GET', '/a/b/c/releases', 'other'],
    ];
    for (const [method, url, route] of cases) expect([method, url, routeOf(method, url)]).toEqual([method, url, route]);
  });
});

describe('requestObserver', () => {
  class FakeRes extends EventEmitter {
    statusCode = 200;
    writableFinished = false;
    readonly headers: Record<string, unknown> = { 'x-cache': 'HIT' };
    setHeader(k: string, v: unknown) {
      this.headers[k] = v;
    }
    getHeader(k: string) {
      return this.headers[k];
    }
  }
  const answer = (observe: ReturnType<typeof requestObserver>, url: string, finished = true) => {
    const socket = { bytesWritten: 10 };
    const res = new FakeRes();
    observe({ method: 'GET', url, headers: {}, socket } as unknown as IncomingMessage, res as unknown as ServerResponse);
    socket.bytesWritten += 500;
    if (finished) {
      res.writableFinished = true;
      res.emit('finish');
    }
    res.emit('close');
    return res;
  };

  it('counts every answer; the access line is written at info only', async () => {
    const metrics = new MirrorMetrics();
    const quiet = sink('warn');
    const loud = sink('info');
    const res = answer(requestObserver(metrics, quiet.log), '/v3/packages/fc3/release/latest');
    expect(res.headers['x-request-id']).toMatch(/^[0-9a-f]{12}-[0-9a-z]+$/);
    answer(requestObserver(metrics, loud.log), '/v3/packages/fc3/zipball/1.0.0', false);
    const off = sink('info');
    answer(requestObserver(new MirrorMetrics(), off.log, { accessLog: false }), '/v3/packages/fc3/release/latest');
    expect(quiet.lines).toEqual([]);
    expect(off.lines).toEqual([]);
    expect(loud.parsed()).toEqual([expect.objectContaining({ msg: 'request', route: 'zipball', cache: 'HIT', status: 200, bytes: 500, aborted: true })]);
    const families = parsePrometheusText(await metrics.text());
    expect(families.get('srm_mirror_responses_total')!.samples).toEqual([{ name: 'srm_mirror_responses_total', labels: { cache: 'HIT', code: '2xx' }, value: 1 }]);
    expect(families.get('srm_mirror_response_bytes_total')!.samples[0]!.value).toBe(500);
    expect(families.get('srm_mirror_responses_aborted_total')!.samples).toEqual([{ name: 'srm_mirror_responses_aborted_total', labels: { route: 'zipball' }, value: 1 }]);
  });
});
