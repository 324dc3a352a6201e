// Proxy mode (issue 12, item 3): the mirror is also the forward proxy of `s` clients that cannot be pointed at it.
//
// What the real client does, read in @serverless-devs/s 3.1.10 (lib/index.js, bundled):
// - `s set proxy --enable --http_proxy URL --https_proxy URL` writes `proxy_enable: true`, `http_proxy: URL` and
//   `https_proxy: URL` into ~/.s/set-config.yml (`r&&setGlobalConfig("http_proxy",r),n&&setGlobalConfig("https_proxy",n),
//   typeof u=="boolean"&&setGlobalConfig("proxy_enable",u)`; commander's `--no-enable` defaults `enable` to true).
// - At start every command runs `setProxy`: `if(!getGlobalConfig("proxy_enable"))return;bootstrap();let
//   t=getGlobalConfig("http_proxy"),r=getGlobalConfig("https_proxy");t&&(global.GLOBAL_AGENT.HTTP_PROXY=t),
//   r&&(global.GLOBAL_AGENT.HTTPS_PROXY=r),process.env.NODE_TLS_REJECT_UNAUTHORIZED="0"`. bootstrap() is
//   global-agent's: it replaces http(s).globalAgent and http(s).get/request (forceGlobalAgent defaults to true, so an
//   agent a library passes is replaced too). So everything that goes through Node's http and https modules is
//   proxied (axios for the registry commands and `s init`, the component and template downloads), and TLS
//   verification is OFF for the whole process: the client accepts any certificate the mirror presents.
//   Whatever uses undici (Node's fetch) is not proxied.
// - https: global-agent's HttpsProxyAgent opens a new connection per request (`shouldKeepAlive=!1`), writes
//   `CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n`, and starts TLS (`servername` = host) on the first bytes it
//   reads back, **whatever they are** (`n.once("data",()=>{let i=tls.connect({...t.tls,socket:n});...})`): it never
//   reads the proxy's status. So the 200 must arrive in one write, and a refusal shows up on the client as a TLS
//   error, not as a 403.
// - http: the request goes to the proxy in absolute form (`t.path=n` with n = "http://host[:port]/path"), Host kept.
// - Hosts (hard-coded): downloads, component resolution and login use `https://api.devsapp.cn/v3` unless `registry`
//   is set (3.0.0 to 3.1.5 ignore it); the registry commands of 3.1.7+ go to
//   `https://server-serverlgistry-v-awljqvnszb.cn-hangzhou.fcapp.run/v3` while `registry` is the default; `s init NAME`
//   asks `${REGISTRY.V3}/packages/NAME/release/latest` with REGISTRY.V3 = "https://api.devsapp.cn/v3" whatever the
//   setting says, downloads `body.zipball_url` (no `strip`: publish.yaml at the zip's root), and falls back to
//   `http://registry.devsapp.cn/simple/[devsapp/]NAME/releases/latest` (reading `data.Response.zipball_url`); s 2.x
//   reads `http://registry.devsapp.cn/simple/{provider}/{name}/releases[/latest]` (srm face, /simple).
//
// So: CONNECT to an intercepted host on port 443 is answered "200", TLS is terminated here with the mirror's
// certificate (certificates.ts), and the decrypted connection joins the server's own connections (its timeouts, its
// shutdown, its request handler); each request on it is marked with the origin it was meant for
// (https://api.devsapp.cn), and the URLs the mirror hands out name that origin (faces/render.ts), so the client asks
// its proxy, the mirror, for them again. Absolute-form requests for an intercepted host are answered the same way
// over plain HTTP. Anything else is refused with 403 naming the setting, or with intercept.tunnel passed through as
// a blind tunnel to port 443, through upstream.proxy when one is set (see server.ts; `dial` is where
// it goes).
import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createSecureContext, TLSSocket } from 'node:tls';
import { Client } from 'undici';
import type { Logger } from '../log.js';
import { setInterceptedOrigin } from '../faces/render.js';
import { hostMatches } from '../upstreams/egress-policy.js';
import type { TlsIdentity } from './certificates.js';

export interface InterceptOptions {
  /** intercept.hosts: answered here ("*.example.com" for subdomains). */
  readonly hosts: readonly string[];
  /** intercept.tunnel: pass CONNECT to other hosts (port 443) through instead of refusing it. */
  readonly tunnel: boolean;
  readonly identity: TlsIdentity;
  /** The mirror's request handler, which answers the intercepted requests as any other. */
  readonly handle: RequestListener;
  readonly log: Logger;
  /** How long a tunnel's connection to its target may take (upstream.connectTimeout). */
  readonly connectTimeoutMs: number;
  /** A tunnel on which nothing moves this long is closed (the server's idle timeout). */
  readonly idleTimeoutMs: number;
  /** publicUrl: an absolute-form request for it is the mirror's own. */
  readonly publicUrl?: string;
  /** How a tunnel reaches its target: directly (the default), or through upstream.proxy (dialThrough). */
  readonly dial?: (host: string, port: number) => Promise<Socket>;
}

export interface Interceptor {
  /** The server's request listener: absolute-form and intercepted requests marked, then the mirror's handler. */
  readonly handle: RequestListener;
  /** The server's 'connect' listener. */
  readonly connect: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Tunnels open now. */
  readonly tunnels: number;
  /** Cuts every tunnel (at the shutdown deadline: a tunnel's traffic is opaque, it is never idle as far as we know). */
  closeTunnels(): void;
}

/**
 * Makes `server` a forward proxy for the intercepted hosts too: its 'request' listener `handle` is replaced by the
 * interceptor's (which calls it), and CONNECT is answered. The CONNECT sockets are the server's own connections, so
 * server.maxConnections counts them; a decrypted connection is handed to the server as a new connection, so the
 * server's header, request and idle timeouts and its shutdown apply to it as to any other.
 */
export function interceptOn(server: Server, options: InterceptOptions): Interceptor {
  const interceptor = createInterceptor(server, options);
  server.removeListener('request', options.handle);
  server.on('request', interceptor.handle);
  server.on('connect', interceptor.connect);
  return interceptor;
}

export function createInterceptor(server: Server, options: InterceptOptions): Interceptor {
  const { hosts, log, handle } = options;
  const secureContext = createSecureContext({ key: options.identity.key, cert: options.identity.cert });
  /** The origin each decrypted connection was meant for. */
  const origins = new WeakMap<object, string>();
  const tunnels = new Set<() => void>();
  const selfHost = options.publicUrl ? new URL(options.publicUrl).host : undefined;
  const dial = options.dial ?? dialDirect;
  const hostList = hosts.join(', ');

  const terminate = (raw: Socket, host: string) => {
    raw.write('HTTP/1.1 200 Connection Established\r\n\r\n'); // one write: global-agent starts TLS on the first bytes it reads
    const tls = new TLSSocket(raw, { isServer: true, secureContext, ALPNProtocols: ['http/1.1'] });
    origins.set(tls, `https://${host}`);
    server.emit('connection', tls);
  };

  const passThrough = (raw: Socket, head: Buffer, host: string, port: number) => {
    let target: Socket | undefined;
    let done = false;
    const cut = () => {
      if (done) return;
      done = true;
      tunnels.delete(cut);
      raw.destroy();
      target?.destroy();
    };
    const fail = (status: number, reason: string, why: string) => {
      if (done) return;
      done = true;
      tunnels.delete(cut);
      target?.destroy();
      refuse(raw, status, reason, `srm-mirror (proxy mode, intercept.tunnel): ${why}`);
    };
    tunnels.add(cut);
    raw.on('close', cut);
    const late = setTimeout(() => fail(504, 'Gateway Timeout', `${host}:${port} did not answer within ${options.connectTimeoutMs} ms`), options.connectTimeoutMs);
    dial(host.replace(/^\[|\]$/g, ''), port).then( // [::1] is ::1 to connect to
      (socket) => {
        clearTimeout(late);
        if (done) return void socket.destroy();
        target = socket;
        socket.on('error', cut);
        socket.on('close', cut);
        socket.setTimeout(options.idleTimeoutMs, cut);
        raw.setTimeout(options.idleTimeoutMs, cut);
        raw.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length) socket.write(head);
        raw.pipe(socket).pipe(raw);
        log.debug('proxy mode: tunnel opened', { target: `${host}:${port}` });
      },
      (err: NodeJS.ErrnoException) => {
        clearTimeout(late);
        fail(502, 'Bad Gateway', `cannot reach ${host}:${port}: ${err.code ?? err.message}`);
      },
    );
  };

  const connect = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const raw = socket as Socket;
    raw.on('error', () => raw.destroy());
    const target = parseAuthority(req.url ?? '');
    if (!target) return refuse(raw, 400, 'Bad Request', `srm-mirror (proxy mode): CONNECT needs host:port, got ${JSON.stringify(req.url)}`);
    const where = `${target.host}:${target.port}`;
    if (hostMatches(target.host, hosts)) {
      if (target.port !== 443) return refuse(raw, 403, 'Forbidden', `srm-mirror (proxy mode) answers the hosts of intercept.hosts on port 443 only: CONNECT to ${where} is refused`);
      // The client's TLS handshake must come after the 200: bytes sent before it would be lost under the TLS layer.
      if (head.length) return refuse(raw, 400, 'Bad Request', 'srm-mirror (proxy mode): send the TLS handshake after the 200 answer to CONNECT');
      return terminate(raw, target.host);
    }
    if (options.tunnel && target.port === 443) return passThrough(raw, head, target.host, target.port);
    log.info('proxy mode: CONNECT refused', { target: where });
    refuse(
      raw,
      403,
      'Forbidden',
      options.tunnel
        ? `srm-mirror (proxy mode): tunnels (intercept.tunnel) go to port 443 only: CONNECT to ${where} is refused`
        : `srm-mirror (proxy mode) answers only the registry hosts of intercept.hosts (${hostList}): CONNECT to ${where} is refused; set intercept.tunnel to pass other hosts through`,
    );
  };

  const interceptHandle: RequestListener = (req: IncomingMessage, res: ServerResponse) => {
    const origin = origins.get(req.socket);
    if (origin) {
      setInterceptedOrigin(req, origin);
      return handle(req, res);
    }
    const url = req.url ?? '/';
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return handle(req, res); // origin-form: an ordinary request
    // Absolute form: a client using the mirror as its proxy for plain HTTP (`s set proxy` sends every http:// so).
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      return plain(res, 400, `srm-mirror (proxy mode): not a URL: ${JSON.stringify(url.slice(0, 200))}`);
    }
    if (target.protocol !== 'http:' && target.protocol !== 'https:') return plain(res, 400, `srm-mirror (proxy mode): only http and https URLs, not ${target.protocol}`);
    const intercepted = hostMatches(target.hostname, hosts);
    if (!intercepted && !isSelf(target, req, selfHost)) {
      log.info('proxy mode: request refused', { target: target.origin });
      return plain(res, 403, `srm-mirror (proxy mode) answers only the registry hosts of intercept.hosts (${hostList}): ${req.method} ${target.origin}/... is refused`);
    }
    req.url = `${target.pathname}${target.search}`;
    req.headers.host = target.host;
    if (intercepted) setInterceptedOrigin(req, target.origin);
    handle(req, res);
  };

  return {
    handle: interceptHandle,
    connect,
    get tunnels() {
      return tunnels.size;
    },
    closeTunnels() {
      for (const cut of [...tunnels]) cut();
    },
  };
}

/** "host:port" of a CONNECT request (a bracketed IPv6 address allowed); undefined when it is not one. */
export function parseAuthority(authority: string): { host: string; port: number } | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(authority);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) return undefined;
  return { host: m[1]!.toLowerCase().replace(/\.$/, ''), port };
}

/** Whether an absolute-form URL names this mirror itself (the address it was reached at, or publicUrl). */
function isSelf(target: URL, req: IncomingMessage, selfHost: string | undefined): boolean {
  if (selfHost && target.host === selfHost) return true;
  const local = req.socket.localAddress?.replace(/^::ffff:/, '');
  const host = target.hostname.replace(/^\[|\]$/g, '');
  const port = Number(target.port || (target.protocol === 'https:' ? 443 : 80));
  return host === local && port === req.socket.localPort;
}

/** Answers on a socket that left HTTP (after CONNECT), then closes it. */
function refuse(raw: Socket, status: number, reason: string, message: string): void {
  const body = `${message}\n`;
  raw.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`, () => raw.destroy());
}

function plain(res: ServerResponse, status: number, message: string): void {
  const body = `${message}\n`;
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) }).end(body);
}

/** A connection to host:port, once it is open. */
export function dialDirect(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/**
 * Tunnels through a forward proxy (upstream.proxy): CONNECT host:port to it, with its credentials when its URL has
 * them; the proxy's socket once it answered 200 (undici's Client.connect).
 */
export function dialThrough(proxyUrl: string): (host: string, port: number) => Promise<Socket> {
  const proxy = new URL(proxyUrl);
  const auth = proxy.username ? `Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}` : undefined;
  return async (host, port) => {
    const client = new Client(proxy.origin);
    try {
      const { statusCode, socket } = await client.connect({ path: `${host.includes(':') ? `[${host}]` : host}:${port}`, headers: auth ? { 'proxy-authorization': auth } : {} });
      if (statusCode !== 200) {
        socket.destroy();
        throw new Error(`the proxy (upstream.proxy) answered ${statusCode} to CONNECT`);
      }
      socket.once('close', () => void client.close().catch(() => {}));
      return socket as Socket;
    } catch (err) {
      void client.destroy().catch(() => {});
      throw err;
    }
  };
}
