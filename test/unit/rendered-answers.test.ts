// RenderedAnswers (faces/json.ts): a rendering is reused only for the very document object it was made from, never
// for answers made per request (hosted, offline), and the kept renderings stay within their entry and byte limits.
import { describe, expect, it } from 'vitest';
import type { Cached, CacheStatus } from '../../src/core/metadata-cache.js';
import { render, RenderedAnswers } from '../../src/faces/json.js';

const cached = (value: unknown, status: CacheStatus = 'HIT'): Cached<unknown> => ({ value, status, age: 0 });

describe('RenderedAnswers', () => {
  it('renders a document once under a key, and again when the document is another object (even an equal one)', () => {
    const answers = new RenderedAnswers();
    let renders = 0;
    const content = (doc: unknown) => () => (renders++, { doc });
    const doc = { version: '1.0.0' };
    const first = answers.of(cached(doc), 'k', content(doc));
    expect(answers.of(cached(doc, 'REVALIDATED'), 'k', content(doc))).toBe(first);
    expect(renders).toBe(1);
    const changed = { version: '1.1.0' };
    const second = answers.of(cached(changed, 'MISS'), 'k', content(changed));
    expect(renders).toBe(2);
    expect(second.json.toString()).toBe('{"doc":{"version":"1.1.0"}}');
    expect(second.etag).not.toBe(first.etag);
    answers.of(cached({ version: '1.1.0' }), 'k', content(changed));
    expect(renders).toBe(3);
    // Another key (another base URL, another path) is its own rendering of the same document.
    answers.of(cached(changed), 'other', content(changed));
    expect(renders).toBe(4);
  });

  it('never keeps answers made for each request: hosted content and offline answers', () => {
    const answers = new RenderedAnswers();
    const doc = { version: '1.0.0' };
    for (const status of ['HOSTED', 'OFFLINE'] as const) {
      let n = 0;
      const content = () => ({ n: ++n });
      expect(answers.of(cached(doc, status), status, content).json.toString()).toBe('{"n":1}');
      expect(answers.of(cached(doc, status), status, content).json.toString()).toBe('{"n":2}');
    }
    expect(answers.usage.entries).toBe(0);
  });

  it('keeps at most maxEntries renderings, and maxBytes of them, however many keys (Host values) come', () => {
    const answers = new RenderedAnswers({ maxEntries: 50, maxBytes: 64 * 1024 });
    const doc = { body: 'x'.repeat(300) };
    for (let i = 0; i < 1000; i++) answers.of(cached(doc), `v3 http://host-${i}.example /v3/packages/fc3/release/latest`, () => doc);
    expect(answers.usage.entries).toBe(50);
    const big = new RenderedAnswers({ maxEntries: 1000, maxBytes: 64 * 1024 });
    for (let i = 0; i < 1000; i++) big.of(cached(doc), `key ${i}`, () => doc);
    expect(big.usage.bytes).toBeLessThanOrEqual(64 * 1024);
    expect(big.usage.entries).toBeLessThan(1000);
    // One rendering larger than a quarter of the bytes is sent, not kept.
    const huge = { body: 'y'.repeat(20 * 1024) };
    expect(big.of(cached(huge), 'huge', () => huge).json.length).toBeGreaterThan(20 * 1024);
    let again = 0;
    big.of(cached(huge), 'huge', () => (again++, huge));
    expect(again).toBe(1);
  });

  it('the ETag is a weak hash of the JSON bytes', () => {
    expect(render({ a: 'é' }).etag).toMatch(/^W\/"[A-Za-z0-9_-]{27}"$/);
    expect(render({ a: 1 }).etag).toBe(render({ a: 1 }).etag);
    expect(render({ a: 1 }).etag).not.toBe(render({ a: 2 }).etag);
  });
});
