/**
 * Placement. Goal: placeChunk follows the rule of its contract exactly (least-full first by
 * fraction of capacity, ties to the lower rank, distinct ranks, distinct hosts first, never over
 * capacity), placeChunks balances a file's chunks, and checkFit agrees with placeChunks. Method:
 * hand-worked cases for the rule, then property tests over random usage tables from a
 * SeededRandom. Each property test prints its seed in its name; MEMFLOW_SEED=<seed> replays it.
 */
import { describe, expect, it } from 'vitest';
import { SeededRandom, seedFromEnv } from '../../src/runtime/random.js';
import { checkFit, placeChunk, placeChunks, type RankUsage } from '../../src/store/placement.js';

const MiB = 1024 * 1024;
const seed = seedFromEnv(process.env);

function ranks(
  used: number[],
  opts: { capacity?: number | number[]; hosts?: string[]; readOnly?: number[] } = {},
): RankUsage[] {
  return used.map((usedBytes, i) => ({
    rank: i + 1,
    host: opts.hosts?.[i] ?? 'h',
    usedBytes,
    capacityBytes: Array.isArray(opts.capacity)
      ? (opts.capacity[i] ?? 0)
      : (opts.capacity ?? 1000 * MiB),
    writable: !(opts.readOnly ?? []).includes(i + 1),
  }));
}

/** A random usage table: 1-12 ranks over 1-4 hosts, random capacities, used and writability. */
function randomUsage(random: SeededRandom): RankUsage[] {
  const count = 1 + random.int(12);
  const hosts = 1 + random.int(4);
  const sameCapacity = random.int(2) === 0;
  return Array.from({ length: count }, (_, i) => {
    const capacityBytes = sameCapacity ? 100 * MiB : (1 + random.int(200)) * MiB;
    return {
      rank: i + 1,
      host: `host${random.int(hosts)}`,
      usedBytes: random.int(capacityBytes + 1),
      capacityBytes,
      writable: random.int(8) !== 0,
    };
  });
}

/** Reference of the seed system's rule for one host and equal capacities. */
function seedRule(usage: RankUsage[], replicas: number, chunkBytes: number): number[] {
  return usage
    .filter((u) => u.writable && u.usedBytes + chunkBytes <= u.capacityBytes)
    .sort((a, b) => a.usedBytes - b.usedBytes || a.rank - b.rank)
    .slice(0, replicas)
    .map((u) => u.rank);
}

describe('placeChunk, worked cases', () => {
  it('puts the primary on the rank with the fewest bytes and the replica on the second fewest', () => {
    expect(placeChunk(ranks([30, 10, 20, 40]), 2, 1)).toEqual([2, 3]);
  });

  it('breaks ties toward the lower rank', () => {
    expect(placeChunk(ranks([5, 5, 5, 5]), 2, 1)).toEqual([1, 2]);
    expect(placeChunk(ranks([9, 5, 9, 5]), 3, 1)).toEqual([2, 4, 1]);
  });

  it('orders by fraction of capacity used when capacities differ', () => {
    // Fractions: rank 1 50/100 = 0.5, rank 2 100/400 = 0.25, rank 3 60/200 = 0.3.
    expect(placeChunk(ranks([50, 100, 60], { capacity: [100, 400, 200] }), 3, 1)).toEqual([
      2, 3, 1,
    ]);
  });

  it('skips read-only ranks and ranks the chunk would overfill', () => {
    const usage = ranks([0, 10, 95, 20], { capacity: 100, readOnly: [2] });
    expect(placeChunk(usage, 3, 10)).toEqual([1, 4]);
    expect(placeChunk(usage, 3, 5)).toEqual([1, 4, 3]); // 95 + 5 = 100 fits exactly
  });

  it('returns fewer ranks than replicas when fewer qualify, and none when none do', () => {
    expect(placeChunk(ranks([0]), 3, 1)).toEqual([1]);
    expect(placeChunk(ranks([100, 100], { capacity: 100 }), 2, 1)).toEqual([]);
    expect(placeChunk([], 2, 1)).toEqual([]);
  });

  it('spreads copies over hosts before reusing one', () => {
    // Ranks 1 and 2 on host a are emptiest, but the replica goes to host b.
    const usage = ranks([0, 1, 5, 6], { hosts: ['a', 'a', 'b', 'b'] });
    expect(placeChunk(usage, 2, 1)).toEqual([1, 3]);
    // A third copy must reuse a host: the least full remaining rank.
    expect(placeChunk(usage, 3, 1)).toEqual([1, 3, 2]);
  });

  it('reuses a host only when no other host can take the chunk', () => {
    const usage = ranks([0, 1, 99], { hosts: ['a', 'a', 'b'], capacity: 100 });
    expect(placeChunk(usage, 2, 5)).toEqual([1, 2]);
  });

  it('accepts zero-byte chunks and unlimited capacity', () => {
    expect(placeChunk(ranks([3, 1], { capacity: Infinity }), 2, 0)).toEqual([2, 1]);
  });

  it('refuses programmer errors with RangeError', () => {
    expect(() => placeChunk(ranks([0]), 0, 1)).toThrow(RangeError);
    expect(() => placeChunk(ranks([0]), 1.5, 1)).toThrow(RangeError);
    expect(() => placeChunk(ranks([0]), 1, -1)).toThrow(RangeError);
    expect(() => placeChunk(ranks([0], { capacity: 0 }), 1, 0)).toThrow(RangeError);
    const twice = [...ranks([0]), ...ranks([0])];
    expect(() => placeChunk(twice, 1, 1)).toThrow(/appears twice/);
  });
});

describe('placeChunks and checkFit, worked cases', () => {
  it('charges each chunk before placing the next, so a file spreads over all ranks', () => {
    const { placements, usage } = placeChunks(ranks([0, 0, 0, 0]), 2, [10, 10, 10, 10]);
    expect(placements).toEqual([
      [1, 2],
      [3, 4],
      [1, 2],
      [3, 4],
    ]);
    expect(usage.map((u) => u.usedBytes)).toEqual([20, 20, 20, 20]);
  });

  it('leaves its input untouched', () => {
    const input = ranks([0, 0]);
    const copy = structuredClone(input);
    placeChunks(input, 2, [5, 5]);
    expect(input).toEqual(copy);
  });

  it('reports needed and available bytes, and whether every chunk finds its copies', () => {
    const usage = ranks([0, 50, 90], { capacity: 100 });
    expect(checkFit(usage, 2, [20, 20])).toEqual({
      fits: true,
      neededBytes: 80,
      availableBytes: 160,
    });
    // 3 chunks of 40 with 2 copies: needs 240 > 160 available.
    expect(checkFit(usage, 2, [40, 40, 40])).toMatchObject({ fits: false, neededBytes: 240 });
  });

  it('does not fit when the free space is split into pieces smaller than a chunk', () => {
    const usage = ranks([60, 60, 60], { capacity: 100 });
    expect(checkFit(usage, 1, [50])).toEqual({ fits: false, neededBytes: 50, availableBytes: 120 });
  });

  it('fits with fewer copies when there are fewer writable ranks than replicas', () => {
    expect(checkFit(ranks([0]), 3, [10]).fits).toBe(true);
    expect(checkFit(ranks([0, 0], { readOnly: [2] }), 2, [10]).fits).toBe(true);
  });

  it('never fits a chunk when no rank is writable, and always fits an empty file', () => {
    expect(checkFit(ranks([0], { readOnly: [1] }), 2, [1]).fits).toBe(false);
    expect(checkFit([], 2, [1]).fits).toBe(false);
    expect(checkFit([], 2, [])).toEqual({ fits: true, neededBytes: 0, availableBytes: 0 });
  });
});

describe(`placement properties (seed ${seed}; replay with MEMFLOW_SEED=${seed})`, () => {
  const TRIALS = 500;

  it('never puts two copies on one rank, never overfills, and is deterministic', () => {
    const random = new SeededRandom(seed);
    for (let trial = 0; trial < TRIALS; trial++) {
      const usage = randomUsage(random);
      const replicas = 1 + random.int(4);
      const chunkBytes = random.int(20 * MiB);
      const placed = placeChunk(usage, replicas, chunkBytes);
      const context = `seed ${seed} trial ${trial}`;
      expect(new Set(placed).size, context).toBe(placed.length);
      expect(placed.length, context).toBeLessThanOrEqual(replicas);
      for (const rank of placed) {
        const u = usage.find((x) => x.rank === rank)!;
        expect(u.writable, context).toBe(true);
        expect(u.usedBytes + chunkBytes, context).toBeLessThanOrEqual(u.capacityBytes);
      }
      const qualifying = usage.filter(
        (u) => u.writable && u.usedBytes + chunkBytes <= u.capacityBytes,
      ).length;
      expect(placed.length, context).toBe(Math.min(replicas, qualifying));
      expect(placeChunk(structuredClone(usage), replicas, chunkBytes), context).toEqual(placed);
    }
  });

  it('follows the seed rule exactly on one host with equal capacities', () => {
    const random = new SeededRandom(seed);
    for (let trial = 0; trial < TRIALS; trial++) {
      const count = 1 + random.int(10);
      // Few distinct values so ties are common.
      const usage = ranks(
        Array.from({ length: count }, () => random.int(5) * MiB),
        { capacity: 10 * MiB, readOnly: random.int(3) === 0 ? [1 + random.int(count)] : [] },
      );
      const replicas = 1 + random.int(3);
      const chunkBytes = random.int(8) * MiB;
      expect(placeChunk(usage, replicas, chunkBytes), `seed ${seed} trial ${trial}`).toEqual(
        seedRule(usage, replicas, chunkBytes),
      );
    }
  });

  it('puts copies on distinct hosts whenever enough hosts can take the chunk', () => {
    const random = new SeededRandom(seed);
    for (let trial = 0; trial < TRIALS; trial++) {
      const usage = randomUsage(random);
      const replicas = 1 + random.int(4);
      const chunkBytes = random.int(5 * MiB);
      const placed = placeChunk(usage, replicas, chunkBytes);
      const hostOf = (rank: number): string => usage.find((u) => u.rank === rank)!.host;
      const qualifyingHosts = new Set(
        usage
          .filter((u) => u.writable && u.usedBytes + chunkBytes <= u.capacityBytes)
          .map((u) => u.host),
      ).size;
      const distinct = new Set(placed.map(hostOf)).size;
      expect(distinct, `seed ${seed} trial ${trial}`).toBe(
        Math.min(placed.length, qualifyingHosts),
      );
    }
  });

  it('with equal capacities and equal chunks, ends with every rank within one chunk × replicas of every other', () => {
    const random = new SeededRandom(seed);
    for (let trial = 0; trial < 50; trial++) {
      const count = 2 + random.int(10);
      const replicas = 1 + random.int(Math.min(3, count));
      const chunkBytes = (1 + random.int(8)) * MiB;
      const chunks = Array.from({ length: 20 + random.int(200) }, () => chunkBytes);
      const { usage } = placeChunks(
        ranks(new Array<number>(count).fill(0), { capacity: 1e15 }),
        replicas,
        chunks,
      );
      const used = usage.map((u) => u.usedBytes);
      const spread = Math.max(...used) - Math.min(...used);
      expect(spread, `seed ${seed} trial ${trial}`).toBeLessThanOrEqual(chunkBytes * replicas);
    }
  });

  it('with capacities 1:2:4, fills all ranks to the same fraction (within one chunk)', () => {
    const random = new SeededRandom(seed);
    const unit = 1024 * MiB;
    for (let trial = 0; trial < 20; trial++) {
      // One copy over ranks of 1, 2 and 4 units; or two copies over two such triples (no rank
      // can take more than one copy of a chunk, so each rank's share of capacity must stay
      // at most 1/replicas for equal fractions to be reachable).
      const replicas = 1 + random.int(2);
      const capacity =
        replicas === 1 ? [unit, 2 * unit, 4 * unit] : [1, 2, 4, 1, 2, 4].map((c) => c * unit);
      const hosts = capacity.map((_, i) => `host${i}`);
      const chunks = Array.from({ length: 1200 }, () => (1 + random.int(4)) * MiB);
      const { usage } = placeChunks(
        ranks(new Array<number>(capacity.length).fill(0), { capacity, hosts }),
        replicas,
        chunks,
      );
      const fractions = usage.map((u) => u.usedBytes / u.capacityBytes);
      const context = `seed ${seed} trial ${trial}: ${fractions.join(', ')}`;
      // Far from full (so no rank was skipped for lack of space) ...
      expect(Math.max(...fractions), context).toBeLessThan(0.9);
      expect(Math.min(...fractions), context).toBeGreaterThan(0.2);
      // ... and level to within one largest chunk (4 MiB) of the smallest capacity.
      expect(Math.max(...fractions) - Math.min(...fractions), context).toBeLessThanOrEqual(
        (4 * MiB) / unit,
      );
    }
  });

  it('checkFit says fits exactly when placeChunks finds the required copies for every chunk', () => {
    const random = new SeededRandom(seed);
    for (let trial = 0; trial < TRIALS; trial++) {
      const usage = randomUsage(random);
      const replicas = 1 + random.int(3);
      const chunks = Array.from({ length: random.int(30) }, () => random.int(30 * MiB));
      const fit = checkFit(usage, replicas, chunks);
      const { placements, usage: after } = placeChunks(usage, replicas, chunks);
      const writable = usage.filter((u) => u.writable).length;
      const required = Math.max(1, Math.min(replicas, writable));
      const context = `seed ${seed} trial ${trial}`;
      expect(fit.fits, context).toBe(placements.every((p) => p.length >= required));
      expect(fit.neededBytes, context).toBe(chunks.reduce((a, b) => a + b, 0) * replicas);
      // neededBytes counts `replicas` copies; with fewer writable ranks fewer copies are made.
      const copiedBytes = chunks.reduce((a, b) => a + b, 0) * required;
      if (fit.fits) expect(copiedBytes, context).toBeLessThanOrEqual(fit.availableBytes);
      for (const u of after) {
        expect(u.usedBytes, context).toBeLessThanOrEqual(u.capacityBytes);
      }
    }
  });
});
