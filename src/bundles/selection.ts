// Which packages an export covers. A selector is NAME or NAME@VERSION for components (cached and hosted alike), or
// OWNER/NAME or OWNER/NAME@VERSION for generic packages: a component name has no "/", so the slash says which.
// No selectors: everything. Each selector must match something, so that a typo is not a silently smaller bundle.
import { MirrorError } from '../model/errors.js';
import * as valid from '../model/validate.js';

interface Selector {
  readonly text: string;
  readonly owner: string | undefined;
  readonly name: string;
  readonly version: string | undefined;
}

export class Selection {
  private readonly selectors: readonly Selector[];
  private readonly matched = new Set<string>();

  constructor(texts: readonly string[]) {
    this.selectors = texts.map(parseSelector);
  }

  get all(): boolean {
    return this.selectors.length === 0;
  }

  /** The selectors, normalized (sorted, each once): what makes two requests the same. */
  get normalized(): string[] {
    return [...new Set(this.selectors.map((s) => s.text))].sort();
  }

  /** Whether a component version (cached or hosted) is selected; marks the selectors that match it. */
  component(name: string, version: string): boolean {
    return this.mark({ kind: 'component', name, version });
  }

  /** Whether a generic-package version is selected; marks the selectors that match it. */
  generic(at: { owner: string; name: string; version: string }): boolean {
    return this.mark({ kind: 'generic', ...at });
  }

  /** Whether an entry (of another bundle's state) is among the packages selected; marks nothing. */
  covers(e: Target): boolean {
    return this.all || this.selectors.some((s) => selects(s, e));
  }

  /** Selectors nothing matched so far. */
  unmatched(): string[] {
    return this.selectors.filter((s) => !this.matched.has(s.text)).map((s) => s.text);
  }

  private mark(e: Target): boolean {
    if (this.all) return true;
    let any = false;
    for (const s of this.selectors.filter((s) => selects(s, e))) {
      this.matched.add(s.text);
      any = true;
    }
    return any;
  }
}

/** A version an entry is of: a component's (cached or hosted), or a generic package's. */
type Target = { readonly kind: string; readonly owner?: string; readonly name: string; readonly version: string };

function selects(s: Selector, e: Target): boolean {
  const owner = e.kind === 'generic' ? e.owner : undefined;
  return s.owner === owner && s.name === e.name && (s.version === undefined || s.version === e.version);
}

function parseSelector(text: string): Selector {
  const slash = text.indexOf('/');
  const rest = slash < 0 ? text : text.slice(slash + 1);
  const at = rest.indexOf('@');
  const name = at < 0 ? rest : rest.slice(0, at);
  const version = at < 0 ? undefined : rest.slice(at + 1);
  if (slash < 0) {
    valid.packageName(name);
    if (version !== undefined) valid.version(version);
    return { text, owner: undefined, name, version };
  }
  const owner = text.slice(0, slash);
  // As the generic faces accept them: an owner is a user or group name; "." and ".." are never names.
  if (!/^[A-Za-z0-9][\w.-]*$/.test(owner) || !/^[\w.+-]+$/.test(name) || name === '.' || name === '..' || version === '') {
    throw new MirrorError('bad-request', `invalid package ${JSON.stringify(text)}: expected NAME[@VERSION] (a component) or OWNER/NAME[@VERSION] (a generic package)`);
  }
  return { text, owner, name, version };
}
