/**
 * Entry point of an SPMD program: reads this rank's place in the world from the environment (the
 * launcher's contract, docs/LAUNCHER.md), wires up the ZeroMQ transport and returns the world
 * communicator. Like MPI_Init / MPI_Finalize.
 */
import { Communicator, type CommunicatorOptions } from './communicator.js';
import { parseWorldEnv } from './world-env.js';
import { wireUp, type WireupOptions, type Rendezvous } from './zmq-wireup.js';
import type { ZmqTransport } from './zmq-transport.js';

export interface World {
  comm: Communicator;
  transport: ZmqTransport;
  rendezvous: Rendezvous | undefined;
  /** The address this rank binds on and advertises to its peers. */
  host: string;
  /** Closes the transport, letting queued messages drain first. Idempotent. */
  finalize(): Promise<void>;
}

export async function initWorld(
  env: Record<string, string | undefined>,
  options: WireupOptions & CommunicatorOptions = {},
): Promise<World> {
  // A joining rank (memflow-run --join) carries placeholder rank/size: rank 0 assigns its number.
  const joining = env.MEMFLOW_JOIN === '1';
  const we = parseWorldEnv(joining ? { ...env, MEMFLOW_RANK: '0', MEMFLOW_SIZE: '1' } : env);
  const wired = await wireUp(
    { rank: joining ? -1 : we.rank, size: we.size, root: we.root, host: we.host, jobId: we.jobId },
    options,
  );
  const comm = Communicator.world(wired.transport, wired.size, options);
  let done = false;
  return {
    comm,
    transport: wired.transport,
    rendezvous: wired.rendezvous,
    host: we.host,
    async finalize() {
      if (done) return;
      done = true;
      comm.close();
      wired.rendezvous?.close();
      await wired.transport.close();
    },
  };
}
