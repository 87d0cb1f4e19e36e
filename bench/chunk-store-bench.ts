/**
 * Chunk store micro-benchmark: DiskChunkStore (one file per chunk, fsync + rename + directory
 * fsync per put) against VolumeChunkStore (append to volume files, group commit), on this
 * machine's temp directory. Run with `npm run build && node dist/bench/chunk-store-bench.js`.
 *
 * Workloads, each on a fresh store per kind; ROUNDS rounds alternate the two kinds, and the table
 * shows each figure's median (the machine is shared, so single runs are noisy):
 *   put 4 KiB  x16   SMALL_PUTS puts of distinct 4 KiB chunks, 16 in flight
 *   put 4 MiB  x4    BIG_PUTS puts of 4 MiB chunks, 4 in flight
 *   get 4 KiB  x16   SMALL_GETS gets of random stored 4 KiB chunks, 16 in flight
 *   get 4 MiB  x4    BIG_GETS gets of random stored 4 MiB chunks, 4 in flight
 * Gets read what the puts just wrote, so they mostly come from the page cache (as on a data rank
 * serving recently uploaded files). Every put and get verifies BLAKE3, as in production.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chunkChecksum } from '../src/store/checksum.js';
import type { ChunkStore } from '../src/store/chunk-store.js';
import { DiskChunkStore } from '../src/store/disk-chunk-store.js';
import { VolumeChunkStore } from '../src/store/volume-chunk-store.js';

const SMALL = 4 * 1024;
const BIG = 4 * 1024 * 1024;
const ROUNDS = 3;
const SMALL_PUTS = 4000;
const BIG_PUTS = 128;
const SMALL_GETS = 30000;
const BIG_GETS = 256;

interface Measure {
  ops: number;
  seconds: number;
  bytes: number;
}

/** Runs fn(0..count-1) with `concurrency` calls in flight; returns the elapsed seconds. */
async function timed(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<void>,
): Promise<number> {
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await fn(next++);
    }),
  );
  return Number(process.hrtime.bigint() - start) / 1e9;
}

interface Payload {
  data: Buffer;
  checksum: string;
}

function payloads(count: number, size: number): Payload[] {
  return Array.from({ length: count }, () => {
    const data = randomBytes(size);
    return { data, checksum: chunkChecksum(data) };
  });
}

// Distinct contents for the small chunks; the big ones cycle through a few buffers (different
// ids, so every put is a real write) to keep memory use modest.
const smallData = payloads(SMALL_PUTS, SMALL);
const bigData = payloads(8, BIG);

async function runKind(
  kind: string,
  openStore: (dir: string) => Promise<ChunkStore>,
): Promise<{ results: Map<string, Measure>; extra: string }> {
  const results = new Map<string, Measure>();
  const dirs: string[] = [];
  const fresh = async (): Promise<ChunkStore> => {
    const dir = await mkdtemp(join(tmpdir(), `memflow-bench-${kind}-`));
    dirs.push(dir);
    return openStore(dir);
  };
  let extra = '';
  try {
    const small = await fresh();
    const smallPut = await timed(SMALL_PUTS, 16, async (i) => {
      const p = smallData[i] as Payload;
      await small.put(`s${i}`, p.data, p.checksum);
    });
    results.set('put 4 KiB x16', { ops: SMALL_PUTS, seconds: smallPut, bytes: SMALL_PUTS * SMALL });
    if (small instanceof VolumeChunkStore) {
      const s = small.stats();
      extra = `${kind}: ${s.puts} small puts in ${s.batches} batches, ${s.syncs} fdatasyncs`;
    }
    const smallGet = await timed(SMALL_GETS, 16, async () => {
      const i = Math.floor(Math.random() * SMALL_PUTS);
      const got = await small.get(`s${i}`);
      if (got.byteLength !== SMALL) throw new Error(`short read of s${i}`);
    });
    results.set('get 4 KiB x16', { ops: SMALL_GETS, seconds: smallGet, bytes: SMALL_GETS * SMALL });

    const big = await fresh();
    const bigPut = await timed(BIG_PUTS, 4, async (i) => {
      const p = bigData[i % bigData.length] as Payload;
      await big.put(`b${i}`, p.data, p.checksum);
    });
    results.set('put 4 MiB x4', { ops: BIG_PUTS, seconds: bigPut, bytes: BIG_PUTS * BIG });
    const bigGet = await timed(BIG_GETS, 4, async () => {
      const i = Math.floor(Math.random() * BIG_PUTS);
      const got = await big.get(`b${i}`);
      if (got.byteLength !== BIG) throw new Error(`short read of b${i}`);
    });
    results.set('get 4 MiB x4', { ops: BIG_GETS, seconds: bigGet, bytes: BIG_GETS * BIG });

    for (const store of [small, big]) {
      if (store instanceof VolumeChunkStore) await store.close();
    }
  } finally {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  }
  return { results, extra };
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
};

const runs: Record<'disk' | 'volume', Map<string, Measure>[]> = { disk: [], volume: [] };
const extras: string[] = [];
for (let round = 0; round < ROUNDS; round++) {
  runs.disk.push((await runKind('disk', (dir) => DiskChunkStore.open(dir))).results);
  const volume = await runKind('volume', (dir) => VolumeChunkStore.open(dir));
  runs.volume.push(volume.results);
  extras.push(volume.extra);
}

/** ops/s of every round of one workload. */
const rates = (kind: 'disk' | 'volume', name: string): number[] =>
  runs[kind].map((r) => {
    const m = r.get(name) as Measure;
    return m.ops / m.seconds;
  });
const bytesPerOp = (name: string): number => {
  const m = runs.volume[0]?.get(name) as Measure;
  return m.bytes / m.ops;
};
const fmtOps = (rate: number): string => Math.round(rate).toLocaleString('en-US');
const fmtMBs = (rate: number, name: string): string => ((rate * bytesPerOp(name)) / 1e6).toFixed(0);

const header = [
  'workload',
  'disk ops/s',
  'disk MB/s',
  'volume ops/s',
  'volume MB/s',
  'volume ops/s min-max',
  'speed-up',
];
const rows = [...(runs.volume[0]?.keys() ?? [])].map((name) => {
  const d = median(rates('disk', name));
  const volumeRates = rates('volume', name);
  const v = median(volumeRates);
  const range = `${fmtOps(Math.min(...volumeRates))}-${fmtOps(Math.max(...volumeRates))}`;
  return [
    name,
    fmtOps(d),
    fmtMBs(d, name),
    fmtOps(v),
    fmtMBs(v, name),
    range,
    `${(v / d).toFixed(1)}x`,
  ];
});
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
const line = (cells: string[]): string =>
  cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
console.log(`chunk stores on ${tmpdir()}: medians of ${ROUNDS} rounds (MB = 10^6 bytes)`);
console.log(line(header));
console.log(line(header.map((_, i) => '-'.repeat(widths[i] ?? 0))));
for (const r of rows) console.log(line(r));
for (const extra of extras) if (extra) console.log(extra);
