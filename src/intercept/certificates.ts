// Proxy mode's TLS identity (issue 12, item 3): the certificate the mirror presents for the registry hosts it
// intercepts (intercept.hosts). Either the operator's (intercept.cert + intercept.key), or one the mirror issues
// itself: a small CA of its own, generated once into {dataDir}/intercept/ and never replaced (clients that verify
// trust it once, `srm-mirror ca`), and a leaf for every intercepted host, issued by that CA and issued again when the
// hosts change or it nears its end.
//
// Why node-forge: node:crypto makes key pairs and reads X.509 (X509Certificate) but cannot write a certificate.
// node-forge (no dependencies, plain JS, no global polyfills) builds and signs one; the RSA keys themselves come
// from node:crypto. @peculiar/x509 was the other candidate (ECDSA on WebCrypto), but it needs a global Reflect
// polyfill (tsyringe) and a dozen packages; the `openssl` binary is not in every image the mirror runs in.
// Generation happens once per data folder (and once per leaf renewal), so forge's speed does not matter.
import { createPrivateKey, generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** What a TLS server needs: the key and the certificate chain (leaf first), PEM. */
export interface TlsIdentity {
  readonly key: string;
  readonly cert: string;
  /** The generated CA's certificate (PEM); undefined when the operator's certificate is used. */
  readonly ca: string | undefined;
}

const CA_YEARS = 10;
/** 397 days: the longest validity browsers and Apple platforms accept for a server certificate. */
const LEAF_DAYS = 397;
/** A leaf this close to its end is issued again at start-up. */
const RENEW_BEFORE_DAYS = 30;
const DAY = 86_400_000;

/** The folder of proxy mode's certificates in a data folder. */
export const interceptDir = (dataDir: string) => join(dataDir, 'intercept');

/** A name a certificate for `host` must cover ("*.example.com" is checked with one of its subdomains). */
const probe = (host: string) => (host.startsWith('*.') ? `srm-mirror-probe.${host.slice(2)}` : host);

/**
 * Reads and checks the operator's certificate and key (intercept.cert, intercept.key): both PEM, the key the
 * certificate's, and the certificate valid for every intercepted host. Throws an Error saying what is wrong.
 */
export function checkConfiguredIdentity(certFile: string, keyFile: string, hosts: readonly string[]): TlsIdentity {
  const cert = readFileSync(certFile, 'utf8');
  const key = readFileSync(keyFile, 'utf8');
  const leaf = new X509Certificate(cert); // the first certificate of the file
  if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error(`the key in ${keyFile} is not the key of the certificate in ${certFile}`);
  const uncovered = hosts.filter((h) => !leaf.checkHost(probe(h)));
  if (uncovered.length) throw new Error(`the certificate in ${certFile} is not valid for ${uncovered.join(', ')} (intercept.hosts)`);
  if (Date.parse(leaf.validTo) < Date.now()) throw new Error(`the certificate in ${certFile} expired on ${leaf.validTo}`);
  return { key, cert, ca: undefined };
}

/** The mirror's own CA (key and certificate, PEM), generated into the data folder the first time it is asked for. */
export async function loadOrCreateCa(dataDir: string): Promise<{ key: string; cert: string }> {
  const dir = interceptDir(dataDir);
  const file = join(dir, 'ca.pem');
  const existing = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (existing !== undefined) return splitPem(existing, file);
  await mkdir(dir, { recursive: true });
  const made = await issue({ ca: true, subject: `srm-mirror proxy-mode CA ${randomBytes(4).toString('hex')}`, hosts: [], days: CA_YEARS * 365 });
  // Created once, atomically: written aside, then linked into place, which fails if another process (a server and
  // `srm-mirror ca` at the same moment) got there first; then the one in place is the CA.
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeFile(temp, made.key + made.cert, { mode: 0o600 });
  try {
    await link(temp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await rm(temp, { force: true });
  }
  const ca = splitPem(await readFile(file, 'utf8'), file);
  await writeFile(join(dir, 'ca.crt'), ca.cert, { mode: 0o644 }); // the part to hand to clients
  return ca;
}

/**
 * The identity proxy mode presents: the operator's when configured, else a leaf of the mirror's CA covering `hosts`
 * (kept in {dataDir}/intercept/leaf.pem, issued again when it no longer fits).
 */
export async function interceptIdentity(dataDir: string, hosts: readonly string[], configured?: { cert: string; key: string }): Promise<TlsIdentity> {
  if (configured) return checkConfiguredIdentity(configured.cert, configured.key, hosts);
  const ca = await loadOrCreateCa(dataDir);
  const caCert = new X509Certificate(ca.cert);
  const file = join(interceptDir(dataDir), 'leaf.pem');
  const kept = await readFile(file, 'utf8').then((t) => splitPem(t, file)).catch(() => undefined);
  const fits = (leaf: { cert: string }) => {
    const x = new X509Certificate(leaf.cert);
    return x.checkIssued(caCert) && x.verify(caCert.publicKey) && hosts.every((h) => x.checkHost(probe(h))) && Date.parse(x.validTo) - Date.now() > RENEW_BEFORE_DAYS * DAY;
  };
  let leaf = kept && fits(kept) ? kept : undefined;
  if (!leaf) {
    leaf = await issue({ ca: false, subject: hosts[0] ?? 'srm-mirror', hosts, days: LEAF_DAYS, issuer: ca });
    await writeFile(file, leaf.key + leaf.cert, { mode: 0o600 });
  }
  return { key: leaf.key, cert: leaf.cert + ca.cert, ca: ca.cert };
}

/** A PEM file holding one private key and one certificate, split. */
function splitPem(text: string, file: string): { key: string; cert: string } {
  const key = /-----BEGIN (?:RSA )?PRIVATE KEY-----[\s\S]+?-----END (?:RSA )?PRIVATE KEY-----\n?/.exec(text)?.[0];
  const cert = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/.exec(text)?.[0];
  if (!key || !cert) throw new Error(`${file} does not hold a private key and a certificate: remove it to have a new one made`);
  return { key: key.endsWith('\n') ? key : `${key}\n`, cert: cert.endsWith('\n') ? cert : `${cert}\n` };
}

interface IssueRequest {
  readonly ca: boolean;
  readonly subject: string;
  /** Subject alternative names (DNS); "*.example.com" allowed. */
  readonly hosts: readonly string[];
  readonly days: number;
  /** The CA that signs; none: self-signed. */
  readonly issuer?: { key: string; cert: string };
}

/** A new RSA-2048 key (node:crypto) and a certificate for it (node-forge), both PEM. */
async function issue(request: IssueRequest): Promise<{ key: string; cert: string }> {
  const { default: forge } = await import('node-forge');
  const { pki } = forge;
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs1', format: 'pem' } });
  const cert = pki.createCertificate();
  cert.publicKey = pki.publicKeyFromPem(pair.publicKey);
  cert.serialNumber = `01${randomBytes(15).toString('hex')}`; // positive, random, 16 bytes
  const now = Date.now();
  cert.validity.notBefore = new Date(now - 3_600_000); // an hour back: clients with clocks a little behind
  cert.validity.notAfter = new Date(now + request.days * DAY);
  const subject = [
    { name: 'commonName', value: request.subject },
    { name: 'organizationName', value: 'srm-mirror' },
  ];
  cert.setSubject(subject);
  const issuerCert = request.issuer ? pki.certificateFromPem(request.issuer.cert) : undefined;
  cert.setIssuer(issuerCert ? issuerCert.subject.attributes : subject);
  const keyId = (c: typeof cert) => c.generateSubjectKeyIdentifier().getBytes();
  cert.setExtensions(
    request.ca
      ? [
          { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
          { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
          { name: 'subjectKeyIdentifier' },
        ]
      : [
          { name: 'basicConstraints', cA: false, critical: true },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', serverAuth: true },
          { name: 'subjectAltName', altNames: request.hosts.map((value) => ({ type: 2, value })) },
          { name: 'subjectKeyIdentifier' },
          ...(issuerCert ? [{ name: 'authorityKeyIdentifier', keyIdentifier: keyId(issuerCert) }] : []),
        ],
  );
  const signingKey = pki.privateKeyFromPem(request.issuer?.key ?? pair.privateKey);
  cert.sign(signingKey as Parameters<typeof cert.sign>[0], forge.md.sha256.create());
  return { key: pair.privateKey, cert: pki.certificateToPem(cert).replace(/\r\n/g, '\n') };
}
