// Which component a zip holds, from the Name and Version keys of its publish.yaml. The file is untrusted and only two
// top-level scalars matter, so this is a line-based reader of top-level `Key: value` lines, not a YAML parser (and
// no YAML library): indented keys belong to nested maps and are skipped, and anything it cannot read plainly (block
// scalars, flow maps, anchors, a key given twice) gives no identity rather than a guess.

/** A zip entry that is a component's publish.yaml: at the top, or in the one folder a zip of a folder has. */
export const isPublishYaml = (entry: string) => entry === 'publish.yaml' || entry.endsWith('/publish.yaml');
/** A publish.yaml larger than this is not read (real ones are a few KB). */
export const MAX_PUBLISH_YAML = 1 << 20;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
/** A top-level key: at the start of the line, then a colon followed by a space or the end of the line. */
const TOP_LEVEL_KEY = /^(Name|Version)[ \t]*:(?:[ \t]+(.*))?$/;
/** Plain scalars YAML reads as null, not as text. */
const NULLS = new Set(['null', 'Null', 'NULL', '~']);

/** The component's name and version, or undefined when either is missing, given twice or not a valid name/version. */
export function componentIdentity(yaml: string): { name: string; version: string } | undefined {
  const values = new Map<string, string | undefined>();
  for (const line of yaml.replace(/^\uFEFF/, '').split(/\r?\n/)) {
    const match = TOP_LEVEL_KEY.exec(line);
    if (!match) continue;
    const key = match[1] as 'Name' | 'Version';
    if (values.has(key)) return undefined;
    values.set(key, scalar(match[2] ?? ''));
  }
  const name = values.get('Name');
  const version = values.get('Version');
  if (name === undefined || !NAME.test(name) || name.includes('..')) return undefined;
  if (version === undefined || !VERSION.test(version) || version.includes('..')) return undefined;
  return { name, version };
}

/** A one-line scalar: quoted with ' or " (no escapes: valid names and versions never need them) or plain. */
function scalar(raw: string): string | undefined {
  const text = raw.trim();
  const quote = text[0];
  if (quote === '"' || quote === "'") {
    const close = text.indexOf(quote, 1);
    if (close < 0) return undefined;
    // After the closing quote only a comment may follow.
    const after = text.slice(close + 1).trim();
    return after === '' || after.startsWith('#') ? text.slice(1, close) : undefined;
  }
  // A plain scalar ends where a comment starts: " #" (a "#" inside a word is part of it).
  const value = text.replace(/(^|[ \t])#.*$/, '').trim();
  return NULLS.has(value) ? undefined : value;
}
