// The status page in headless Chromium (Debian's chromium, installed by ensureChromium when missing, driven by
// playwright-core): a warmed mirror's packages and sizes, the search box, the page with JavaScript off, and a
// prefetch triggered from the page with a wrong token, then the right one. A screenshot of the page is kept in
// test-artifacts/status-page.png.
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatBytes } from '../../src/faces/ui.js';
import { ADMIN_TOKEN, warmMirror, type WarmMirror } from '../fakes/warm-mirror.js';
import { get, removeTempDirs, until } from '../helpers.js';
import { ensureChromium } from './chromium.js';

const ARTIFACTS = join(process.cwd(), 'test-artifacts');
const found = ensureChromium();
if ('skip' in found) console.warn(`status page browser tests skipped: ${found.skip}`);

describe.skipIf('skip' in found)('the status page in headless Chromium', () => {
  let w: WarmMirror;
  let browser: Browser;
  let context: BrowserContext;
  /** Console errors of every page (a CSP violation shows there). */
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    w = await warmMirror();
    // Root (CI containers) cannot use Chromium's sandbox.
    browser = await chromium.launch({ executablePath: (found as { path: string }).path, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await w?.close();
    await removeTempDirs();
  });

  const open = async (ctx: BrowserContext, path = '/'): Promise<Page> => {
    const page = await ctx.newPage();
    page.on('console', (m) => void (m.type() === 'error' && consoleErrors.push(m.text())));
    const res = await page.goto(w.mirror.url + path);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toContain("default-src 'none'");
    return page;
  };
  const names = (page: Page) => page.locator('#package-table tbody tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-package')));

  it('shows the packages of the warmed mirror with their sizes and origins', async () => {
    const page = await open(context);
    expect(await page.title()).toBe('srm-mirror status');
    expect(await names(page)).toEqual(['alice/tool', 'corp-tool', 'fc3', 'fc3-domain']);
    const fc3 = page.locator('tr[data-package="fc3"]');
    const zips = w.fake.packages.get('fc3')!.releases.map((r) => r.zip.length);
    expect(await fc3.locator('.origin').innerText()).toBe('cached from the upstream');
    expect(await fc3.locator('ul.versions li').allInnerTexts()).toEqual([
      expect.stringMatching(new RegExp(`^1\\.1\\.0 · ${formatBytes(zips[0]!)} · cached \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d UTC`)),
      expect.stringMatching(new RegExp(`^1\\.0\\.0 · ${formatBytes(zips[1]!)} · cached `)),
    ]);
    expect(await fc3.locator('td.size').innerText()).toBe(formatBytes(zips[0]! + zips[1]!));
    expect(await page.locator('tr[data-package="corp-tool"] .origin').innerText()).toBe('hosted by alice');
    expect(await page.locator('tr[data-package="alice/tool"] td.size').innerText()).toBe('5.0 KB');
    expect(await page.locator('#breaker').innerText()).toContain('closed');
    expect(await page.locator('#disk').innerText()).toMatch(/in 3 archives of the 20\.0 GB quota/);
    expect(await page.locator('#setup-registry').innerText()).toContain(`s set registry ${w.mirror.url}/v3`);
    // The stylesheet applied (the CSP's hash matches it): the facts are laid out as a grid.
    // The callback runs in the page (the DOM's globals, which this project's TypeScript lib does not declare).
    const display = await page.locator('dl.facts').evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { display: string } }).getComputedStyle(el).display);
    expect(display).toBe('grid');
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'status-page.png'), fullPage: true });
    expect((await stat(join(ARTIFACTS, 'status-page.png'))).size).toBeGreaterThan(10_000);
    await page.close();
  });

  it('the search box (typed, submitted) shows only the matching package', async () => {
    const page = await open(context, '/-/ui');
    await page.locator('#q').fill('domain');
    await Promise.all([page.waitForURL(/\?q=domain$/), page.getByRole('button', { name: 'Search' }).click()]);
    expect(await names(page)).toEqual(['fc3-domain']);
    expect(await page.locator('#matching').innerText()).toBe('1 package of 4 match domain.');
    expect(await page.locator('#q').inputValue()).toBe('domain');
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-search.png') });
    await page.close();
  });

  it('works with JavaScript disabled: the listing, and the search by pressing Enter', async () => {
    const noJs = await browser.newContext({ javaScriptEnabled: false });
    try {
      const page = await open(noJs);
      expect(await page.locator('#package-table tbody tr').count()).toBe(4);
      await page.locator('#q').fill('CORP');
      await Promise.all([page.waitForURL(/\?q=CORP$/), page.locator('#q').press('Enter')]);
      expect(await page.locator('#package-table tbody tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-package')))).toEqual(['corp-tool']);
      expect(await page.content()).not.toContain('<script');
    } finally {
      await noJs.close();
    }
  });

  it('prefetch from the page: a wrong token is refused with a flash, the right one starts a run', async () => {
    const page = await open(context);
    const before = w.fake.requests.length;
    await page.locator('#prefetch-token').fill('not-the-admin-token-42');
    await Promise.all([page.waitForURL(/flash=wrong-token/), page.getByRole('button', { name: 'Prefetch now' }).click()]);
    expect(new URL(page.url()).pathname).toBe('/');
    expect(await page.locator('#flash').innerText()).toBe('Refused: that is not the admin token.');
    expect(w.fake.requests.length).toBe(before);

    await page.locator('#prefetch-token').fill(ADMIN_TOKEN);
    await Promise.all([page.waitForURL(/flash=prefetch-started/), page.getByRole('button', { name: 'Prefetch now' }).click()]);
    expect(await page.locator('#flash').innerText()).toMatch(/^Prefetch started\./);
    expect(page.url()).not.toContain(ADMIN_TOKEN);
    expect(await page.content()).not.toContain(ADMIN_TOKEN);
    await until(async () => ((await get(`${w.mirror.url}/-/status`)).json() as { prefetch: { lastRun?: unknown } }).prefetch.lastRun !== undefined);
    expect(w.fake.requests.length).toBeGreaterThan(before); // the run asked the upstream
    await page.reload();
    expect(await page.locator('#last-prefetch').innerText()).toMatch(/status page: 2 packages checked, 0 archives fetched .*no failures/);
    await page.close();
  });

  it('raised no console error (no CSP violation) on any page', () => {
    expect(consoleErrors).toEqual([]);
  });
});
