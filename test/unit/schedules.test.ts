/**
 * Specification of the pure collective schedules (src/comm/schedules.ts).
 *
 * Goal: every collective's "who sends what to whom" is correct for every communicator the
 * runtime can build, so the executor that walks these lists cannot deadlock, lose a message or
 * deliver a block twice because of the schedule.
 *
 * Method: exhaustive checks for every size 1..32, every root and every rank. Each property is
 * checked across ranks (a send in one rank's schedule must be a matching receive in another's),
 * and each collective is simulated round by round on plain sets, against references computed
 * here independently of the code under test (e.g. ceil(log2 size) by counting doublings).
 */
import { describe, expect, it } from 'vitest';
import {
  absoluteRank,
  binomialSubtree,
  binomialTree,
  blockPartition,
  disseminationBarrier,
  relativeRank,
  ringAllgather,
  treeDepth,
  type TreeNode,
} from '../../src/comm/schedules.js';

const MAX_SIZE = 32;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const SIZES = range(MAX_SIZE).map((i) => i + 1);

/** Reference ceil(log2 n): the number of doublings from 1 needed to reach n. */
function ceilLog2(n: number): number {
  let k = 0;
  while (2 ** k < n) k++;
  return k;
}

/** The whole tree for one (size, root), indexed by rank. */
function tree(size: number, root: number): TreeNode[] {
  return range(size).map((r) => binomialTree(r, size, root));
}

const at = <T>(xs: readonly T[], i: number): T => {
  const x = xs[i];
  if (x === undefined) throw new Error(`index ${i} out of range`);
  return x;
};

describe('relativeRank / absoluteRank', () => {
  it.each(SIZES)('size %i, every root: the root is rel 0 and the two maps are inverse', (size) => {
    for (const root of range(size)) {
      expect(relativeRank(root, size, root)).toBe(0);
      for (const r of range(size)) {
        expect(absoluteRank(relativeRank(r, size, root), size, root)).toBe(r);
      }
    }
  });
});

describe('binomialTree', () => {
  it.each(SIZES)(
    'size %i, every root: c is a child of p exactly when p is the parent of c; only the root has no parent',
    (size) => {
      for (const root of range(size)) {
        const nodes = tree(size, root);
        for (const r of range(size)) {
          const { parent, children } = at(nodes, r);
          expect(parent === null).toBe(r === root);
          if (parent !== null) expect(at(nodes, parent).children).toContain(r);
          expect(new Set(children).size).toBe(children.length);
          for (const c of children) expect(at(nodes, c).parent).toBe(r);
        }
      }
    },
  );

  it.each(SIZES)(
    'size %i, every root: walking children from the root reaches every rank exactly once',
    (size) => {
      for (const root of range(size)) {
        const nodes = tree(size, root);
        const visits = new Array<number>(size).fill(0);
        const queue = [root];
        for (let r = queue.shift(); r !== undefined; r = queue.shift()) {
          visits[r] = (visits[r] ?? 0) + 1;
          queue.push(...at(nodes, r).children);
        }
        expect(visits).toEqual(new Array<number>(size).fill(1));
      }
    },
  );

  it.each(SIZES)(
    'size %i, every root: parent links have no cycles and every depth is <= treeDepth = ceil(log2 size)',
    (size) => {
      expect(treeDepth(size)).toBe(ceilLog2(size));
      for (const root of range(size)) {
        const nodes = tree(size, root);
        let maxDepth = 0;
        for (const r of range(size)) {
          let depth = 0;
          for (let p = at(nodes, r).parent; p !== null; p = at(nodes, p).parent) {
            depth++;
            expect(depth).toBeLessThanOrEqual(size); // a cycle would never end
          }
          expect(depth).toBeLessThanOrEqual(treeDepth(size));
          maxDepth = Math.max(maxDepth, depth);
        }
        // Hops reach ceil(log2 size) only at powers of two; rounds (below) always do.
        expect(maxDepth).toBe(Math.floor(Math.log2(size)));
      }
    },
  );

  // "Largest subtree first" is MPICH's decreasing mask: child offsets rel(c) - rel(r) are strictly
  // decreasing powers of two, the nominal subtree spans. The actual first subtree can be smaller
  // when cut at size (size 17, root 0: 16 has 1 rank, 8 has 8), so sizes are not what is ordered.
  it.each(SIZES)(
    'size %i, every root: children are in strictly decreasing power-of-two relative offset (MPICH order)',
    (size) => {
      for (const root of range(size)) {
        for (const r of range(size)) {
          const offsets = binomialTree(r, size, root).children.map(
            (c) => relativeRank(c, size, root) - relativeRank(r, size, root),
          );
          for (const d of offsets) expect(Number.isInteger(Math.log2(d))).toBe(true);
          for (let i = 1; i < offsets.length; i++) {
            expect(at(offsets, i)).toBeLessThan(at(offsets, i - 1));
          }
        }
      }
    },
  );

  it('size 17, root 0: the first child (16) has a smaller subtree than the second (8)', () => {
    expect(binomialTree(0, 17, 0).children).toEqual([16, 8, 4, 2, 1]);
    expect(binomialSubtree(16, 17, 0)).toEqual([16]);
    expect(binomialSubtree(8, 17, 0)).toHaveLength(8);
  });

  it.each(SIZES)(
    'size %i, every root: a bcast sending one message per rank per round finishes in <= ceil(log2 size) rounds',
    (size) => {
      for (const root of range(size)) {
        const nodes = tree(size, root);
        const has = new Set([root]);
        const next = new Array<number>(size).fill(0); // index of each rank's next child
        let rounds = 0;
        while (has.size < size) {
          rounds++;
          // Only ranks that held the value at the start of the round may send in it.
          for (const r of [...has]) {
            const child = at(nodes, r).children[at(next, r)];
            if (child === undefined) continue;
            expect(has.has(child)).toBe(false); // nobody is sent the value twice
            has.add(child);
            next[r] = at(next, r) + 1;
          }
          expect(rounds).toBeLessThanOrEqual(ceilLog2(size));
        }
        expect(rounds).toBe(ceilLog2(size));
      }
    },
  );
});

describe('binomialSubtree', () => {
  it.each(SIZES)(
    'size %i, every root: a subtree is the rank itself then the disjoint union of its children subtrees',
    (size) => {
      for (const root of range(size)) {
        for (const r of range(size)) {
          const sub = binomialSubtree(r, size, root);
          expect(sub[0]).toBe(r);
          const union = [r];
          for (const c of binomialTree(r, size, root).children) {
            union.push(...binomialSubtree(c, size, root));
          }
          expect(new Set(union).size).toBe(union.length); // disjoint
          expect([...sub].sort((a, b) => a - b)).toEqual(union.sort((a, b) => a - b));
        }
      }
    },
  );

  it.each(SIZES)('size %i, every root: the root subtree is every rank', (size) => {
    for (const root of range(size)) {
      expect(binomialSubtree(root, size, root)).toEqual(
        range(size).map((rel) => (rel + root) % size),
      );
    }
  });

  it.each(SIZES)(
    'size %i, every root: a subtree is a contiguous increasing run of relative ranks',
    (size) => {
      for (const root of range(size)) {
        for (const r of range(size)) {
          const rels = binomialSubtree(r, size, root).map((x) => relativeRank(x, size, root));
          const first = at(rels, 0);
          expect(rels).toEqual(range(rels.length).map((i) => first + i));
        }
      }
    },
  );
});

describe('disseminationBarrier', () => {
  it.each(SIZES)('size %i: every rank has ceil(log2 size) rounds', (size) => {
    for (const r of range(size)) {
      expect(disseminationBarrier(r, size)).toHaveLength(ceilLog2(size));
    }
  });

  it.each(SIZES)(
    'size %i: in round k, r sends to r + 2^k and that rank receives from r in round k',
    (size) => {
      const all = range(size).map((r) => disseminationBarrier(r, size));
      for (const r of range(size)) {
        at(all, r).forEach(({ sendTo, recvFrom }, k) => {
          expect(sendTo).toBe((r + 2 ** k) % size);
          expect(recvFrom).toBe((r - 2 ** k + size) % size);
          expect(at(at(all, sendTo), k).recvFrom).toBe(r);
        });
      }
    },
  );

  it.each(SIZES)('size %i: after all rounds every rank has heard from every rank', (size) => {
    const all = range(size).map((r) => disseminationBarrier(r, size));
    let heard = range(size).map((r) => new Set([r]));
    for (let k = 0; k < ceilLog2(size); k++) {
      // A round's message carries what the sender knew before the round.
      heard = range(size).map(
        (r) => new Set([...at(heard, r), ...at(heard, at(at(all, r), k).recvFrom)]),
      );
    }
    for (const r of range(size)) expect(at(heard, r).size).toBe(size);
  });
});

describe('ringAllgather', () => {
  it.each(SIZES)(
    'size %i: size-1 steps; each send is the neighbour receive of the same block in the same step',
    (size) => {
      const all = range(size).map((r) => ringAllgather(r, size));
      for (const r of range(size)) {
        expect(at(all, r)).toHaveLength(size - 1);
        at(all, r).forEach((step, s) => {
          expect(step.sendTo).toBe((r + 1) % size);
          expect(step.recvFrom).toBe((r - 1 + size) % size);
          const peer = at(at(all, step.sendTo), s);
          expect(peer.recvFrom).toBe(r);
          expect(peer.recvBlock).toBe(step.sendBlock);
        });
      }
    },
  );

  it.each(SIZES)(
    'size %i: starting from block r at rank r, every rank ends with every block exactly once',
    (size) => {
      const all = range(size).map((r) => ringAllgather(r, size));
      const held = range(size).map((r) => new Set([r]));
      for (let s = 0; s < size - 1; s++) {
        for (const r of range(size)) {
          const { sendTo, sendBlock } = at(at(all, r), s);
          expect(at(held, r).has(sendBlock)).toBe(true); // one only forwards what one has
          expect(at(held, sendTo).has(sendBlock)).toBe(false); // never received twice
        }
        // Apply the receives after checking all sends: they happen concurrently within a step.
        for (const r of range(size)) at(held, r).add(at(at(all, r), s).recvBlock);
      }
      for (const r of range(size)) expect(at(held, r).size).toBe(size);
    },
  );
});

describe('van de Geijn broadcast (binomial scatter of blocks, then ring allgather)', () => {
  it.each(SIZES)(
    'size %i, every root: block index = relative rank; scatter ranges are contiguous; all end with all blocks',
    (size) => {
      for (const root of range(size)) {
        const rel = (r: number): number => relativeRank(r, size, root);
        const nodes = tree(size, root);
        const held = range(size).map(() => new Set<number>());
        for (const b of range(size)) at(held, root).add(b);
        // Scatter: each parent sends a child the blocks of the child's subtree, one contiguous range.
        const queue = [root];
        for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
          for (const c of at(nodes, p).children) {
            const blocks = binomialSubtree(c, size, root).map(rel);
            expect(blocks).toEqual(range(blocks.length).map((i) => rel(c) + i));
            for (const b of blocks) {
              expect(at(held, p).has(b)).toBe(true);
              at(held, c).add(b);
            }
            queue.push(c);
          }
        }
        for (const r of range(size)) expect(at(held, r).has(rel(r))).toBe(true);
        // Allgather on relative ranks, peers mapped back to communicator ranks.
        for (let s = 0; s < size - 1; s++) {
          const moves = range(size).map((r) => {
            const step = at(ringAllgather(rel(r), size), s);
            expect(at(held, r).has(step.sendBlock)).toBe(true);
            return { to: absoluteRank(step.sendTo, size, root), block: step.sendBlock };
          });
          for (const { to, block } of moves) at(held, to).add(block);
        }
        for (const r of range(size)) expect(at(held, r).size).toBe(size);
      }
    },
  );
});

describe('blockPartition', () => {
  const totals = [...range(100), 1000, 4093, 65536, 1_000_003];

  it.each(SIZES)(
    'parts %i, totals 0..99 and some large (incl. total < parts): contiguous, covering, lengths within 1, larger blocks first',
    (parts) => {
      for (const total of totals) {
        const blocks = blockPartition(total, parts);
        expect(blocks).toHaveLength(parts);
        let offset = 0;
        blocks.forEach((b, i) => {
          expect(b.offset).toBe(offset);
          expect(b.length).toBe(Math.floor(total / parts) + (i < total % parts ? 1 : 0));
          offset += b.length;
        });
        expect(offset).toBe(total);
        const lengths = blocks.map((b) => b.length);
        expect(Math.max(...lengths) - Math.min(...lengths)).toBeLessThanOrEqual(1);
      }
    },
  );
});

describe('argument errors', () => {
  const badSizes = [0, -1, 1.5, NaN, Infinity, 2 ** 31];

  it('size < 1 or not an integer throws RangeError in every function', () => {
    for (const size of badSizes) {
      expect(() => binomialTree(0, size, 0)).toThrow(RangeError);
      expect(() => binomialSubtree(0, size, 0)).toThrow(RangeError);
      expect(() => disseminationBarrier(0, size)).toThrow(RangeError);
      expect(() => ringAllgather(0, size)).toThrow(RangeError);
      expect(() => treeDepth(size)).toThrow(RangeError);
      expect(() => relativeRank(0, size, 0)).toThrow(RangeError);
      expect(() => absoluteRank(0, size, 0)).toThrow(RangeError);
    }
  });

  it('rank or root outside [0, size) or not an integer throws RangeError (size 4)', () => {
    for (const bad of [-1, 4, 5, 0.5, NaN]) {
      expect(() => binomialTree(bad, 4, 0)).toThrow(RangeError);
      expect(() => binomialTree(0, 4, bad)).toThrow(RangeError);
      expect(() => binomialSubtree(bad, 4, 0)).toThrow(RangeError);
      expect(() => binomialSubtree(0, 4, bad)).toThrow(RangeError);
      expect(() => disseminationBarrier(bad, 4)).toThrow(RangeError);
      expect(() => ringAllgather(bad, 4)).toThrow(RangeError);
      expect(() => relativeRank(bad, 4, 0)).toThrow(RangeError);
      expect(() => relativeRank(0, 4, bad)).toThrow(RangeError);
      expect(() => absoluteRank(bad, 4, 0)).toThrow(RangeError);
      expect(() => absoluteRank(0, 4, bad)).toThrow(RangeError);
    }
  });

  it('blockPartition: negative or fractional total, and parts < 1 or fractional, throw RangeError', () => {
    expect(() => blockPartition(-1, 4)).toThrow(RangeError);
    expect(() => blockPartition(1.5, 4)).toThrow(RangeError);
    expect(() => blockPartition(NaN, 4)).toThrow(RangeError);
    expect(() => blockPartition(10, 0)).toThrow(RangeError);
    expect(() => blockPartition(10, -2)).toThrow(RangeError);
    expect(() => blockPartition(10, 2.5)).toThrow(RangeError);
  });
});
