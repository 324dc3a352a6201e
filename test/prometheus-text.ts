// A strict parser of Prometheus's text exposition format (version 0.0.4), for tests: it throws on anything a
// Prometheus server would refuse or misread, rather than guessing. (parse-prometheus-text-format, the parser on npm,
// drops the labels, sums and counts of labelled histograms: it cannot check what /-/metrics serves.)
//
// Checked: line syntax (metric and label names, quoted and escaped label values, float values, an optional integer
// timestamp); every sample belongs to a family whose # TYPE came before it; HELP and TYPE at most once per family;
// a family's samples are contiguous; no series twice; counters and histogram parts are not negative; histogram
// series have an `le` on each bucket, cumulative counts that never fall, a +Inf bucket equal to _count, and a _sum.

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface PromSample {
  /** The sample's own name (e.g. x_bucket for a histogram x). */
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface PromFamily {
  readonly name: string;
  readonly type: MetricType;
  readonly help: string | undefined;
  readonly samples: PromSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parsePrometheusText(text: string): Map<string, PromFamily> {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a line feed');
  const families = new Map<string, PromFamily>();
  const helps = new Set<string>();
  const typed = new Set<string>();
  const series = new Set<string>();
  const done = new Set<string>(); // families whose samples are over (another family's came after)
  let current: PromFamily | undefined;
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${JSON.stringify(line.slice(0, 120))}`;
    const fail = (why: string): never => {
      throw new Error(`${why} (${where})`);
    };
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest = ''] = m;
      if (!METRIC_NAME.test(name!)) fail(`invalid metric name ${name}`);
      if (kind === 'HELP') {
        if (helps.has(name!)) fail(`second HELP for ${name}`);
        helps.add(name!);
        unescape(rest, false, fail);
        const f = families.get(name!);
        if (f) families.set(name!, { ...f, help: rest });
        else families.set(name!, { name: name!, type: 'untyped', help: rest, samples: [] });
        return;
      }
      if (!TYPES.has(rest as MetricType)) fail(`unknown type ${rest}`);
      const f = families.get(name!);
      if (f && (f.samples.length > 0 || typed.has(name!))) fail(`TYPE for ${name} after its samples or a second time`);
      typed.add(name!);
      families.set(name!, { name: name!, type: rest as MetricType, help: f?.help, samples: [] });
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)(?: (-?\d+))?$/.exec(line);
    if (!m) fail('not a sample line');
    const [, name, rawLabels, rawValue] = m!;
    const labels = rawLabels ? parseLabels(rawLabels.slice(1, -1), fail) : {};
    const value = parseValue(rawValue!, fail);
    const family = familyOf(name!, families) ?? fail(`sample of ${name} before any # TYPE of its family`);
    if (current !== family) {
      if (done.has(family.name)) fail(`samples of ${family.name} are not contiguous`);
      if (current) done.add(current.name);
      current = family;
    }
    const key = `${name}{${Object.entries(labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
      .join(',')}}`;
    if (series.has(key)) fail(`series ${key} twice`);
    series.add(key);
    if ((family.type === 'counter' || family.type === 'histogram') && !(value >= 0)) fail(`negative or NaN ${family.type} value`);
    if (family.type === 'histogram' && name!.endsWith('_bucket') && labels.le === undefined) fail('histogram bucket without le');
    family.samples.push({ name: name!, labels, value });
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

/** The family a sample name belongs to: itself, or a histogram's or summary's _bucket, _sum, _count. */
function familyOf(name: string, families: Map<string, PromFamily>): PromFamily | undefined {
  const own = families.get(name);
  if (own && own.type !== 'untyped') return own;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const f = families.get(name.slice(0, -suffix.length));
    if (f && (f.type === 'histogram' || (f.type === 'summary' && suffix !== '_bucket'))) return f;
  }
  return own;
}

function parseLabels(body: string, fail: (why: string) => never): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = body;
  while (rest.length > 0) {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,?)/.exec(rest);
    if (!m) fail(`invalid labels {${body}}`);
    const [all, name, raw, comma] = m!;
    if (!LABEL_NAME.test(name!)) fail(`invalid label name ${name}`);
    if (name! in labels) fail(`label ${name} twice`);
    labels[name!] = unescape(raw!, true, fail);
    rest = rest.slice(all.length);
    if (!comma && rest.length > 0) fail(`invalid labels {${body}}`);
  }
  return labels;
}

/** Label values may escape \\, \" and \n; HELP text \\ and \n. */
function unescape(s: string, quoted: boolean, fail: (why: string) => never): string {
  return s.replace(/\\(.?)/g, (_, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    if (c === '"' && quoted) return '"';
    return fail(`invalid escape \\${c}`);
  });
}

/** A value as Go's strconv.ParseFloat reads it, as Prometheus does (NaN and Inf in any case: prom-client writes "Nan"). */
function parseValue(raw: string, fail: (why: string) => never): number {
  const special = /^([+-]?)(inf|infinity|nan)$/i.exec(raw);
  if (special) return special[2]!.toLowerCase() === 'nan' ? (special[1] ? fail(`invalid value ${raw}`) : NaN) : special[1] === '-' ? -Infinity : Infinity;
  if (!/^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/.test(raw)) fail(`invalid value ${raw}`);
  return Number(raw);
}

function checkHistogram(f: PromFamily): void {
  const bySeries = new Map<string, { buckets: Array<[number, number]>; sum?: number; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort(([a], [b]) => a.localeCompare(b)));
    const entry = bySeries.get(key) ?? { buckets: [] };
    bySeries.set(key, entry);
    if (s.name === `${f.name}_bucket`) entry.buckets.push([le === '+Inf' ? Infinity : Number(le), s.value]);
    else if (s.name === `${f.name}_sum`) entry.sum = s.value;
    else if (s.name === `${f.name}_count`) entry.count = s.value;
    else throw new Error(`histogram ${f.name} has a sample named ${s.name}`);
  }
  for (const [key, { buckets, sum, count }] of bySeries) {
    const where = `histogram ${f.name} ${key}`;
    if (sum === undefined || count === undefined) throw new Error(`${where}: no _sum or _count`);
    const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
    if (sorted.some(([le]) => Number.isNaN(le))) throw new Error(`${where}: a bucket's le is not a number`);
    if (sorted.at(-1)?.[0] !== Infinity) throw new Error(`${where}: no +Inf bucket`);
    sorted.forEach(([, v], i) => {
      if (i > 0 && v < sorted[i - 1]![1]) throw new Error(`${where}: bucket counts fall`);
    });
    if (sorted.at(-1)![1] !== count) throw new Error(`${where}: +Inf bucket ${sorted.at(-1)![1]} is not _count ${count}`);
  }
}
