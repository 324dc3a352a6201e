// The status page, for people: GET / and GET /-/ui. Server-rendered HTML, no script and no build step: the search is a
// GET form (filtered here), the admin actions are POST forms to the ops endpoints (with the admin token in the form;
// see adminOrForm in ops.ts), and the answers come back as a flash code in the query. Every value on the page goes
// through the `html` template tag, which escapes it: package names, descriptions, owners, even the Host header.
import { createHash } from 'node:crypto';
import { Router, type Request, type Response } from 'express';
import type { KnownInventories, MirrorStatus } from '../app.js';
import type { Catalog, CatalogEntry, CatalogPage, CatalogVersion } from '../core/catalog.js';
import type { Logger } from '../log.js';
import { errorHandler } from './errors.js';
import type { BaseUrl } from './render.js';

export interface UiFaceOptions {
  readonly status: (known?: KnownInventories) => Promise<MirrorStatus>;
  readonly catalog: Catalog;
  readonly baseUrl: BaseUrl;
  /** Whether an admin token is configured (the admin forms are shown only then). */
  readonly adminEnabled: boolean;
  readonly log: Logger;
  readonly now?: () => number;
}

/** The paths of the page; its forms may send people back to either (ops.ts checks the same two). */
export const UI_PATHS = ['/', '/-/ui'] as const;

// ---- escaping ------------------------------------------------------------------------------------------------------

/** Markup that is already safe: what `html` makes. Anything else interpolated into `html` is escaped. */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text for an HTML text node or a quoted attribute value. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/**
 * The template tag every part of the page is written with: interpolated values are escaped, unless they are Html
 * (made by this tag); arrays are joined; undefined, null and false render as nothing.
 */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!;
  values.forEach((v, i) => (out += piece(v) + strings[i + 1]!));
  return new Html(out);
}

function piece(v: unknown): string {
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return v.map(piece).join('');
  if (v === undefined || v === null || v === false) return '';
  return escapeHtml(String(v));
}

// ---- formatting ----------------------------------------------------------------------------------------------------

/** Bytes in decimal units as the settings write them (`20GB` is 20 × 1000³), e.g. "12.3 KB"; the exact count is in its title. */
export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB']; // as `srm-mirror status` writes them
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) (v /= 1000), u++;
  return u === 0 ? `${n} B` : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

const bytes = (n: number) => html`<span class="num" title="${n.toLocaleString('en')} bytes">${formatBytes(n)}</span>`;

function ago(ms: number, now: number): string {
  const s = Math.round((now - ms) / 1000);
  if (s < 0) return 'in the future';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

function when(at: string | number | undefined, now: number): Html {
  const ms = typeof at === 'string' ? Date.parse(at) : at;
  if (ms === undefined || Number.isNaN(ms)) return html`<span class="dim">unknown</span>`;
  const iso = new Date(ms).toISOString();
  return html`<time datetime="${iso}" title="${iso}">${iso.slice(0, 16).replace('T', ' ')} UTC</time> <span class="dim">(${ago(ms, now)})</span>`;
}

function duration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n.toLocaleString('en')} ${n === 1 ? one : many}`;

/** A URL without its credentials (an upstream URL may carry them). */
function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^/@]*@/, '//');
  }
}

// ---- the page ------------------------------------------------------------------------------------------------------

/** What each flash code (set by ops.ts after a form) says. */
const FLASHES: Record<string, { readonly ok: boolean; readonly text: string }> = {
  'prefetch-started': { ok: true, text: 'Prefetch started. Its summary shows under "Last prefetch" once it has ended: reload this page.' },
  'prefetch-offline': { ok: false, text: 'The mirror is offline: there is nothing to prefetch from.' },
  'verify-started': { ok: true, text: 'Verification started: every archive is rehashed at the scrub rate. Its report shows under "Last scrub" once it has ended.' },
  'verify-repair-started': { ok: true, text: 'Verification with repair started. Its report shows under "Last scrub" once it has ended.' },
  'wrong-token': { ok: false, text: 'Refused: that is not the admin token.' },
  'admin-disabled': { ok: false, text: 'Refused: admin actions are disabled on this mirror (set the adminToken setting to enable them).' },
};

const CSS = `
:root { color-scheme: light dark; --fg: #1b1f24; --dim: #59636e; --bg: #fff; --line: #d1d9e0; --box: #f6f8fa; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --dim: #9198a1; --bg: #0d1117; --line: #3d444d; --box: #151b23; --ok: #3fb950; --bad: #f85149; --warn: #d29922; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 72rem; padding: 1rem 1.25rem 3rem; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 1.5rem; margin: 0.5rem 0 0; } h2 { font-size: 1.15rem; margin: 2rem 0 0.75rem; border-bottom: 1px solid var(--line); padding-bottom: 0.25rem; }
code, pre { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--box); border: 1px solid var(--line); border-radius: 6px; padding: 0.6rem 0.8rem; overflow-x: auto; }
a { color: inherit; }
.dim { color: var(--dim); } .ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
.flash { border: 1px solid; border-radius: 6px; padding: 0.5rem 0.8rem; margin: 1rem 0; }
.flash.ok { border-color: var(--ok); } .flash.bad { border-color: var(--bad); }
dl.facts { display: grid; grid-template-columns: minmax(9rem, max-content) 1fr; gap: 0.3rem 1.25rem; margin: 0; }
dl.facts dt { color: var(--dim); } dl.facts dd { margin: 0; }
meter { width: 12rem; vertical-align: middle; }
form.search { display: flex; gap: 0.5rem; align-items: center; flex-wrap: wrap; margin-bottom: 0.75rem; }
input[type=search], input[type=password] { font: inherit; padding: 0.3rem 0.5rem; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--fg); }
input[type=search] { width: 22rem; max-width: 100%; }
button { font: inherit; padding: 0.3rem 0.9rem; border: 1px solid var(--line); border-radius: 6px; background: var(--box); color: var(--fg); cursor: pointer; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 0.4rem 0.6rem; border-bottom: 1px solid var(--line); }
th { font-weight: 600; color: var(--dim); font-size: 0.85rem; }
td.size, th.size { text-align: right; white-space: nowrap; }
ul.versions { list-style: none; margin: 0; padding: 0; font-size: 0.9rem; }
.desc { font-size: 0.85rem; color: var(--dim); margin-top: 0.15rem; overflow-wrap: anywhere; }
.origin { white-space: nowrap; font-size: 0.9rem; }
nav.pages { margin-top: 0.75rem; display: flex; gap: 1rem; }
form.admin { display: flex; gap: 0.5rem; align-items: center; flex-wrap: wrap; margin: 0.5rem 0; }
`;

/** The CSP allows exactly this stylesheet, and no script at all. */
const CSP = [
  "default-src 'none'",
  `style-src 'sha256-${createHash('sha256').update(CSS).digest('base64')}'`,
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

interface View {
  readonly path: string;
  readonly base: string;
  readonly status: MirrorStatus;
  readonly catalog: CatalogPage | { readonly error: string };
  readonly flash: string | undefined;
  readonly adminEnabled: boolean;
  readonly now: number;
}

export function uiFace({ status, catalog, baseUrl, adminEnabled, log, now = Date.now }: UiFaceOptions): Router {
  const router = Router();
  router.get([...UI_PATHS], async (req: Request, res: Response) => {
    const query = typeof req.query.q === 'string' ? req.query.q : '';
    const page = typeof req.query.page === 'string' ? Number.parseInt(req.query.page, 10) : 1;
    // The listing's scan counts the hosted figures too: status() takes them instead of scanning again.
    const listed = await catalog.page(query, page).catch((err: unknown) => ({ error: String((err as Error)?.message ?? err) }));
    const s = await status('inventories' in listed ? listed.inventories : undefined);
    const flash = typeof req.query.flash === 'string' ? req.query.flash : undefined;
    const view: View = { path: req.path === '/' ? '/' : '/-/ui', base: baseUrl(req), status: s, catalog: listed, flash, adminEnabled, now: now() };
    res.setHeader('Content-Security-Policy', CSP);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('Cache-Control', 'no-store');
    res.type('html').send(renderPage(view).text);
  });
  router.use(errorHandler(log, (res, e) => res.status(e.status).type('text/plain').send(`${e.message}\n`)));
  return router;
}

export function renderPage(v: View): Html {
  const s = v.status;
  const flash = v.flash !== undefined ? FLASHES[v.flash] : undefined;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>srm-mirror status</title>
<style>${new Html(CSS)}</style>
</head>
<body>
<header>
<h1>srm-mirror</h1>
<p class="dim">A caching mirror for Serverless Devs registries · ${s.offline ? html`<strong class="warn">offline mode</strong>` : 'online'} · upstream <code>${withoutCredentials(s.upstream.url)}</code></p>
</header>
${flash ? html`<p class="flash ${flash.ok ? 'ok' : 'bad'}" role="${flash.ok ? 'status' : 'alert'}" id="flash">${flash.text}</p>` : ''}
<main>
${statusSection(v)}
${packagesSection(v)}
${setupSection(v)}
${adminSection(v)}
</main>
<footer><p class="dim">Machine-readable: <a href="/-/status">/-/status</a> (JSON) · <a href="/-/metrics">/-/metrics</a> (Prometheus) · <a href="/-/health">/-/health</a></p></footer>
</body>
</html>
`;
}

function circuit(c: MirrorStatus['upstream']['circuit'], offline: boolean, now: number): Html {
  if (offline) return html`<span class="dim">not used (offline)</span>`;
  if (c.state === 'closed') return html`<span class="ok">closed</span> <span class="dim">(the upstream answers${c.consecutiveFailures ? `; ${plural(c.consecutiveFailures, 'failure')} in a row` : ''})</span>`;
  const detail = html`after ${plural(c.consecutiveFailures, 'failure')} in a row${c.lastError ? html`; last: <code>${c.lastError}</code>` : ''}`;
  if (c.state === 'half-open') return html`<span class="warn">half-open</span> <span class="dim">(probing the upstream ${detail})</span>`;
  return html`<span class="bad">open</span>: the upstream is marked down ${detail}; next probe ${when(c.retryAt, now)}`;
}

function statusSection({ status: s, now, catalog }: View): Html {
  const { quota } = s.archives;
  const comp = s.hosted.components;
  const gen = s.hosted.generic;
  const prefetch = s.prefetch;
  const last = prefetch.lastRun;
  const scrub = s.archives.scrub;
  const importRun = (s as unknown as Record<string, unknown>).import; // shown when /-/status has it (another change adds it)
  return html`<section id="status" aria-labelledby="status-h">
<h2 id="status-h">Status</h2>
<dl class="facts">
<dt>Upstream</dt><dd><code id="upstream-url">${withoutCredentials(s.upstream.url)}</code> <span class="dim">(${s.upstream.type}; ${s.upstream.requests.running} running, ${s.upstream.requests.waiting} waiting)</span></dd>
<dt>Circuit breaker</dt><dd id="breaker">${circuit(s.upstream.circuit, s.offline, now)}</dd>
<dt>Disk (cache)</dt><dd id="disk">${bytes(quota.usedBytes)} in ${plural(quota.archives, 'archive')} ${
    quota.maxBytes > 0
      ? html`of the ${bytes(quota.maxBytes)} quota <meter min="0" max="${quota.maxBytes}" low="${Math.round(quota.maxBytes * 0.8)}" high="${Math.round(quota.maxBytes * 0.9)}" optimum="0" value="${quota.usedBytes}">${Math.round((quota.usedBytes / quota.maxBytes) * 100)} %</meter> ${Math.round((quota.usedBytes / quota.maxBytes) * 100)} %`
      : html`<span class="dim">(no quota)</span>`
  }${s.archives.fillsInProgress ? html`; ${plural(s.archives.fillsInProgress, 'download')} under way` : ''}${
    s.archives.diskProblem ? html`<br><span class="bad">Disk problem since ${when(s.archives.diskProblem.since, now)}: <code>${s.archives.diskProblem.error}</code> (downloads pass through uncached)</span>` : ''
  }</dd>
<dt>Hosted</dt><dd id="hosted">${bytes(s.hosted.bytes)} on disk in ${plural(s.hosted.blobs, 'file')}; ${
    comp ? `${plural(comp.packages, 'component')} (${plural(comp.versions, 'version')})` : 'components unknown'
  }; ${gen ? `${plural(gen.packages, 'generic package')} (${plural(gen.files, 'file')})` : 'generic packages unknown'}${
    s.hosted.lastAudit?.corrupt.length ? html`<br><span class="bad">${plural(s.hosted.lastAudit.corrupt.length, 'hosted file')} found corrupt by the last audit: restore from a backup</span>` : ''
  }</dd>
<dt>Metadata</dt><dd>${plural(s.metadata.packages, 'package')} and ${plural(s.metadata.versions, 'version')} known${
    s.metadata.index === 'lost' ? html`<br><span class="bad">The archive index was lost with the metadata database: run <code>srm-mirror repair</code></span>` : ''
  }${s.metadataProblem ? html`<br><span class="bad">The metadata database is failing since ${when(s.metadataProblem.since, now)}: <code>${s.metadataProblem.error}</code></span>` : ''}${
    'error' in catalog ? html`<br><span class="bad">The package listing cannot be read: <code>${catalog.error}</code></span>` : ''
  }</dd>
<dt>Last prefetch</dt><dd id="last-prefetch">${
    last
      ? html`${when(last.startedAt, now)}, ${last.trigger}: ${plural(last.packagesChecked, 'package')} checked, ${plural(last.archivesFetched, 'archive')} fetched (${bytes(last.bytes)}) in ${duration(last.durationMs)}${
          last.failures.length
            ? html`; <span class="bad">${plural(last.failures.length, 'failure')}</span><ul>${last.failures.slice(0, 5).map((f) => html`<li><code>${f.target}</code>: ${f.error}</li>`)}</ul>`
            : html`; <span class="ok">no failures</span>`
        }`
      : html`<span class="dim">none yet</span>`
  }${prefetch.running ? html` <strong>(a run is under way)</strong>` : ''}<br><span class="dim">${
    prefetch.enabled ? html`scheduled <code>${prefetch.schedule}</code>` : 'not scheduled'
  }; ${plural(prefetch.followed, 'package')} followed</span></dd>
<dt>Last scrub</dt><dd id="last-scrub">${
    scrub.lastRun
      ? html`${when(scrub.lastRun.startedAt, now)}, ${scrub.lastRun.trigger}: ${plural(scrub.lastRun.archives, 'archive')} (${bytes(scrub.lastRun.bytes)}) rehashed in ${duration(scrub.lastRun.durationMs)}; ${
          scrub.lastRun.corrupt.length ? html`<span class="bad">${plural(scrub.lastRun.corrupt.length, 'corrupt archive')} dropped</span>` : html`<span class="ok">none corrupt</span>`
        }${scrub.lastRun.missing.length ? `; ${plural(scrub.lastRun.missing.length, 'version')} missing its archive` : ''}${
          scrub.lastRun.unreferenced.length ? `; ${plural(scrub.lastRun.unreferenced.length, 'unreferenced archive')}` : ''
        }${scrub.lastRun.repaired ? ' (repaired)' : ''}`
      : html`<span class="dim">none since the mirror started</span>`
  }${scrub.running ? html` <strong>(a scrub is under way)</strong>` : ''}</dd>
${importRun && typeof importRun === 'object' ? html`<dt>Last import</dt><dd id="last-import">${facts(importRun as Record<string, unknown>)}</dd>` : ''}
</dl>
</section>`;
}

/** An object of unknown shape, as "key: value" pairs of its plain fields (for parts of /-/status this page predates). */
function facts(o: Record<string, unknown>): Html {
  const plain = Object.entries(o).filter(([, x]) => ['string', 'number', 'boolean'].includes(typeof x));
  const nested = Object.entries(o).filter(([, x]) => x && typeof x === 'object' && !Array.isArray(x));
  const parts = plain.map(([k, x]) => html`${k}: <code>${String(x)}</code>`);
  for (const [k, x] of nested.slice(0, 3)) {
    for (const [k2, y] of Object.entries(x as Record<string, unknown>)) if (['string', 'number', 'boolean'].includes(typeof y)) parts.push(html`${k}.${k2}: <code>${String(y)}</code>`);
  }
  return parts.length ? html`${parts.map((p, i) => html`${i ? '; ' : ''}${p}`)}` : html`<span class="dim">none</span>`;
}

function originOf(e: CatalogEntry): Html {
  switch (e.origin) {
    case 'cached':
      return html`cached from the upstream`;
    case 'hosted':
      return html`hosted by <strong>${e.owner ?? ''}</strong>`;
    case 'generic':
      return html`generic, owner <strong>${e.owner ?? ''}</strong>`;
  }
}

function versionLine(e: CatalogEntry, v: CatalogVersion, now: number): Html {
  const verb = e.origin === 'cached' ? 'cached' : 'published';
  const files = v.files !== undefined ? html` · ${plural(v.files, 'file')}` : '';
  return html`<li><code>${v.version}</code> · ${bytes(v.size)}${files} · ${verb} ${when(v.at, now)}</li>`;
}

function pageLink(path: string, query: string, page: number): string {
  const params = new URLSearchParams();
  if (query) params.set('q', query);
  if (page > 1) params.set('page', String(page));
  const qs = params.toString();
  return `${path}${qs ? `?${qs}` : ''}#packages`;
}

function packagesSection({ path, catalog: c, now }: View): Html {
  if ('error' in c) return html`<section id="packages"><h2>Packages</h2><p class="bad">The listing cannot be read now (see Metadata above).</p></section>`;
  const total = c.counts.cached + c.counts.hosted + c.counts.generic;
  const first = (c.page - 1) * c.perPage + 1;
  const rows = c.entries.map(
    (e) => html`<tr data-package="${e.name}" data-origin="${e.origin}">
<td><code class="name">${e.name}</code>${e.description ? html`<div class="desc">${e.description}</div>` : ''}</td>
<td class="origin">${originOf(e)}</td>
<td><ul class="versions">${e.versions.map((v) => versionLine(e, v, now))}${
      e.versionCount > e.versions.length ? html`<li class="dim">and ${plural(e.versionCount - e.versions.length, 'older version')}</li>` : ''
    }</ul></td>
<td class="size">${bytes(e.bytes)}</td>
</tr>`,
  );
  return html`<section id="packages" aria-labelledby="packages-h">
<h2 id="packages-h">Packages</h2>
<p class="dim">${plural(c.counts.hosted, 'hosted component')}, ${plural(c.counts.cached, 'package')} cached from the upstream (those with an archive on disk), ${plural(c.counts.generic, 'generic package')}.</p>
<form class="search" method="get" action="${path}" role="search">
<label for="q">Search names and owners</label>
<input type="search" id="q" name="q" value="${c.query}" maxlength="100" placeholder="e.g. fc3">
<button type="submit">Search</button>
${c.query ? html`<a href="${path}#packages">show all</a>` : ''}
</form>
<p id="matching">${
    c.matching === 0
      ? c.query
        ? html`No package matches <code>${c.query}</code>.`
        : 'The mirror holds no package yet.'
      : html`${c.query ? html`${plural(c.matching, 'package')} of ${total.toLocaleString('en')} match <code>${c.query}</code>` : plural(total, 'package')}${
          c.pages > 1 ? html`; showing ${first.toLocaleString('en')}–${(first + c.entries.length - 1).toLocaleString('en')} (page ${c.page} of ${c.pages}; search to find others)` : ''
        }.`
  }</p>
${
  c.entries.length
    ? html`<table id="package-table">
<thead><tr><th scope="col">Package</th><th scope="col">Origin</th><th scope="col">Versions (newest first)</th><th scope="col" class="size">Size</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`
    : ''
}
${
  c.pages > 1
    ? html`<nav class="pages" aria-label="pages">${c.page > 1 ? html`<a rel="prev" href="${pageLink(path, c.query, c.page - 1)}">← previous</a>` : ''}${
        c.page < c.pages ? html`<a rel="next" href="${pageLink(path, c.query, c.page + 1)}">next →</a>` : ''
      }</nav>`
    : ''
}
</section>`;
}

function setupSection({ base }: View): Html {
  const proxy = proxyUrlOf(base);
  return html`<section id="setup" aria-labelledby="setup-h">
<h2 id="setup-h">Client setup</h2>
<p>Point the <code>s</code> CLI (3.x) at this mirror:</p>
<pre id="setup-registry">s set registry ${base}/v3
s set registry clean        # back to the public registry</pre>
<p class="dim">Publish, delete and retoken (<code>s registry publish</code> …) go to port 80 of the host whatever port the setting names: for writes, the mirror must be reachable on port 80.</p>
<p>Clients that ignore <code>registry</code> (<code>s</code> 3.0.0–3.1.5, <code>s init</code>, and the registry commands of 3.1.7 and later), when the mirror runs with <code>intercept.enabled</code>:</p>
<pre id="setup-proxy">s set proxy --http_proxy ${proxy} --https_proxy ${proxy} --enable
s set proxy --no-enable     # back to direct connections</pre>
<p class="dim">With a proxy set, <code>s</code> sends all its HTTP through it and stops verifying TLS certificates; see docs/corporate-network.md, "Proxy mode".</p>
</section>`;
}

/** The forward-proxy URL clients are told: the mirror's own origin (`s set proxy` takes http://host:port). */
function proxyUrlOf(base: string): string {
  try {
    const u = new URL(base);
    return `http://${u.host}`;
  } catch {
    return base;
  }
}

function adminSection({ path, status, adminEnabled }: View): Html {
  if (!adminEnabled) {
    return html`<section id="admin"><h2>Admin actions</h2><p class="dim">Disabled: set the <code>adminToken</code> setting (<code>--admin-token</code>, <code>SRM_MIRROR_ADMIN_TOKEN</code>) to prefetch and verify from here.</p></section>`;
  }
  const token = (id: string) => html`<label for="${id}">Admin token</label> <input type="password" id="${id}" name="token" required autocomplete="off">`;
  return html`<section id="admin" aria-labelledby="admin-h">
<h2 id="admin-h">Admin actions</h2>
<p class="dim">Each asks for the admin token (the <code>adminToken</code> setting); it is sent in the form's body, never kept or shown.</p>
${
  status.offline
    ? html`<p class="dim">Prefetch: not available offline.</p>`
    : html`<form class="admin" id="prefetch-form" method="post" action="/-/prefetch">
<input type="hidden" name="back" value="${path}">
<strong>Prefetch</strong> the followed packages now (${plural(status.prefetch.followed, 'package')}):
${token('prefetch-token')}
<button type="submit">Prefetch now</button>
</form>`
}
<form class="admin" id="verify-form" method="post" action="/-/verify">
<input type="hidden" name="back" value="${path}">
<strong>Verify</strong> every archive (rehash at the scrub rate):
${token('verify-token')}
<label><input type="checkbox" name="repair" value="true"> also repair</label>
<button type="submit">Verify now</button>
</form>
</section>`;
}
