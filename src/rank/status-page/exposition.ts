/**
 * The Prometheus text exposition format, version 0.0.4: families of samples rendered as
 * `# HELP`, `# TYPE` and one line per sample. Pure, so its rules are tested on their own: every
 * family has its HELP and TYPE before its samples, label values escape \ " and newline, a
 * histogram's buckets are cumulative and end in le="+Inf" equal to its _count.
 * https://prometheus.io/docs/instrumenting/exposition_formats/
 */

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Readonly<Record<string, string>>;

export interface Sample {
  labels: Labels;
  value: number;
}

export interface ScalarFamily {
  type: 'gauge' | 'counter';
  name: string;
  help: string;
  samples: Sample[];
}

export interface HistogramSeries {
  labels: Labels;
  /** Cumulative counts by upper bound, bounds increasing; the +Inf bucket is added from `count`. */
  buckets: Array<{ le: number; count: number }>;
  sum: number;
  count: number;
}

export interface HistogramFamily {
  type: 'histogram';
  name: string;
  help: string;
  series: HistogramSeries[];
}

export type MetricFamily = ScalarFamily | HistogramFamily;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value inside its double quotes: backslash, double quote and line feed escaped. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escapes only backslash and line feed. */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A sample value as Prometheus (Go's ParseFloat) reads it, with its spellings of the non-finite. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function formatLabels(labels: Labels, extra?: [string, string]): string {
  const pairs = Object.entries(labels);
  if (extra) pairs.push(extra);
  if (pairs.length === 0) return '';
  for (const [name] of pairs) {
    // "le" belongs to histogram buckets; a caller's own "le" would make them ambiguous.
    if (!LABEL_NAME.test(name) || name.startsWith('__') || (name === 'le' && extra === undefined))
      throw new Error(`invalid label name ${JSON.stringify(name)}`);
  }
  return `{${pairs.map(([n, v]) => `${n}="${escapeLabelValue(v)}"`).join(',')}}`;
}

function renderHistogram(family: HistogramFamily, lines: string[]): void {
  for (const s of family.series) {
    let previous = 0;
    let previousLe = -Infinity;
    for (const b of s.buckets) {
      if (!(b.le > previousLe) || !Number.isFinite(b.le))
        throw new Error(`${family.name}: bucket bounds must be finite and increasing`);
      if (b.count < previous || b.count > s.count)
        throw new Error(`${family.name}: bucket counts must be cumulative and at most _count`);
      lines.push(
        `${family.name}_bucket${formatLabels(s.labels, ['le', formatValue(b.le)])} ${b.count}`,
      );
      previous = b.count;
      previousLe = b.le;
    }
    lines.push(`${family.name}_bucket${formatLabels(s.labels, ['le', '+Inf'])} ${s.count}`);
    lines.push(`${family.name}_sum${formatLabels(s.labels)} ${formatValue(s.sum)}`);
    lines.push(`${family.name}_count${formatLabels(s.labels)} ${s.count}`);
  }
}

/** The whole exposition: families in the given order, each name once, ending in a newline. */
export function renderExposition(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const family of families) {
    if (!METRIC_NAME.test(family.name)) throw new Error(`invalid metric name ${family.name}`);
    if (seen.has(family.name)) throw new Error(`metric ${family.name} appears twice`);
    seen.add(family.name);
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    if (family.type === 'histogram') renderHistogram(family, lines);
    else
      for (const s of family.samples)
        lines.push(`${family.name}${formatLabels(s.labels)} ${formatValue(s.value)}`);
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}
