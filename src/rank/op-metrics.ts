/**
 * What rank 0 counts about the client requests it answers, for `/metrics`: how many of each op
 * ended how (ok, or the error code the client got), and how long they took (a latency histogram
 * per op, with Prometheus' cumulative buckets). Pure bookkeeping: the coordinator times each
 * request and hands the result here. Labels stay few because ops and error codes are closed sets
 * (an undecodable request counts as op "invalid").
 */

/**
 * Upper bounds in seconds: from a small status request answered from memory (well under a
 * millisecond) to a chunk that waits on a data rank's fsync or a slow disk (seconds).
 */
export const DEFAULT_LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export interface OpCount {
  op: string;
  /** 'ok' or a StoreErrorCode. */
  outcome: string;
  count: number;
}

export interface OpLatency {
  op: string;
  /** Cumulative: count of requests that took at most `le` seconds, for each bound in order. */
  buckets: Array<{ le: number; count: number }>;
  sumSeconds: number;
  /** Every request of this op (the "+Inf" bucket). */
  count: number;
}

/** What readers of the metrics may see: snapshots, never the counters themselves. */
export interface OpMetricsView {
  readonly bucketBoundsSeconds: readonly number[];
  /** Every (op, outcome) seen so far, sorted by op then outcome. */
  counts(): OpCount[];
  /** One histogram per op seen so far, sorted by op. */
  latencies(): OpLatency[];
}

interface Series {
  /** Not cumulative: perBucket[i] counts durations in (bound[i-1], bound[i]]; the last slot is above every bound. */
  perBucket: number[];
  sumSeconds: number;
  count: number;
}

export class OpMetrics implements OpMetricsView {
  readonly bucketBoundsSeconds: readonly number[];
  private readonly outcomes = new Map<string, Map<string, number>>();
  private readonly series = new Map<string, Series>();

  constructor(bucketBoundsSeconds: readonly number[] = DEFAULT_LATENCY_BUCKETS_SECONDS) {
    if (bucketBoundsSeconds.length === 0) throw new Error('at least one latency bucket is needed');
    bucketBoundsSeconds.forEach((b, i) => {
      if (!Number.isFinite(b) || b <= 0 || (i > 0 && b <= bucketBoundsSeconds[i - 1]!))
        throw new Error(`latency buckets must be finite, positive and increasing: ${b}`);
    });
    this.bucketBoundsSeconds = [...bucketBoundsSeconds];
  }

  /** One answered request of `op` that ended with `outcome` after `seconds`. */
  observe(op: string, outcome: string, seconds: number): void {
    // A clock never goes backwards, but a NaN or negative here must not poison the sum.
    const duration = Number.isFinite(seconds) && seconds > 0 ? seconds : 0;
    let byOutcome = this.outcomes.get(op);
    if (!byOutcome) this.outcomes.set(op, (byOutcome = new Map<string, number>()));
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);

    let s = this.series.get(op);
    if (!s) {
      s = {
        perBucket: new Array<number>(this.bucketBoundsSeconds.length + 1).fill(0),
        sumSeconds: 0,
        count: 0,
      };
      this.series.set(op, s);
    }
    let slot = this.bucketBoundsSeconds.findIndex((bound) => duration <= bound);
    if (slot < 0) slot = this.bucketBoundsSeconds.length;
    s.perBucket[slot]!++;
    s.sumSeconds += duration;
    s.count++;
  }

  counts(): OpCount[] {
    const out: OpCount[] = [];
    for (const op of [...this.outcomes.keys()].sort()) {
      const byOutcome = this.outcomes.get(op)!;
      for (const outcome of [...byOutcome.keys()].sort())
        out.push({ op, outcome, count: byOutcome.get(outcome)! });
    }
    return out;
  }

  latencies(): OpLatency[] {
    return [...this.series.keys()].sort().map((op) => {
      const s = this.series.get(op)!;
      let running = 0;
      const buckets = this.bucketBoundsSeconds.map((le, i) => {
        running += s.perBucket[i]!;
        return { le, count: running };
      });
      return { op, buckets, sumSeconds: s.sumSeconds, count: s.count };
    });
  }
}
