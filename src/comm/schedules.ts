/**
 * Pure collective schedules: "who sends what to whom, in which order" for every collective, as a
 * function of (rank, size, root) alone. Keeping them free of I/O lets the tests check every size
 * and root exhaustively; the executor in collectives.ts only walks these lists, sending and
 * receiving. Ranks are indices 0..size-1 of one communicator. Bad arguments throw RangeError.
 *
 * Rooted schedules work on relative ranks, rel = (rank - root + size) % size, so that the root is
 * always rel 0 and one tree shape serves every root.
 *
 * Van de Geijn large broadcast (binomial scatter, then ring allgather): split the payload with
 * `blockPartition(total, size)`; the block a rank owns after the scatter is simply its relative
 * rank, `relativeRank(rank, size, root)`. The scatter sends each child the blocks
 * `binomialSubtree(child, ...)` mapped to relative ranks, which form one contiguous range. The
 * allgather then runs `ringAllgather(rel, size)` on relative ranks, and the executor maps its
 * sendTo/recvFrom back with `absoluteRank`; its block numbers are already block indices.
 */

/** Ranks fit in 31 bits, so the bit tricks below (rel & -rel) are exact. */
const MAX_SIZE = 2 ** 31 - 1;

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 1 || size > MAX_SIZE) {
    throw new RangeError(`size must be an integer in [1, ${MAX_SIZE}], got ${size}`);
  }
}

function checkRank(name: string, value: number, size: number): void {
  if (!Number.isSafeInteger(value) || value < 0 || value >= size) {
    throw new RangeError(`${name} must be an integer in [0, ${size}), got ${value}`);
  }
}

/** Rank's position counted from `root` around the ring: the root is 0. */
export function relativeRank(rank: number, size: number, root: number): number {
  checkSize(size);
  checkRank('rank', rank, size);
  checkRank('root', root, size);
  return (rank - root + size) % size;
}

/** Inverse of `relativeRank`: the communicator rank at relative position `rel` from `root`. */
export function absoluteRank(rel: number, size: number, root: number): number {
  checkSize(size);
  checkRank('rel', rel, size);
  checkRank('root', root, size);
  return (rel + root) % size;
}

/** Smallest power of two >= size; the binomial tree's masks run below it. */
function ceilPow2(size: number): number {
  let p = 1;
  while (p < size) p *= 2;
  return p;
}

/** Binomial tree rooted at `root` (MPICH's algorithm on relative ranks rel = (rank - root + size) % size). */
export interface TreeNode {
  /** The rank this one receives from; null only at the root. */
  parent: number | null;
  /**
   * In the order a bcast sends to them: largest subtree first, in MPICH's sense of decreasing
   * mask, i.e. decreasing nominal span 2^k. When size is not a power of two the first child's
   * subtree may be cut short by size and hold fewer ranks than the next (size 17, root 0: children
   * 16 with 1 rank, then 8 with 8); the order still finishes a bcast in ceil(log2 size) rounds.
   */
  children: number[];
}

/**
 * The node of `rank` in the binomial tree rooted at `root`. The parent of rel is rel with its
 * lowest set bit cleared; its children are rel + m for each power of two m below that bit (any m
 * below ceilPow2(size) for the root) with rel + m < size. Why binomial: the number of ranks holding
 * the value doubles each round, so a bcast finishes in ceil(log2 size) rounds. Sending in
 * decreasing mask order keeps that bound: the child sent to i-th (1-based) at mask 2^(K-i) needs
 * at most K-i more rounds, where 2^K = ceilPow2 of the sender's span.
 */
export function binomialTree(rank: number, size: number, root: number): TreeNode {
  const rel = relativeRank(rank, size, root);
  const low = rel === 0 ? ceilPow2(size) : rel & -rel;
  const parent = rel === 0 ? null : absoluteRank(rel - low, size, root);
  const children: number[] = [];
  for (let m = low / 2; m >= 1; m /= 2) {
    if (rel + m < size) children.push(absoluteRank(rel + m, size, root));
  }
  return { parent, children };
}

/**
 * The ranks of the subtree under `rank` (itself first, then in increasing relative-rank order);
 * these are contiguous in relative rank, so gather/scatter can move one contiguous block range per
 * child. For rel != 0 the subtree is [rel, rel + lowbit(rel)) cut at size; the root's is everything.
 */
export function binomialSubtree(rank: number, size: number, root: number): number[] {
  const rel = relativeRank(rank, size, root);
  const end = rel === 0 ? size : Math.min(size, rel + (rel & -rel));
  const ranks: number[] = [];
  for (let r = rel; r < end; r++) ranks.push(absoluteRank(r, size, root));
  return ranks;
}

/**
 * Depth of the binomial tree: ceil(log2 size); 0 for size 1. This bounds the hops from the root to
 * any rank, and is exactly the number of rounds a bcast takes when each rank sends one message per
 * round (the figure to scale round-based deadlines by). The largest hop count itself is
 * floor(log2 size), one less when size is not a power of two: a hop can cost several rounds,
 * because a parent sends to its children one per round.
 */
export function treeDepth(size: number): number {
  checkSize(size);
  return Math.log2(ceilPow2(size));
}

/** Dissemination barrier (Hensgen/Finkel/Manber): ceil(log2 size) rounds; in round k rank r sends to (r + 2^k) % size and receives from (r - 2^k + size) % size. Empty for size 1. */
export interface BarrierRound {
  sendTo: number;
  recvFrom: number;
}

/**
 * This rank's rounds of the dissemination barrier. Why dissemination: it needs no root and no
 * second (release) phase, and after round k every rank has transitively heard from the 2^(k+1)
 * ranks before it, so ceil(log2 size) rounds cover all ranks for any size, not just powers of two.
 */
export function disseminationBarrier(rank: number, size: number): BarrierRound[] {
  checkSize(size);
  checkRank('rank', rank, size);
  const rounds: BarrierRound[] = [];
  for (let d = 1; d < size; d *= 2) {
    rounds.push({ sendTo: (rank + d) % size, recvFrom: (rank - d + size) % size });
  }
  return rounds;
}

/** Ring allgather: size-1 steps; in step s rank r sends block (r - s + size) % size to (r+1)%size and receives block (r - s - 1 + size) % size from (r-1+size)%size. Empty for size 1. */
export interface RingStep {
  sendTo: number;
  recvFrom: number;
  sendBlock: number;
  recvBlock: number;
}

/**
 * This rank's steps of the ring allgather, starting with rank r holding block r. Each step every
 * rank forwards the block it received in the previous step. Why a ring: each rank sends and
 * receives (size-1)/size of the data once, which is bandwidth-optimal for large payloads, and
 * only ever talks to its two neighbours.
 */
export function ringAllgather(rank: number, size: number): RingStep[] {
  checkSize(size);
  checkRank('rank', rank, size);
  const steps: RingStep[] = [];
  for (let s = 0; s < size - 1; s++) {
    steps.push({
      sendTo: (rank + 1) % size,
      recvFrom: (rank - 1 + size) % size,
      sendBlock: (rank - s + size) % size,
      recvBlock: (rank - s - 1 + size) % size,
    });
  }
  return steps;
}

/** A byte range [offset, offset + length) of a payload. */
export interface Block {
  offset: number;
  length: number;
}

/**
 * Splits `totalBytes` into `parts` contiguous blocks as equal as possible (first
 * `totalBytes % parts` blocks one byte larger); blocks may be empty when totalBytes < parts.
 * Balanced blocks keep every ring step the same size, so no step waits on a straggling one.
 */
export function blockPartition(totalBytes: number, parts: number): Block[] {
  if (!Number.isSafeInteger(totalBytes) || totalBytes < 0) {
    throw new RangeError(`totalBytes must be an integer >= 0, got ${totalBytes}`);
  }
  if (!Number.isSafeInteger(parts) || parts < 1) {
    throw new RangeError(`parts must be an integer >= 1, got ${parts}`);
  }
  const base = Math.floor(totalBytes / parts);
  const extra = totalBytes % parts;
  const blocks: Block[] = [];
  let offset = 0;
  for (let i = 0; i < parts; i++) {
    const length = base + (i < extra ? 1 : 0);
    blocks.push({ offset, length });
    offset += length;
  }
  return blocks;
}
