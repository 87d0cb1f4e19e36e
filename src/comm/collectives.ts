/**
 * The collective executor: walks the pure schedules of schedules.ts, sending and receiving over a
 * Communicator. All the "who sends to whom" lives in schedules.ts; this file only moves frames.
 *
 * Encoding: a value crosses the wire as one msgpack frame, encoded once by its owner and forwarded
 * untouched by every rank on the way (a bcast of 1 MiB is packed once, not once per hop). A
 * Uint8Array broadcast travels as a raw payload frame instead, forwarded down the binomial tree
 * without a copy; from LARGE_BCAST_BYTES upward a communicator may choose a pipelined chain
 * instead (CommunicatorOptions.largeBcast; see largeBcast for why the tree is the default).
 *
 * Every collective has one deadline for the whole operation (WaitOptions.timeoutMs, default the
 * communicator's) and fails with a CommError naming the rank it was waiting for.
 */
import { pack, unpack } from 'msgpackr';
import type { Communicator, WaitOptions } from './communicator.js';
import { CommError } from './errors.js';
import { binomialSubtree, binomialTree, disseminationBarrier } from './schedules.js';

/** communicator.ts's ANY_SOURCE, restated to keep the import one-way (collectives never import values from communicator). */
const ANY_SOURCE_WORLD = -1;

export type ReduceOp<T> = ((a: T, b: T) => T) | 'sum' | 'max' | 'min';

/** From this size on, a Uint8Array bcast over 3 or more ranks may use the pipelined chain. */
export const LARGE_BCAST_BYTES = 4 * 1024 * 1024;

interface Deadline {
  atMs: number;
  signal: AbortSignal | undefined;
}

function deadlineOf(comm: Communicator, options: WaitOptions): Deadline {
  return {
    atMs: comm.clock.now() + (options.timeoutMs ?? comm.defaultTimeoutMs),
    signal: options.signal,
  };
}

function remaining(comm: Communicator, d: Deadline): WaitOptions {
  return { timeoutMs: Math.max(0, d.atMs - comm.clock.now()), signal: d.signal };
}

function checkRoot(comm: Communicator, root: number): void {
  if (!Number.isInteger(root) || root < 0 || root >= comm.size) {
    throw new CommError(
      'COMM_BAD_ARGUMENT',
      `root ${root} is outside a communicator of size ${comm.size}`,
    );
  }
}

async function recvFrom(comm: Communicator, local: number, tag: number, d: Deadline) {
  return comm.recvRaw(comm.worldRankOf(local), tag, remaining(comm, d));
}

const relative = (rank: number, root: number, size: number): number => (rank - root + size) % size;
const absolute = (rel: number, root: number, size: number): number => (rel + root) % size;

function encode(value: unknown): Uint8Array {
  return pack(value);
}

function decode<T>(frame: Uint8Array | undefined): T {
  if (!frame) throw new CommError('COMM_BAD_MESSAGE', 'collective message is missing a frame');
  return unpack(frame) as T;
}

export async function barrier(comm: Communicator, options: WaitOptions): Promise<void> {
  const tag = comm.nextCollectiveTag();
  const d = deadlineOf(comm, options);
  const sends: Promise<void>[] = [];
  for (const round of disseminationBarrier(comm.rank, comm.size)) {
    // A send only queues; waiting for it before receiving would add a turn of the event loop to
    // every round.
    sends.push(comm.sendRaw(round.sendTo, tag, null));
    await recvFrom(comm, round.recvFrom, tag, d);
  }
  await Promise.all(sends);
}

type BcastHeader = { mode: 'value' } | { mode: 'bytes' } | { mode: 'large'; total: number };

export async function bcast<T>(
  comm: Communicator,
  value: T | undefined,
  root: number,
  options: WaitOptions,
): Promise<T> {
  checkRoot(comm, root);
  const tag = comm.nextCollectiveTag();
  const d = deadlineOf(comm, options);
  const { parent, children } = binomialTree(comm.rank, comm.size, root);

  let header: BcastHeader;
  let frames: Uint8Array[];
  if (parent === null) {
    if (value instanceof Uint8Array) {
      if (comm.largeBcast === 'chain' && value.length >= LARGE_BCAST_BYTES && comm.size > 2) {
        return (await largeBcast(comm, undefined, value, root, tag, d)) as T;
      }
      header = { mode: 'bytes' };
    } else {
      header = { mode: 'value' };
    }
    frames = [value instanceof Uint8Array ? value : encode(value)];
  } else {
    // A large broadcast arrives along the chain from the previous relative rank, a small one
    // from the tree parent; the root's first message says which.
    const msg = await comm.recvRaw(ANY_SOURCE_WORLD, tag, remaining(comm, d));
    header = msg.data as BcastHeader;
    if (header.mode === 'large') {
      return (await largeBcast(comm, msg, undefined, root, tag, d)) as T;
    }
    frames = msg.payload;
  }
  await Promise.all(children.map((c) => comm.sendRaw(c, tag, header, frames)));
  return header.mode === 'bytes' ? (toBuffer(frames[0]) as T) : decode<T>(frames[0]);
}

function toBuffer(frame: Uint8Array | undefined): Buffer {
  if (!frame) throw new CommError('COMM_BAD_MESSAGE', 'bcast message is missing its payload');
  return Buffer.isBuffer(frame)
    ? frame
    : Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
}

/**
 * Pipelined chain for large buffers: the buffer travels in PIPELINE_SEGMENT_BYTES segments along
 * the ranks in relative order (root → root+1 → …); every rank forwards segment i while segment
 * i+1 is still arriving, so a broadcast costs about (segments + P - 2) segment times instead of
 * log2(P) whole-buffer times once the network, not the CPU, is the limit.
 *
 * On our 2-core machines the CPU is the limit: the chain must copy segments into one buffer,
 * while the tree hands ZeroMQ's received frame on untouched. Measured (median of the slowest
 * rank): 16 MiB at 4 ranks 19 ms by tree, 22 ms by chain, 35 ms by van de Geijn's
 * scatter + ring allgather; at 8 ranks 50 ms by tree, 56 ms by chain. So the tree is the default
 * and the chain is kept for wider networks (CommunicatorOptions.largeBcast = 'chain').
 */
export const PIPELINE_SEGMENT_BYTES = 1024 * 1024;

async function largeBcast(
  comm: Communicator,
  first: { data: unknown; payload: Uint8Array[] } | undefined,
  value: Uint8Array | undefined,
  root: number,
  tag: number,
  d: Deadline,
): Promise<Buffer> {
  const size = comm.size;
  const rel = relative(comm.rank, root, size);
  const next = rel + 1 < size ? absolute(rel + 1, root, size) : undefined;
  const prev = absolute(rel - 1 + size, root, size);
  if (value) {
    const total = value.length;
    const header: BcastHeader = { mode: 'large', total };
    const sends: Promise<void>[] = [];
    for (let off = 0; off < total; off += PIPELINE_SEGMENT_BYTES) {
      sends.push(
        comm.sendRaw(next!, tag, header, [
          value.subarray(off, Math.min(total, off + PIPELINE_SEGMENT_BYTES)),
        ]),
      );
    }
    await Promise.all(sends);
    return toBuffer(value);
  }
  const header = first!.data as Extract<BcastHeader, { mode: 'large' }>;
  const result = Buffer.allocUnsafe(header.total);
  const sends: Promise<void>[] = [];
  let msg: { payload: Uint8Array[] } = first!;
  for (let off = 0; ;) {
    const segment = msg.payload[0];
    if (!segment || off + segment.length > header.total)
      throw new CommError('COMM_BAD_MESSAGE', 'bcast segment overruns the buffer');
    if (next !== undefined) sends.push(comm.sendRaw(next, tag, header, [segment]));
    result.set(segment, off);
    off += segment.length;
    if (off >= header.total) break;
    msg = await recvFrom(comm, prev, tag, d);
  }
  await Promise.all(sends);
  return result;
}

export async function scatter<T>(
  comm: Communicator,
  values: readonly T[] | undefined,
  root: number,
  options: WaitOptions,
): Promise<T> {
  checkRoot(comm, root);
  const tag = comm.nextCollectiveTag();
  const d = deadlineOf(comm, options);
  const subtree = binomialSubtree(comm.rank, comm.size, root);
  const { parent, children } = binomialTree(comm.rank, comm.size, root);
  let frames: Uint8Array[]; // one per member of my subtree, in subtree order
  if (parent === null) {
    if (!values || values.length !== comm.size) {
      throw new CommError(
        'COMM_BAD_ARGUMENT',
        `scatter root needs ${comm.size} values, got ${values?.length ?? 0}`,
      );
    }
    frames = subtree.map((r) => encode(values[r]));
  } else {
    frames = (await recvFrom(comm, parent, tag, d)).payload;
  }
  const position = new Map(subtree.map((r, i) => [r, i]));
  await Promise.all(
    children.map((c) => {
      const part = binomialSubtree(c, comm.size, root).map((r) => frames[position.get(r)!]!);
      return comm.sendRaw(c, tag, null, part);
    }),
  );
  return decode<T>(frames[0]);
}

/** Gathers one frame per rank to root; returns them in rank order at root, undefined elsewhere. */
async function gatherFrames(
  comm: Communicator,
  frame: Uint8Array,
  root: number,
  tag: number,
  d: Deadline,
): Promise<Uint8Array[] | undefined> {
  const subtree = binomialSubtree(comm.rank, comm.size, root);
  const { parent, children } = binomialTree(comm.rank, comm.size, root);
  const position = new Map(subtree.map((r, i) => [r, i]));
  const frames: Uint8Array[] = new Array<Uint8Array>(subtree.length);
  frames[0] = frame;
  const received = await Promise.all(children.map((c) => recvFrom(comm, c, tag, d)));
  children.forEach((c, i) => {
    const part = received[i]!.payload;
    binomialSubtree(c, comm.size, root).forEach((r, j) => {
      const f = part[j];
      if (!f)
        throw new CommError(
          'COMM_BAD_MESSAGE',
          `gather from rank ${c} is missing rank ${r}'s value`,
        );
      frames[position.get(r)!] = f;
    });
  });
  if (parent !== null) {
    await comm.sendRaw(parent, tag, null, frames);
    return undefined;
  }
  const byRank = new Array<Uint8Array>(comm.size);
  subtree.forEach((r, i) => (byRank[r] = frames[i]!));
  return byRank;
}

export async function gather<T>(
  comm: Communicator,
  value: T,
  root: number,
  options: WaitOptions,
): Promise<T[] | undefined> {
  checkRoot(comm, root);
  const tag = comm.nextCollectiveTag();
  const frames = await gatherFrames(comm, encode(value), root, tag, deadlineOf(comm, options));
  return frames?.map((f) => decode<T>(f));
}

export async function allgather<T>(
  comm: Communicator,
  value: T,
  options: WaitOptions,
): Promise<T[]> {
  const tag = comm.nextCollectiveTag();
  const d = deadlineOf(comm, options);
  const gathered = await gatherFrames(comm, encode(value), 0, tag, d);
  // Forward the gathered frames down the same tree untouched: each value is decoded once per rank.
  const { parent, children } = binomialTree(comm.rank, comm.size, 0);
  const frames = parent === null ? gathered! : (await recvFrom(comm, parent, tag, d)).payload;
  await Promise.all(children.map((c) => comm.sendRaw(c, tag, null, frames)));
  return frames.map((f) => decode<T>(f));
}

function combiner<T>(op: ReduceOp<T>): (a: T, b: T) => T {
  if (typeof op === 'function') return op;
  const numeric = {
    sum: (a: number, b: number) => a + b,
    max: (a: number, b: number) => Math.max(a, b),
    min: (a: number, b: number) => Math.min(a, b),
  }[op];
  return (a: T, b: T) => {
    if (typeof a !== 'number' || typeof b !== 'number') {
      throw new CommError('COMM_BAD_ARGUMENT', `reduce op '${op}' needs numbers`);
    }
    return numeric(a, b) as T;
  };
}

export async function reduce<T>(
  comm: Communicator,
  value: T,
  op: ReduceOp<T>,
  root: number,
  options: WaitOptions,
): Promise<T | undefined> {
  checkRoot(comm, root);
  const tag = comm.nextCollectiveTag();
  const d = deadlineOf(comm, options);
  const combine = combiner(op);
  const { parent, children } = binomialTree(comm.rank, comm.size, root);
  // Combine in increasing relative rank so that an associative but non-commutative op sees the
  // values in rank order starting at the root.
  const ordered = [...children].sort(
    (a, b) => relative(a, root, comm.size) - relative(b, root, comm.size),
  );
  const partials = await Promise.all(ordered.map((c) => recvFrom(comm, c, tag, d)));
  let acc = value;
  for (const p of partials) acc = combine(acc, decode<T>(p.payload[0]));
  if (parent === null) return acc;
  await comm.sendRaw(parent, tag, null, [encode(acc)]);
  return undefined;
}

export async function allreduce<T>(
  comm: Communicator,
  value: T,
  op: ReduceOp<T>,
  options: WaitOptions,
): Promise<T> {
  const d = deadlineOf(comm, options);
  const result = await reduce(comm, value, op, 0, {
    timeoutMs: Math.max(0, d.atMs - comm.clock.now()),
    signal: d.signal,
  });
  return bcast(comm, result, 0, remaining(comm, d));
}
