/**
 * Run by test/multihost/collectives.test.ts under memflow-run, one rank per slot of network
 * namespaces acting as hosts. Each rank wires into the world, gathers every rank's network
 * namespace, and prints one line the test checks against the namespaces it built:
 *
 *   netns-probe {"rank":R,"host":MEMFLOW_HOST,"root":MEMFLOW_ROOT,"localRank":L,
 *                "netns":INODE,"addresses":[...],"world":[INODE of rank 0, rank 1, ...]}
 *
 * `netns` is the inode of /proc/self/ns/net (the namespace this process really runs in) and
 * `addresses` the IPv4 addresses of its interfaces. If wire-up fails it prints
 * `netns-probe failed on rank R: CODE: message` and exits 1.
 *
 * Option: --wireup-timeout-ms MS (default 20000), the deadline for the world to assemble.
 */
import fs from 'node:fs';
import os from 'node:os';
import { initWorld } from '../../../src/comm/init.js';

const args = process.argv.slice(2);
const timeoutAt = args.indexOf('--wireup-timeout-ms');
const wireupTimeoutMs = timeoutAt === -1 ? 20_000 : Number(args[timeoutAt + 1]);

async function main(): Promise<void> {
  const netns = fs.statSync('/proc/self/ns/net').ino;
  const world = await initWorld(process.env, { wireupTimeoutMs, defaultTimeoutMs: 20_000 });
  try {
    const all = await world.comm.allgather(netns);
    const addresses = Object.values(os.networkInterfaces())
      .flatMap((list) => list ?? [])
      .filter((info) => info.family === 'IPv4')
      .map((info) => info.address);
    const report = {
      rank: world.comm.rank,
      host: process.env.MEMFLOW_HOST,
      root: process.env.MEMFLOW_ROOT,
      localRank: Number(process.env.MEMFLOW_LOCAL_RANK),
      netns,
      addresses,
      world: all,
    };
    console.log(`netns-probe ${JSON.stringify(report)}`);
    await world.comm.barrier();
  } finally {
    await world.finalize();
  }
}

main().catch((err: unknown) => {
  const code: unknown = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  console.error(
    `netns-probe failed on rank ${process.env.MEMFLOW_RANK}: ${typeof code === 'string' ? code : 'ERROR'}: ${message}`,
  );
  process.exit(1);
});
