/**
 * Run by test/e2e/collectives.test.ts under memflow-run at several world sizes: every rank runs
 * every collective from every root, checks the result against what it must be, prints
 * "collectives ok" and exits 0; any wrong result exits 1 naming the collective.
 */
import { createHash } from 'node:crypto';
import { ANY_SOURCE } from '../../../src/comm/communicator.js';
import { initWorld } from '../../../src/comm/init.js';

function pattern(length: number, seed: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) buf[i] = (i * 31 + seed) & 0xff;
  return buf;
}

const digest = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function expectEqual(what: string, got: unknown, want: unknown): void {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(
      `${what}: got ${JSON.stringify(got)?.slice(0, 200)}, want ${JSON.stringify(want)?.slice(0, 200)}`,
    );
  }
}

async function main(): Promise<void> {
  const world = await initWorld(process.env, { defaultTimeoutMs: 60_000 });
  const { comm } = world;
  const { rank, size } = comm;
  try {
    await comm.barrier();
    for (let root = 0; root < size; root++) {
      const value = { root, list: [1, 2, 3], text: 'héllo' };
      expectEqual(
        `bcast value root ${root}`,
        await comm.bcast(rank === root ? value : undefined, root),
        value,
      );

      const values = [...Array(size).keys()].map((i) => ({ i, pad: 'x'.repeat(i * 10) }));
      expectEqual(
        `scatter root ${root}`,
        await comm.scatter(rank === root ? values : undefined, root),
        values[rank],
      );

      const gathered = await comm.gather({ from: rank }, root);
      expectEqual(
        `gather root ${root}`,
        gathered,
        rank === root ? [...Array(size).keys()].map((from) => ({ from })) : undefined,
      );

      const order = await comm.reduce(String(rank), (a, b) => `${a},${b}`, root);
      const want = [...Array(size).keys()].map((i) => String((root + i) % size)).join(',');
      expectEqual(`reduce (non-commutative) root ${root}`, order, rank === root ? want : undefined);
    }
    for (const length of [0, 1, 1024 * 1024, 3 * 1024 * 1024 + 7]) {
      const root = size - 1;
      const data = rank === root ? pattern(length, length) : undefined;
      const got = await comm.bcast<Uint8Array>(data, root);
      expectEqual(`bcast ${length} bytes`, digest(got), digest(pattern(length, length)));
    }
    expectEqual(
      'allgather',
      await comm.allgather(rank * 2),
      [...Array(size).keys()].map((i) => i * 2),
    );
    expectEqual('allreduce sum', await comm.allreduce(rank, 'sum'), (size * (size - 1)) / 2);
    expectEqual('reduce max', await comm.reduce(rank, 'max', 0), rank === 0 ? size - 1 : undefined);

    // Point to point around a ring, received with ANY_SOURCE.
    await comm.send((rank + 1) % size, 7, { from: rank }, [pattern(100, rank)]);
    const msg = await comm.recv<{ from: number }>(ANY_SOURCE, 7);
    const left = (rank - 1 + size) % size;
    expectEqual(
      'ring p2p source',
      [msg.source, msg.data.from, digest(msg.payload[0]!)],
      [left, left, digest(pattern(100, left))],
    );

    // A sub-communicator over the even world ranks, as the store builds over live ranks.
    const evens = [...Array(size).keys()].filter((r) => r % 2 === 0);
    if (rank % 2 === 0) {
      const sub = comm.sub(evens);
      expectEqual('sub allreduce', await sub.allreduce(1, 'sum'), evens.length);
      sub.close();
    }
    await comm.barrier();
    console.log('collectives ok');
  } finally {
    await world.finalize();
  }
}

main().catch((err: unknown) => {
  console.error(
    `collectives check failed on rank ${process.env.MEMFLOW_RANK}: ${err instanceof Error ? err.message : String(err)}`,
  );
  process.exit(1);
});
