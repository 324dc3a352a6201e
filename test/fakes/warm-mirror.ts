// A warmed mirror for the status page's tests: packages cached through it from a fake upstream, a hosted component
// published into it, a generic file put into it. Real server, LevelDB and files, on port 0.
import { request } from 'undici';
import { expect } from 'vitest';
import { recordSecrets, startMirror, type TestMirror } from '../helpers.js';
import { FORM_HEADERS, publishForm } from './clients.js';
import { FakeUpstream } from './upstream.js';
import { componentZip } from './zips.js';

export const ADMIN_TOKEN = 'status-page-admin-token-0123';

export interface WarmMirror {
  readonly fake: FakeUpstream;
  readonly mirror: TestMirror;
  /** alice's Basic credentials (a publisher). */
  readonly alice: Record<string, string>;
  close(): Promise<void>;
}

export interface WarmOptions {
  /** The description the fake gives fc3 (cached). */
  readonly cachedDescription?: string;
  /** The publish.yaml Description of corp-tool (hosted), as YAML. */
  readonly hostedDescription?: string;
  readonly flags?: Record<string, string>;
}

/** GET through the mirror, checking 200 (and reading the body, so that an archive is cached whole). */
export async function fetchOk(url: string): Promise<Buffer> {
  const res = await request(url);
  const body = Buffer.from(await res.body.arrayBuffer());
  expect(res.statusCode, url).toBe(200);
  return body;
}

/**
 * fc3 (two versions) and fc3-domain (one) cached through the mirror; corp-tool 1.0.0 published by alice (hosted);
 * alice/tool 1.4.2 with one file (generic).
 */
export async function warmMirror(o: WarmOptions = {}): Promise<WarmMirror> {
  recordSecrets(ADMIN_TOKEN);
  const fake = await FakeUpstream.start();
  fake.add('fc3', [{ version: '1.1.0', zip: componentZip('fc3', '1.1.0', { payload: Buffer.alloc(3000, 1) }) }, { version: '1.0.0' }], { description: o.cachedDescription ?? 'Function Compute 3' });
  fake.add('fc3-domain', [{ version: '0.0.9' }], { description: 'Custom domains' });
  const mirror = await startMirror(fake.v3, { 'admin-token': ADMIN_TOKEN, 'hosted-packages': 'corp-*', 'prefetch-packages': 'fc3', ...o.flags });
  for (const path of ['/v3/packages/fc3/zipball/1.0.0', '/v3/packages/fc3/zipball/1.1.0', '/v3/packages/fc3-domain/zipball/0.0.9']) await fetchOk(mirror.url + path);

  const secret = await mirror.mirror.users.add('alice', 'publisher');
  const alice = { authorization: `Basic ${Buffer.from(`alice:${secret}`).toString('base64')}` };
  recordSecrets(secret, alice.authorization);
  const form = publishForm('corp-tool', '1.0.0', { description: o.hostedDescription ?? 'Our deployer' });
  const step1 = await request(`${mirror.url}/v3/packages/releases`, { method: 'POST', headers: { ...alice, ...FORM_HEADERS }, body: form });
  const { url } = ((await step1.body.json()) as { body: { url: string } }).body;
  recordSecrets(url.slice(url.lastIndexOf('/') + 1));
  const step2 = await request(url, { method: 'PUT', body: componentZip('corp-tool', '1.0.0') });
  await step2.body.dump();
  expect(step2.statusCode).toBe(201);

  const put = await request(`${mirror.url}/api/packages/alice/generic/tool/1.4.2/tool-linux-amd64`, { method: 'PUT', headers: alice, body: Buffer.alloc(5000, 7) });
  await put.body.dump();
  expect(put.statusCode).toBe(201);

  return {
    fake,
    mirror,
    alice,
    async close() {
      await mirror.close();
      await fake.close();
    },
  };
}
