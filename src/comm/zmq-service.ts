/**
 * Request/reply sockets between the coordinator and its clients: a ROUTER on the server, a
 * DEALER on each client. Generic frames only: the client protocol lives in src/protocol.
 *
 * As everywhere with zeromq.js, each socket has one sender loop fed by a bounded queue (one
 * pending send per socket) and one receive loop. The ROUTER sets `mandatory` so a reply to a
 * client that has gone away fails instead of vanishing silently, and `maxMessageSize` so an
 * oversized frame drops that connection inside ZeroMQ before it costs us memory.
 */
import * as zmq from 'zeromq';
import { CommError } from './errors.js';
import { formatHost } from './zmq-transport.js';

type Frames = readonly Uint8Array[];

/** One socket's single sender loop with a bounded queue. */
class SendQueue {
  private readonly queue: Array<{
    frames: Frames;
    resolve: () => void;
    reject: (e: unknown) => void;
  }> = [];
  private sending = false;
  closed = false;

  constructor(
    private readonly socket: zmq.Router | zmq.Dealer,
    private readonly maxQueued: number,
  ) {}

  push(frames: Frames): Promise<void> {
    if (this.closed) return Promise.reject(new CommError('COMM_CLOSED', 'socket is closed'));
    if (this.queue.length >= this.maxQueued) {
      return Promise.reject(
        new CommError('COMM_QUEUE_FULL', `send queue is full (${this.maxQueued} messages)`, {
          limit: this.maxQueued,
        }),
      );
    }
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ frames, resolve, reject });
      if (!this.sending) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.sending = true;
    for (let item = this.queue.shift(); item; item = this.queue.shift()) {
      try {
        await this.socket.send(item.frames as Uint8Array[]);
        item.resolve();
      } catch (err) {
        item.reject(
          this.closed
            ? new CommError('COMM_CLOSED', 'socket is closed')
            : new CommError('COMM_TIMEOUT', 'send failed', {}, { cause: err }),
        );
      }
    }
    this.sending = false;
  }

  close(): void {
    this.closed = true;
    for (let item = this.queue.shift(); item; item = this.queue.shift())
      item.reject(new CommError('COMM_CLOSED', 'socket is closed'));
  }
}

export interface ServiceOptions {
  /** Largest message (all frames) accepted from a client; larger ones drop the connection. */
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

  private constructor(router: zmq.Router, options: ServiceOptions) {
    this.router = router;
    this.out = new SendQueue(router, options.maxQueued ?? 65_536);
  }

  /** Binds on host:port. Throws COMM_WIREUP with the reason when the port cannot be bound. */
  static async bind(host: string, port: number, options: ServiceOptions): Promise<ServiceSocket> {
    const router = new zmq.Router({
      mandatory: true,
      maxMessageSize: options.maxMessageBytes,
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
    return this.router.lastEndpoint ?? '';
  }

  onMessage(handler: (client: Buffer, frames: Buffer[]) => void): void {
    this.handler = handler;
  }

  /** Sends to one client. Rejects COMM_QUEUE_FULL, COMM_TIMEOUT (client gone: unroutable), COMM_CLOSED. */
  send(client: Buffer, frames: Frames): Promise<void> {
    return this.out.push([client, ...frames]);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.out.close();
    this.router.close();
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const [client, ...frames] of this.router) {
        if (client && frames.length > 0) this.handler?.(client, frames);
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

  /** Connects (lazily, as ZeroMQ does) to host:port. */
  constructor(
    host: string,
    port: number,
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
    this.out = new SendQueue(this.dealer, options.maxQueued ?? 1024);
    this.dealer.connect(`tcp://${formatHost(host)}:${port}`);
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
    this.dealer.events.on('disconnect', () => {
      if (!this.closed) handler(false);
    });
    this.dealer.events.on('handshake', () => {
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
      for await (const frames of this.dealer) this.handler?.(frames);
    } catch (err) {
      if (!this.closed) throw err;
    }
  }
}
