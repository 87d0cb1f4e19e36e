/**
 * Request/reply sockets between the coordinator and its clients: a ROUTER on the server, a
 * DEALER on each client. Generic frames only: the client protocol lives in src/protocol.
 *
 * As everywhere with zeromq.js, each socket has one sender loop fed by a bounded queue (one
 * pending send per socket: send-queue.ts) and one receive loop. Requests queued in one turn
 * travel as a batch (docs/PROTOCOL.md); rank 0 batches its replies only to a client that has
 * sent a batch, so a client that never does gets one message per reply. The ROUTER sets
 * `mandatory` so a reply to a client that has gone away fails instead of vanishing silently, and
 * `maxMessageSize` so an oversized frame drops that connection inside ZeroMQ before it costs us
 * memory.
 */
import * as zmq from 'zeromq';
import { CommError } from './errors.js';
import { retryOnInterrupt } from './interrupted.js';
import {
  BATCH_MAGIC,
  BATCH_MAX_BYTES,
  encodeBatch,
  isClientBatch,
  SendQueue,
  splitBatch,
} from './send-queue.js';
import type { Frames } from './transport.js';
import { formatHost } from './zmq-transport.js';

/** The send queue of a client-facing socket: batches as send-queue.ts describes. */
function clientSendQueue(socket: zmq.Router | zmq.Dealer, maxQueued: number): SendQueue {
  return new SendQueue((frames) => socket.send(frames), {
    maxQueued,
    fullError: () =>
      new CommError('COMM_QUEUE_FULL', `send queue is full (${maxQueued} messages)`, {
        limit: maxQueued,
      }),
    sendError: (err, closed) =>
      closed
        ? new CommError('COMM_CLOSED', 'socket is closed')
        : new CommError('COMM_TIMEOUT', 'send failed', {}, { cause: err }),
    encode: (route, messages) => {
      const body = messages.length === 1 ? [...messages[0]!] : encodeBatch(BATCH_MAGIC, messages);
      return route === undefined ? body : [route, ...body];
    },
  });
}

/** The messages of one received ZeroMQ message: a batch's, or just itself. */
function messagesOf(frames: Buffer[]): Buffer[][] {
  if (!isClientBatch(frames[0])) return [frames];
  // A batch whose lengths do not add up is passed on whole, to be refused as a bad request.
  return splitBatch(frames[0], frames.slice(1)) ?? [frames];
}

/** Clients remembered as able to take batched replies (they sent a batch); oldest forgotten. */
const MAX_BATCHING_CLIENTS = 4096;

export interface ServiceOptions {
  /**
   * Largest frame accepted from a client; a larger one drops the connection. A batch's body
   * (under BATCH_MAX_BYTES) is always accepted.
   */
  maxMessageBytes: number;
  maxQueued?: number;
  sendTimeoutMs?: number;
}

/** The coordinator's client-facing socket. */
export class ServiceSocket {
  private readonly router: zmq.Router;
  private readonly out: SendQueue;
  private handler: ((client: Buffer, frames: Buffer[]) => void) | undefined;
  private closed = false;

  /** Clients that sent a batch, so take batched replies (a Map for its insertion order). */
  private readonly batching = new Map<string, true>();

  private constructor(router: zmq.Router, options: ServiceOptions) {
    this.router = router;
    this.out = clientSendQueue(router, options.maxQueued ?? 65_536);
  }

  /** Binds on host:port. Throws COMM_WIREUP with the reason when the port cannot be bound. */
  static async bind(host: string, port: number, options: ServiceOptions): Promise<ServiceSocket> {
    const router = new zmq.Router({
      mandatory: true,
      maxMessageSize: Math.max(options.maxMessageBytes, BATCH_MAX_BYTES),
      sendTimeout: options.sendTimeoutMs ?? 10_000,
      sendHighWaterMark: 64,
      receiveHighWaterMark: 64,
      linger: 0,
    });
    try {
      await router.bind(`tcp://${formatHost(host)}:${port}`);
    } catch (err) {
      router.close();
      const reason = err instanceof Error ? err.message : String(err);
      throw new CommError(
        'COMM_WIREUP',
        `cannot listen for clients on ${host}:${port}: ${reason}`,
        { host, port },
        { cause: err },
      );
    }
    const socket = new ServiceSocket(router, options);
    void socket.receiveLoop();
    return socket;
  }

  get endpoint(): string {
    return retryOnInterrupt(() => this.router.lastEndpoint) ?? '';
  }

  onMessage(handler: (client: Buffer, frames: Buffer[]) => void): void {
    this.handler = handler;
  }

  /**
   * Sends to one client. Rejects COMM_QUEUE_FULL, COMM_TIMEOUT (client gone: unroutable),
   * COMM_CLOSED. Replies to a client that sends batches may travel in batches; any other client
   * gets one message per reply, as the protocol began.
   */
  send(client: Buffer, frames: Frames): Promise<void> {
    return this.out.push(frames, client, this.batching.has(client.toString('latin1')));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.out.close();
    this.router.close();
  }

  private rememberBatching(client: Buffer): void {
    const key = client.toString('latin1');
    if (this.batching.has(key)) return;
    if (this.batching.size >= MAX_BATCHING_CLIENTS)
      this.batching.delete(this.batching.keys().next().value!);
    this.batching.set(key, true);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const [client, ...frames] of this.router) {
        if (!client || frames.length === 0) continue;
        const messages = messagesOf(frames);
        if (messages.length > 1) this.rememberBatching(client);
        for (const message of messages) this.handler?.(client, message);
      }
    } catch (err) {
      if (!this.closed) throw err;
    }
  }
}

/** A client's socket to the coordinator. */
export class ClientSocket {
  private readonly dealer: zmq.Dealer;
  private readonly out: SendQueue;
  private handler: ((frames: Buffer[]) => void) | undefined;
  private closed = false;

  /**
   * Connects (lazily, as ZeroMQ does) to host:port, or to an endpoint as a ServiceSocket reports
   * it (`tcp://host:port`).
   */
  constructor(
    target: { host: string; port: number } | string,
    options: { maxQueued?: number; sendTimeoutMs?: number } = {},
  ) {
    this.dealer = new zmq.Dealer({
      sendHighWaterMark: 16,
      receiveHighWaterMark: 16,
      sendTimeout: options.sendTimeoutMs ?? 10_000,
      linger: 0,
      immediate: true,
      reconnectInterval: 100,
    });
    this.out = clientSendQueue(this.dealer, options.maxQueued ?? 1024);
    const address =
      typeof target === 'string' ? target : `tcp://${formatHost(target.host)}:${target.port}`;
    retryOnInterrupt(() => this.dealer.connect(address));
    void this.receiveLoop();
  }

  onMessage(handler: (frames: Buffer[]) => void): void {
    this.handler = handler;
  }

  /**
   * Calls `handler(false)` when the connection to the server drops (the server process ended or
   * restarted) and `handler(true)` when one is made again. ZeroMQ reconnects by itself, but
   * replies to what was sent before are lost.
   */
  onConnection(handler: (up: boolean) => void): void {
    const events = retryOnInterrupt(() => this.dealer.events);
    events.on('disconnect', () => {
      if (!this.closed) handler(false);
    });
    events.on('handshake', () => {
      if (!this.closed) handler(true);
    });
  }

  /** Rejects COMM_TIMEOUT when no connection could take the message within sendTimeoutMs. */
  send(frames: Frames): Promise<void> {
    return this.out.push(frames);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.out.close();
    this.dealer.close();
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const frames of this.dealer)
        for (const message of messagesOf(frames)) this.handler?.(message);
    } catch (err) {
      if (!this.closed) throw err;
    }
  }
}
