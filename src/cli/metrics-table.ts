/**
 * `dfs-client metrics`: the store's status (DfsClient.status()) as a table for people and as a
 * JSON document for scripts. Pure: no I/O, no clock (the sample time is passed in), so the tests
 * read as the specification of what a user sees.
 *
 * The table has one row per data rank (rank 0, the coordinator, holds no chunks and is not in the
 * status's ranks: it appears only in the summary line, with its uptime), a totals row over every
 * listed rank (dead ones included: their last known usage, so the used total matches the sum of
 * `status --json`), and a summary line:
 *
 *     RANK  HOST        STATE      HEARTBEAT   CAPACITY      USED       FREE  % USED  COPIES  PRIMARY  REPLICA
 *        1  node1       alive          0.4 s  512.0 MiB  12.0 MiB  500.0 MiB    2.3%       6        3        3
 *        2  node2       alive          1.3 s  512.0 MiB   8.0 MiB  504.0 MiB    1.6%       4        2        2
 *        3  node-three  dead               —  512.0 MiB   4.0 MiB  508.0 MiB    0.8%       2        0        2
 *    total  3 ranks     2/3 alive               1.5 GiB  24.0 MiB    1.5 GiB    1.6%      12        5        7
 *    3 files, 5 chunks (2 copies each), 0 under-replicated; coordinator (rank 0) up 3m 03s
 *
 * COPIES is what the rank itself counts (leftovers not yet trimmed included); PRIMARY and REPLICA
 * are what the index places on it (first copy of a chunk, or a later one). HEARTBEAT is the time
 * since rank 0 last heard the rank ("—" once dead, or never heard).
 *
 * Fields a store older than this client may not send (heartbeatAgeMs, primaryCopies,
 * replicaCopies, chunks, uptimeMs) show as "—" (and are left out of the summary) rather than
 * breaking the table.
 */
import type { RankState, RankStatus, StatusResult } from '../protocol/client-protocol.js';
import { formatSize } from '../store/sizes.js';

/** Shown for a value that does not exist (no heartbeat, no capacity to divide by, not reported). */
export const NONE = '—';

// ---- derived figures (also the JSON document) --------------------------------------------------

export interface RankMetrics extends RankStatus {
  /** max(0, capacityBytes - usedBytes). */
  freeBytes: number;
  /** usedBytes / capacityBytes, or null when the capacity is 0. May exceed 1. */
  fractionUsed: number | null;
}

export interface MetricsTotals {
  /** Data ranks listed, and how many are in each state. */
  ranks: number;
  alive: number;
  suspect: number;
  dead: number;
  capacityBytes: number;
  usedBytes: number;
  freeBytes: number;
  fractionUsed: number | null;
  chunkCopies: number;
  primaryCopies: number;
  replicaCopies: number;
}

/** What `dfs-client metrics --json` prints: the StatusResult, per-rank derived fields, totals. */
export interface MetricsDocument extends Omit<StatusResult, 'ranks'> {
  /** When the status was read (ISO 8601, UTC). */
  sampledAt: string;
  ranks: RankMetrics[];
  totals: MetricsTotals;
}

/** A finite number, or undefined for anything else (a field an older store does not send). */
function numberOrUndefined(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** A byte count as a non-negative number (0 for anything a store should never send). */
function bytes(value: unknown): number {
  const n = numberOrUndefined(value);
  return n === undefined || n < 0 ? 0 : n;
}

function fraction(used: number, capacity: number): number | null {
  return capacity > 0 ? used / capacity : null;
}

export function rankMetrics(rank: RankStatus): RankMetrics {
  const used = bytes(rank.usedBytes);
  const capacity = bytes(rank.capacityBytes);
  return {
    ...rank,
    freeBytes: Math.max(0, capacity - used),
    fractionUsed: fraction(used, capacity),
  };
}

export function metricsTotals(ranks: readonly RankStatus[]): MetricsTotals {
  const count = (state: RankState): number => ranks.filter((r) => r.state === state).length;
  const sum = (pick: (r: RankStatus) => unknown): number =>
    ranks.reduce((total, r) => total + bytes(pick(r)), 0);
  const capacityBytes = sum((r) => r.capacityBytes);
  const usedBytes = sum((r) => r.usedBytes);
  return {
    ranks: ranks.length,
    alive: count('alive'),
    suspect: count('suspect'),
    dead: count('dead'),
    capacityBytes,
    usedBytes,
    // The sum of the ranks' free bytes, not capacity - used: one over-full rank frees nothing.
    freeBytes: ranks.reduce((total, r) => total + rankMetrics(r).freeBytes, 0),
    fractionUsed: fraction(usedBytes, capacityBytes),
    chunkCopies: sum((r) => r.chunkCopies),
    primaryCopies: sum((r) => r.primaryCopies),
    replicaCopies: sum((r) => r.replicaCopies),
  };
}

/** The JSON document for `metrics --json` (one per line with --watch). Ranks sorted by number. */
export function metricsDocument(status: StatusResult, sampledAt: Date): MetricsDocument {
  const ranks = sortedRanks(status.ranks);
  return {
    sampledAt: sampledAt.toISOString(),
    ...status,
    ranks: ranks.map(rankMetrics),
    totals: metricsTotals(ranks),
  };
}

// ---- text ---------------------------------------------------------------------------------------

function sortedRanks(ranks: readonly RankStatus[]): RankStatus[] {
  return [...ranks].sort((a, b) => a.rank - b.rank);
}

/** "1,234,567"; "—" when the store did not report it. */
export function formatCount(value: unknown): string {
  const n = numberOrUndefined(value);
  return n === undefined ? NONE : n.toLocaleString('en-US');
}

/** "2.3%" (one decimal), "—" without a capacity. */
export function formatPercent(fractionUsed: number | null): string {
  return fractionUsed === null ? NONE : `${(fractionUsed * 100).toFixed(1)}%`;
}

/**
 * A duration for people: "0.4 s" and "59.9 s" below a minute, "2m 05s" below an hour, "3h 07m"
 * beyond; "—" for null (never) or anything not a non-negative number.
 */
export function formatDuration(ms: number | null | undefined): string {
  const n = numberOrUndefined(ms);
  if (n === undefined || n < 0) return NONE;
  const tenths = Math.round(n / 100);
  if (tenths < 600) return `${(tenths / 10).toFixed(1)} s`;
  // 59.95 s rounds to "60.0 s" above: show it as the minute it is.
  const seconds = Math.max(60, Math.floor(n / 1000));
  const two = (v: number): string => String(v).padStart(2, '0');
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${two(seconds % 60)}s`;
  return `${Math.floor(seconds / 3600)}h ${two(Math.floor(seconds / 60) % 60)}m`;
}

/** The heartbeat column: the age since rank 0 last heard the rank; "—" when dead or never heard. */
export function formatHeartbeatAge(rank: Pick<RankStatus, 'state' | 'heartbeatAgeMs'>): string {
  return rank.state === 'dead' ? NONE : formatDuration(rank.heartbeatAgeMs);
}

function plural(count: number, singular: string, pluralForm = `${singular}s`): string {
  return `${count.toLocaleString('en-US')} ${count === 1 ? singular : pluralForm}`;
}

interface Column {
  head: string;
  align: 'left' | 'right';
}

const COLUMNS: readonly Column[] = [
  { head: 'RANK', align: 'right' },
  { head: 'HOST', align: 'left' },
  { head: 'STATE', align: 'left' },
  { head: 'HEARTBEAT', align: 'right' },
  { head: 'CAPACITY', align: 'right' },
  { head: 'USED', align: 'right' },
  { head: 'FREE', align: 'right' },
  { head: '% USED', align: 'right' },
  { head: 'COPIES', align: 'right' },
  { head: 'PRIMARY', align: 'right' },
  { head: 'REPLICA', align: 'right' },
];

/** The table's header names, in order (for tests and documentation). */
export const METRICS_COLUMNS: readonly string[] = COLUMNS.map((c) => c.head);

/**
 * Rows of cells padded to their column's widest cell, two spaces apart, with no trailing spaces
 * (a left-aligned last cell is not padded).
 */
export function alignColumns(
  rows: readonly (readonly string[])[],
  align: readonly ('left' | 'right')[],
): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, [...cell].length)));
  }
  return rows.map((row) =>
    row
      .map((cell, i) => {
        const pad = ' '.repeat((widths[i] ?? 0) - [...cell].length);
        return align[i] === 'right' ? pad + cell : cell + pad;
      })
      .join('  ')
      .trimEnd(),
  );
}

function rankRow(rank: RankStatus): string[] {
  const m = rankMetrics(rank);
  return [
    String(rank.rank),
    rank.host,
    rank.state,
    formatHeartbeatAge(rank),
    formatSize(bytes(rank.capacityBytes)),
    formatSize(bytes(rank.usedBytes)),
    formatSize(m.freeBytes),
    formatPercent(m.fractionUsed),
    formatCount(rank.chunkCopies),
    formatCount(rank.primaryCopies),
    formatCount(rank.replicaCopies),
  ];
}

function totalsRow(ranks: readonly RankStatus[]): string[] {
  const t = metricsTotals(ranks);
  // Copy columns no rank reported (an older store) stay "—" rather than a misleading 0.
  const reported = (pick: (r: RankStatus) => unknown, total: number): string =>
    ranks.length === 0 || ranks.some((r) => numberOrUndefined(pick(r)) !== undefined)
      ? formatCount(total)
      : NONE;
  return [
    'total',
    plural(t.ranks, 'rank'),
    `${t.alive}/${t.ranks} alive`,
    '',
    formatSize(t.capacityBytes),
    formatSize(t.usedBytes),
    formatSize(t.freeBytes),
    formatPercent(t.fractionUsed),
    reported((r) => r.chunkCopies, t.chunkCopies),
    reported((r) => r.primaryCopies, t.primaryCopies),
    reported((r) => r.replicaCopies, t.replicaCopies),
  ];
}

/**
 * "3 files, 5 chunks (2 copies each), 0 under-replicated; coordinator (rank 0) up 5m 03s", with
 * "(re-replication under way)" when some chunk lacks copies.
 */
export function metricsSummary(status: StatusResult): string {
  const parts = [plural(bytes(status.files), 'file')];
  const chunks = numberOrUndefined(status.chunks);
  const replicas = numberOrUndefined(status.replicas);
  const copies = replicas === undefined ? '' : ` (${plural(replicas, 'copy', 'copies')} each)`;
  if (chunks !== undefined) parts.push(`${plural(chunks, 'chunk')}${copies}`);
  const under = bytes(status.underReplicatedChunks);
  parts.push(
    under === 0
      ? '0 under-replicated'
      : `${under.toLocaleString('en-US')} under-replicated (re-replication under way)`,
  );
  const uptime = numberOrUndefined(status.uptimeMs);
  const coordinator =
    uptime === undefined ? '' : `; coordinator (rank 0) up ${formatDuration(uptime)}`;
  return `${parts.join(', ')}${coordinator}`;
}

/** The whole table: header, one row per data rank (by rank number), totals, summary line. */
export function formatMetricsTable(status: StatusResult): string {
  const ranks = sortedRanks(status.ranks);
  const lines = alignColumns(
    [METRICS_COLUMNS, ...ranks.map(rankRow), totalsRow(ranks)],
    COLUMNS.map((c) => c.align),
  );
  return [...lines, metricsSummary(status)].join('\n');
}
