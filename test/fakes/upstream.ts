// A real HTTP server on port 0 that plays the upstream registry: the v3 API under /v3 and the SRM (GitHub
// releases) shape under /srm, zipballs answered with a 302 to /blob/{sha256} like the public registry. It records
// every request and injects faults on demand. Over TLS (a test CA's certificate) when asked, and then, for egress
// tests, willing to take connections from one address only (a forward proxy's).
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { componentZip } from './zips.js';

export interface FakeRelease {
  readonly version: string;
  readonly createdAt: string;
  readonly body: string;
  readonly zip: Buffer;
  /** More fields of the v3 release answers (e.g. a stated sha256). */
  readonly fields?: Record<string, unknown>;
  /** Where the release's zipball_url points, when not at this fake's own zipball route. */
  readonly zipballUrl?: string;
}

export interface FakePackage {
  readonly name: string;
  readonly description: string;
  /** Only answered to requests that carry a `token` header. */
  readonly private: boolean;
  /** Newest first. */
  readonly releases: FakeRelease[];
}

export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  /** The body's first MiB (large uploads are counted, not kept). */
  readonly body: Buffer;
  readonly bodyLength: number;
  /** The address the request's connection came from (a proxy's, when it went through one). */
  readonly remoteAddress: string | undefined;
}

export interface FakeUpstreamOptions {
  /** Serve HTTPS with this key and certificate (PEM). */
  readonly tls?: { readonly key: string; readonly cert: string };
  /** The host its URLs name (default 127.0.0.1; the server listens on 127.0.0.1 either way). */
  readonly host?: string;
  /** Accept connections from this address only: any other is counted in `refusedConnections` and closed at once. */
  readonly onlyFrom?: string;
}

/** The credentials the fake accepts for writes: the `token` header of a logged-in `s` client. */
export const VALID_TOKEN_HEADER = /^[0-9a-f]{32}$/;

/** What to do to a request whose URL matches: answer with a status, hang, or break the body. */
export type FaultKind =
  | { kind: 'status'; status: number; headers?: Record<string, string> }
  | { kind: 'hang' }
  | { kind: 'reset-mid-body' }
  | { kind: 'short-body' }
  /** Sends half the body, then waits until the faults are cleared (and then resets). */
  | { kind: 'stall-mid-body' }
  | { kind: 'delay'; ms: number }
  | { kind: 'not-json' }
  /** Answers a blob request 200 with these bytes instead (without Content-Length when chunked). */
  | { kind: 'body'; body: Buffer; chunked?: boolean; headers?: Record<string, string> }
  /** Answers with a status before reading the request body (an upstream refusing an upload at once). */
  | { kind: 'status-early'; status: number }
  /** Answers 200 with a JSON envelope of about `bytes` bytes, with a Content-Length or chunked. */
  | { kind: 'big-json'; bytes: number; chunked: boolean };

export interface Fault {
  readonly match: RegExp;
  readonly fault: FaultKind;
  /** How many requests it applies to; unlimited when absent. */
  times?: number;
}

export const V3_PAGE_SIZE = 20;

export class FakeUpstream {
  readonly packages = new Map<string, FakePackage>();
  readonly requests: RecordedRequest[] = [];
  readonly faults: Fault[] = [];
  /** Requests whose body the client (the mirror) broke off before it was whole. */
  aborted = 0;
  /** The remote address of every connection accepted, in order. */
  readonly connectionsFrom: string[] = [];
  /** Connections closed at once because they did not come from `onlyFrom`. */
  refusedConnections = 0;
  /** Whether JSON answers carry an ETag (and honour If-None-Match). */
  etags = true;
  private readonly sockets = new Set<Socket>();
  private hanging: Array<() => void> = [];

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start({ tls, host = '127.0.0.1', onlyFrom }: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
    const server: Server = tls ? createHttpsServer({ key: tls.key, cert: tls.cert }) : createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const fake = new FakeUpstream(server, `${tls ? 'https' : 'http'}://${host}:${port}`);
    server.on('request', (req, res) =>
      void fake.handle(req, res).catch(() => {
        fake.aborted++; // reading the request body failed: the mirror aborted its upload
        res.destroy();
      }),
    );
    server.on('connection', (s: Socket) => {
      if (onlyFrom !== undefined && s.remoteAddress !== onlyFrom) {
        fake.refusedConnections++;
        s.destroy();
        return;
      }
      fake.connectionsFrom.push(s.remoteAddress ?? '');
      fake.sockets.add(s);
      s.on('close', () => fake.sockets.delete(s));
    });
    return fake;
  }

  /** Connections open to the fake now. */
  get openConnections(): number {
    return this.sockets.size;
  }

  get v3(): string {
    return `${this.url}/v3`;
  }

  get srm(): string {
    return `${this.url}/srm`;
  }

  /** Adds a package; releases are given newest first. */
  add(name: string, releases: Array<Partial<FakeRelease> & { version: string }>, opts: { private?: boolean; description?: string } = {}): FakePackage {
    const pkg: FakePackage = {
      name,
      description: opts.description ?? `${name} component`,
      private: opts.private ?? false,
      releases: releases.map((r, i) => ({
        createdAt: new Date(Date.UTC(2024, 0, 1) + (releases.length - i) * 86_400_000).toISOString(),
        body: `release ${r.version}`,
        zip: componentZip(name, r.version),
        ...r,
      })),
    };
    this.packages.set(name, pkg);
    return pkg;
  }

  /** Publishes a new newest release of an existing package. */
  publish(name: string, release: Partial<FakeRelease> & { version: string }): void {
    const pkg = this.packages.get(name)!;
    pkg.releases.unshift({ createdAt: new Date().toISOString(), body: `release ${release.version}`, zip: componentZip(name, release.version), ...release });
  }

  inject(match: RegExp, fault: FaultKind, times?: number): void {
    this.faults.push({ match, fault, times });
  }

  clearFaults(): void {
    this.faults.length = 0;
    for (const release of this.hanging.splice(0)) release();
  }

  /** Requests whose URL matches. */
  count(match: RegExp): number {
    return this.requests.filter((r) => match.test(r.url)).length;
  }

  async close(): Promise<void> {
    this.clearFaults();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const early = this.faults.find((f) => f.fault.kind === 'status-early' && f.match.test(req.url ?? '') && (f.times === undefined || f.times > 0));
    if (early?.fault.kind === 'status-early') {
      if (early.times !== undefined) early.times--;
      this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.alloc(0), bodyLength: 0, remoteAddress: req.socket.remoteAddress });
      return json(res, early.fault.status, { request_id: 'fake', body: `injected ${early.fault.status}` });
    }
    const chunks: Buffer[] = [];
    let bodyLength = 0;
    for await (const chunk of req) {
      if (bodyLength < 1 << 20) chunks.push(chunk as Buffer);
      bodyLength += (chunk as Buffer).length;
    }
    const body = Buffer.concat(chunks);
    this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, bodyLength, remoteAddress: req.socket.remoteAddress });
    const url = new URL(req.url ?? '/', this.url);
    const fault = this.takeFault(url.pathname + url.search);
    if (fault?.kind === 'hang') {
      await new Promise<void>((resolve) => this.hanging.push(resolve));
      res.destroy();
      return;
    }
    if (fault?.kind === 'delay') await new Promise((r) => setTimeout(r, fault.ms));
    if (fault?.kind === 'status') return json(res, fault.status, { request_id: 'fake', body: `injected ${fault.status}` }, fault.headers);
    if (fault?.kind === 'big-json') {
      const body = JSON.stringify({ request_id: 'fake', body: 'x'.repeat(fault.bytes) });
      res.writeHead(200, { 'content-type': 'application/json', ...(fault.chunked ? {} : { 'content-length': Buffer.byteLength(body) }) });
      for (let i = 0; i < body.length; i += 1 << 20) res.write(body.slice(i, i + (1 << 20)));
      res.end();
      return;
    }
    if (fault?.kind === 'not-json') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('<html>gateway</html>');
      return;
    }
    const authorized = req.headers.token !== undefined;
    if (req.method !== 'GET' && req.method !== 'HEAD') return this.write(req, res, url, body);
    const answer = this.route(url, authorized);
    if (!answer) return json(res, 404, url.pathname.startsWith('/srm/') ? { message: 'Not Found' } : { request_id: 'fake', body: '未找到指定资源' });
    if ('redirect' in answer) {
      res.writeHead(302, { location: answer.redirect }).end();
      return;
    }
    if ('blob' in answer) {
      if (fault?.kind === 'stall-mid-body') {
        res.writeHead(200, { 'content-type': 'application/zip', 'content-length': answer.blob.length });
        res.write(answer.blob.subarray(0, answer.blob.length >> 1));
        await new Promise<void>((resolve) => this.hanging.push(resolve));
        res.destroy();
        return;
      }
      return sendBlob(res, answer.blob, fault);
    }
    // Validators, as a well-behaved upstream sends them: an ETag over the answer (less the random request_id).
    const etag = `"${sha256(Buffer.from(JSON.stringify((answer.json as { body?: unknown }).body ?? answer.json))).slice(0, 16)}"`;
    if (this.etags && req.headers['if-none-match'] === etag) {
      res.writeHead(304, { etag }).end();
      return;
    }
    json(res, answer.status ?? 200, answer.json, { ...answer.headers, ...(this.etags ? { etag } : {}) });
  }

  private route(url: URL, authorized: boolean): { json: unknown; status?: number; headers?: Record<string, string> } | { redirect: string } | { blob: Buffer } | undefined {
    const path = url.pathname.split('/').slice(1).map(decodeURIComponent);
    const pkgOf = (name: string | undefined) => {
      const pkg = name === undefined ? undefined : this.packages.get(name);
      return pkg && (!pkg.private || authorized) ? pkg : undefined;
    };
    const pageOf = <T>(items: T[], size: number) => {
      const page = Number(url.searchParams.get('page') ?? '1');
      return page === -1 ? items : items.slice((page - 1) * size, page * size);
    };
    if (path[0] === 'blob') {
      const zip = [...this.packages.values()].flatMap((p) => p.releases).find((r) => digestOf(r.zip) === path[1])?.zip;
      return zip && { blob: zip };
    }
    if (path[0] === 'v3') {
      const [, packages, name, what, sub, version] = path;
      if (packages === 'user' && name === 'check') return { json: envelope(url.searchParams.get('token') === 'ready' ? { safety_code: 'sc', name: 'fake-user' } : 'waiting for login') };
      if (packages === 'package' && name === 'user') {
        return authorized ? { json: envelope([...this.packages.values()].filter((p) => p.private).map((p, i) => summary(p, i))) } : { json: { request_id: 'fake', body: '用户未登录' }, status: 401 };
      }
      if (packages !== 'packages') return undefined;
      if (name === 'releases' && what === undefined) {
        const search = url.searchParams.get('search');
        const matches = [...this.packages.values()].filter((p) => !p.private && (!search || p.name.includes(search)));
        return { json: envelope(pageOf(matches, V3_PAGE_SIZE).map((p, i) => summary(p, i))) };
      }
      const pkg = pkgOf(name);
      if (!pkg) return undefined;
      const find = (v: string | undefined) => pkg.releases.find((r) => r.version === v);
      const v3 = (r: FakeRelease) => ({ name: pkg.name, tag_name: r.version, created_at: r.createdAt, zipball_url: r.zipballUrl ?? `${this.v3}/packages/${pkg.name}/zipball/${r.version}`, description: pkg.description, ...r.fields });
      if (what === 'release' && sub === 'latest' && path.length === 5) return pkg.releases[0] && { json: envelope(v3(pkg.releases[0])) };
      if (what === 'release' && sub === 'tags' && path.length === 6) {
        const r = find(version);
        return r && { json: envelope(v3(r)) };
      }
      if (what === 'release' && path.length === 4) {
        return { json: envelope(pageOf(pkg.releases, V3_PAGE_SIZE).map((r) => ({ platform: 'linux', tag_name: r.version, created_at: r.createdAt, zipball_url: v3(r).zipball_url }))) };
      }
      if (what === 'zipball' && path.length === 5) {
        const r = find(sub);
        return r && { redirect: `${this.url}/blob/${sha256(r.zip)}` };
      }
      return undefined;
    }
    if (path[0] === 'srm') {
      // /srm/{pkg...}/releases[/latest] | /srm/{pkg...}/zipball/{version}; a package is one or two segments.
      const rest = path.slice(1);
      const last = rest[rest.length - 1];
      const srm = (p: FakePackage, r: FakeRelease) => ({ tag_name: r.version, created_at: r.createdAt, zipball_url: r.zipballUrl ?? `${this.srm}/${p.name}/zipball/${r.version}`, body: r.body, prerelease: false, draft: false });
      if (last === 'releases') {
        const pkg = pkgOf(rest.slice(0, -1).join('/'));
        if (!pkg) return undefined;
        const perPage = Number(url.searchParams.get('per_page') ?? '30');
        const page = Number(url.searchParams.get('page') ?? '1');
        const lastPage = Math.max(1, Math.ceil(pkg.releases.length / perPage));
        const headers: Record<string, string> = page < lastPage ? { link: `<${this.srm}/${pkg.name}/releases?per_page=${perPage}&page=${page + 1}>; rel="next"` } : {};
        return { json: pkg.releases.slice((page - 1) * perPage, page * perPage).map((r) => srm(pkg, r)), headers };
      }
      if (last === 'latest' && rest[rest.length - 2] === 'releases') {
        const pkg = pkgOf(rest.slice(0, -2).join('/'));
        return pkg?.releases[0] && { json: srm(pkg, pkg.releases[0]) };
      }
      if (rest[rest.length - 2] === 'zipball') {
        const r = pkgOf(rest.slice(0, -2).join('/'))?.releases.find((x) => x.version === last);
        return r && { redirect: `${this.url}/blob/${sha256(r.zip)}` };
      }
    }
    return undefined;
  }

  /** Uploads waiting for their zip (publish step 2), by id. */
  private readonly uploads = new Map<string, { name: string; version: string }>();

  /** Publish (two steps), delete and retoken, as the v3 API answers them: signed requests only. */
  private write(req: IncomingMessage, res: ServerResponse, url: URL, body: Buffer): void {
    const path = url.pathname.split('/').slice(1).map(decodeURIComponent);
    if (req.method === 'PUT' && path[0] === 'upload') {
      const upload = this.uploads.get(path[1] ?? '');
      if (!upload) return json(res, 404, { message: 'no such upload' });
      this.uploads.delete(path[1]!);
      if (!this.packages.has(upload.name)) this.add(upload.name, []);
      this.publish(upload.name, { version: upload.version, zip: body });
      res.writeHead(200).end();
      return;
    }
    const signed = VALID_TOKEN_HEADER.test(String(req.headers.token ?? '')) && req.headers.sign_code && req.headers.nonce && req.headers.timestamp;
    if (!signed) return json(res, 401, { request_id: 'fake', body: '用户未登录' });
    if (req.method === 'POST' && url.pathname === '/v3/packages/releases') {
      const yaml = new URLSearchParams(body.toString()).get('publish') ?? '';
      const name = /^Name:\s*(\S+)/m.exec(yaml)?.[1];
      const version = /^Version:\s*(\S+)/m.exec(yaml)?.[1];
      if (!name || !version) return json(res, 400, { request_id: 'fake', body: 'publish.yaml is missing Name or Version' });
      const id = Math.random().toString(36).slice(2);
      this.uploads.set(id, { name, version });
      return json(res, 200, envelope({ url: `${this.url}/upload/${id}?signature=fake` }));
    }
    if (req.method === 'DELETE' && path[0] === 'v3' && path[1] === 'packages' && path[3] === 'release' && path[4] === 'tags') {
      const pkg = this.packages.get(path[2] ?? '');
      const at = pkg?.releases.findIndex((r) => r.version === path[5]) ?? -1;
      if (!pkg || at < 0) return json(res, 404, { request_id: 'fake', body: '未找到指定资源' });
      pkg.releases.splice(at, 1);
      return json(res, 200, envelope({ deleted: `${pkg.name}@${path[5]}` }));
    }
    if (req.method === 'POST' && url.pathname === '/v3/user/token') return json(res, 200, envelope({ safety_code: 'new-safety-code' }));
    json(res, 404, { request_id: 'fake', body: '未找到指定资源' });
  }

  private takeFault(url: string): FaultKind | undefined {
    const f = this.faults.find((x) => x.match.test(url) && (x.times === undefined || x.times > 0));
    if (f?.times !== undefined) f.times--;
    return f?.fault;
  }
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Each zip's sha256, hashed once: a blob request looks through every release (the soak bench has hundreds). */
const digests = new WeakMap<Buffer, string>();
function digestOf(zip: Buffer): string {
  let digest = digests.get(zip);
  if (digest === undefined) digests.set(zip, (digest = sha256(zip)));
  return digest;
}

function envelope(body: unknown) {
  return { request_id: `fake-${Math.random().toString(36).slice(2)}`, body };
}

function summary(p: FakePackage, i: number) {
  return {
    id: i + 1,
    type: 'Component',
    name: p.name,
    description: p.description,
    show: true,
    organization: { id: 1, name: 'fake' },
    user: { id: 1, username: 'fake' },
    download: 100 - i,
    provider: ['阿里云'],
    platform: 'linux',
    category: { id: 1, name: 'Web框架' },
    tags: ['demo'],
  };
}

function json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), ...headers }).end(body);
}

/** Sends a zip; 'reset-mid-body' and 'short-body' promise the full Content-Length and send half. */
function sendBlob(res: ServerResponse, zip: Buffer, fault: FaultKind | undefined): void {
  if (fault?.kind === 'body') {
    res.writeHead(200, { 'content-type': 'application/zip', ...(fault.chunked ? {} : { 'content-length': fault.body.length }), ...fault.headers });
    res.end(fault.body);
    return;
  }
  res.writeHead(200, { 'content-type': 'application/zip', 'content-length': zip.length });
  if (fault?.kind === 'reset-mid-body') {
    res.write(zip.subarray(0, zip.length >> 1), () => setTimeout(() => res.socket?.resetAndDestroy(), 20));
  } else if (fault?.kind === 'short-body') {
    res.write(zip.subarray(0, zip.length >> 1), () => setTimeout(() => res.socket?.end(), 20));
  } else {
    res.end(zip);
  }
}
