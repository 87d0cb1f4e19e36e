/**
 * The `dfs-client metrics` table and JSON document (src/cli/metrics-table.ts). Goal: what a user
 * reads — aligned columns, sizes in binary units, % used with one decimal, free never negative,
 * heartbeat ages ("0.4 s", "—" for dead or never heard), a totals row, the summary line — and
 * the derived JSON fields scripts rely on, including the edges: a dead rank, zero capacity, a
 * rank over its capacity, numbers near Number.MAX_SAFE_INTEGER, and a store too old to send the
 * newer fields.
 *
 * Method: pure functions on hand-written StatusResults; the expected text is spelled out.
 */
import { describe, expect, it } from 'vitest';
import {
  METRICS_COLUMNS,
  NONE,
  alignColumns,
  formatCount,
  formatDuration,
  formatHeartbeatAge,
  formatMetricsTable,
  formatPercent,
  metricsDocument,
  metricsSummary,
  metricsTotals,
} from '../../src/cli/metrics-table.js';
import type { RankStatus, StatusResult } from '../../src/protocol/client-protocol.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function rank(overrides: Partial<RankStatus> & { rank: number }): RankStatus {
  return {
    host: 'node1',
    state: 'alive',
    heartbeatAgeMs: 400,
    usedBytes: 0,
    capacityBytes: 512 * MiB,
    chunkCopies: 0,
    primaryCopies: 0,
    replicaCopies: 0,
    ...overrides,
  };
}

function status(ranks: RankStatus[], overrides: Partial<StatusResult> = {}): StatusResult {
  return {
    ranks,
    replicas: 2,
    chunkSizeBytes: 4 * MiB,
    files: 3,
    chunks: 5,
    underReplicatedChunks: 0,
    uptimeMs: 183_000,
    ...overrides,
  };
}

const THREE = status([
  rank({
    rank: 1,
    usedBytes: 12 * MiB,
    chunkCopies: 6,
    primaryCopies: 3,
    replicaCopies: 3,
  }),
  rank({
    rank: 2,
    host: 'node2',
    heartbeatAgeMs: 1_250,
    usedBytes: 8 * MiB,
    chunkCopies: 4,
    primaryCopies: 2,
    replicaCopies: 2,
  }),
  rank({
    rank: 3,
    host: 'node-three',
    state: 'dead',
    heartbeatAgeMs: 7_000,
    usedBytes: 4 * MiB,
    chunkCopies: 2,
    primaryCopies: 0,
    replicaCopies: 2,
  }),
]);

/** Start column of each header word in the header line. */
function columnStarts(header: string): number[] {
  return METRICS_COLUMNS.map((h) => header.indexOf(h));
}

describe('formatMetricsTable', () => {
  it('prints the header, one row per data rank, totals and the summary, exactly', () => {
    expect(formatMetricsTable(THREE)).toBe(
      [
        ' RANK  HOST        STATE      HEARTBEAT   CAPACITY      USED       FREE  % USED  COPIES  PRIMARY  REPLICA',
        '    1  node1       alive          0.4 s  512.0 MiB  12.0 MiB  500.0 MiB    2.3%       6        3        3',
        '    2  node2       alive          1.3 s  512.0 MiB   8.0 MiB  504.0 MiB    1.6%       4        2        2',
        '    3  node-three  dead               —  512.0 MiB   4.0 MiB  508.0 MiB    0.8%       2        0        2',
        'total  3 ranks     2/3 alive               1.5 GiB  24.0 MiB    1.5 GiB    1.6%      12        5        7',
        '3 files, 5 chunks (2 copies each), 0 under-replicated; coordinator (rank 0) up 3m 03s',
      ].join('\n'),
    );
  });

  it('aligns every column: all table lines are equally long, text left, numbers right', () => {
    const lines = formatMetricsTable(THREE).split('\n');
    const table = lines.slice(0, -1);
    const width = table[0]!.length;
    for (const line of table) expect([...line].length, line).toBe(width);
    const starts = columnStarts(table[0]!);
    // Left-aligned HOST and STATE: every row's cell starts where the header word starts.
    for (const line of table.slice(1)) {
      expect(line[starts[1]! - 1]).toBe(' ');
      expect(line[starts[1]!]).not.toBe(' ');
      expect(line[starts[2]!]).not.toBe(' ');
    }
    // Right-aligned numbers: every row's cell ends where the header word ends.
    for (const [i, head] of METRICS_COLUMNS.entries()) {
      if (i === 1 || i === 2 || i === 3) continue;
      const end = starts[i]! + head.length - 1;
      for (const line of table.slice(1, -1)) {
        expect(line[end], `${head} in ${line}`).not.toBe(' ');
        expect(line[end + 1] ?? ' ').toBe(' ');
      }
    }
  });

  it('sorts rows by rank number whatever order the store sends', () => {
    const reversed = status([...THREE.ranks].reverse(), {});
    expect(formatMetricsTable(reversed)).toBe(formatMetricsTable(THREE));
  });

  it('shows a dead rank with "—" for its heartbeat but its last known usage', () => {
    const row = formatMetricsTable(THREE).split('\n')[3]!;
    expect(row).toMatch(
      /^ +3 +node-three +dead +— +512\.0 MiB +4\.0 MiB +508\.0 MiB +0\.8% +2 +0 +2$/,
    );
  });

  it('shows a suspect rank with its heartbeat age, and "—" for a rank never heard', () => {
    const table = formatMetricsTable(
      status([
        rank({ rank: 1, state: 'suspect', heartbeatAgeMs: 3_460 }),
        rank({ rank: 2, state: 'alive', heartbeatAgeMs: null }),
      ]),
    ).split('\n');
    expect(table[1]).toMatch(/^ +1 +node1 +suspect +3\.5 s /);
    expect(table[2]).toMatch(/^ +2 +node1 +alive +— /);
    expect(table[3]).toMatch(/^total +2 ranks +1\/2 alive /);
  });

  it('zero capacity: % used is "—", free is 0 B, and totals do not divide by zero', () => {
    const zero = status([rank({ rank: 1, capacityBytes: 0, usedBytes: 0 })]);
    const lines = formatMetricsTable(zero).split('\n');
    expect(lines[1]).toMatch(/^ +1 +node1 +alive +0\.4 s +0 B +0 B +0 B +— +0 +0 +0$/);
    expect(lines[2]).toMatch(/^total +1 rank +1\/1 alive +0 B +0 B +0 B +— +0 +0 +0$/);
    const doc = metricsDocument(zero, new Date(0));
    expect(doc.ranks[0]).toMatchObject({ freeBytes: 0, fractionUsed: null });
    expect(doc.totals).toMatchObject({ capacityBytes: 0, freeBytes: 0, fractionUsed: null });
  });

  it('a rank over its capacity: free is 0 (not negative), % used above 100', () => {
    const over = status([rank({ rank: 1, capacityBytes: 100 * MiB, usedBytes: 150 * MiB })]);
    expect(formatMetricsTable(over).split('\n')[1]).toMatch(/100\.0 MiB +150\.0 MiB +0 B +150\.0%/);
    expect(metricsDocument(over, new Date(0)).ranks[0]).toMatchObject({
      freeBytes: 0,
      fractionUsed: 1.5,
    });
  });

  it('huge numbers: sizes in PiB/EiB, counts with thousands separators, columns still aligned', () => {
    const huge = status(
      [
        rank({
          rank: 1,
          capacityBytes: Number.MAX_SAFE_INTEGER,
          usedBytes: 2 ** 52,
          chunkCopies: 123_456_789,
          primaryCopies: 61_728_394,
          replicaCopies: 61_728_395,
        }),
        rank({ rank: 1000, host: 'h', capacityBytes: 3 * 1024 * GiB, usedBytes: 1 }),
      ],
      { files: 1_234_567, chunks: 98_765_432, underReplicatedChunks: 12_345, uptimeMs: 90_061_000 },
    );
    const lines = formatMetricsTable(huge).split('\n');
    expect(lines[1]).toContain('8.0 PiB');
    expect(lines[1]).toContain('4.0 PiB');
    expect(lines[1]).toContain('50.0%');
    expect(lines[1]).toContain('123,456,789');
    expect(lines[2]).toMatch(/^ +1000 +h +alive +0\.4 s +3\.0 TiB +1 B +3\.0 TiB +0\.0% +0 +0 +0$/);
    expect(lines[3]).toContain('123,456,789');
    for (const line of lines.slice(0, 4)) expect(line.length).toBe(lines[0]!.length);
    expect(lines[4]).toBe(
      '1,234,567 files, 98,765,432 chunks (2 copies each), 12,345 under-replicated (re-replication under way); coordinator (rank 0) up 25h 01m',
    );
  });

  it('no data ranks: header, a totals row of zeros, the summary', () => {
    const lines = formatMetricsTable(status([], { files: 0, chunks: 0 })).split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(/^total +0 ranks +0\/0 alive +0 B +0 B +0 B +— +0 +0 +0$/);
    expect(lines[2]).toBe(
      '0 files, 0 chunks (2 copies each), 0 under-replicated; coordinator (rank 0) up 3m 03s',
    );
  });

  it('a store without the newer fields: "—" for heartbeat and primary/replica, no chunks or uptime in the summary', () => {
    const old = {
      ranks: [
        { rank: 1, host: 'h1', state: 'alive', usedBytes: 0, capacityBytes: 1, chunkCopies: 0 },
      ],
      replicas: 2,
      chunkSizeBytes: 4 * MiB,
      files: 0,
      underReplicatedChunks: 0,
    } as unknown as StatusResult;
    const lines = formatMetricsTable(old).split('\n');
    expect(lines[1]).toMatch(/^ +1 +h1 +alive +— +1 B +0 B +1 B +0\.0% +0 +— +—$/);
    expect(lines[2]).toMatch(/^total +1 rank +1\/1 alive +1 B +0 B +1 B +0\.0% +0 +— +—$/);
    expect(lines[3]).toBe('0 files, 0 under-replicated');
  });
});

describe('metricsSummary', () => {
  it('says when chunks are under-replicated, with singular forms', () => {
    expect(
      metricsSummary(
        status([], { files: 1, chunks: 1, replicas: 1, underReplicatedChunks: 1, uptimeMs: 400 }),
      ),
    ).toBe(
      '1 file, 1 chunk (1 copy each), 1 under-replicated (re-replication under way); coordinator (rank 0) up 0.4 s',
    );
  });
});

describe('metricsDocument (--json)', () => {
  it('is the StatusResult plus sampledAt, freeBytes and fractionUsed per rank, and totals', () => {
    const doc = metricsDocument(THREE, new Date('2026-01-02T03:04:05.678Z'));
    expect(Object.keys(doc)).toEqual([
      'sampledAt',
      'ranks',
      'replicas',
      'chunkSizeBytes',
      'files',
      'chunks',
      'underReplicatedChunks',
      'uptimeMs',
      'totals',
    ]);
    expect(doc.sampledAt).toBe('2026-01-02T03:04:05.678Z');
    expect(doc.ranks.map((r) => r.rank)).toEqual([1, 2, 3]);
    expect(doc.ranks[0]).toEqual({
      ...THREE.ranks[0],
      freeBytes: 500 * MiB,
      fractionUsed: 12 / 512,
    });
    expect(doc.totals).toEqual({
      ranks: 3,
      alive: 2,
      suspect: 0,
      dead: 1,
      capacityBytes: 1536 * MiB,
      usedBytes: 24 * MiB,
      freeBytes: 1512 * MiB,
      fractionUsed: 24 / 1536,
      chunkCopies: 12,
      primaryCopies: 5,
      replicaCopies: 7,
    });
    // JSON-safe: survives a round trip unchanged.
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
  });

  it('totals free bytes rank by rank: an over-full rank does not eat the others’ free space', () => {
    const totals = metricsTotals([
      rank({ rank: 1, capacityBytes: 100, usedBytes: 300 }),
      rank({ rank: 2, capacityBytes: 100, usedBytes: 0 }),
    ]);
    expect(totals).toMatchObject({ capacityBytes: 200, usedBytes: 300, freeBytes: 100 });
    expect(totals.fractionUsed).toBe(1.5);
  });
});

describe('cells', () => {
  it('formatDuration: tenths of seconds below a minute, then m/s, then h/m; "—" for null', () => {
    expect(formatDuration(0)).toBe('0.0 s');
    expect(formatDuration(449)).toBe('0.4 s');
    expect(formatDuration(59_949)).toBe('59.9 s');
    expect(formatDuration(59_950)).toBe('1m 00s');
    expect(formatDuration(125_000)).toBe('2m 05s');
    expect(formatDuration(3_599_999)).toBe('59m 59s');
    expect(formatDuration(3_600_000)).toBe('1h 00m');
    expect(formatDuration(11_220_000)).toBe('3h 07m');
    expect(formatDuration(null)).toBe(NONE);
    expect(formatDuration(undefined)).toBe(NONE);
    expect(formatDuration(-5)).toBe(NONE);
    expect(formatDuration(Number.NaN)).toBe(NONE);
  });

  it('formatHeartbeatAge: "—" for a dead rank whatever its age', () => {
    expect(formatHeartbeatAge({ state: 'dead', heartbeatAgeMs: 100 })).toBe(NONE);
    expect(formatHeartbeatAge({ state: 'suspect', heartbeatAgeMs: 3_000 })).toBe('3.0 s');
    expect(formatHeartbeatAge({ state: 'alive', heartbeatAgeMs: null })).toBe(NONE);
  });

  it('formatPercent and formatCount', () => {
    expect(formatPercent(0)).toBe('0.0%');
    expect(formatPercent(0.02345)).toBe('2.3%');
    expect(formatPercent(1)).toBe('100.0%');
    expect(formatPercent(null)).toBe(NONE);
    expect(formatCount(0)).toBe('0');
    expect(formatCount(1234567)).toBe('1,234,567');
    expect(formatCount(undefined)).toBe(NONE);
  });

  it('alignColumns pads to the widest cell, counts "—" as one character, trims line ends', () => {
    expect(
      alignColumns(
        [
          ['a', 'bb', 'c'],
          ['—', 'b', 'cccc'],
        ],
        ['right', 'left', 'left'],
      ),
    ).toEqual(['a  bb  c', '—  b   cccc']);
  });
});
