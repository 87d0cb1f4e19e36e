/**
 * `npm run bench:records`: records datasets on this machine, against the targets of issue 5.
 *
 * Writes a 1,000,000-record dataset (NDJSON, ~130 bytes a record), starts a local 4-rank store
 * (3 data ranks, 2 copies, 4 MiB chunks) and measures through the DfsClient library:
 * - distribute: putRecords of the whole dataset, records/s (median of RUNS runs), for sorted
 *   numeric IDs (indexed by range) and for string IDs (indexed by hash);
 * - query by ID: after one query per chunk (so each data rank has indexed the chunks it holds —
 *   the cold cost is printed too), QUERIES sequential queries of random IDs, p50 and p99 latency.
 * The table is printed and saved in bench/results/records.json; the store is stopped at the end,
 * also on failure.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DfsClient } from '../src/client/dfs-client.js';
import { tuneGcForBulkTransfers } from '../src/runtime/gc-tuning.js';
import { freePort, median, percentile, ROOT, startStore, stopStore } from './local-store.js';

const RUNS = Number(process.env.MEMFLOW_BENCH_RUNS ?? 3);
const RECORDS = Number(process.env.MEMFLOW_BENCH_RECORDS ?? 1_000_000);
const QUERIES = Number(process.env.MEMFLOW_BENCH_QUERIES ?? 10_000);

const TARGETS = { distributePerS: 200_000, p50Ms: 2, p99Ms: 10 };

/** A record of the kind a job exports: an ID, a few strings and numbers, a small list. */
function recordLine(i: number, id: number | string): string {
  return JSON.stringify({
    id,
    name: `user ${i}`,
    email: `user${i}@example.org`,
    score: (i * 7919) % 100_000,
    active: i % 3 !== 0,
    tags: ['alpha', `group-${i % 17}`],
  });
}

async function writeDataset(path: string, id: (i: number) => number | string): Promise<number> {
  const handle = await open(path, 'w');
  let bytes = 0;
  try {
    for (let start = 0; start < RECORDS; start += 20_000) {
      const lines: string[] = [];
      for (let i = start; i < Math.min(RECORDS, start + 20_000); i++)
        lines.push(recordLine(i, id(i)));
      const text = lines.join('\n') + '\n';
      bytes += Buffer.byteLength(text);
      await handle.write(text);
    }
  } finally {
    await handle.close();
  }
  return bytes;
}

/** A deterministic stream of indexes in [0, n) (xorshift), so runs are comparable. */
function indexes(n: number, count: number, seed = 12345): number[] {
  let x = seed;
  return Array.from({ length: count }, () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  });
}

interface DatasetFigures {
  ids: string;
  lookup: string;
  chunks: number;
  distributeRecordsPerS: number;
  distributeMBps: number;
  coldQueryMs: number;
  p50Ms: number;
  p99Ms: number;
}

async function measure(
  client: DfsClient,
  work: string,
  label: string,
  id: (i: number) => number | string,
): Promise<DatasetFigures> {
  const file = join(work, `${label}.ndjson`);
  const bytes = await writeDataset(file, id);
  const rates: number[] = [];
  let lookup = '';
  let chunks = 0;
  for (let run = 0; run < RUNS; run++) {
    const started = performance.now();
    const meta = await client.putRecords(file, label, {});
    const seconds = (performance.now() - started) / 1000;
    rates.push(RECORDS / seconds);
    lookup = meta.records?.lookup ?? '?';
    chunks = meta.chunks.length;
    console.log(`  ${label} run ${run + 1}: ${Math.round(RECORDS / seconds)} records/s`);
  }
  const rate = median(rates);

  // One query per chunk first: each data rank reads and indexes the chunks it holds.
  const perChunk = Math.ceil(RECORDS / chunks);
  const cold: number[] = [];
  for (let i = 0; i < RECORDS; i += perChunk) {
    const t = performance.now();
    await client.queryRecord(label, id(i));
    cold.push(performance.now() - t);
  }
  const latencies: number[] = [];
  for (const i of indexes(RECORDS, QUERIES)) {
    const t = performance.now();
    const record = (await client.queryRecord(label, id(i))) as { id: unknown };
    latencies.push(performance.now() - t);
    if (record.id !== id(i))
      throw new Error(`query for ${String(id(i))} returned ${String(record.id)}`);
  }
  latencies.sort((a, b) => a - b);
  return {
    ids: label,
    lookup,
    chunks,
    distributeRecordsPerS: Math.round(rate),
    distributeMBps: Math.round((bytes / 1e6) * (rate / RECORDS)),
    coldQueryMs: Number(median(cold).toFixed(2)),
    p50Ms: Number(percentile(latencies, 0.5).toFixed(3)),
    p99Ms: Number(percentile(latencies, 0.99).toFixed(3)),
  };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'memflow-records-bench-'));
  const port = await freePort();
  const store = await startStore(join(work, 'data'), port);
  const client = new DfsClient({ server: `127.0.0.1:${port}`, timeoutMs: 120_000 });
  try {
    console.log(`${RECORDS} records, ${RUNS} distribute runs each, ${QUERIES} queries`);
    const results = [
      await measure(client, work, 'numeric-ids', (i) => i),
      await measure(
        client,
        work,
        'string-ids',
        (i) => `user-${((i * 2654435761) >>> 0).toString(36)}-${i}`,
      ),
    ];
    const row = (r: DatasetFigures): string[] => [
      r.ids,
      r.lookup,
      String(r.chunks),
      r.distributeRecordsPerS.toLocaleString('en-US'),
      String(r.distributeMBps),
      r.coldQueryMs.toFixed(2),
      r.p50Ms.toFixed(3),
      r.p99Ms.toFixed(3),
    ];
    const header = [
      'IDs',
      'lookup',
      'chunks',
      'distribute rec/s',
      'MB/s',
      'cold ms',
      'p50 ms',
      'p99 ms',
    ];
    const rows = [header, ...results.map(row)];
    const widths = header.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    console.log();
    for (const r of rows)
      console.log(
        r
          .map((cell, c) => (c < 2 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
          .join('  '),
      );
    const worst = {
      distributePerS: Math.min(...results.map((r) => r.distributeRecordsPerS)),
      p50Ms: Math.max(...results.map((r) => r.p50Ms)),
      p99Ms: Math.max(...results.map((r) => r.p99Ms)),
    };
    console.log(
      `\ntargets: distribute ≥ ${TARGETS.distributePerS.toLocaleString('en-US')} records/s (${worst.distributePerS >= TARGETS.distributePerS ? 'met' : 'MISSED'}), ` +
        `p50 ≤ ${TARGETS.p50Ms} ms (${worst.p50Ms <= TARGETS.p50Ms ? 'met' : 'MISSED'}), ` +
        `p99 ≤ ${TARGETS.p99Ms} ms (${worst.p99Ms <= TARGETS.p99Ms ? 'met' : 'MISSED'})`,
    );
    const resultsDir = join(ROOT, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    const out = join(resultsDir, 'records.json');
    writeFileSync(
      out,
      JSON.stringify(
        {
          date: new Date().toISOString(),
          records: RECORDS,
          runs: RUNS,
          queries: QUERIES,
          targets: TARGETS,
          results,
        },
        null,
        2,
      ) + '\n',
    );
    console.log(`saved ${out}`);
  } finally {
    client.close();
    await stopStore(store);
    rmSync(work, { recursive: true, force: true });
  }
}

// As dfs-client does: the benchmark's client moves the chunks of the measured transfers.
tuneGcForBulkTransfers();
await main();
