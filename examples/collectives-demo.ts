/**
 * A tour of the runtime, run by `npm start` until the file store lands: every rank reports in,
 * then rank 0 times a few collectives and prints what each one returned.
 */
import { initWorld } from '../src/comm/init.js';

async function main(): Promise<void> {
  const world = await initWorld(process.env);
  const { comm } = world;
  try {
    const hosts = await comm.gather(
      { rank: comm.rank, pid: process.pid, host: process.env.MEMFLOW_HOST },
      0,
    );
    if (comm.rank === 0) {
      console.log(`MemFlow world of ${comm.size} ranks is up:`);
      for (const h of hosts ?? []) console.log(`  rank ${h.rank}  pid ${h.pid}  on ${h.host}`);
    }
    const steps: Array<[string, () => Promise<unknown>]> = [
      ['barrier', () => comm.barrier()],
      ['bcast "hello" from rank 0', () => comm.bcast(comm.rank === 0 ? 'hello' : undefined, 0)],
      [
        'bcast 16 MiB from rank 0',
        async () =>
          `${(await comm.bcast(comm.rank === 0 ? Buffer.alloc(16 << 20, 7) : undefined, 0)).length} bytes`,
      ],
      ['allreduce sum of ranks', () => comm.allreduce(comm.rank, 'sum')],
      ['allgather of rank squares', () => comm.allgather(comm.rank * comm.rank)],
    ];
    for (const [name, run] of steps) {
      const started = performance.now();
      const result = await run();
      const ms = performance.now() - started;
      if (comm.rank === 0)
        console.log(
          `${name.padEnd(28)} ${ms.toFixed(2).padStart(8)} ms  → ${JSON.stringify(result) ?? 'done'}`,
        );
    }
  } finally {
    await world.finalize();
  }
}

main().catch((err: unknown) => {
  console.error(
    `rank ${process.env.MEMFLOW_RANK}: ${err instanceof Error ? err.message : String(err)}`,
  );
  process.exit(1);
});
