// GET /-/metrics, in Prometheus's text format. Answered requests are counted here; everything else is read from
// the mirror's parts (the figures of /-/status) when scraped.
import type { IncomingMessage, ServerResponse } from 'node:http';

export class ResponseCounts {
  private readonly counts = new Map<string, { responses: number; bytes: number }>();

  /** Counts a response once it is finished: by x-cache ("none" for answers without one) and status class. */
  track(req: IncomingMessage, res: ServerResponse): void {
    // The socket is captured now: by 'finish', node may have detached it from the request (an answer sent before
    // the request body was read, e.g. an upstream 401 to a large upload), and req.socket is then null.
    const socket = req.socket;
    const before = socket.bytesWritten;
    res.once('finish', () => {
      const key = `cache="${String(res.getHeader('x-cache') ?? 'none')}",code="${Math.floor(res.statusCode / 100)}xx"`;
      const entry = this.counts.get(key) ?? { responses: 0, bytes: 0 };
      entry.responses++;
      entry.bytes += socket.bytesWritten - before;
      this.counts.set(key, entry);
    });
  }

  entries(): Array<[labels: string, counts: { responses: number; bytes: number }]> {
    return [...this.counts];
  }
}

export type Sample = readonly [name: string, type: 'counter' | 'gauge', help: string, values: ReadonlyArray<readonly [labels: string, value: number]>];

export function renderMetrics(samples: readonly Sample[]): string {
  return samples
    .map(([name, type, help, values]) =>
      [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...values.map(([labels, v]) => `${name}${labels ? `{${labels}}` : ''} ${v}`)].join('\n'),
    )
    .join('\n')
    .concat('\n');
}
