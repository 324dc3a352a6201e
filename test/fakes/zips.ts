// Component zips as registries serve them: a publish.yaml naming the component, and whatever files it carries.
import { zipSync } from 'fflate';

/** Entries carry their modification time: a fixed one makes the same component's zip the same bytes every time. */
const FIXED_TIME = new Date(Date.UTC(2024, 0, 1));

/**
 * A real zip for a component version: its publish.yaml, plus `payload` stored uncompressed (so the zip's size
 * follows the payload's) and any other files; `topFolder` puts everything in one folder, as GitHub zipballs do.
 */
export function componentZip(name: string, version: string, opts: { payload?: Uint8Array; files?: Record<string, Uint8Array>; topFolder?: boolean } = {}): Buffer {
  const text = (s: string) => new TextEncoder().encode(s);
  const files: Record<string, Uint8Array> = {
    'publish.yaml': text(`Edition: 3.0.0\nType: Component\nName: ${name}\nVersion: ${version}\nDescription: test component\n`),
    ...(opts.payload ? { 'payload.bin': opts.payload } : {}),
    ...opts.files,
  };
  const prefix = opts.topFolder ? `${name}-${version}/` : '';
  return Buffer.from(zipSync(Object.fromEntries(Object.entries(files).map(([path, data]) => [prefix + path, [data, { level: 0, mtime: FIXED_TIME }]]))));
}
