// Where archive downloads may go (SSRF): a zipball_url or a redirect is the upstream's word, and a hostile or
// compromised upstream could aim the mirror at its own network (cloud metadata, admin ports, 10.x services).
// Downloads therefore go only to http(s) URLs on the upstream's own origin or on a host in upstream.archiveHosts,
// and never to a loopback, link-local, private or reserved address, unless the upstream itself is on an address
// of that class (a mirror chained to a mirror on the same network, tests on 127.0.0.1) or allowPrivateHosts is set.
// Addresses are checked in the socket's own lookup, so the connection goes to the address that was checked: a DNS
// answer that changes between a check and the connect (rebinding) cannot slip through.
//
// Through a forward proxy the mirror's socket goes to the proxy, which resolves and connects on its own: the lookup
// cannot pin anything there (and must not check the proxy itself, which is usually on a private address). So before
// a download is handed to a proxy, checkBeforeProxy resolves its host here and refuses it when any address is of a
// class not allowed, exactly as the lookup would; a name this host cannot resolve at all (split-horizon DNS, where
// only the proxy sees outside names) is left to the proxy. What is lost is the pinning: the proxy's own answer may
// differ (rebinding), so the proxy's own rules (which destinations it may reach) are the last line there. The host
// checks (http(s) only, the upstream's origins and upstream.archiveHosts, IP literals) are the same either way.
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { MirrorError } from '../model/errors.js';

export type AddressClass = 'public' | 'loopback' | 'link-local' | 'private' | 'reserved';

const RANGES: ReadonlyArray<readonly [AddressClass, 'ipv4' | 'ipv6', string, number]> = [
  ['loopback', 'ipv4', '127.0.0.0', 8],
  ['loopback', 'ipv6', '::1', 128],
  ['link-local', 'ipv4', '169.254.0.0', 16], // cloud metadata services live here
  ['link-local', 'ipv6', 'fe80::', 10],
  ['private', 'ipv4', '10.0.0.0', 8],
  ['private', 'ipv4', '172.16.0.0', 12],
  ['private', 'ipv4', '192.168.0.0', 16],
  ['private', 'ipv4', '100.64.0.0', 10], // carrier-grade NAT
  ['private', 'ipv6', 'fc00::', 7], // unique local
  ['reserved', 'ipv4', '0.0.0.0', 8], // "this host": connecting to 0.0.0.0 reaches the local machine
  ['reserved', 'ipv4', '192.0.0.0', 24],
  ['reserved', 'ipv4', '198.18.0.0', 15],
  ['reserved', 'ipv4', '224.0.0.0', 4], // multicast
  ['reserved', 'ipv4', '240.0.0.0', 4], // reserved, and broadcast
  ['reserved', 'ipv6', '::', 128],
  ['reserved', 'ipv6', 'ff00::', 8], // multicast
  ['reserved', 'ipv6', '64:ff9b::', 96], // NAT64: would reach any IPv4 address, private ones included
  ['reserved', 'ipv6', '2002::', 16], // 6to4: likewise
];

// One BlockList per class; BlockList also matches IPv4-mapped IPv6 addresses (::ffff:10.0.0.1) against IPv4 ranges.
const LISTS = new Map<AddressClass, BlockList>();
for (const [cls, family, network, prefix] of RANGES) {
  if (!LISTS.has(cls)) LISTS.set(cls, new BlockList());
  LISTS.get(cls)!.addSubnet(network, prefix, family);
}

/** The class of an IP address (v4 or v6, ::ffff:-mapped included); anything that is not an address is 'reserved'. */
export function classifyAddress(address: string): AddressClass {
  const ip = address.replace(/^\[|\]$/g, '').replace(/%.*$/, ''); // [::1] in URLs; zone ids (fe80::1%eth0)
  const family = isIP(ip);
  if (family === 0) return 'reserved';
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const [cls, list] of LISTS) if (list.check(ip, type)) return cls;
  return 'public';
}

/** Whether a host name matches one of the patterns: exactly, or "*.example.com" for any subdomain of example.com. */
export function hostMatches(host: string, patterns: readonly string[]): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  return patterns.some((p) => (p.startsWith('*.') ? h.endsWith(p.slice(1)) : h === p));
}

export interface EgressPolicyOptions {
  /** The upstream's base URL: its origin is always allowed, and the class of its addresses too. */
  readonly upstreamUrl: string;
  /** Where registry commands go (upstream.commandsUrl): its origin is allowed like the upstream's. */
  readonly commandsUrl?: string;
  readonly archiveHosts: readonly string[];
  readonly allowPrivateHosts: boolean;
  /** Name resolution (dns.lookup by default); tests give a fake one. */
  readonly resolve?: (host: string) => Promise<LookupAddress[]>;
}

const systemResolve = (host: string) =>
  new Promise<LookupAddress[]>((resolve, reject) => dnsLookup(host, { all: true } satisfies LookupAllOptions, (err, addresses) => (err ? reject(err) : resolve(addresses))));

/** Resolver errors that mean "this host cannot resolve the name" (not a failure of the check itself). */
const UNRESOLVED = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NODATA', 'ENODATA', 'EAI_NONAME']);

export class EgressPolicy {
  private readonly upstream: URL;
  private readonly origins: ReadonlySet<string>;
  private readonly resolve: (host: string) => Promise<LookupAddress[]>;
  /** The classes of the upstream's own addresses, found once. */
  private upstreamClasses: Promise<ReadonlySet<AddressClass>> | undefined;

  constructor(private readonly options: EgressPolicyOptions) {
    this.upstream = new URL(options.upstreamUrl);
    this.origins = new Set([this.upstream.origin, ...(options.commandsUrl ? [new URL(options.commandsUrl).origin] : [])]);
    this.resolve = options.resolve ?? systemResolve;
  }

  /** Throws a MirrorError unless `url` may be downloaded from; an IP literal's address is checked here too. */
  async checkUrl(url: URL): Promise<void> {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') refuse(url, `only http(s) is fetched, not ${url.protocol}`);
    if (!this.origins.has(url.origin) && !hostMatches(url.hostname, this.options.archiveHosts)) {
      refuse(url, 'the host is neither the upstream nor in upstream.archiveHosts');
    }
    if (isIP(url.hostname.replace(/^\[|\]$/g, ''))) await this.checkAddress(url.hostname, url.hostname);
  }

  /**
   * Before a request is handed to a forward proxy (after checkUrl): refuses a host name that resolves here to an
   * address of a class not allowed; one that does not resolve here is the proxy's to resolve.
   */
  async checkBeforeProxy(url: URL): Promise<void> {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host)) return; // checkUrl has checked it
    let addresses: LookupAddress[];
    try {
      addresses = await this.resolve(host);
    } catch (err) {
      if (UNRESOLVED.has((err as NodeJS.ErrnoException).code ?? '')) return;
      throw err;
    }
    for (const a of addresses) await this.checkAddress(a.address, host);
  }

  /**
   * A lookup for net/tls connect: resolves the name, refuses it when any of its addresses is of a class not
   * allowed, and hands the checked addresses to the socket.
   */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    void (async () => {
      const addresses = await this.resolve(hostname);
      const wanted = options.family === 4 || options.family === 6 ? addresses.filter((a) => a.family === options.family) : addresses;
      if (wanted.length === 0) throw Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' });
      for (const a of wanted) await this.checkAddress(a.address, hostname);
      return wanted;
    })().then(
      (addresses) => {
        if (options.all) callback(null, addresses);
        else callback(null, addresses[0]!.address, addresses[0]!.family);
      },
      (err: NodeJS.ErrnoException) => callback(err, ''),
    );
  };

  private async checkAddress(address: string, host: string): Promise<void> {
    if (this.options.allowPrivateHosts) return;
    const cls = classifyAddress(address);
    if (cls === 'public' || (await this.allowedClasses()).has(cls)) return;
    refuse(host, `it is a ${cls} address (${address}); set upstream.allowPrivateHosts to allow it`);
  }

  private allowedClasses(): Promise<ReadonlySet<AddressClass>> {
    const host = this.upstream.hostname.replace(/^\[|\]$/g, '');
    this.upstreamClasses ??= (isIP(host) ? Promise.resolve([{ address: host, family: isIP(host) }]) : this.resolve(host)).then(
      (addresses) => new Set(addresses.map((a) => classifyAddress(a.address))),
      (err: unknown) => {
        this.upstreamClasses = undefined; // try again next time
        throw err;
      },
    );
    return this.upstreamClasses;
  }
}

/** A download the policy refuses: the client sees a 502 saying why; it says nothing about the upstream's health. */
export class EgressRefusedError extends MirrorError {
  constructor(target: string, why: string) {
    super('upstream-failed', `refused to download from ${target}: ${why}`);
  }
}

function refuse(target: URL | string, why: string): never {
  throw new EgressRefusedError(typeof target === 'string' ? target : `${target.protocol}//${target.host}`, why);
}
