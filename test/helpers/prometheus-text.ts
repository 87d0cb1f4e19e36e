/**
 * A strict reader of the Prometheus text exposition format 0.0.4, written from the format's
 * description rather than from our renderer, so that tests check what a scraper would accept:
 * every sample belongs to a family whose HELP and TYPE came first, a family's lines are together,
 * label values unescape (\\, \", \n), and each histogram series has cumulative buckets ending in
 * le="+Inf" equal to its _count, plus a _sum. Throws with the offending line on any violation.
 */

export interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ParsedExposition {
  help: Map<string, string>;
  type: Map<string, string>;
  samples: ParsedSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(text: string, line: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text))
    throw new Error(`bad value ${JSON.stringify(text)} in: ${line}`);
  return Number(text);
}

function parseLabels(text: string, line: string): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let s = text.slice(1); // after "{"
  for (;;) {
    if (s.startsWith('}')) return { labels, rest: s.slice(1) };
    const name = LABEL.exec(s)?.[0];
    if (!name || !s.startsWith(`${name}="`, 0)) throw new Error(`bad label in: ${line}`);
    s = s.slice(name.length + 2);
    let value = '';
    for (;;) {
      const c = s[0];
      if (c === undefined) throw new Error(`unterminated label value in: ${line}`);
      if (c === '\n') throw new Error(`raw newline in a label value in: ${line}`);
      if (c === '"') break;
      if (c === '\\') {
        const next = s[1];
        if (next === '\\') value += '\\';
        else if (next === '"') value += '"';
        else if (next === 'n') value += '\n';
        else throw new Error(`bad escape \\${next} in: ${line}`);
        s = s.slice(2);
      } else {
        value += c;
        s = s.slice(1);
      }
    }
    if (Object.hasOwn(labels, name)) throw new Error(`label ${name} twice in: ${line}`);
    labels[name] = value;
    s = s.slice(1);
    if (s.startsWith(',')) s = s.slice(1);
    else if (!s.startsWith('}')) throw new Error(`expected , or } in: ${line}`);
  }
}

/** The family a sample name belongs to, given the TYPEs declared so far. */
function familyOf(name: string, type: Map<string, string>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      if (type.get(base) === 'histogram' || type.get(base) === 'summary') return base;
    }
  }
  return name;
}

export function parseExposition(text: string): ParsedExposition {
  if (text !== '' && !text.endsWith('\n')) throw new Error('the exposition must end with \\n');
  const help = new Map<string, string>();
  const type = new Map<string, string>();
  const samples: ParsedSample[] = [];
  const finished = new Set<string>();
  let current: string | undefined;
  const enter = (family: string, line: string): void => {
    if (family === current) return;
    if (finished.has(family)) throw new Error(`lines of ${family} are not together: ${line}`);
    if (current !== undefined) finished.add(current);
    current = family;
  };
  for (const line of text.split('\n').slice(0, -1)) {
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
      if (!m) continue; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      enter(name, line);
      if (kind === 'HELP') {
        if (help.has(name)) throw new Error(`second HELP for ${name}`);
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ''))) throw new Error(`bad escape in: ${line}`);
        help.set(
          name,
          rest.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\')),
        );
      } else {
        if (type.has(name)) throw new Error(`second TYPE for ${name}`);
        if (!TYPES.has(rest)) throw new Error(`unknown type in: ${line}`);
        if (samples.some((s) => familyOf(s.name, type) === name))
          throw new Error(`TYPE after samples of ${name}`);
        type.set(name, rest);
      }
      continue;
    }
    if (line.trim() === '') continue;
    const name = NAME.exec(line)?.[0];
    if (!name) throw new Error(`bad sample line: ${line}`);
    let rest = line.slice(name.length);
    let labels: Record<string, string> = {};
    if (rest.startsWith('{')) ({ labels, rest } = parseLabels(rest, line));
    const parts = rest.split(' ');
    if (parts[0] !== '' || parts.length < 2 || parts.length > 3)
      throw new Error(`bad sample line: ${line}`);
    const value = parseValue(parts[1]!, line);
    const family = familyOf(name, type);
    enter(family, line);
    if (!help.has(family) || !type.has(family))
      throw new Error(`sample without HELP and TYPE before it: ${line}`);
    samples.push({ name, labels, value });
  }
  checkHistograms({ help, type, samples });
  return { help, type, samples };
}

const seriesKey = (labels: Record<string, string>): string =>
  JSON.stringify(
    Object.entries(labels)
      .filter(([k]) => k !== 'le')
      .sort(),
  );

function checkHistograms(parsed: ParsedExposition): void {
  for (const [family, kind] of parsed.type) {
    if (kind !== 'histogram') continue;
    const series = new Map<string, { buckets: ParsedSample[]; sum?: number; count?: number }>();
    for (const s of parsed.samples) {
      if (familyOf(s.name, parsed.type) !== family) continue;
      const key = seriesKey(s.labels);
      const entry = series.get(key) ?? { buckets: [] };
      series.set(key, entry);
      if (s.name === `${family}_bucket`) entry.buckets.push(s);
      else if (s.name === `${family}_sum`) entry.sum = s.value;
      else if (s.name === `${family}_count`) entry.count = s.value;
      else throw new Error(`${s.name} in histogram ${family}`);
    }
    for (const [key, { buckets, sum, count }] of series) {
      const where = `${family}${key}`;
      if (sum === undefined || count === undefined) throw new Error(`${where}: no _sum or _count`);
      let previousLe = -Infinity;
      let previous = 0;
      for (const b of buckets) {
        if (b.labels.le === undefined) throw new Error(`${where}: bucket without le`);
        const le = parseValue(b.labels.le, b.labels.le);
        if (!(le > previousLe)) throw new Error(`${where}: le not increasing at ${b.labels.le}`);
        if (b.value < previous)
          throw new Error(`${where}: buckets not cumulative at ${b.labels.le}`);
        previousLe = le;
        previous = b.value;
      }
      const last = buckets[buckets.length - 1];
      if (last?.labels.le !== '+Inf') throw new Error(`${where}: the last bucket is not le="+Inf"`);
      if (last.value !== count)
        throw new Error(`${where}: +Inf bucket ${last.value} != _count ${count}`);
    }
  }
}

/** The one sample of `name` whose labels include `labels`; throws when there is not exactly one. */
export function sampleOf(
  parsed: ParsedExposition,
  name: string,
  labels: Record<string, string> = {},
): number {
  const hits = parsed.samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (hits.length !== 1)
    throw new Error(`${hits.length} samples of ${name}${JSON.stringify(labels)}`);
  return hits[0]!.value;
}
