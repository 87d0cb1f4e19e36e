/**
 * The store's metrics for `/metrics`: per-rank usage and state from the status the coordinator
 * gives `dfs-client status`, whole-store counts, and the request counters and latencies rank 0
 * keeps (op-metrics.ts). Pure: a status and a metrics view in, metric families out.
 */
import type { RankState, StatusResult } from '../../protocol/client-protocol.js';
import type { OpMetricsView } from '../op-metrics.js';
import type { MetricFamily, Sample } from './exposition.js';

const STATES: readonly RankState[] = ['alive', 'suspect', 'dead'];

export function storeMetricFamilies(status: StatusResult, ops: OpMetricsView): MetricFamily[] {
  const perRank = (value: (r: StatusResult['ranks'][number]) => number | null): Sample[] =>
    status.ranks.flatMap((r) => {
      const v = value(r);
      return v === null ? [] : [{ labels: { rank: String(r.rank), host: r.host }, value: v }];
    });
  const one = (value: number): Sample[] => [{ labels: {}, value }];
  return [
    {
      type: 'gauge',
      name: 'memflow_rank_used_bytes',
      help: 'Bytes of chunk copies a data rank holds, by its last report.',
      samples: perRank((r) => r.usedBytes),
    },
    {
      type: 'gauge',
      name: 'memflow_rank_capacity_bytes',
      help: 'Bytes a data rank offers (its --capacity or hostfile capacity, capped by its disk).',
      samples: perRank((r) => r.capacityBytes),
    },
    {
      type: 'gauge',
      name: 'memflow_rank_chunk_copies',
      help: 'Chunk copies a data rank holds by its own count (leftovers not yet trimmed included).',
      samples: perRank((r) => r.chunkCopies),
    },
    {
      type: 'gauge',
      name: 'memflow_rank_index_copies',
      help: 'Chunk copies the master index places on a data rank, as primary or replica.',
      samples: status.ranks.flatMap((r) =>
        (['primary', 'replica'] as const).map((role) => ({
          labels: { rank: String(r.rank), host: r.host, role },
          value: role === 'primary' ? r.primaryCopies : r.replicaCopies,
        })),
      ),
    },
    {
      type: 'counter',
      name: 'memflow_rank_direct_reads_total',
      help: "Chunks clients read straight from a data rank's chunk port since it started (by its last report).",
      samples: perRank((r) => r.directReads?.count ?? null),
    },
    {
      type: 'counter',
      name: 'memflow_rank_direct_read_bytes_total',
      help: 'Bytes of those chunks.',
      samples: perRank((r) => r.directReads?.bytes ?? null),
    },
    {
      type: 'counter',
      name: 'memflow_rank_direct_writes_total',
      help: "Chunk copies clients wrote straight to a data rank's chunk port since it started (by its last report).",
      samples: perRank((r) => r.directWrites?.count ?? null),
    },
    {
      type: 'counter',
      name: 'memflow_rank_direct_write_bytes_total',
      help: 'Bytes of those copies.',
      samples: perRank((r) => r.directWrites?.bytes ?? null),
    },
    {
      type: 'gauge',
      name: 'memflow_rank_state',
      help: "A data rank's health as rank 0 sees it: 1 for its current state, 0 for the others.",
      samples: status.ranks.flatMap((r) =>
        STATES.map((state) => ({
          labels: { rank: String(r.rank), host: r.host, state },
          value: r.state === state ? 1 : 0,
        })),
      ),
    },
    {
      type: 'gauge',
      name: 'memflow_rank_heartbeat_age_seconds',
      help: 'Seconds since rank 0 last heard a data rank (absent until its first heartbeat).',
      samples: perRank((r) =>
        r.heartbeatAgeMs === null ? null : Math.round(r.heartbeatAgeMs) / 1000,
      ),
    },
    {
      type: 'gauge',
      name: 'memflow_files',
      help: 'Files in the store.',
      samples: one(status.files),
    },
    {
      type: 'gauge',
      name: 'memflow_chunks',
      help: 'Chunks of all current file versions.',
      samples: one(status.chunks),
    },
    {
      type: 'gauge',
      name: 'memflow_under_replicated_chunks',
      help: 'Chunks with fewer live copies than they should have.',
      samples: one(status.underReplicatedChunks),
    },
    {
      type: 'gauge',
      name: 'memflow_replicas',
      help: 'Copies the store keeps of every chunk (--replicas).',
      samples: one(status.replicas),
    },
    {
      type: 'gauge',
      name: 'memflow_uptime_seconds',
      help: 'Seconds since rank 0 started serving.',
      samples: one(Math.round(status.uptimeMs) / 1000),
    },
    {
      type: 'counter',
      name: 'memflow_requests_total',
      help: 'Client requests rank 0 answered, by op and outcome (ok or the error code).',
      samples: ops.counts().map((c) => ({
        labels: { op: c.op, outcome: c.outcome },
        value: c.count,
      })),
    },
    {
      type: 'histogram',
      name: 'memflow_request_duration_seconds',
      help: 'Time rank 0 took per client request, from decoding it to sending the reply.',
      series: ops.latencies().map((l) => ({
        labels: { op: l.op },
        buckets: l.buckets,
        sum: l.sumSeconds,
        count: l.count,
      })),
    },
  ];
}
