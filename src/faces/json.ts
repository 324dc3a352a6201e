// Writing JSON answers, for every face, on node's own response API (the hot path shares it); and metadata answers
// rendered once and reused while their document is unchanged.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LRUCache } from 'lru-cache';
import type { Cached } from '../core/metadata-cache.js';

const JSON_TYPE = 'application/json; charset=utf-8';

export function sendJson(res: ServerResponse, status: number, json: string): void {
  res.writeHead(status, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(json) });
  res.end(json);
}

/**
 * A metadata answer's content as sent: its JSON, its size in bytes, and a weak ETag over them. Kept as a string: node
 * writes a string answer (headers and body together) to the socket in one write, with no Buffer of its own.
 */
export interface Rendered {
  readonly json: string;
  readonly bytes: number;
  readonly etag: string;
}

export function render(content: unknown): Rendered {
  const json = JSON.stringify(content);
  return { json, bytes: Buffer.byteLength(json), etag: `W/"${createHash('sha1').update(json).digest('base64url')}"` };
}

/** What a face wraps a metadata answer's JSON in, made for each answer (the v3 envelope holds the request's id). */
export type Frame = (res: ServerResponse) => readonly [head: string, tail: string];

const NO_FRAME = ['', ''] as const;

/**
 * A metadata answer: where it came from (x-cache, Age) and the ETag of its content, so that a client or a downstream
 * mirror can revalidate with If-None-Match and get a 304. `frame` wraps the content's JSON, outside the ETag.
 */
export function sendMetadata(req: IncomingMessage, res: ServerResponse, cached: Cached<unknown>, rendered: Rendered, frame?: Frame): void {
  res.setHeader('x-cache', cached.status);
  res.setHeader('Age', cached.age);
  res.setHeader('ETag', rendered.etag);
  const ifNoneMatch = req.headers['if-none-match'];
  if (ifNoneMatch && ifNoneMatch.split(',').some((tag) => tag.trim() === rendered.etag || tag.trim() === '*')) {
    res.writeHead(304).end();
    return;
  }
  const [head, tail] = frame?.(res) ?? NO_FRAME;
  res.writeHead(200, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(head) + rendered.bytes + Buffer.byteLength(tail) });
  res.end(head + rendered.json + tail);
}

/** Rendered answers kept: at most this many, ... */
const KEPT_ANSWERS = 4096;
/** ... of at most this many bytes in all (a document it was made from counts as much again: the entry holds it). */
const KEPT_BYTES = 32 << 20;

/**
 * Metadata answers rendered once and reused while their document is unchanged: rendering (the face's mapping, the
 * JSON, the ETag's hash) was most of a cached answer's cost. An answer is kept under everything its rendering reads
 * besides the document (the face, the base URL, the path and query asked), with the document it was made from, and is
 * used again only for that very object: the metadata cache hands out the same object until the document changes (a
 * refresh from the upstream, a write through the mirror and an import each store a new one), so a changed document
 * is rendered anew at once. Answers made for each request (hosted content, whose links may be signed for the caller,
 * and offline answers) are never kept. Bounded in entries and bytes: every Host value or query makes its own key.
 */
export class RenderedAnswers {
  private readonly kept: LRUCache<string, { readonly doc: unknown; readonly rendered: Rendered }>;

  constructor({ maxEntries = KEPT_ANSWERS, maxBytes = KEPT_BYTES }: { maxEntries?: number; maxBytes?: number } = {}) {
    this.kept = new LRUCache({
      max: maxEntries,
      maxSize: maxBytes,
      maxEntrySize: maxBytes / 4, // a huge list is rendered each time rather than pushing out everything else
      sizeCalculation: (entry, key) => 2 * entry.rendered.bytes + key.length + 64,
    });
  }

  /** The rendering of `cached` under `key` (see above): the one kept for its document, or `content` rendered now. */
  of(cached: Cached<unknown>, key: string, content: () => unknown): Rendered {
    if (cached.status === 'HOSTED' || cached.status === 'OFFLINE') return render(content());
    const kept = this.kept.get(key);
    if (kept && kept.doc === cached.value) return kept.rendered;
    const rendered = render(content());
    this.kept.set(key, { doc: cached.value, rendered });
    return rendered;
  }

  /** How many answers are kept, and their size as counted against the byte limit. */
  get usage(): { readonly entries: number; readonly bytes: number } {
    return { entries: this.kept.size, bytes: this.kept.calculatedSize };
  }
}
