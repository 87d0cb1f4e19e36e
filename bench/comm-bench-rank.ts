/**
 * One rank of `npm run bench:comm` (driven by bench/comm-bench.ts under memflow-run).
 *
 * Method: each operation runs `warmup` untimed iterations (the JIT and ZeroMQ's buffers settle),
 * then `iterations` timed ones, each preceded by a barrier so they start together. Every rank
 * times every iteration; an iteration's latency is the slowest rank's (the operation is done only
 * when the last rank has its result), and the figure reported is the median over iterations, with
 * the 90th percentile beside it. Rank 0 prints one line `BENCH <json>`.
 */
import { initWorld } from '../src/comm/init.js';
import type { Communicator } from '../src/comm/communicator.js';

interface OpResult {
  op: string;
  iterations: number;
  medianUs: number;
  p90Us: number;
}

async function measure(
  comm: Communicator,
  op: string,
  iterations: number,
  run: () => Promise<unknown>,
): Promise<OpResult> {
  const warmup = Math.max(20, iterations);
  for (let i = 0; i < warmup; i++) {
    await comm.barrier();
    await run();
  }
  const mine: number[] = [];
  for (let i = 0; i < iterations; i++) {
    await comm.barrier();
    const started = performance.now();
    await run();
    mine.push((performance.now() - started) * 1000);
  }
  const all = await comm.allgather(mine);
  const slowest = mine.map((_, i) => Math.max(...all.map((a) => a[i]!))).sort((a, b) => a - b);
  const at = (q: number): number =>
    slowest[Math.min(slowest.length - 1, Math.floor(q * slowest.length))]!;
  return { op, iterations, medianUs: at(0.5), p90Us: at(0.9) };
}

async function main(): Promise<void> {
  const world = await initWorld(process.env, { defaultTimeoutMs: 120_000 });
  const { comm } = world;
  const isRoot = comm.rank === 0;
  const oneMiB = Buffer.alloc(1 << 20, 1);
  const sixteenMiB = Buffer.alloc(16 << 20, 2);
  const chain = comm.sub([...Array(comm.size).keys()], { largeBcast: 'chain' });
  const results = [
    await measure(comm, 'barrier', 2000, () => comm.barrier()),
    await measure(comm, 'bcast 8 B', 2000, () => comm.bcast(isRoot ? 12345678 : undefined, 0)),
    await measure(comm, 'bcast 1 MiB', 200, () => comm.bcast(isRoot ? oneMiB : undefined, 0)),
    await measure(comm, 'bcast 16 MiB', 30, () => comm.bcast(isRoot ? sixteenMiB : undefined, 0)),
    await measure(chain, 'bcast 16 MiB (chain)', 30, () =>
      chain.bcast(isRoot ? sixteenMiB : undefined, 0),
    ),
    await measure(comm, 'gather 1 KiB/rank', 2000, () =>
      comm.gather(Buffer.alloc(1024, comm.rank), 0),
    ),
  ];
  chain.close();
  if (isRoot) console.log(`BENCH ${JSON.stringify({ ranks: comm.size, results })}`);
  await world.finalize();
}

main().catch((err: unknown) => {
  console.error(
    `bench rank ${process.env.MEMFLOW_RANK}: ${err instanceof Error ? err.message : String(err)}`,
  );
  process.exit(1);
});
