/**
 * The in-memory transport: N ranks in one process, with fault injection. Simulation tests run a
 * whole world of ranks on it under a ManualClock and a SeededRandom, so every crash, partition,
 * drop and delay is repeatable from one seed. It passes the same contract suite as the ZeroMQ
 * transport (test/unit/transport-contract.ts).
 *
 * Delivery model (what a simulation can rely on):
 * - Without an injected delay, a message is delivered in a microtask (queueMicrotask), never
 *   inside `send`. Microtasks rather than setImmediate so that a simulation driven by a
 *   ManualClock progresses by awaiting promises alone: `await flush()`-style helpers and plain
 *   `await`s let queued messages through without any real time passing. The price: two ranks
 *   that answer each other forever in their handlers starve the event loop, as any microtask
 *   loop does.
 * - With a delay (`setDelay`), each message gets its own delay drawn from the injected Random and
 *   becomes ready when the injected Clock's timer fires; under a ManualClock the handler runs
 *   inside `advance()`, at the message's due time (clock.now() reads the due time).
 * - Per-pair FIFO always holds: a message is handed over only once it and every earlier message
 *   on the same (source, destination) pair are ready, so a short delay never overtakes a long one.
 * - Frames are passed by reference, not copied: a sender must not mutate a buffer after `send`
 *   (the ZeroMQ transport copies on the wire, so code that obeys this rule behaves the same on
 *   both). The outer frame array is copied, so reusing the array itself is safe.
 * - Messages a rank sends to itself never cross the network: they are never dropped, delayed or
 *   partitioned, and always arrive in a microtask.
 *
 * Limits: each (source, destination) pair holds at most `maxQueuedPerPeer` undelivered messages
 * (in flight, or arrived but held because the receiver has not set `onMessage` yet). Past that,
 * `send` rejects at once with COMM_QUEUE_FULL: the in-memory transport never blocks, so the
 * "full for longer than sendTimeoutMs" of the interface is zero here. Peer events held for a
 * transport without an event handler are capped at MAX_HELD_PEER_EVENTS (oldest dropped first).
 *
 * Peer events: a live transport receives 'connected' for a peer when the link between them comes
 * up (the peer is created or restarted, a partition heals; a new transport gets one for every peer
 * it can reach) and 'disconnected' when it goes down (the peer crashes or closes, a partition cuts
 * it off). Events are delivered in a microtask, in the order the changes happened; events that
 * arrive before `onPeerEvent` is set are held.
 *
 * A handler that throws is a programmer error: the exception is rethrown from a fresh microtask
 * (an uncaught exception, which crashes loudly) and delivery of the other messages continues.
 */
import { SystemClock, type Clock } from '../runtime/clock.js';
import { CryptoRandom, type Random } from '../runtime/random.js';
import { CommError } from './errors.js';
import type { Frames, PeerEvent, Transport } from './transport.js';

export interface MemoryNetworkOptions {
  /** Drives injected delays. Default: SystemClock. */
  clock?: Clock;
  /** Decides drops and delays. Default: CryptoRandom; simulations inject a SeededRandom. */
  random?: Random;
  /** Bound on undelivered messages per (source, destination) pair. Default 10,000. */
  maxQueuedPerPeer?: number;
}

export interface MemoryNetworkStats {
  /** Messages accepted by `send` (including those later dropped); rejected sends do not count. */
  sent: number;
  /** Messages handed to a receiver's handler. */
  delivered: number;
  /** Messages lost to an injected drop, a partition, a crash, or a closed or dead receiver. */
  dropped: number;
  /** Messages neither delivered nor dropped yet. Always sent = delivered + dropped + pending. */
  pending: number;
}

export const DEFAULT_MAX_QUEUED_PER_PEER = 10_000;
/** Bound on peer events held for a transport that has no event handler yet. */
export const MAX_HELD_PEER_EVENTS = 10_000;

/**
 * A simulated network of ranks in one process. Ranks may be created at any time (ranks join the
 * store later). All methods that take a rank throw CommError COMM_BAD_ARGUMENT for a rank that
 * is not a non-negative integer or, where the method needs an existing rank, one never created.
 */
export class MemoryNetwork {
  private readonly fabric: Fabric;

  constructor(options: MemoryNetworkOptions = {}) {
    const maxQueuedPerPeer = options.maxQueuedPerPeer ?? DEFAULT_MAX_QUEUED_PER_PEER;
    if (!Number.isSafeInteger(maxQueuedPerPeer) || maxQueuedPerPeer < 1) {
      throw new CommError('COMM_BAD_ARGUMENT', `maxQueuedPerPeer must be a positive integer`, {
        maxQueuedPerPeer,
      });
    }
    this.fabric = new Fabric(
      options.clock ?? new SystemClock(),
      options.random ?? new CryptoRandom(),
      maxQueuedPerPeer,
    );
  }

  /**
   * Creates the transport of a new rank. Every live peer that can reach it gets 'connected' for
   * it, and it gets 'connected' for each of them. Throws COMM_BAD_ARGUMENT for an invalid rank
   * and COMM_WIREUP if the rank already exists (use `restart` for a crashed or closed rank).
   */
  createTransport(rank: number): Transport {
    return this.fabric.create(rank);
  }

  /**
   * Kills a rank abruptly, like kill -9: its transport stops delivering, its sends reject
   * COMM_CLOSED, messages in flight from and to it are dropped (messages it already handed to a
   * peer stay with that peer), and every live peer that could reach it gets 'disconnected'.
   * Later sends to the rank are silently dropped, like writes to a TCP peer that vanished.
   * Idempotent. Throws COMM_BAD_ARGUMENT for a rank never created.
   */
  crash(rank: number): void {
    this.fabric.crash(rank);
  }

  /**
   * Starts a new incarnation of a crashed or closed rank and returns its transport; peers get
   * 'connected'. Messages still lingering from a closed incarnation are dropped first. The old
   * transport object stays dead. Throws COMM_BAD_ARGUMENT if the rank was never created or is
   * still live.
   */
  restart(rank: number): Transport {
    return this.fabric.restart(rank);
  }

  /**
   * Cuts every link between a rank of `groupA` and a rank of `groupB`: messages in flight across
   * are dropped, later ones are dropped silently at send, and both sides get 'disconnected' for
   * the other side. Ranks not created yet may be named; the cut applies once they join.
   * Partitions accumulate until `heal`. Throws COMM_BAD_ARGUMENT for an invalid rank or a rank
   * in both groups.
   */
  partition(groupA: readonly number[], groupB: readonly number[]): void {
    this.fabric.partition(groupA, groupB);
  }

  /** Removes every partition; live peers that can reach each other again get 'connected'. */
  heal(): void {
    this.fabric.heal();
  }

  /**
   * Stops a rank like SIGSTOP: nothing it sends leaves and nothing sent to it arrives, but its
   * connections stay up (no peer events), so only silence gives it away. Messages wait, in order,
   * until `resume`. Throws COMM_BAD_ARGUMENT for a rank never created.
   */
  stall(rank: number): void {
    this.fabric.stall(rank);
  }

  /** Like SIGCONT: delivers what waited, in order, and lets the rank talk again. */
  resume(rank: number): void {
    this.fabric.resume(rank);
  }

  /**
   * From now on, drops each message between distinct ranks with probability `p`, decided by the
   * injected Random at send time (one draw per message, only while p > 0). `send` still
   * resolves. Throws COMM_BAD_ARGUMENT unless 0 <= p <= 1.
   */
  setDropRate(p: number): void {
    this.fabric.setDropRate(p);
  }

  /**
   * From now on, delays each message between distinct ranks by a whole number of milliseconds
   * drawn uniformly from [minMs, maxMs] with the injected Random (no draw when minMs = maxMs),
   * timed by the injected Clock. Per-pair FIFO still holds. `setDelay(0, 0)` restores delivery
   * in a microtask. Throws COMM_BAD_ARGUMENT unless both are integers with 0 <= minMs <= maxMs.
   */
  setDelay(minMs: number, maxMs: number): void {
    this.fabric.setDelay(minMs, maxMs);
  }

  /** Message counters since the network was created. */
  stats(): MemoryNetworkStats {
    return this.fabric.stats();
  }
}

/** One message between send and delivery. */
interface InFlight {
  readonly source: number;
  readonly dest: number;
  readonly frames: Frames;
  /** Its delay has elapsed; it is handed over once every earlier message on its pair is too. */
  ready: boolean;
  /** Dropped while in flight; a timer or microtask that still fires must ignore it. */
  dropped: boolean;
  cancelTimer: (() => void) | undefined;
}

type EndpointState = 'live' | 'crashed' | 'closed';

/** The shared state of one MemoryNetwork; its transports call into it. */
class Fabric {
  /** The current incarnation of each rank ever created. */
  private readonly endpoints = new Map<number, MemoryTransport>();
  private sortedRanks: number[] = [];
  /** In-flight messages per pair, keyed by source then destination, oldest first. */
  private readonly links = new Map<number, Map<number, InFlight[]>>();
  /** Partitioned pairs, keyed by pairKey(lower rank, higher rank). */
  private readonly blocked = new Set<string>();
  /** Stopped ranks (SIGSTOP): their messages wait, in order, and no peer event fires. */
  private readonly stalled = new Set<number>();
  private dropRate = 0;
  private delayMinMs = 0;
  private delayMaxMs = 0;
  private sentCount = 0;
  private droppedCount = 0;
  deliveredCount = 0;

  constructor(
    private readonly clock: Clock,
    private readonly random: Random,
    private readonly maxQueuedPerPeer: number,
  ) {}

  create(rank: number): MemoryTransport {
    checkRank(rank);
    if (this.endpoints.has(rank)) {
      throw new CommError('COMM_WIREUP', `rank ${rank} already exists`, { ranks: [rank] });
    }
    const endpoint = new MemoryTransport(rank, this);
    this.endpoints.set(rank, endpoint);
    this.sortedRanks = [...this.endpoints.keys()].sort((a, b) => a - b);
    this.updatePeerViews();
    return endpoint;
  }

  restart(rank: number): MemoryTransport {
    const old = this.existing(rank);
    if (old.state === 'live') {
      throw new CommError('COMM_BAD_ARGUMENT', `rank ${rank} is live; crash or close it first`, {
        ranks: [rank],
      });
    }
    // Whatever a closed incarnation left on the wire dies with it, so that peers see a clean
    // 'disconnected' then 'connected' for the new incarnation.
    this.dropLinksFrom(rank);
    this.updatePeerViews();
    const endpoint = new MemoryTransport(rank, this);
    this.endpoints.set(rank, endpoint);
    this.updatePeerViews();
    return endpoint;
  }

  crash(rank: number): void {
    const endpoint = this.existing(rank);
    if (endpoint.state === 'crashed') return;
    endpoint.state = 'crashed';
    this.dropLinksFrom(rank);
    this.dropLinksTo(rank);
    this.droppedCount += endpoint.discard();
    this.updatePeerViews();
  }

  /**
   * A graceful close: messages to the rank are dropped, but messages it already sent still arrive
   * (like a socket with linger), and peers see 'disconnected' only after the last of them. Then a
   * final barrier followed by close() cannot lose the barrier's last messages.
   */
  close(endpoint: MemoryTransport): void {
    if (endpoint.state !== 'live' || this.endpoints.get(endpoint.rank) !== endpoint) return;
    endpoint.state = 'closed';
    this.dropLinksTo(endpoint.rank);
    this.droppedCount += endpoint.discard();
    this.updatePeerViews();
  }

  partition(groupA: readonly number[], groupB: readonly number[]): void {
    for (const rank of [...groupA, ...groupB]) checkRank(rank);
    const inB = new Set(groupB);
    const both = groupA.filter((rank) => inB.has(rank));
    if (both.length > 0) {
      throw new CommError('COMM_BAD_ARGUMENT', `ranks ${both.join(', ')} are in both groups`, {
        ranks: both,
      });
    }
    for (const a of groupA) {
      for (const b of groupB) {
        this.blocked.add(pairKey(a, b));
        this.dropLink(a, b);
        this.dropLink(b, a);
      }
    }
    this.updatePeerViews();
  }

  heal(): void {
    this.blocked.clear();
    this.updatePeerViews();
  }

  setDropRate(p: number): void {
    if (!(p >= 0 && p <= 1)) {
      throw new CommError('COMM_BAD_ARGUMENT', `drop rate must be in [0, 1], got ${p}`, { p });
    }
    this.dropRate = p;
  }

  setDelay(minMs: number, maxMs: number): void {
    if (
      !Number.isSafeInteger(minMs) ||
      !Number.isSafeInteger(maxMs) ||
      minMs < 0 ||
      maxMs < minMs
    ) {
      throw new CommError('COMM_BAD_ARGUMENT', `bad delay range [${minMs}, ${maxMs}] ms`, {
        minMs,
        maxMs,
      });
    }
    this.delayMinMs = minMs;
    this.delayMaxMs = maxMs;
  }

  stats(): MemoryNetworkStats {
    let pending = 0;
    for (const byDest of this.links.values()) {
      for (const queue of byDest.values()) pending += queue.length;
    }
    for (const endpoint of this.endpoints.values()) pending += endpoint.heldMessages();
    return {
      sent: this.sentCount,
      delivered: this.deliveredCount,
      dropped: this.droppedCount,
      pending,
    };
  }

  peers(): number[] {
    return [...this.sortedRanks];
  }

  send(from: MemoryTransport, dest: number, frames: Frames): void {
    if (from.state !== 'live') {
      throw new CommError('COMM_CLOSED', `rank ${from.rank}: transport is ${from.state}`, {
        ranks: [from.rank],
      });
    }
    const target = Number.isInteger(dest) ? this.endpoints.get(dest) : undefined;
    if (target === undefined) {
      throw new CommError('COMM_BAD_ARGUMENT', `rank ${from.rank}: unknown rank ${dest}`, { dest });
    }
    if (!Array.isArray(frames) || !frames.every((frame) => frame instanceof Uint8Array)) {
      throw new CommError('COMM_BAD_ARGUMENT', `frames must be an array of Uint8Array`, { dest });
    }
    const toSelf = dest === from.rank;
    if (!toSelf && (target.state !== 'live' || this.blocked.has(pairKey(from.rank, dest)))) {
      // A dead or unreachable peer swallows the message without a word, as TCP would.
      this.sentCount++;
      this.droppedCount++;
      return;
    }
    const queue = this.link(from.rank, dest);
    if (queue.length + target.heldFrom(from.rank) >= this.maxQueuedPerPeer) {
      throw new CommError(
        'COMM_QUEUE_FULL',
        `rank ${from.rank}: ${this.maxQueuedPerPeer} messages to rank ${dest} are undelivered`,
        { ranks: [dest], limit: this.maxQueuedPerPeer },
      );
    }
    this.sentCount++;
    // Draws happen only while a fault is configured, so enabling one fault does not shift the
    // random sequence another fault sees.
    if (!toSelf && this.dropRate > 0 && this.random.next() < this.dropRate) {
      this.droppedCount++;
      return;
    }
    const message: InFlight = {
      source: from.rank,
      dest,
      frames: [...frames],
      ready: false,
      dropped: false,
      cancelTimer: undefined,
    };
    queue.push(message);
    const delayMs = toSelf ? 0 : this.drawDelayMs();
    if (delayMs > 0) {
      message.cancelTimer = this.clock.setTimer(delayMs, () => this.markReady(message));
    } else {
      queueMicrotask(() => this.markReady(message));
    }
  }

  private drawDelayMs(): number {
    if (this.delayMaxMs === this.delayMinMs) return this.delayMinMs;
    return this.delayMinMs + this.random.int(this.delayMaxMs - this.delayMinMs + 1);
  }

  private markReady(message: InFlight): void {
    if (message.dropped) return;
    message.ready = true;
    message.cancelTimer = undefined;
    this.handOver(message.source, message.dest);
  }

  /**
   * Hands over the ready prefix of a pair's queue: this is what keeps per-pair FIFO order when
   * delays differ. Nothing moves while either end is stalled.
   */
  private handOver(source: number, dest: number): void {
    if (this.stalled.has(source) || this.stalled.has(dest)) return;
    const queue = this.link(source, dest);
    while (queue[0]?.ready === true) {
      const head = queue.shift()!;
      const target = this.endpoints.get(head.dest);
      // Messages to a rank are dropped when it crashes or closes, so the target is live here.
      if (target?.state !== 'live') throw new Error(`internal: delivery to dead rank ${head.dest}`);
      target.accept(head.source, head.frames);
    }
    const sender = this.endpoints.get(source);
    if (queue.length === 0 && sender?.state === 'closed') this.updatePeerViews();
  }

  stall(rank: number): void {
    this.existing(rank);
    this.stalled.add(rank);
  }

  resume(rank: number): void {
    if (!this.stalled.delete(rank)) return;
    for (const [source, byDest] of this.links) {
      for (const dest of byDest.keys())
        if (source === rank || dest === rank) this.handOver(source, dest);
    }
  }

  private link(source: number, dest: number): InFlight[] {
    let byDest = this.links.get(source);
    if (byDest === undefined) {
      byDest = new Map();
      this.links.set(source, byDest);
    }
    let queue = byDest.get(dest);
    if (queue === undefined) {
      queue = [];
      byDest.set(dest, queue);
    }
    return queue;
  }

  private dropLink(source: number, dest: number): void {
    const queue = this.links.get(source)?.get(dest);
    if (queue === undefined) return;
    for (const message of queue) {
      message.dropped = true;
      message.cancelTimer?.();
    }
    this.droppedCount += queue.length;
    queue.length = 0;
  }

  private dropLinksFrom(rank: number): void {
    for (const dest of this.links.get(rank)?.keys() ?? []) this.dropLink(rank, dest);
  }

  private dropLinksTo(rank: number): void {
    for (const source of this.links.keys()) this.dropLink(source, rank);
  }

  private existing(rank: number): MemoryTransport {
    checkRank(rank);
    const endpoint = this.endpoints.get(rank);
    if (endpoint === undefined) {
      throw new CommError('COMM_BAD_ARGUMENT', `unknown rank ${rank}`, { ranks: [rank] });
    }
    return endpoint;
  }

  /** Whether `observer` should currently consider `peer` connected. */
  private reachable(observer: number, peer: number): boolean {
    if (this.blocked.has(pairKey(observer, peer))) return false;
    const endpoint = this.endpoints.get(peer);
    if (endpoint?.state === 'live') return true;
    // A closed peer stays connected until its lingering messages to the observer have arrived.
    return endpoint?.state === 'closed' && (this.links.get(peer)?.get(observer)?.length ?? 0) > 0;
  }

  /**
   * Compares what each live transport believes about each peer with the truth and emits an event
   * for every difference, in rank order so that simulations stay deterministic. Called after
   * every change of topology; it costs O(ranks^2), which is fine for simulated worlds.
   */
  private updatePeerViews(): void {
    for (const observer of this.sortedRanks) {
      const endpoint = this.endpoints.get(observer);
      if (endpoint?.state !== 'live') continue;
      for (const peer of this.sortedRanks) {
        if (peer === observer) continue;
        const now = this.reachable(observer, peer);
        if (now === endpoint.view.has(peer)) continue;
        if (now) endpoint.view.add(peer);
        else endpoint.view.delete(peer);
        endpoint.emit({ kind: now ? 'connected' : 'disconnected', rank: peer });
      }
    }
  }
}

/** One incarnation of one rank. */
class MemoryTransport implements Transport {
  state: EndpointState = 'live';
  /** Peers this transport has been told are connected. */
  readonly view = new Set<number>();
  private messageHandler: ((source: number, frames: Frames) => void) | undefined;
  private eventHandler: ((event: PeerEvent) => void) | undefined;
  /** Messages that arrived while no handler was set or while earlier ones wait to be handed over. */
  private readonly inbox: { source: number; frames: Frames }[] = [];
  private readonly inboxCountBySource = new Map<number, number>();
  private inboxDrainScheduled = false;
  private readonly events: PeerEvent[] = [];
  private eventDrainScheduled = false;

  constructor(
    readonly rank: number,
    private readonly fabric: Fabric,
  ) {}

  peers(): number[] {
    return this.fabric.peers();
  }

  /**
   * Resolves once the message is queued (at once: there is no wire to wait for). Rejects with
   * COMM_CLOSED after close or crash, COMM_BAD_ARGUMENT for an unknown rank or frames that are not
   * Uint8Arrays, COMM_QUEUE_FULL when the pair already holds maxQueuedPerPeer undelivered messages.
   */
  send(dest: number, frames: Frames): Promise<void> {
    // The executor turns a thrown CommError into a rejection.
    return new Promise((resolve) => {
      this.fabric.send(this, dest, frames);
      resolve();
    });
  }

  onMessage(handler: (source: number, frames: Frames) => void): void {
    this.messageHandler = handler;
    this.scheduleInboxDrain();
  }

  onPeerEvent(handler: (event: PeerEvent) => void): void {
    this.eventHandler = handler;
    this.scheduleEventDrain();
  }

  /** See Fabric.close: messages already sent still arrive; nothing more is received. */
  close(): Promise<void> {
    this.fabric.close(this);
    return Promise.resolve();
  }

  /** Takes one arrived message: straight to the handler if nothing is waiting ahead of it. */
  accept(source: number, frames: Frames): void {
    if (this.messageHandler !== undefined && this.inbox.length === 0) {
      this.fabric.deliveredCount++;
      invokeHandler(this.messageHandler, source, frames);
      return;
    }
    this.inbox.push({ source, frames });
    this.inboxCountBySource.set(source, this.heldFrom(source) + 1);
    this.scheduleInboxDrain();
  }

  heldFrom(source: number): number {
    return this.inboxCountBySource.get(source) ?? 0;
  }

  heldMessages(): number {
    return this.inbox.length;
  }

  emit(event: PeerEvent): void {
    this.events.push(event);
    if (this.events.length > MAX_HELD_PEER_EVENTS) this.events.shift();
    this.scheduleEventDrain();
  }

  /** Forgets everything held (the rank died or closed); returns how many messages were lost. */
  discard(): number {
    const lost = this.inbox.length;
    this.inbox.length = 0;
    this.inboxCountBySource.clear();
    this.events.length = 0;
    this.view.clear();
    return lost;
  }

  // Held messages are handed over from a microtask, never from inside onMessage(), so a handler
  // never runs before the code that installed it has finished; messages arriving meanwhile queue
  // behind the held ones, which preserves order.
  private scheduleInboxDrain(): void {
    if (this.inboxDrainScheduled || this.inbox.length === 0 || !this.messageHandler) return;
    this.inboxDrainScheduled = true;
    queueMicrotask(() => {
      this.inboxDrainScheduled = false;
      while (this.state === 'live' && this.messageHandler !== undefined) {
        const next = this.inbox.shift();
        if (next === undefined) break;
        this.inboxCountBySource.set(next.source, this.heldFrom(next.source) - 1);
        this.fabric.deliveredCount++;
        invokeHandler(this.messageHandler, next.source, next.frames);
      }
    });
  }

  private scheduleEventDrain(): void {
    if (this.eventDrainScheduled || this.events.length === 0 || !this.eventHandler) return;
    this.eventDrainScheduled = true;
    queueMicrotask(() => {
      this.eventDrainScheduled = false;
      while (this.state === 'live' && this.eventHandler !== undefined) {
        const next = this.events.shift();
        if (next === undefined) break;
        invokeHandler(this.eventHandler, next);
      }
    });
  }
}

/** Calls a user handler; an exception is a programmer error and is rethrown uncaught. */
function invokeHandler<A extends unknown[]>(handler: (...args: A) => void, ...args: A): void {
  try {
    handler(...args);
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}

function checkRank(rank: number): void {
  if (!Number.isSafeInteger(rank) || rank < 0) {
    throw new CommError('COMM_BAD_ARGUMENT', `a rank must be a non-negative integer, got ${rank}`, {
      rank,
    });
  }
}

function pairKey(a: number, b: number): string {
  return a < b ? `${a}:${b}` : `${b}:${a}`;
}
