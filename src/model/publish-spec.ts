// What a publish form's publish.yaml says of the component (PROTOCOL.md §1, "Publish spec"): the name, version and
// type the mirror needs, checked as the client's own spec says, and the descriptive fields `s registry list` shows.
// The text is a client's: parsed with a YAML library, aliases bounded, and any failure a 400 that says why.
import { parse } from 'yaml';
import { MirrorError } from './errors.js';
import * as valid from './validate.js';

export const COMPONENT_TYPES = ['Component', 'Plugin', 'Project'] as const;

export interface PublishSpec {
  readonly name: string;
  readonly version: string;
  readonly type: (typeof COMPONENT_TYPES)[number];
  readonly description: string;
  readonly category: string | undefined;
  readonly provider: readonly string[];
  readonly tags: readonly string[];
}

/** The YAML options a publish.yaml is read with (aliases bounded: the text is a client's). */
const YAML_OPTIONS = { maxAliasCount: 16, uniqueKeys: true } as const;

/** A top-level text (or number) of a parsed publish.yaml. */
const scalar = (y: Record<string, unknown>, k: string) => (typeof y[k] === 'string' || typeof y[k] === 'number' ? String(y[k]) : undefined);

/** The Name a publish.yaml gives, as publishSpec reads it (not validated); undefined when it has none or is not YAML. */
export function publishSpecName(text: string): string | undefined {
  try {
    const doc: unknown = parse(text, YAML_OPTIONS);
    return doc && typeof doc === 'object' && !Array.isArray(doc) ? scalar(doc as Record<string, unknown>, 'Name') : undefined;
  } catch {
    return undefined;
  }
}

export function publishSpec(text: string | undefined): PublishSpec {
  if (!text?.trim()) throw bad('the form has no publish.yaml (the publish field is empty)');
  let doc: unknown;
  try {
    doc = parse(text, YAML_OPTIONS);
  } catch (err) {
    throw bad(`publish.yaml is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw bad('publish.yaml is not a mapping of keys');
  const y = doc as Record<string, unknown>;
  const text_ = (k: string) => scalar(y, k);
  const name = text_('Name');
  const version = text_('Version');
  if (name === undefined) throw bad('publish.yaml has no Name');
  if (version === undefined) throw bad('publish.yaml has no Version');
  const type = y.Type;
  if (!COMPONENT_TYPES.includes(type as PublishSpec['type'])) throw bad(`publish.yaml's Type must be one of ${COMPONENT_TYPES.join(', ')}, got ${JSON.stringify(type ?? null)}`);
  const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  return {
    name: valid.packageName(name),
    version: valid.version(version),
    type: type as PublishSpec['type'],
    description: text_('Description') ?? '',
    category: text_('Category'),
    provider: strings(y.Provider),
    tags: strings(y.Tags),
  };
}

function bad(why: string): MirrorError {
  return new MirrorError('bad-request', why);
}
