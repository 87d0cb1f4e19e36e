/**
 * The Communicator: point-to-point messages matched by (source, tag), over any Transport, plus
 * the collectives (collectives.ts). Ranks here are indices into the communicator's group of world
 * ranks, as in MPI; `sub()` makes a communicator over a subset (how the store shrinks the world
 * to the live ranks after a failure, in the spirit of ULFM's shrink).
 *
 * Wire format of one message: frame 0 is msgpack([contextId, tag, data]); frames 1.. are raw
 * payload buffers that travel untouched (bulk data is never copied into the envelope).
 *
 * Limits: every receive has a deadline (the communicator's default, or the caller's) and may be
 * aborted; messages that arrive before anyone receives them wait in an unexpected-message queue of
 * at most `maxUnexpected` entries per communicator — past that, new messages are dropped and
 * counted in stats().droppedUnexpected, since a receiver cannot push back on the network.
 */
import { pack, unpack } from 'msgpackr';
import type { Clock } from '../runtime/clock.js';
import { SystemClock } from '../runtime/clock.js';
import { CommError } from './errors.js';
import type { Frames, PeerEvent, Transport } from './transport.js';
import * as coll from './collectives.js';

export const ANY_SOURCE = -1;
/** Matches any user tag (tags ≥ 0); internal collective tags are negative and never match it. */
export const ANY_TAG = -1;

export interface WaitOptions {
  /**
   * Deadline for this call; defaults to the communicator's defaultTimeoutMs. Infinity is allowed
   * only together with a signal (a loop that waits for work until it is told to stop).
   */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface Received<T = unknown> {
  /** Rank within this communicator. */
  source: number;
  tag: number;
  data: T;
  payload: Uint8Array[];
}

export interface CommunicatorOptions {
  clock?: Clock;
  defaultTimeoutMs?: number;
  maxUnexpected?: number;
  /** Algorithm for Uint8Array broadcasts of LARGE_BCAST_BYTES or more: see collectives.ts. */
  largeBcast?: 'tree' | 'chain';
}

interface Incoming {
  source: number; // world rank
  tag: number;
  data: unknown;
  payload: Uint8Array[];
}

interface PendingRecv {
  source: number; // world rank or ANY_SOURCE
  tag: number;
  resolve: (m: Incoming) => void;
  reject: (e: Error) => void;
}

/**
 * Demultiplexes one transport's messages to the communicators that share it, by context id.
 * Messages for a context nobody has opened yet are held (bounded), because the members of a new
 * sub-communicator create it at slightly different moments.
 */
class Router {
  readonly contexts = new Map<string, Communicator>();
  readonly orphans = new Map<string, Incoming[]>();
  readonly failed = new Set<number>();
  readonly peerHandlers: Array<(e: PeerEvent) => void> = [];
  droppedUnexpected = 0;
  badMessages = 0;

  constructor(
    readonly transport: Transport,
    readonly maxUnexpected: number,
  ) {
    transport.onMessage((source, frames) => this.dispatch(source, frames));
    transport.onPeerEvent((e) => {
      for (const h of this.peerHandlers) h(e);
    });
  }

  private dispatch(source: number, frames: Frames): void {
    let ctx: string, tag: number, data: unknown;
    try {
      const head = frames[0];
      if (!head) throw new Error('no envelope');
      [ctx, tag, data] = unpack(head) as [string, number, unknown];
      if (typeof ctx !== 'string' || typeof tag !== 'number') throw new Error('bad envelope');
    } catch {
      this.badMessages++;
      return;
    }
    const msg: Incoming = { source, tag, data, payload: frames.slice(1) };
    const comm = this.contexts.get(ctx);
    if (comm) {
      comm.deliver(msg);
      return;
    }
    const held = this.orphans.get(ctx) ?? [];
    if (held.length >= this.maxUnexpected) {
      this.droppedUnexpected++;
      return;
    }
    held.push(msg);
    this.orphans.set(ctx, held);
  }
}

export class Communicator {
  /** This process's index in the group. */
  readonly rank: number;
  readonly clock: Clock;
  readonly defaultTimeoutMs: number;
  readonly largeBcast: 'tree' | 'chain';
  private readonly router: Router;
  private readonly unexpected: Incoming[] = [];
  private readonly pending: PendingRecv[] = [];
  private readonly worldToLocal = new Map<number, number>();
  private collectiveSeq = 0;
  private subSeq = 0;
  private closed = false;

  /**
   * Creates the world communicator over `transport`, whose group is `group` (world ranks; by
   * default 0..size-1 from transport.peers()).
   */
  static world(
    transport: Transport,
    size: number,
    options: CommunicatorOptions = {},
  ): Communicator {
    const router = new Router(transport, options.maxUnexpected ?? 100_000);
    return new Communicator(router, 'w', [...Array(size).keys()], options);
  }

  private constructor(
    router: Router,
    readonly contextId: string,
    /** World ranks of the members, in local rank order. */
    readonly group: readonly number[],
    options: CommunicatorOptions,
  ) {
    this.router = router;
    this.clock = options.clock ?? new SystemClock();
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 30_000;
    this.largeBcast = options.largeBcast ?? 'tree';
    group.forEach((w, i) => this.worldToLocal.set(w, i));
    const me = this.worldToLocal.get(router.transport.rank);
    if (me === undefined) {
      throw new CommError(
        'COMM_BAD_ARGUMENT',
        `rank ${router.transport.rank} is not in group [${group.join(',')}]`,
      );
    }
    this.rank = me;
    router.contexts.set(contextId, this);
    for (const msg of router.orphans.get(contextId) ?? []) this.deliver(msg);
    router.orphans.delete(contextId);
  }

  /** Members of this communicator. */
  get size(): number {
    return this.group.length;
  }

  /** This process's world rank. */
  get worldRank(): number {
    return this.router.transport.rank;
  }

  /** The world rank of local rank `r`. */
  worldRankOf(r: number): number {
    const w = this.group[r];
    if (w === undefined)
      throw new CommError(
        'COMM_BAD_ARGUMENT',
        `rank ${r} is outside a communicator of size ${this.size}`,
        { ranks: [r] },
      );
    return w;
  }

  /**
   * A communicator over the members of this one whose world ranks are listed (in that order),
   * with its own message context. Every listed member must call sub() with the same list and, if
   * no `name` is given, in the same order relative to its other sub() calls (the SPMD rule
   * MPI_Comm_create follows). A name must be unique among the live sub-communicators.
   */
  sub(
    worldRanks: readonly number[],
    options: CommunicatorOptions & { name?: string } = {},
  ): Communicator {
    // A caller-given name makes the context independent of how many sub() calls each member made
    // before (a rank that was away misses some); without one, members must call in lockstep.
    const id =
      options.name !== undefined
        ? `${this.contextId}.${options.name}`
        : `${this.contextId}.${this.subSeq++}:${worldRanks.join(',')}`;
    return new Communicator(this.router, id, [...worldRanks], {
      clock: this.clock,
      defaultTimeoutMs: this.defaultTimeoutMs,
      largeBcast: this.largeBcast,
      ...options,
    });
  }

  /**
   * Admits world ranks that joined after the launch into this (world) communicator: ranks are
   * numbered on, so the group stays 0..size-1 and local and world numbers stay equal.
   */
  admit(worldRank: number): void {
    if (this.worldToLocal.has(worldRank)) return;
    if (worldRank !== this.group.length) {
      throw new CommError(
        'COMM_BAD_ARGUMENT',
        `rank ${worldRank} cannot join a group of ${this.group.length}: ranks join in order`,
        { ranks: [worldRank] },
      );
    }
    (this.group as number[]).push(worldRank);
    this.worldToLocal.set(worldRank, this.group.length - 1);
  }

  /** Fails every wait on `worldRank` now and later with COMM_PEER_FAILED (ULFM's failure notice). */
  markFailed(worldRank: number): void {
    this.router.failed.add(worldRank);
    for (const comm of this.router.contexts.values()) comm.failPending(worldRank);
  }

  /** Forgets a failure notice (a restarted rank on the same number). */
  markAlive(worldRank: number): void {
    this.router.failed.delete(worldRank);
  }

  isFailed(worldRank: number): boolean {
    return this.router.failed.has(worldRank);
  }

  onPeerEvent(handler: (e: PeerEvent) => void): void {
    this.router.peerHandlers.push(handler);
  }

  stats(): { unexpected: number; droppedUnexpected: number; badMessages: number } {
    return {
      unexpected: this.unexpected.length,
      droppedUnexpected: this.router.droppedUnexpected,
      badMessages: this.router.badMessages,
    };
  }

  /**
   * Sends `data` (any msgpack value) and optional raw payload frames to local rank `dest`.
   * Resolves when queued on the wire. Throws COMM_BAD_ARGUMENT, COMM_QUEUE_FULL, COMM_TIMEOUT,
   * COMM_CLOSED, COMM_PEER_FAILED (dest is known dead).
   */
  send(
    dest: number,
    tag: number,
    data: unknown,
    payload: readonly Uint8Array[] = [],
  ): Promise<void> {
    if (!Number.isInteger(tag) || tag < 0)
      return Promise.reject(
        new CommError('COMM_BAD_ARGUMENT', `tag ${tag} must be an integer ≥ 0`),
      );
    return this.sendRaw(dest, tag, data, payload);
  }

  /** Receives the first message from local rank `source` (or ANY_SOURCE) with `tag` (or ANY_TAG). */
  async recv<T = unknown>(
    source: number,
    tag: number,
    options: WaitOptions = {},
  ): Promise<Received<T>> {
    const msg = await this.recvRaw(
      source === ANY_SOURCE ? ANY_SOURCE : this.worldRankOf(source),
      tag,
      options,
    );
    return {
      source: this.localOf(msg.source),
      tag: msg.tag,
      data: msg.data as T,
      payload: msg.payload,
    };
  }

  barrier(options: WaitOptions = {}): Promise<void> {
    return coll.barrier(this, options);
  }

  /** Root's `value` to every rank. Large Uint8Array values use scatter + ring allgather. */
  bcast<T>(value: T | undefined, root: number, options: WaitOptions = {}): Promise<T> {
    return coll.bcast(this, value, root, options);
  }

  /** Root's values[i] to rank i (values may differ in size per rank: this is also scatterv). */
  scatter<T>(
    values: readonly T[] | undefined,
    root: number,
    options: WaitOptions = {},
  ): Promise<T> {
    return coll.scatter(this, values, root, options);
  }

  /** Every rank's value to root, in rank order (any size per rank: this is also gatherv); undefined elsewhere. */
  gather<T>(value: T, root: number, options: WaitOptions = {}): Promise<T[] | undefined> {
    return coll.gather(this, value, root, options);
  }

  allgather<T>(value: T, options: WaitOptions = {}): Promise<T[]> {
    return coll.allgather(this, value, options);
  }

  /** Combines every rank's value with `op` (associative) at root; undefined elsewhere. */
  reduce<T>(
    value: T,
    op: coll.ReduceOp<T>,
    root: number,
    options: WaitOptions = {},
  ): Promise<T | undefined> {
    return coll.reduce(this, value, op, root, options);
  }

  allreduce<T>(value: T, op: coll.ReduceOp<T>, options: WaitOptions = {}): Promise<T> {
    return coll.allreduce(this, value, op, options);
  }

  /** Stops this communicator: its waits reject COMM_CLOSED. The transport stays open. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.router.contexts.delete(this.contextId);
    for (const p of this.pending.splice(0))
      p.reject(new CommError('COMM_CLOSED', 'communicator is closed'));
  }

  // ---- internals used by collectives.ts -------------------------------------------------------

  /** The tag of the next collective; every member draws the same sequence (SPMD order). */
  nextCollectiveTag(): number {
    return -2 - this.collectiveSeq++;
  }

  sendRaw(
    dest: number,
    tag: number,
    data: unknown,
    payload: readonly Uint8Array[] = [],
  ): Promise<void> {
    if (this.closed) return Promise.reject(new CommError('COMM_CLOSED', 'communicator is closed'));
    const world = this.group[dest];
    if (world === undefined) {
      return Promise.reject(
        new CommError(
          'COMM_BAD_ARGUMENT',
          `rank ${dest} is outside a communicator of size ${this.size}`,
          { ranks: [dest] },
        ),
      );
    }
    if (this.router.failed.has(world)) return Promise.reject(peerFailed(world, dest));
    return this.router.transport.send(world, [pack([this.contextId, tag, data]), ...payload]);
  }

  /** Waits for a message from world rank `source` (or ANY_SOURCE) with `tag`. */
  recvRaw(source: number, tag: number, options: WaitOptions): Promise<Incoming> {
    if (this.closed) return Promise.reject(new CommError('COMM_CLOSED', 'communicator is closed'));
    const idx = this.unexpected.findIndex((m) => matches(m, source, tag));
    if (idx >= 0) {
      const [msg] = this.unexpected.splice(idx, 1);
      return Promise.resolve(msg!);
    }
    if (source !== ANY_SOURCE && this.router.failed.has(source)) {
      return Promise.reject(peerFailed(source, this.worldToLocal.get(source)));
    }
    return new Promise<Incoming>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
      const signal = options.signal;
      const entry: PendingRecv = {
        source,
        tag,
        resolve: (m) => {
          cleanup();
          resolve(m);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      };
      const onAbort = (): void => {
        this.removePending(entry);
        entry.reject(
          new CommError(
            'COMM_ABORTED',
            'receive aborted',
            { ranks: source === ANY_SOURCE ? [] : [source] },
            { cause: signal?.reason },
          ),
        );
      };
      // An infinite wait is allowed only with an AbortSignal: nothing waits forever unbidden.
      if (timeoutMs === Infinity && !signal) {
        reject(new CommError('COMM_BAD_ARGUMENT', 'an unbounded receive needs an AbortSignal'));
        return;
      }
      const cancelTimer =
        timeoutMs === Infinity
          ? () => {}
          : this.clock.setTimer(timeoutMs, () => {
              this.removePending(entry);
              const from =
                source === ANY_SOURCE
                  ? 'any rank'
                  : `rank ${this.worldToLocal.get(source)} (world rank ${source})`;
              entry.reject(
                new CommError(
                  'COMM_TIMEOUT',
                  `no message from ${from} with tag ${tag} within ${timeoutMs} ms`,
                  { ranks: source === ANY_SOURCE ? [] : [source], tag, timeoutMs },
                ),
              );
            });
      const cleanup = (): void => {
        cancelTimer();
        signal?.removeEventListener('abort', onAbort);
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.push(entry);
    });
  }

  /** Local rank of a world rank (for messages from members). */
  localOf(world: number): number {
    return this.worldToLocal.get(world) ?? -1;
  }

  deliver(msg: Incoming): void {
    if (this.closed) return;
    const idx = this.pending.findIndex((p) => matches(msg, p.source, p.tag));
    if (idx >= 0) {
      const [p] = this.pending.splice(idx, 1);
      p!.resolve(msg);
      return;
    }
    if (this.unexpected.length >= this.router.maxUnexpected) {
      this.router.droppedUnexpected++;
      return;
    }
    this.unexpected.push(msg);
  }

  failPending(world: number): void {
    for (const p of [...this.pending]) {
      if (p.source === world) {
        this.removePending(p);
        p.reject(peerFailed(world, this.worldToLocal.get(world)));
      }
    }
  }

  private removePending(entry: PendingRecv): void {
    const i = this.pending.indexOf(entry);
    if (i >= 0) this.pending.splice(i, 1);
  }
}

function matches(m: Incoming, source: number, tag: number): boolean {
  return (
    (source === ANY_SOURCE || m.source === source) && (tag === ANY_TAG ? m.tag >= 0 : m.tag === tag)
  );
}

function peerFailed(world: number, local: number | undefined): CommError {
  return new CommError(
    'COMM_PEER_FAILED',
    `rank ${local ?? world} (world rank ${world}) has failed`,
    { ranks: [world] },
  );
}
