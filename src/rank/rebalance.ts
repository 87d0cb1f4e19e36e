/**
 * Rebalancing (`dfs-client rebalance`): moves chunk copies from the fullest live data rank (by
 * fraction of capacity used) to the emptiest, until every rank's fraction is within BAND of the
 * others — typically after a new rank joined empty.
 *
 * A move never lowers a chunk's copies: the new copy is made (data rank to data rank) and
 * fsync'd, the index is told (a set-copies record swapping the two ranks) and only then is the
 * old copy deleted. Moves are planned in rounds of `parallelism` against a predicted usage
 * vector and run together; at most `maxMoves` per call, so a call always ends.
 */
import type { FileIndex, IndexRecord } from '../store/file-index.js';
import type { Cluster } from './cluster.js';
import type { DataClient } from './data-client.js';

/** Ranks count as balanced when their fractions used differ by at most this much (5 points). */
export const REBALANCE_BAND = 0.05;

export interface RebalanceHost {
  readonly index: FileIndex;
  readonly cluster: Cluster;
  readonly data: DataClient;
  commit(record: IndexRecord): Promise<void>;
  deleteCopy(rank: number, id: string, sizeBytes: number): void;
  log(line: string): void;
}

export interface RebalanceResult {
  moves: number;
  bytesMoved: number;
  /** Largest minus smallest fraction used among live data ranks, before and after. */
  spreadBefore: number;
  spreadAfter: number;
}

interface Move {
  name: string;
  version: number;
  index: number;
  id: string;
  sizeBytes: number;
  from: number;
  to: number;
}

function spread(cluster: Cluster): { spread: number; fractions: Map<number, number> } {
  const live = cluster.all().filter((r) => r.state === 'alive' && r.capacityBytes > 0);
  const fractions = new Map(live.map((r) => [r.rank, r.usedBytes / r.capacityBytes]));
  const values = [...fractions.values()];
  return { spread: values.length < 2 ? 0 : Math.max(...values) - Math.min(...values), fractions };
}

export async function rebalance(
  host: RebalanceHost,
  options: { parallelism?: number; maxMoves?: number } = {},
): Promise<RebalanceResult> {
  const parallelism = options.parallelism ?? 8;
  const maxMoves = options.maxMoves ?? 100_000;
  const spreadBefore = spread(host.cluster).spread;
  let moves = 0;
  let bytesMoved = 0;
  while (moves < maxMoves) {
    const round = plan(host, Math.min(parallelism, maxMoves - moves));
    if (round.length === 0) break;
    const done = await Promise.all(round.map((m) => move(host, m)));
    const ok = done.filter(Boolean).length;
    if (ok === 0) break; // nothing could move (copies failing): stop rather than spin
    moves += ok;
    bytesMoved += round.filter((_, i) => done[i]).reduce((sum, m) => sum + m.sizeBytes, 0);
  }
  const spreadAfter = spread(host.cluster).spread;
  if (moves > 0)
    host.log(
      `rebalanced: ${moves} copies moved, spread of fractions used ${(spreadBefore * 100).toFixed(1)} → ${(spreadAfter * 100).toFixed(1)} points`,
    );
  return { moves, bytesMoved, spreadBefore, spreadAfter };
}

/** Up to `count` moves from the fullest rank to the emptiest, each improving the balance. */
function plan(host: RebalanceHost, count: number): Move[] {
  const live = host.cluster.all().filter((r) => r.state === 'alive' && r.capacityBytes > 0);
  if (live.length < 2) return [];
  const used = new Map(live.map((r) => [r.rank, r.usedBytes + r.reservedBytes]));
  const fraction = (rank: number): number =>
    used.get(rank)! / host.cluster.get(rank)!.capacityBytes;
  const planned: Move[] = [];
  const busy = new Set<string>();
  for (const { file, chunk } of host.index.allChunks()) {
    if (planned.length >= count) break;
    const order = [...used.keys()].sort((a, b) => fraction(b) - fraction(a) || a - b);
    const from = order[0]!;
    const to = order[order.length - 1]!;
    if (fraction(from) - fraction(to) <= REBALANCE_BAND) break;
    if (busy.has(chunk.id) || !chunk.ranks.includes(from) || chunk.ranks.includes(to)) continue;
    const toCapacity = host.cluster.get(to)!.capacityBytes;
    // Moving must not overshoot: the receiving rank stays at or below the sender afterwards.
    const afterTo = (used.get(to)! + chunk.sizeBytes) / toCapacity;
    const afterFrom = (used.get(from)! - chunk.sizeBytes) / host.cluster.get(from)!.capacityBytes;
    if (afterTo > afterFrom + REBALANCE_BAND || used.get(to)! + chunk.sizeBytes > toCapacity)
      continue;
    planned.push({
      name: file.name,
      version: file.version,
      index: chunk.index,
      id: chunk.id,
      sizeBytes: chunk.sizeBytes,
      from,
      to,
    });
    busy.add(chunk.id);
    used.set(from, used.get(from)! - chunk.sizeBytes);
    used.set(to, used.get(to)! + chunk.sizeBytes);
  }
  return planned;
}

async function move(host: RebalanceHost, m: Move): Promise<boolean> {
  host.cluster.reserve(m.to, m.sizeBytes);
  let reportSeq: number | undefined;
  try {
    ({
      reply: { reportSeq },
    } = await host.data.request(m.from, { op: 'copy', chunkId: m.id, to: m.to }));
  } catch (err) {
    host.cluster.release(m.to, m.sizeBytes, false);
    host.log(
      `rebalance: copy of ${m.id} from rank ${m.from} to rank ${m.to} failed: ${err instanceof Error ? err.message : String(err)}`,
    );
    return false;
  }
  host.cluster.release(m.to, m.sizeBytes, true, reportSeq);
  const current = host.index.get(m.name);
  const record = current?.version === m.version ? current.chunks[m.index] : undefined;
  if (!record || !record.ranks.includes(m.from)) {
    host.deleteCopy(m.to, m.id, m.sizeBytes); // the file changed meanwhile: the new copy is surplus
    return false;
  }
  await host.commit({
    op: 'set-copies',
    name: m.name,
    version: m.version,
    index: m.index,
    ranks: record.ranks.map((r) => (r === m.from ? m.to : r)),
  });
  host.deleteCopy(m.from, m.id, m.sizeBytes);
  return true;
}
