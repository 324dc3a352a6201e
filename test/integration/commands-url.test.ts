// upstream.commandsUrl: the registry commands go where the `s` client (3.1.7 and later) sends them when no registry
// is set (its commands host), and component loading, downloads and login where it sends those (the registry). Two
// fake upstreams stand for the two hosts; each request is looked for on the one it belongs to.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FORM_HEADERS, publishForm, signed } from '../fakes/clients.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { get, removeTempDirs, send, startMirror, type TestMirror } from '../helpers.js';

let registry: FakeUpstream;
let commands: FakeUpstream;
let mirror: TestMirror;

beforeEach(async () => {
  [registry, commands] = await Promise.all([FakeUpstream.start(), FakeUpstream.start()]);
  for (const fake of [registry, commands]) fake.add('fc3', [{ version: '1.1.0' }, { version: '1.0.0' }]);
  mirror = await startMirror(registry.v3, { 'commands-url': commands.v3 });
});

afterEach(async () => {
  await mirror.close();
  await Promise.all([registry.close(), commands.close()]);
  await removeTempDirs();
});

/** The requests each fake received, as "METHOD path". */
const seen = (fake: FakeUpstream) => fake.requests.map((r) => `${r.method} ${r.url.split('?')[0]}`);

describe('upstream.commandsUrl', () => {
  it('reads the list and the release pages (s registry list / detail) from the commands host, releases and archives from the registry', async () => {
    expect((await get(`${mirror.url}/v3/packages/fc3/release/latest`)).status).toBe(200);
    expect((await get(`${mirror.url}/v3/packages/fc3/release/tags/1.0.0`)).status).toBe(200);
    expect((await get(`${mirror.url}/v3/packages/fc3/zipball/1.0.0`)).status).toBe(200);
    expect((await get(`${mirror.url}/v3/packages/releases?page=1`)).status).toBe(200);
    expect((await get(`${mirror.url}/v3/packages/fc3/release?page=1`)).status).toBe(200);
    expect(seen(commands)).toEqual(['GET /v3/packages/releases', 'GET /v3/packages/fc3/release']);
    expect(seen(registry)).toEqual(['GET /v3/packages/fc3/release/latest', 'GET /v3/packages/fc3/release/tags/1.0.0', 'GET /v3/packages/fc3/zipball/1.0.0', expect.stringMatching(/^GET \/blob\//)]);
  });

  it('downloads an archive whose zipball_url a release page put on the commands origin (the egress policy allows it)', async () => {
    expect((await get(`${mirror.url}/v3/packages/fc3/release?page=1`)).status).toBe(200);
    const zip = await get(`${mirror.url}/v3/packages/fc3/zipball/1.0.0`);
    expect(zip.status).toBe(200);
    expect(seen(commands)).toEqual(['GET /v3/packages/fc3/release', 'GET /v3/packages/fc3/zipball/1.0.0', expect.stringMatching(/^GET \/blob\//)]);
  });

  it('passes publish, delete and the private list to the commands host; retoken and login polling to the registry', async () => {
    const publish = await send('POST', `${mirror.url}/v3/packages/releases`, { ...signed(), ...FORM_HEADERS }, publishForm('fc3', '1.2.0'));
    expect(JSON.parse(publish.text)).toMatchObject({ body: { url: expect.stringMatching(`^${commands.url}/upload/`) } });
    expect((await send('DELETE', `${mirror.url}/v3/packages/fc3/release/tags/1.0.0`, signed())).status).toBe(200);
    commands.add('mine', [{ version: '1.0.0' }], { private: true });
    expect((await send('GET', `${mirror.url}/v3/package/user?page=1`, signed())).status).toBe(200);
    expect((await send('POST', `${mirror.url}/v3/user/token`, signed())).status).toBe(200);
    expect((await send('GET', `${mirror.url}/v3/user/check?token=ready`)).status).toBe(200);
    expect(seen(commands)).toEqual(['POST /v3/packages/releases', 'DELETE /v3/packages/fc3/release/tags/1.0.0', 'GET /v3/package/user']);
    expect(seen(registry)).toEqual(['POST /v3/user/token', 'GET /v3/user/check']);
  });

  it('passes a private detail read (with the caller\'s credentials) to the commands host, a private release to the registry', async () => {
    for (const fake of [registry, commands]) fake.add('secret', [{ version: '2.0.0' }], { private: true });
    const detail = await get(`${mirror.url}/v3/packages/secret/release?page=1`, signed());
    expect([detail.status, detail.headers.get('x-cache')]).toEqual([200, 'BYPASS']);
    const latest = await get(`${mirror.url}/v3/packages/secret/release/latest`, signed());
    expect([latest.status, latest.headers.get('x-cache')]).toEqual([200, 'BYPASS']);
    expect(seen(commands).filter((r) => r.includes('secret'))).toEqual(['GET /v3/packages/secret/release', 'GET /v3/packages/secret/release']); // the shared read, then the caller's
    expect(seen(registry).filter((r) => r.includes('secret'))).toEqual(['GET /v3/packages/secret/release/latest', 'GET /v3/packages/secret/release/latest']);
  });

  it('shows the commands URL in /-/status', async () => {
    expect(((await get(`${mirror.url}/-/status`)).json() as { upstream: { commandsUrl: string } }).upstream.commandsUrl).toBe(commands.v3);
  });
});
