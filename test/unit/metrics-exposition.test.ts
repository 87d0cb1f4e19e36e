/**
 * The Prometheus text exposition (src/rank/status-page/exposition.ts) and the store's metrics
 * (store-metrics.ts), as a specification. Goal: what /metrics serves is valid format 0.0.4 —
 * every sample after its family's HELP and TYPE, a family's lines together, label values with
 * \ " and newline escaped, non-finite values spelled +Inf/-Inf/NaN, histogram buckets cumulative
 * and ending in le="+Inf" equal to _count — and says what the status says. Method: render, then
 * read back with an independent strict parser (test/helpers/prometheus-text.ts).
 */
import { describe, expect, it } from 'vitest';
import type { StatusResult } from '../../src/protocol/client-protocol.js';
import { OpMetrics } from '../../src/rank/op-metrics.js';
import {
  escapeLabelValue,
  renderExposition,
  type MetricFamily,
} from '../../src/rank/status-page/exposition.js';
import { storeMetricFamilies } from '../../src/rank/status-page/store-metrics.js';
import { parseExposition, sampleOf } from '../helpers/prometheus-text.js';

const status: StatusResult = {
  ranks: [
    {
      rank: 1,
      host: 'node-a',
      state: 'alive',
      heartbeatAgeMs: 250,
      usedBytes: 3000,
      capacityBytes: 10_000,
      chunkCopies: 3,
      primaryCopies: 2,
      replicaCopies: 1,
      directReads: { count: 7, bytes: 29_360_128 },
      directWrites: { count: 3, bytes: 12_582_912 },
    },
    {
      rank: 2,
      host: 'we"ird\\host\nname',
      state: 'suspect',
      heartbeatAgeMs: null,
      usedBytes: 0,
      capacityBytes: Infinity,
      chunkCopies: 0,
      primaryCopies: 0,
      replicaCopies: 0,
    },
    {
      rank: 3,
      host: 'node-c',
      state: 'dead',
      heartbeatAgeMs: 9000,
      usedBytes: 1000,
      capacityBytes: 10_000,
      chunkCopies: 1,
      primaryCopies: 0,
      replicaCopies: 1,
    },
  ],
  replicas: 2,
  chunkSizeBytes: 4 * 1024 * 1024,
  files: 2,
  chunks: 2,
  underReplicatedChunks: 1,
  uptimeMs: 12_500,
};

function ops(): OpMetrics {
  const m = new OpMetrics([0.001, 0.01, 0.1]);
  m.observe('put-whole', 'ok', 0.004);
  m.observe('put-whole', 'ok', 0.05);
  m.observe('put-whole', 'STORE_NO_SPACE', 0.0002);
  m.observe('status', 'ok', 0.2);
  return m;
}

describe('exposition format', () => {
  it('escapes backslash, double quote and newline in label values, and they read back', () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
    const text = renderExposition([
      {
        type: 'gauge',
        name: 'x',
        help: 'help with \\ and\nnewline',
        samples: [{ labels: { v: 'a\\b"c\nd' }, value: 1 }],
      },
    ]);
    expect(text).toBe(
      '# HELP x help with \\\\ and\\nnewline\n# TYPE x gauge\nx{v="a\\\\b\\"c\\nd"} 1\n',
    );
    const parsed = parseExposition(text);
    expect(parsed.samples[0]!.labels.v).toBe('a\\b"c\nd');
    expect(parsed.help.get('x')).toBe('help with \\ and\nnewline');
  });

  it('spells non-finite values as Prometheus reads them', () => {
    const text = renderExposition([
      {
        type: 'gauge',
        name: 'g',
        help: 'g',
        samples: [
          { labels: { k: 'a' }, value: Infinity },
          { labels: { k: 'b' }, value: -Infinity },
          { labels: { k: 'c' }, value: NaN },
          { labels: { k: 'd' }, value: 0.25 },
        ],
      },
    ]);
    expect(text.split('\n').slice(2, 6)).toEqual([
      'g{k="a"} +Inf',
      'g{k="b"} -Inf',
      'g{k="c"} NaN',
      'g{k="d"} 0.25',
    ]);
  });

  it('renders a histogram with cumulative buckets, le="+Inf" = _count, _sum and _count', () => {
    const text = renderExposition([
      {
        type: 'histogram',
        name: 'h_seconds',
        help: 'h',
        series: [
          {
            labels: { op: 'a' },
            buckets: [
              { le: 0.5, count: 1 },
              { le: 1, count: 3 },
            ],
            sum: 4.5,
            count: 4,
          },
        ],
      },
    ]);
    expect(text).toBe(
      [
        '# HELP h_seconds h',
        '# TYPE h_seconds histogram',
        'h_seconds_bucket{op="a",le="0.5"} 1',
        'h_seconds_bucket{op="a",le="1"} 3',
        'h_seconds_bucket{op="a",le="+Inf"} 4',
        'h_seconds_sum{op="a"} 4.5',
        'h_seconds_count{op="a"} 4',
        '',
      ].join('\n'),
    );
    parseExposition(text);
  });

  it('refuses what would make an invalid exposition', () => {
    const gauge = (name: string, labels: Record<string, string> = {}): MetricFamily => ({
      type: 'gauge',
      name,
      help: 'x',
      samples: [{ labels, value: 1 }],
    });
    expect(() => renderExposition([gauge('bad-name')])).toThrow(/metric name/);
    expect(() => renderExposition([gauge('a'), gauge('a')])).toThrow(/twice/);
    expect(() => renderExposition([gauge('a', { 'bad-label': 'x' })])).toThrow(/label name/);
    expect(() => renderExposition([gauge('a', { __reserved: 'x' })])).toThrow(/label name/);
    expect(() => renderExposition([gauge('a', { le: '1' })])).toThrow(/label name/);
    const histogram = (buckets: Array<{ le: number; count: number }>, count: number) =>
      renderExposition([
        {
          type: 'histogram',
          name: 'h',
          help: 'h',
          series: [{ labels: {}, buckets, sum: 1, count }],
        },
      ]);
    expect(() =>
      histogram(
        [
          { le: 1, count: 2 },
          { le: 2, count: 1 },
        ],
        2,
      ),
    ).toThrow(/cumulative/);
    expect(() => histogram([{ le: 1, count: 3 }], 2)).toThrow(/cumulative/);
    expect(() =>
      histogram(
        [
          { le: 2, count: 1 },
          { le: 1, count: 1 },
        ],
        1,
      ),
    ).toThrow(/increasing/);
  });

  it('renders nothing for no families, and HELP/TYPE for a family without samples', () => {
    expect(renderExposition([])).toBe('');
    expect(renderExposition([{ type: 'counter', name: 'c_total', help: 'c', samples: [] }])).toBe(
      '# HELP c_total c\n# TYPE c_total counter\n',
    );
  });
});

describe('the store metrics', () => {
  const text = renderExposition(storeMetricFamilies(status, ops()));
  const parsed = parseExposition(text);

  it('is a valid exposition: every sample has HELP and TYPE, histograms end in +Inf = _count', () => {
    // parseExposition throws on any violation; also check that nothing was left out.
    expect(parsed.samples.length).toBeGreaterThan(20);
    for (const name of parsed.type.keys()) expect(name).toMatch(/^memflow_/);
    expect(text.endsWith('\n')).toBe(true);
  });

  it('gives each rank its used bytes, capacity, copies and one state set to 1', () => {
    expect(sampleOf(parsed, 'memflow_rank_used_bytes', { rank: '1', host: 'node-a' })).toBe(3000);
    expect(sampleOf(parsed, 'memflow_rank_capacity_bytes', { rank: '1' })).toBe(10_000);
    expect(sampleOf(parsed, 'memflow_rank_capacity_bytes', { rank: '2' })).toBe(Infinity);
    expect(sampleOf(parsed, 'memflow_rank_chunk_copies', { rank: '3' })).toBe(1);
    expect(sampleOf(parsed, 'memflow_rank_index_copies', { rank: '1', role: 'primary' })).toBe(2);
    expect(sampleOf(parsed, 'memflow_rank_index_copies', { rank: '1', role: 'replica' })).toBe(1);
    for (const [rank, state] of [
      ['1', 'alive'],
      ['2', 'suspect'],
      ['3', 'dead'],
    ] as const) {
      for (const s of ['alive', 'suspect', 'dead'])
        expect(sampleOf(parsed, 'memflow_rank_state', { rank, state: s }), `${rank} ${s}`).toBe(
          s === state ? 1 : 0,
        );
    }
    expect(sampleOf(parsed, 'memflow_rank_heartbeat_age_seconds', { rank: '1' })).toBe(0.25);
    expect(sampleOf(parsed, 'memflow_rank_direct_reads_total', { rank: '1' })).toBe(7);
    expect(sampleOf(parsed, 'memflow_rank_direct_read_bytes_total', { rank: '1' })).toBe(
      29_360_128,
    );
    expect(sampleOf(parsed, 'memflow_rank_direct_writes_total', { rank: '1' })).toBe(3);
    expect(sampleOf(parsed, 'memflow_rank_direct_write_bytes_total', { rank: '1' })).toBe(
      12_582_912,
    );
    // A rank that has not reported them (no chunk port, or an older rank): no sample.
    for (const name of ['memflow_rank_direct_reads_total', 'memflow_rank_direct_writes_total'])
      expect(() => sampleOf(parsed, name, { rank: '2' })).toThrow(/0 samples/);
    // Never heard: no sample rather than a made-up age.
    expect(() => sampleOf(parsed, 'memflow_rank_heartbeat_age_seconds', { rank: '2' })).toThrow(
      /0 samples/,
    );
  });

  it('keeps an awkward host name intact through escaping', () => {
    expect(sampleOf(parsed, 'memflow_rank_used_bytes', { rank: '2' })).toBe(0);
    const hosts = parsed.samples.filter((s) => s.labels.rank === '2').map((s) => s.labels.host);
    expect(new Set(hosts)).toEqual(new Set(['we"ird\\host\nname']));
  });

  it('has the whole-store counts', () => {
    expect(sampleOf(parsed, 'memflow_files')).toBe(2);
    expect(sampleOf(parsed, 'memflow_chunks')).toBe(2);
    expect(sampleOf(parsed, 'memflow_under_replicated_chunks')).toBe(1);
    expect(sampleOf(parsed, 'memflow_replicas')).toBe(2);
    expect(sampleOf(parsed, 'memflow_uptime_seconds')).toBe(12.5);
  });

  it('counts requests by op and outcome, and their latencies by op', () => {
    expect(parsed.type.get('memflow_requests_total')).toBe('counter');
    expect(parsed.type.get('memflow_request_duration_seconds')).toBe('histogram');
    expect(sampleOf(parsed, 'memflow_requests_total', { op: 'put-whole', outcome: 'ok' })).toBe(2);
    expect(
      sampleOf(parsed, 'memflow_requests_total', { op: 'put-whole', outcome: 'STORE_NO_SPACE' }),
    ).toBe(1);
    const bucket = (op: string, le: string): number =>
      sampleOf(parsed, 'memflow_request_duration_seconds_bucket', { op, le });
    expect([bucket('put-whole', '0.001'), bucket('put-whole', '0.01')]).toEqual([1, 2]);
    expect([bucket('put-whole', '0.1'), bucket('put-whole', '+Inf')]).toEqual([3, 3]);
    expect(sampleOf(parsed, 'memflow_request_duration_seconds_count', { op: 'put-whole' })).toBe(3);
    expect(
      sampleOf(parsed, 'memflow_request_duration_seconds_sum', { op: 'put-whole' }),
    ).toBeCloseTo(0.0542, 9);
    expect(bucket('status', '0.1')).toBe(0);
    expect(bucket('status', '+Inf')).toBe(1);
  });
});

describe('the strict reader used above', () => {
  it('rejects what a scraper would reject', () => {
    expect(() => parseExposition('x 1\n')).toThrow(/without HELP and TYPE/);
    expect(() => parseExposition('# HELP x h\n# TYPE x gauge\nx 1')).toThrow(/end with/);
    expect(() => parseExposition('# HELP x h\n# TYPE x gauge\nx{a="\\q"} 1\n')).toThrow(/escape/);
    expect(() =>
      parseExposition('# HELP x h\n# TYPE x gauge\nx 1\n# HELP y h\n# TYPE y gauge\ny 1\nx 2\n'),
    ).toThrow(/together/);
    expect(() =>
      parseExposition(
        '# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      ),
    ).toThrow(/cumulative/);
    expect(() =>
      parseExposition('# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n'),
    ).toThrow(/\+Inf/);
  });
});
