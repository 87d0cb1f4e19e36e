/**
 * Re-replication and repair: brings every chunk back to its number of copies after a rank died,
 * a copy was found corrupt or missing, or a rank rejoined with copies nobody needs.
 *
 * A missing copy is made by the placement rule (least-filled live rank that does not hold the
 * chunk yet) and copied straight from a surviving holder to the new rank (data rank to data rank;
 * rank 0 only directs). At most `parallelism` copies run at once, so clients keep being served.
 * The new copy list is made durable in the journal (a set-copies record) once the copy is
 * fsync'd on its new rank; until then the index still lists the old holders.
 */
import type { Clock } from '../runtime/clock.js';
import type { ChunkRecord, FileIndex, FileVersion, IndexRecord } from '../store/file-index.js';
import { placeChunk } from '../store/placement.js';
import type { Cluster } from './cluster.js';
import type { DataClient } from './data-client.js';
import { Semaphore } from '../runtime/semaphore.js';

export interface RepairHost {
  readonly index: FileIndex;
  readonly cluster: Cluster;
  readonly data: DataClient;
  readonly clock: Clock;
  /** Makes a record durable and applies it (the coordinator's ordered commit). */
  commit(record: IndexRecord): Promise<void>;
  log(line: string): void;
}

export interface RepairStats {
  /** Chunks with fewer live copies than they should have, at the last count. */
  underReplicated: number;
  copiesMade: number;
  copiesFailed: number;
  /** Clock time when the last pass that left nothing to do ended. */
  lastHealthyAtMs: number | undefined;
}

/** How many copies a chunk of `file` should have now: its replicas, or fewer if fewer data ranks live. */
export function wantedCopies(file: FileVersion, cluster: Cluster): number {
  return Math.min(file.replicas, cluster.all().filter((r) => r.state !== 'dead').length);
}

export function liveHolders(chunk: ChunkRecord, cluster: Cluster): number[] {
  return chunk.ranks.filter((r) => cluster.stateOf(r) !== 'dead');
}

export class Repairer {
  private running: Promise<void> | undefined;
  private again = false;
  private stopRetry: () => void = () => {};
  private stopped = false;
  readonly stats: RepairStats = {
    underReplicated: 0,
    copiesMade: 0,
    copiesFailed: 0,
    lastHealthyAtMs: undefined,
  };

  constructor(
    private readonly host: RepairHost,
    private readonly parallelism = 8,
    private readonly retryMs = 1000,
  ) {}

  /** Starts a pass now (or right after the running one). Resolves when the pass is over. */
  schedule(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.pass()
      .catch((err: unknown) =>
        this.host.log(`repair pass failed: ${err instanceof Error ? err.message : String(err)}`),
      )
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          void this.schedule();
        }
      });
    return this.running;
  }

  stop(): void {
    this.stopped = true;
    this.stopRetry();
  }

  /** Counts the chunks that lack copies now. */
  countUnderReplicated(): number {
    let n = 0;
    for (const { file, chunk } of this.host.index.allChunks())
      if (liveHolders(chunk, this.host.cluster).length < wantedCopies(file, this.host.cluster)) n++;
    return n;
  }

  private async pass(): Promise<void> {
    const { index, cluster } = this.host;
    const todo: Array<{ file: FileVersion; chunk: ChunkRecord }> = [];
    for (const item of index.allChunks()) {
      if (liveHolders(item.chunk, cluster).length < wantedCopies(item.file, cluster))
        todo.push(item);
    }
    this.stats.underReplicated = todo.length;
    if (todo.length === 0) {
      this.stats.lastHealthyAtMs = this.host.clock.now();
      return;
    }
    this.host.log(`re-replicating ${todo.length} chunks`);
    const slots = new Semaphore(this.parallelism);
    let failed = 0;
    await Promise.all(
      todo.map((item) =>
        slots.with(async () => {
          if (!(await this.repairChunk(item.file, item.chunk))) failed++;
        }),
      ),
    );
    this.stats.underReplicated = this.countUnderReplicated();
    if (this.stats.underReplicated === 0) {
      this.stats.lastHealthyAtMs = this.host.clock.now();
      this.host.log(`replication restored: every chunk has its copies`);
    } else if (failed > 0 && !this.stopped) {
      // Something could not be copied now (no room, a source failing): try again shortly.
      this.stopRetry = this.host.clock.setTimer(this.retryMs, () => void this.schedule());
    }
  }

  /** Adds copies to one chunk until it has enough; true when it has. */
  private async repairChunk(file: FileVersion, chunk: ChunkRecord): Promise<boolean> {
    const { cluster, index } = this.host;
    // The index may have moved on (a newer version, another repair): work on what it holds now.
    const current = index.get(file.name);
    if (!current || current.version !== file.version) return true;
    const record = current.chunks[chunk.index];
    if (!record) return true;
    const holders = liveHolders(record, cluster);
    const want = wantedCopies(current, cluster);
    if (holders.length >= want) return true;
    const sources = [...holders].sort(
      (a, b) => Number(cluster.stateOf(a) !== 'alive') - Number(cluster.stateOf(b) !== 'alive'),
    );
    if (sources.length === 0) {
      this.host.log(
        `chunk ${chunk.index} of "${file.name}" has no live copy left; waiting for a holder to return`,
      );
      return false;
    }
    const added: number[] = [];
    const refused = new Set<number>();
    for (let attempt = 0; attempt < 4 && holders.length + added.length < want; attempt++) {
      const usage = cluster
        .usage()
        .map((u) =>
          record.ranks.includes(u.rank) || added.includes(u.rank) || refused.has(u.rank)
            ? { ...u, writable: false }
            : u,
        );
      const [target] = placeChunk(usage, 1, record.sizeBytes);
      if (target === undefined) break;
      const source = sources[attempt % sources.length]!;
      cluster.reserve(target, record.sizeBytes);
      try {
        const { reply } = await this.host.data.request(source, {
          op: 'copy',
          chunkId: record.id,
          to: target,
        });
        cluster.release(target, record.sizeBytes, true, reply.reportSeq);
        added.push(target);
        this.stats.copiesMade++;
      } catch (err) {
        cluster.release(target, record.sizeBytes, false);
        refused.add(target);
        this.stats.copiesFailed++;
        this.host.log(
          `copy of chunk ${record.id} from rank ${source} to rank ${target} failed: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    if (added.length === 0) return false;
    await this.host.commit({
      op: 'set-copies',
      name: current.name,
      version: current.version,
      index: record.index,
      ranks: [...holders, ...added],
    });
    return holders.length + added.length >= want;
  }
}
