/**
 * Request counters and latency histograms (src/rank/op-metrics.ts), as a specification. Goal:
 * counts by op and outcome are exact; each duration lands in the first bucket whose bound is at
 * least it (bounds inclusive, as Prometheus' le means "less than or equal"); buckets read back
 * cumulative, with _sum and _count; nothing a caller passes can make the numbers wrong.
 * Method: feed durations directly (the module is pure).
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_LATENCY_BUCKETS_SECONDS, OpMetrics } from '../../src/rank/op-metrics.js';

describe('op metrics', () => {
  it('counts each (op, outcome) apart, sorted by op then outcome', () => {
    const m = new OpMetrics();
    m.observe('put-chunk', 'ok', 0.01);
    m.observe('stat', 'STORE_NOT_FOUND', 0.0001);
    m.observe('put-chunk', 'ok', 0.02);
    m.observe('put-chunk', 'STORE_BUSY', 0.0001);
    m.observe('stat', 'ok', 0.0001);
    expect(m.counts()).toEqual([
      { op: 'put-chunk', outcome: 'STORE_BUSY', count: 1 },
      { op: 'put-chunk', outcome: 'ok', count: 2 },
      { op: 'stat', outcome: 'STORE_NOT_FOUND', count: 1 },
      { op: 'stat', outcome: 'ok', count: 1 },
    ]);
  });

  it('puts a duration in the first bucket whose bound is at least it; buckets are cumulative', () => {
    const m = new OpMetrics([0.01, 0.1, 1]);
    for (const s of [0.005, 0.01, 0.010001, 0.1, 0.5, 1, 3]) m.observe('get-chunk', 'ok', s);
    const [h] = m.latencies();
    expect(h!.op).toBe('get-chunk');
    expect(h!.buckets).toEqual([
      { le: 0.01, count: 2 }, // 0.005 and 0.01 (inclusive)
      { le: 0.1, count: 4 }, // + 0.010001, 0.1
      { le: 1, count: 6 }, // + 0.5, 1
    ]);
    expect(h!.count).toBe(7); // 3 s is only in +Inf
    expect(h!.sumSeconds).toBeCloseTo(0.005 + 0.01 + 0.010001 + 0.1 + 0.5 + 1 + 3, 9);
  });

  it('keeps one histogram per op, sorted, counting every outcome', () => {
    const m = new OpMetrics();
    m.observe('status', 'ok', 0.0002);
    m.observe('list', 'ok', 0.0003);
    m.observe('list', 'STORE_INTERNAL', 0.0004);
    const hs = m.latencies();
    expect(hs.map((h) => [h.op, h.count])).toEqual([
      ['list', 2],
      ['status', 1],
    ]);
    for (const h of hs) {
      expect(h.buckets.map((b) => b.le)).toEqual(DEFAULT_LATENCY_BUCKETS_SECONDS);
      const counts = h.buckets.map((b) => b.count);
      expect(counts).toEqual([...counts].sort((a, b) => a - b));
      expect(counts.at(-1)).toBeLessThanOrEqual(h.count);
    }
  });

  it('counts a negative or NaN duration as 0 s, so the sum stays a number', () => {
    const m = new OpMetrics([0.001]);
    m.observe('x', 'ok', -1);
    m.observe('x', 'ok', NaN);
    const [h] = m.latencies();
    expect(h).toEqual({ op: 'x', buckets: [{ le: 0.001, count: 2 }], sumSeconds: 0, count: 2 });
  });

  it('hands out copies: a reader cannot change the counts', () => {
    const m = new OpMetrics([1]);
    m.observe('x', 'ok', 0.5);
    m.latencies()[0]!.buckets[0]!.count = 99;
    m.counts()[0]!.count = 99;
    expect(m.latencies()[0]!.buckets[0]!.count).toBe(1);
    expect(m.counts()[0]!.count).toBe(1);
  });

  it('refuses bucket bounds that are empty, not positive, not finite or not increasing', () => {
    expect(() => new OpMetrics([])).toThrow(/at least one/);
    expect(() => new OpMetrics([0])).toThrow(/increasing/);
    expect(() => new OpMetrics([1, 1])).toThrow(/increasing/);
    expect(() => new OpMetrics([2, 1])).toThrow(/increasing/);
    expect(() => new OpMetrics([1, Infinity])).toThrow(/finite/);
  });

  it('starts empty', () => {
    const m = new OpMetrics();
    expect(m.counts()).toEqual([]);
    expect(m.latencies()).toEqual([]);
  });
});
