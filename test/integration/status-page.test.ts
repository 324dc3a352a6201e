// The status page over plain HTTP (the browser test is test/browser/status-page.test.ts): what it lists, that every
// client-supplied value is escaped, the CSP, the cap and paging of a large listing, and the admin forms' path
// (the token in a form body, a redirect with a flash code, never the token echoed).
import { createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { formatBytes } from '../../src/faces/ui.js';
import { FakeUpstream } from '../fakes/upstream.js';
import { ADMIN_TOKEN, fetchOk, warmMirror, type WarmMirror } from '../fakes/warm-mirror.js';
import { get, removeTempDirs, send, startMirror, until, type TestMirror } from '../helpers.js';

const page = async (url: string) => {
  const res = await get(url);
  expect(res.status).toBe(200);
  return { html: res.body.toString(), headers: res.headers };
};
/** The rows of the package table: [name, origin]. */
const rows = (html: string) => [...html.matchAll(/<tr data-package="([^"]*)" data-origin="([^"]*)">/g)].map((m) => [m[1], m[2]]);
const form = (fields: Record<string, string>) => ({ headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() });

describe('the status page of a warmed mirror', () => {
  let w: WarmMirror;
  beforeAll(async () => {
    w = await warmMirror({
      cachedDescription: '<script>alert("cached")</script> & <b>co</b>',
      hostedDescription: '"<img src=x onerror=alert(1)> it\'s hosted"',
    });
  });
  afterAll(async () => {
    await w.close();
    await removeTempDirs();
  });

  it('answers GET / and GET /-/ui with the same page, listing every origin with versions, sizes and times', async () => {
    const { html } = await page(`${w.mirror.url}/`);
    expect((await page(`${w.mirror.url}/-/ui`)).html.replace(/action="\/-\/ui"|value="\/-\/ui"/g, (m) => m.replace('/-/ui', '/'))).toBe(html);
    expect(rows(html)).toEqual([
      ['alice/tool', 'generic'],
      ['corp-tool', 'hosted'],
      ['fc3', 'cached'],
      ['fc3-domain', 'cached'],
    ]);
    const fc3 = w.fake.packages.get('fc3')!.releases;
    const row = (name: string) => html.slice(html.indexOf(`data-package="${name}"`), html.indexOf('</tr>', html.indexOf(`data-package="${name}"`)));
    expect(row('fc3')).toContain('cached from the upstream');
    expect(row('fc3')).toContain(`<code>1.1.0</code> · <span class="num" title="${fc3[0]!.zip.length.toLocaleString('en')} bytes">${formatBytes(fc3[0]!.zip.length)}</span> · cached <time`);
    expect(row('fc3').indexOf('1.1.0')).toBeLessThan(row('fc3').indexOf('1.0.0')); // newest first
    expect(row('corp-tool')).toContain('hosted by <strong>alice</strong>');
    expect(row('corp-tool')).toContain('published <time');
    expect(row('alice/tool')).toMatch(/generic, owner <strong>alice<\/strong>[\s\S]*<code>1\.4\.2<\/code> · <span class="num" title="5,000 bytes">5\.0 KB<\/span> · 1 file · published <time/);
    // The figures: upstream, breaker, disk against the quota, hosted bytes.
    expect(html).toContain(`<code id="upstream-url">${w.fake.v3}</code>`);
    expect(html).toMatch(/id="breaker"><span class="ok">closed<\/span>/);
    expect(html).toMatch(/id="disk">.* in 3 archives of the <span class="num" title="20,000,000,000 bytes">20\.0 GB<\/span> quota <meter/);
    expect(html).toMatch(/id="hosted">.* on disk in 2 files; 1 component \(1 version\); 1 generic package \(1 file\)/);
    expect(html).toContain(`s set registry ${w.mirror.url}/v3`);
    expect(html).toContain(`s set proxy --http_proxy ${w.mirror.url} --https_proxy ${w.mirror.url} --enable`);
    expect(html).toContain('intercept.enabled');
  });

  it('escapes every value a client supplied: descriptions, the search text, the Host header', async () => {
    const res = await send('GET', `${w.mirror.url}/?q=${encodeURIComponent('"><script>alert(2)</script>')}`, { host: 'mirror.test"><script>' });
    const html = res.text;
    expect(res.status).toBe(200);
    expect(html).not.toMatch(/<script|<img|<b>co/i);
    expect(html).toContain('value="&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"');
    expect(html).toContain('s set registry http://mirror.test&quot;&gt;&lt;script&gt;/v3');
    const all = (await page(`${w.mirror.url}/`)).html;
    expect(all).toContain('<div class="desc">&lt;script&gt;alert(&quot;cached&quot;)&lt;/script&gt; &amp; &lt;b&gt;co&lt;/b&gt;</div>');
    expect(all).toContain('<div class="desc">&lt;img src=x onerror=alert(1)&gt; it&#39;s hosted</div>');
    expect(all).not.toMatch(/<script|<img/i);
  });

  it('has no script, and a CSP that allows exactly its own stylesheet', async () => {
    const { html, headers } = await page(`${w.mirror.url}/`);
    const css = /<style>([\s\S]*?)<\/style>/.exec(html)![1]!;
    const csp = headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain(`style-src 'sha256-${createHash('sha256').update(css).digest('base64')}'`);
    expect(csp).toContain("form-action 'self'");
    expect(csp).not.toContain('script-src');
    expect(headers.get('cache-control')).toBe('no-store');
    expect(headers.get('content-type')).toMatch(/^text\/html/);
    expect((await send('HEAD', `${w.mirror.url}/`)).status).toBe(200);
  });

  it('searches server-side, by name and owner', async () => {
    expect(rows((await page(`${w.mirror.url}/?q=DOMAIN`)).html)).toEqual([['fc3-domain', 'cached']]);
    expect(rows((await page(`${w.mirror.url}/-/ui?q=alice`)).html)).toEqual([
      ['alice/tool', 'generic'],
      ['corp-tool', 'hosted'],
    ]);
    const none = (await page(`${w.mirror.url}/?q=nothing-like-it`)).html;
    expect(rows(none)).toEqual([]);
    expect(none).toContain('No package matches <code>nothing-like-it</code>.');
  });

  it('leaves the SRM face and the rest of /-/ as they were', async () => {
    expect((await get(`${w.mirror.url}/fc3/releases/latest`)).json()).toMatchObject({ tag_name: '1.1.0' });
    expect((await get(`${w.mirror.url}/-/nothing`)).status).toBe(404);
    expect((await get(`${w.mirror.url}/-/status`)).json()).toMatchObject({ hosted: { components: { packages: 1, versions: 1 }, generic: { packages: 1, files: 1, bytes: 5000 } } });
  });
});

describe('the admin forms (a token in the body, a redirect back with a flash code)', () => {
  let w: WarmMirror;
  beforeAll(async () => {
    w = await warmMirror();
  });
  afterAll(async () => {
    await w.close();
    await removeTempDirs();
  });
  const post = (path: string, fields: Record<string, string>) => send('POST', w.mirror.url + path, form(fields).headers, form(fields).body);

  it('a wrong or empty token is refused: 303 back with the flash, nothing started, the token never echoed', async () => {
    const before = w.fake.requests.length;
    for (const token of ['wrong-token-0123456789', '']) {
      const res = await post('/-/prefetch', { token, back: '/' });
      expect([res.status, res.headers.location]).toEqual([303, '/?flash=wrong-token']);
      expect(res.text).not.toContain(token || 'token=');
    }
    expect((await post('/-/verify', { token: 'nope', back: '/-/ui' })).headers.location).toBe('/-/ui?flash=wrong-token');
    expect(w.fake.requests.length).toBe(before);
    const flashed = (await page(`${w.mirror.url}/?flash=wrong-token`)).html;
    expect(flashed).toContain('role="alert" id="flash">Refused: that is not the admin token.</p>');
  });

  it('the right token starts the run and goes back to the page it came from (only / or /-/ui)', async () => {
    const res = await post('/-/prefetch', { token: ADMIN_TOKEN, back: '/' });
    expect([res.status, res.headers.location]).toEqual([303, '/?flash=prefetch-started']);
    expect(res.text).not.toContain(ADMIN_TOKEN);
    await until(async () => ((await get(`${w.mirror.url}/-/status`)).json() as { prefetch: { lastRun?: unknown } }).prefetch.lastRun !== undefined);
    const html = (await page(`${w.mirror.url}/?flash=prefetch-started`)).html;
    expect(html).toContain('role="status" id="flash">Prefetch started.');
    expect(html).toMatch(/id="last-prefetch"><time [^>]*>[^<]*<\/time> <span class="dim">\([^)]*\)<\/span>, status page: 2 packages checked/);
    expect(html).not.toContain(ADMIN_TOKEN);
    const away = await post('/-/verify', { token: ADMIN_TOKEN, back: 'https://evil.example/', repair: 'true' });
    expect(away.headers.location).toBe('/-/ui?flash=verify-repair-started');
    await until(async () => (await page(`${w.mirror.url}/`)).html.includes('3 archives (')); // the scrub's report
  });

  it('the header path is unchanged: JSON answers, and a form body without a token field is not a form', async () => {
    const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };
    expect((await send('POST', `${w.mirror.url}/-/verify`, bearer)).status).toBe(202);
    // curl -X POST -d '' -H 'Authorization: Bearer …' sends an empty x-www-form-urlencoded body.
    expect((await send('POST', `${w.mirror.url}/-/prefetch`, { ...bearer, 'content-type': 'application/x-www-form-urlencoded' }, '')).status).toBe(202);
    const res = await send('POST', `${w.mirror.url}/-/prefetch`, { 'content-type': 'application/x-www-form-urlencoded' }, 'back=/');
    expect([res.status, res.headers['www-authenticate']]).toEqual([401, 'Bearer']);
    expect((await send('POST', `${w.mirror.url}/-/prefetch`, form({ token: 'x'.repeat(5000) }).headers, form({ token: 'x'.repeat(5000) }).body)).status).toBe(413);
  });
});

describe('without an admin token, or offline', () => {
  let fake: FakeUpstream;
  const mirrors: TestMirror[] = [];
  beforeAll(async () => {
    fake = await FakeUpstream.start();
  });
  afterEach(async () => {
    for (const m of mirrors.splice(0)) await m.close();
  });
  afterAll(async () => {
    await fake.close();
    await removeTempDirs();
  });

  it('shows no admin form without an admin token, and a form post is refused with the reason', async () => {
    const m = await startMirror(fake.v3);
    mirrors.push(m);
    const html = (await page(`${m.url}/`)).html;
    expect(html).not.toContain('<form class="admin"');
    expect(html).toContain('Disabled: set the <code>adminToken</code> setting');
    expect(html).toContain('The mirror holds no package yet.');
    const res = await send('POST', `${m.url}/-/prefetch`, form({ token: 'anything' }).headers, form({ token: 'anything' }).body);
    expect(res.headers.location).toBe('/-/ui?flash=admin-disabled');
  });

  it('offline: no prefetch form, and a prefetch post says why', async () => {
    const m = await startMirror(fake.v3, { offline: true, 'admin-token': ADMIN_TOKEN });
    mirrors.push(m);
    const html = (await page(`${m.url}/-/ui`)).html;
    expect(html).toContain('<strong class="warn">offline mode</strong>');
    expect(html).not.toContain('id="prefetch-form"');
    expect(html).toContain('id="verify-form"');
    const res = await send('POST', `${m.url}/-/prefetch`, form({ token: ADMIN_TOKEN }).headers, form({ token: ADMIN_TOKEN }).body);
    expect(res.headers.location).toBe('/-/ui?flash=prefetch-offline');
  });
});

describe('a large mirror', () => {
  let fake: FakeUpstream;
  let m: TestMirror;
  const NAMES = Array.from({ length: 130 }, (_, i) => `pkg-${String(i).padStart(3, '0')}`);
  beforeAll(async () => {
    fake = await FakeUpstream.start();
    for (const name of NAMES) fake.add(name, [{ version: '1.0.0' }]);
    fake.add('many', Array.from({ length: 12 }, (_, i) => ({ version: `1.${11 - i}.0` })));
    m = await startMirror(fake.v3);
    for (let i = 0; i < NAMES.length; i += 16) await Promise.all(NAMES.slice(i, i + 16).map((n) => fetchOk(`${m.url}/v3/packages/${n}/zipball/1.0.0`)));
    await Promise.all(Array.from({ length: 12 }, (_, i) => fetchOk(`${m.url}/v3/packages/many/zipball/1.${i}.0`)));
  }, 60_000);
  afterAll(async () => {
    await m.close();
    await fake.close();
    await removeTempDirs();
  });

  it('lists 100 packages a page, with links to the others, and the search finds any of them', async () => {
    const first = (await page(`${m.url}/`)).html;
    expect(rows(first)).toHaveLength(100);
    expect(rows(first)[0]).toEqual(['many', 'cached']);
    expect(first).toContain('131 packages; showing 1–100 (page 1 of 2; search to find others).');
    expect(first).toContain('<a rel="next" href="/?page=2#packages">next →</a>');
    const second = (await page(`${m.url}/?page=2`)).html;
    expect(rows(second).map((r) => r[0])).toEqual(NAMES.slice(99));
    expect(second).toContain('<a rel="prev" href="/#packages">← previous</a>');
    expect(rows((await page(`${m.url}/?page=99`)).html)).toEqual(rows(second)); // past the end: the last page
    expect(rows((await page(`${m.url}/?q=pkg-12`)).html).map((r) => r[0])).toEqual(NAMES.slice(120));
  });

  it('shows the 10 newest versions of a package and counts the rest', async () => {
    const html = (await page(`${m.url}/?q=many`)).html;
    const versions = [...html.matchAll(/<li><code>([^<]+)<\/code>/g)].map((x) => x[1]);
    expect(versions).toEqual(Array.from({ length: 10 }, (_, i) => `1.${11 - i}.0`));
    expect(html).toContain('<li class="dim">and 2 older versions</li>');
  });
});
