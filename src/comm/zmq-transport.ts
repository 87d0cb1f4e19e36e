/**
 * The ZeroMQ transport: the only module that touches zeromq.
 *
 * Shape: every rank binds one PULL socket (its endpoint) and connects one PUSH socket to each
 * peer's endpoint. PUSH/PULL keeps per-pair FIFO order over a single TCP connection, and the PULL
 * side fair-queues among senders. Each ZeroMQ message carries one extra leading frame: the
 * sender's rank as a 4-byte big-endian integer (PUSH/PULL has no routing identity), followed,
 * when several messages travel together as a batch, by the frame counts and lengths of each,
 * and the batch's bytes travel as one body frame (see encodeBatch).
 *
 * zeromq.js allows one pending send() per socket (a second one fails with EBUSY), so each PUSH
 * socket has exactly one sender loop fed by a bounded queue (send-queue.ts, which also batches
 * the small messages queued in one turn), and the PULL socket has one receive loop. Bulk
 * payloads travel as their own frames (never copied into an envelope) and the high-water marks
 * are low: measured on our machines, the default HWM of 1000 made 4 MiB sends 3-4x slower and
 * used gigabytes of RAM.
 *
 * A dropped TCP connection to a peer shows up as a 'disconnect' event on our PUSH socket, which
 * we surface as a PeerEvent at once: evidence of death that the failure detector can act on
 * without waiting for missed heartbeats.
 */
import * as zmq from 'zeromq';
import { CommError } from './errors.js';
import { retryOnInterrupt } from './interrupted.js';
import { encodeBatch, SendQueue, splitBatch } from './send-queue.js';
import type { Frames, PeerEvent, Transport } from './transport.js';

export interface ZmqTransportOptions {
  /** Messages queued per peer before send() rejects with COMM_QUEUE_FULL. */
  maxQueuedPerPeer?: number;
  /** ZeroMQ high-water marks (messages), kept low for bulk frames. */
  sendHighWaterMark?: number;
  receiveHighWaterMark?: number;
  /** How long one message may wait for room on the wire before it fails with COMM_TIMEOUT. */
  sendTimeoutMs?: number;
  /** How long close() lets queued messages drain. */
  lingerMs?: number;
}

const DEFAULTS: Required<ZmqTransportOptions> = {
  maxQueuedPerPeer: 4096,
  sendHighWaterMark: 16,
  receiveHighWaterMark: 16,
  sendTimeoutMs: 30_000,
  lingerMs: 2_000,
};

/** One PUSH socket to one peer, with its single sender (send-queue.ts: one pending send, batching). */
class PeerLink {
  readonly socket: zmq.Push;
  private readonly out: SendQueue;

  constructor(
    readonly rank: number,
    readonly endpoint: string,
    source: Uint8Array,
    options: Required<ZmqTransportOptions>,
    onEvent: (event: PeerEvent) => void,
  ) {
    this.socket = new zmq.Push({
      sendHighWaterMark: options.sendHighWaterMark,
      sendTimeout: options.sendTimeoutMs,
      linger: options.lingerMs,
      reconnectInterval: 100,
      reconnectMaxInterval: 1_000,
    });
    const events = retryOnInterrupt(() => this.socket.events);
    events.on('disconnect', () => onEvent({ kind: 'disconnected', rank }));
    events.on('handshake', () => onEvent({ kind: 'connected', rank }));
    retryOnInterrupt(() => this.socket.connect(endpoint));
    this.out = new SendQueue((frames) => this.socket.send(frames), {
      maxQueued: options.maxQueuedPerPeer,
      fullError: () =>
        new CommError('COMM_QUEUE_FULL', `send queue to rank ${rank} is full`, {
          ranks: [rank],
          limit: options.maxQueuedPerPeer,
        }),
      sendError: (err, closed) =>
        closed
          ? closedError()
          : new CommError(
              'COMM_TIMEOUT',
              `send to rank ${rank} timed out`,
              { ranks: [rank] },
              { cause: err },
            ),
      // A single message: the rank frame, then its frames; a batch: see encodeBatch.
      encode: (_route, messages) =>
        messages.length === 1 ? [source, ...messages[0]!] : encodeBatch(source, messages),
    });
  }

  enqueue(frames: Frames): Promise<void> {
    return this.out.push(frames);
  }

  close(): void {
    this.out.close();
    // Closing the socket also ends its event observer.
    this.socket.close();
  }
}

/** Splits a received ZeroMQ message into its messages; undefined when it is not one of ours. */
function decodeMessage(message: Buffer[]): { source: number; messages: Frames[] } | undefined {
  const header = message[0];
  if (!header || header.length < 4 || header.length % 4 !== 0) return undefined;
  const source = header.readUInt32BE(0);
  if (header.length === 4) return { source, messages: [message.slice(1)] };
  const messages = splitBatch(header, message.slice(1));
  return messages && { source, messages };
}

function closedError(): CommError {
  return new CommError('COMM_CLOSED', 'transport is closed');
}

export function encodeRank(rank: number): Uint8Array {
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(rank, 0);
  return header;
}

export class ZmqTransport implements Transport {
  private readonly options: Required<ZmqTransportOptions>;
  private readonly links = new Map<number, PeerLink>();
  private sourceFrame: Uint8Array;
  private handler: ((source: number, frames: Frames) => void) | undefined;
  private readonly early: Array<[number, Frames]> = [];
  private readonly peerHandlers: Array<(event: PeerEvent) => void> = [];
  private closed = false;

  private constructor(
    private rankNumber: number,
    private readonly pull: zmq.Pull,
    /** The endpoint peers connect to, e.g. tcp://10.0.0.2:41234. */
    readonly endpoint: string,
    options: ZmqTransportOptions,
  ) {
    this.options = { ...DEFAULTS, ...options };
    this.sourceFrame = encodeRank(Math.max(0, rankNumber));
    void this.receiveLoop();
  }

  get rank(): number {
    return this.rankNumber;
  }

  /**
   * Sets the number of a rank that bound before it had one (a rank joining a running world gets
   * its number from rank 0 after it has told rank 0 where it listens). Only once, before any send.
   */
  assignRank(rank: number): void {
    if (this.rankNumber >= 0)
      throw new CommError('COMM_BAD_ARGUMENT', `rank ${this.rankNumber} already has its number`);
    this.rankNumber = rank;
    this.sourceFrame = encodeRank(rank);
  }

  /**
   * Binds this rank's PULL socket on `host` (an address of this machine) at an ephemeral port.
   * Throws COMM_WIREUP when the address cannot be bound.
   */
  static async bind(
    rank: number,
    host: string,
    options: ZmqTransportOptions = {},
  ): Promise<ZmqTransport> {
    const merged = { ...DEFAULTS, ...options };
    const pull = new zmq.Pull({ receiveHighWaterMark: merged.receiveHighWaterMark, linger: 0 });
    try {
      await pull.bind(`tcp://${formatHost(host)}:0`);
    } catch (err) {
      pull.close();
      throw new CommError(
        'COMM_WIREUP',
        `rank ${rank} cannot bind an endpoint on ${host}`,
        { host },
        { cause: err },
      );
    }
    const endpoint = retryOnInterrupt(() => pull.lastEndpoint);
    if (!endpoint)
      throw new CommError('COMM_WIREUP', `rank ${rank} bound on ${host} but got no endpoint`);
    return new ZmqTransport(rank, pull, endpoint, merged);
  }

  /** Adds or replaces the endpoint of a peer (a rank that joined, or restarted on a new port). */
  addPeer(rank: number, endpoint: string): void {
    if (this.closed || rank === this.rank) return;
    const existing = this.links.get(rank);
    if (existing?.endpoint === endpoint) return;
    existing?.close();
    this.links.set(
      rank,
      new PeerLink(rank, endpoint, this.sourceFrame, this.options, (e) => this.emitPeer(e)),
    );
  }

  peers(): number[] {
    return [this.rank, ...this.links.keys()].sort((a, b) => a - b);
  }

  send(dest: number, frames: Frames): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    if (dest === this.rank) {
      // Delivered on a later turn, as a network message would be, so callers never re-enter.
      setImmediate(() => this.deliver(this.rank, frames));
      return Promise.resolve();
    }
    const link = this.links.get(dest);
    if (!link) {
      return Promise.reject(
        new CommError('COMM_BAD_ARGUMENT', `no rank ${dest} in this world`, { ranks: [dest] }),
      );
    }
    return link.enqueue(frames);
  }

  onMessage(handler: (source: number, frames: Frames) => void): void {
    this.handler = handler;
    for (let held = this.early.shift(); held; held = this.early.shift()) handler(held[0], held[1]);
  }

  onPeerEvent(handler: (event: PeerEvent) => void): void {
    this.peerHandlers.push(handler);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const link of this.links.values()) link.close();
    this.links.clear();
    this.pull.close();
    await Promise.resolve();
  }

  private emitPeer(event: PeerEvent): void {
    if (this.closed) return;
    for (const h of this.peerHandlers) h(event);
  }

  private deliver(source: number, frames: Frames): void {
    if (this.closed) return;
    if (this.handler) this.handler(source, frames);
    else this.early.push([source, frames]);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const message of this.pull) {
        const decoded = decodeMessage(message);
        if (!decoded) continue; // not one of ours: ignore, never crash
        for (const frames of decoded.messages) this.deliver(decoded.source, frames);
      }
    } catch (err) {
      if (!this.closed) throw err;
    }
  }
}

/** IPv6 literals need brackets inside a ZeroMQ tcp:// address. */
export function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
