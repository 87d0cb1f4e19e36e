/**
 * The store as one SPMD program: every rank runs this; rank 0 becomes the coordinator, the others
 * data ranks. Each rank keeps its data in its own folder below --data-dir (rank-0 holds the
 * master index journal, rank-N the chunk copies of data rank N).
 */
import { join } from 'node:path';
import { initWorld } from '../comm/init.js';
import { ServiceSocket } from '../comm/zmq-service.js';
import { SystemClock } from '../runtime/clock.js';
import { VolumeChunkStore } from '../store/volume-chunk-store.js';
import { lockDirectory } from '../store/directory-lock.js';
import { diskId, freeBytes } from '../store/disk-space.js';
import { FileIndex } from '../store/file-index.js';
import { Journal } from '../store/journal.js';
import { formatSize, parseSize } from '../store/sizes.js';
import { Coordinator } from './coordinator.js';
import { DataRank } from './data-rank.js';
import { StatusServer } from './status-page/server.js';

/**
 * A data rank's chunk port (chunk-port.ts). Its requests are a few dozen bytes, but a direct
 * write carries a chunk: frames up to a chunk and 64 KiB are taken, and ZeroMQ drops a
 * connection that sends a larger one, as at rank 0's port. Replies are whole chunks: a short
 * queue, and a short wait for a client that does not take them, so that one such client holds up
 * the others briefly.
 */
const CHUNK_PORT_OPTIONS = { maxQueued: 256, sendTimeoutMs: 2_000 };

export interface StoreOptions {
  port: number;
  bind: string;
  dataDir: string;
  replicas: number;
  chunkSizeBytes: number;
  /** Capacity offered by each data rank; undefined = the disk's free space plus what it holds. */
  capacityBytes: number | undefined;
  heartbeatIntervalMs: number;
  deadAfterMs: number;
  /** Bytes per second each data rank's scrub re-verifies (0: off). */
  scrubBytesPerSecond: number;
  /** Bytes of small chunks rank 0 caches to answer small reads itself. */
  readCacheBytes: number;
  /** Port of rank 0's status page and /metrics, on `bind` (0: any free port; undefined: none). */
  httpPort?: number | undefined;
}

export interface RunningRank {
  rank: number;
  /** Resolves when the rank has stopped (after stop(), or rank 0's shutdown for data ranks). */
  done: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Joins the world and runs this rank's role. `log` gets human-readable lines for stderr;
 * `onRank` hears this rank's number as soon as it is known (a joining rank learns it from rank 0).
 */
export async function runStore(
  env: Record<string, string | undefined>,
  options: StoreOptions,
  log: (line: string) => void,
  onRank?: (rank: number) => void,
): Promise<RunningRank> {
  // Rank 0 hears of ranks registering after the launch (restarts, joins) through the
  // rendezvous; the coordinator that handles them exists only once the world is up.
  const late: { onRegistered?: (rank: number, endpoint: string) => void } = {};
  const world = await initWorld(env, {
    defaultTimeoutMs: 60_000,
    onLateRegistration: (rank, endpoint) => late.onRegistered?.(rank, endpoint),
  });
  const { comm } = world;
  onRank?.(comm.rank);
  const clock = new SystemClock();
  const host = env.MEMFLOW_HOST ?? '127.0.0.1';
  const rankDir = join(options.dataDir, `rank-${comm.rank}`);
  // Before anything in the folder is opened: a second process on it would corrupt it.
  const lock = await lockDirectory(rankDir).catch(async (err: unknown) => {
    await world.finalize().catch(() => undefined);
    throw err;
  });

  if (comm.rank !== 0) {
    // Chunks live in append-only volume files with group commit: one fsync covers every chunk
    // written meanwhile, which is what lets a data rank store thousands of small chunks a second.
    const store = await VolumeChunkStore.open(join(rankDir, 'volumes'));
    const disk = {
      id: await diskId(rankDir),
      freeBytes: await freeBytes(rankDir),
      sample: () => freeBytes(rankDir),
    };
    const hostCapacity = env.MEMFLOW_HOST_CAPACITY;
    const capacityBytes =
      options.capacityBytes ?? (hostCapacity ? parseSize(hostCapacity) : Infinity);
    // Clients read and write large chunks here directly, on the address the rank's peers reach it
    // at, on a port of the kernel's choosing that its reports tell rank 0.
    const chunkPort = await ServiceSocket.bind(world.host, 0, {
      ...CHUNK_PORT_OPTIONS,
      maxMessageBytes: options.chunkSizeBytes + 64 * 1024,
    });
    const dataRank = new DataRank(comm, store, {
      host,
      capacityBytes,
      disk,
      log,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      scrubBytesPerSecond: options.scrubBytesPerSecond,
      onPeer: (rank, endpoint) => world.transport.addPeer(rank, endpoint),
      chunkPort: { channel: chunkPort, endpoint: chunkPort.endpoint },
    });
    // A rank started by `memflow-run --join` says where it went: nothing else in its output would.
    if (env.MEMFLOW_JOIN === '1')
      log(
        `joined the store at ${env.MEMFLOW_ROOT ?? '?'} as rank ${comm.rank}; its chunks go to ${rankDir}`,
      );
    const stopper = new AbortController();
    const done = dataRank.run(stopper.signal).finally(async () => {
      chunkPort.close();
      await store.close();
      await world.finalize();
      await lock.release();
    });
    return {
      rank: comm.rank,
      done,
      async stop() {
        stopper.abort('stop');
        await done;
      },
    };
  }

  const { journal, records } = await Journal.open(join(rankDir, 'index'));
  const index = new FileIndex();
  for (const r of records) index.apply(r);
  const coordinator = new Coordinator(comm, index, journal, clock, {
    replicas: options.replicas,
    chunkSizeBytes: options.chunkSizeBytes,
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    deadAfterMs: options.deadAfterMs,
    readCacheBytes: options.readCacheBytes,
    log,
  });
  late.onRegistered = (rank, endpoint) => coordinator.onRankRegistered(rank, endpoint);
  const service = await ServiceSocket.bind(options.bind, options.port, {
    // ZeroMQ applies the limit to each frame: a records put-chunk's IDs (frame 0) are never
    // longer than its records (frame 1), so one chunk plus headroom bounds both.
    maxMessageBytes: options.chunkSizeBytes + 64 * 1024,
  });
  // Bound before the start-up collectives, so a port in use fails the launch at once.
  let statusServer: StatusServer | undefined;
  if (options.httpPort !== undefined) {
    try {
      statusServer = await StatusServer.listen(coordinator, {
        host: options.bind,
        port: options.httpPort,
      });
    } catch (err) {
      service.close();
      throw err;
    }
  }
  await coordinator.start(service);
  const dataRanks = comm.size - 1;
  if (dataRanks < options.replicas) {
    log(
      `warning: ${dataRanks} data rank(s) but --replicas ${options.replicas}: files will be under-replicated (${Math.max(1, dataRanks)} copies each)`,
    );
  }
  // Before the ready line, so whoever waits for that line can already read this one.
  if (statusServer) log(`status page: ${statusServer.url}`);
  log(
    `MemFlow store ready: clients connect to ${options.bind}:${options.port} ` +
      `(${dataRanks} data ranks, ${options.replicas} copies, ${formatSize(options.chunkSizeBytes)} chunks, ${index.size()} files); ` +
      `new data ranks join with: memflow-run --join ${env.MEMFLOW_ROOT ?? '?'}`,
  );
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  return {
    rank: 0,
    done,
    async stop() {
      await statusServer?.close();
      service.close();
      await coordinator.stop();
      await journal.close();
      await world.finalize();
      await lock.release();
      resolveDone();
    },
  };
}
