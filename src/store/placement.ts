/**
 * Placement: which data ranks receive the copies of a chunk. Pure and deterministic (no clock, no
 * randomness), so the coordinator, the simulator and a test all get the same answer from the same
 * usage table, and a placement can be re-derived when debugging.
 *
 * The rule extends the seed system's "primary on the rank with the smallest stored data, replica
 * on the second smallest" to ranks of different capacities (fill each to the same fraction), to k
 * copies, and to several hosts (a host failure should not take every copy with it).
 */

export interface RankUsage {
  rank: number;
  host: string;
  usedBytes: number;
  /** Must be > 0; Infinity means no limit. */
  capacityBytes: number;
  writable: boolean;
}

function assertArguments(usage: readonly RankUsage[], replicas: number): void {
  if (!Number.isInteger(replicas) || replicas < 1) {
    throw new RangeError(`replicas must be an integer >= 1, got ${replicas}`);
  }
  const seen = new Set<number>();
  for (const u of usage) {
    if (seen.has(u.rank)) throw new RangeError(`rank ${u.rank} appears twice in the usage table`);
    seen.add(u.rank);
    if (!(u.capacityBytes > 0) || !(u.usedBytes >= 0)) {
      throw new RangeError(
        `rank ${u.rank} has usedBytes ${u.usedBytes} and capacityBytes ${u.capacityBytes}; ` +
          'need usedBytes >= 0 and capacityBytes > 0',
      );
    }
  }
}

function assertChunkBytes(chunkBytes: number): void {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 0) {
    throw new RangeError(`a chunk size must be a non-negative integer, got ${chunkBytes}`);
  }
}

/**
 * Orders ranks from least to most full. Equal capacities compare used bytes directly, so the
 * "fewest stored bytes" rule holds exactly even where two fractions would round to the same
 * double; ties go to the lower rank so the order is total and deterministic.
 */
function compareFullness(a: RankUsage, b: RankUsage): number {
  if (a.capacityBytes !== b.capacityBytes) {
    const fa = a.usedBytes / a.capacityBytes;
    const fb = b.usedBytes / b.capacityBytes;
    if (fa !== fb) return fa < fb ? -1 : 1;
  } else if (a.usedBytes !== b.usedBytes) {
    return a.usedBytes < b.usedBytes ? -1 : 1;
  }
  return a.rank - b.rank;
}

/**
 * Chooses the ranks for one chunk's copies, primary first: the writable ranks ordered by fraction
 * of capacity used (usedBytes/capacityBytes) ascending; with equal capacities this is exactly
 * "fewest stored bytes"; ties go to the lower rank. A rank is skipped when
 * usedBytes + chunkBytes > capacityBytes. Copies never share a rank; when the candidates span
 * several hosts, copies go to distinct hosts first (choose the next-best rank on a host not yet
 * used; only if no such rank exists reuse a host). Returns up to `replicas` ranks (fewer when not
 * enough ranks qualify; none when no rank can take the chunk).
 *
 * Throws RangeError (a programmer error) when replicas is not an integer >= 1, chunkBytes is not
 * a non-negative integer, a rank appears twice, or a rank has capacityBytes <= 0 or usedBytes < 0.
 */
export function placeChunk(
  usage: readonly RankUsage[],
  replicas: number,
  chunkBytes: number,
): number[] {
  assertArguments(usage, replicas);
  assertChunkBytes(chunkBytes);
  return choose(usage, replicas, chunkBytes);
}

function choose(usage: readonly RankUsage[], replicas: number, chunkBytes: number): number[] {
  const candidates = usage
    .filter((u) => u.writable && u.usedBytes + chunkBytes <= u.capacityBytes)
    .sort(compareFullness);
  const chosen: RankUsage[] = [];
  const taken = new Set<number>();
  const hosts = new Set<string>();
  while (chosen.length < replicas) {
    let pick: RankUsage | undefined;
    // First choice: the least full rank on a host that holds no copy yet. Only when every
    // remaining candidate shares a host with a copy does a host get a second copy.
    for (const c of candidates) {
      if (!taken.has(c.rank) && !hosts.has(c.host)) {
        pick = c;
        break;
      }
    }
    pick ??= candidates.find((c) => !taken.has(c.rank));
    if (pick === undefined) break;
    chosen.push(pick);
    taken.add(pick.rank);
    hosts.add(pick.host);
  }
  return chosen.map((c) => c.rank);
}

/**
 * Places a file's chunks one after another, charging each chunk's bytes to the chosen ranks
 * before placing the next (so a file's chunks spread out). Returns the per-chunk rank lists
 * (placements[i] for chunkSizes[i], each as placeChunk returns it) and the usage after, as new
 * objects in the order of `usage`; the input is not modified.
 *
 * Throws RangeError as placeChunk does.
 */
export function placeChunks(
  usage: readonly RankUsage[],
  replicas: number,
  chunkSizes: readonly number[],
): { placements: number[][]; usage: RankUsage[] } {
  assertArguments(usage, replicas);
  const after = usage.map((u) => ({ ...u }));
  const byRank = new Map(after.map((u) => [u.rank, u]));
  const placements: number[][] = [];
  for (const chunkBytes of chunkSizes) {
    assertChunkBytes(chunkBytes);
    const ranks = choose(after, replicas, chunkBytes);
    for (const rank of ranks) {
      const u = byRank.get(rank);
      if (u !== undefined) u.usedBytes += chunkBytes;
    }
    placements.push(ranks);
  }
  return { placements, usage: after };
}

/**
 * Whether all copies of a file of these chunk sizes fit. neededBytes = sum(chunkSizes) *
 * replicas; availableBytes = the total free bytes of writable ranks (an upper bound: free space
 * split across ranks may not hold a whole chunk). `fits` is decided by placeChunks actually
 * finding max(1, min(replicas, writable ranks)) ranks for every chunk: with fewer writable ranks
 * than replicas a file is stored with fewer copies rather than refused, but every chunk needs at
 * least one. A file of no chunks always fits. These numbers are what STORE_NO_SPACE carries in
 * detail.neededBytes and detail.availableBytes.
 *
 * Throws RangeError as placeChunk does.
 */
export function checkFit(
  usage: readonly RankUsage[],
  replicas: number,
  chunkSizes: readonly number[],
): { fits: boolean; neededBytes: number; availableBytes: number } {
  const { placements } = placeChunks(usage, replicas, chunkSizes);
  const writable = usage.filter((u) => u.writable);
  const required = Math.max(1, Math.min(replicas, writable.length));
  const neededBytes = chunkSizes.reduce((sum, c) => sum + c, 0) * replicas;
  const availableBytes = writable.reduce(
    (sum, u) => sum + Math.max(0, u.capacityBytes - u.usedBytes),
    0,
  );
  const fits = placements.every((ranks) => ranks.length >= required);
  return { fits, neededBytes, availableBytes };
}
