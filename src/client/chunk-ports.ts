/**
 * A client's connections to the data ranks' chunk ports (docs/PROTOCOL.md, "Direct reads" and
 * "Direct writes"), one per endpoint, kept across transfers. Rank 0 says which port holds or
 * takes which chunk; this only carries the requests and tells a caller, with a ChunkPortError,
 * whether the port could not be reached (so it is not tried again for a while) or answered with
 * an error. The caller then takes the chunk through rank 0.
 */
import { pack, unpack } from 'msgpackr';
import { detached } from '../comm/send-queue.js';
import { isLoopback } from '../comm/world-env.js';
import { ClientSocket } from '../comm/zmq-service.js';
import { AbortWatchers } from './abort-watchers.js';
import { takePending, type Waiting } from './pending-requests.js';

/** Why a request to a chunk port failed: the rank could not be reached, or it answered with an error. */
export class ChunkPortError extends Error {
  constructor(
    readonly unreachable: boolean,
    message: string,
  ) {
    super(message);
    this.name = 'ChunkPortError';
  }
}

interface Pending extends Waiting {
  endpoint: string;
  /** A read's reply carries the copy; a write's carries nothing. */
  expectsBytes: boolean;
  resolve: (data: Buffer) => void;
  reject: (err: Error) => void;
}

/**
 * How long a chunk port that dropped its connection, or could not be connected to, is left
 * alone: its rank died, restarted on another port, or cannot be reached from here, and a new
 * connection would wait in vain for the whole connect timeout of every download.
 */
const LOST_PORT_RETRY_MS = 30_000;

/** A client's connections to data ranks' chunk ports, one per endpoint, kept across transfers. */
export class ChunkPorts {
  private readonly sockets = new Map<string, ClientSocket>();
  private readonly pending = new Map<number, Pending>();
  /** Chunk ports given up on, and until when they are not tried again. */
  private readonly lost = new Map<string, number>();
  /** One listener per AbortSignal, however many requests wait on it. */
  private readonly aborts = new AbortWatchers();
  private nextId = 1;
  private closed = false;

  /**
   * @param timeoutMs how long a request may go unanswered before its chunk goes through rank 0
   * @param connectTimeoutMs how long a request may wait for a connection to be made
   */
  constructor(
    private readonly timeoutMs: number,
    private readonly connectTimeoutMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * The copy `chunkId` from the chunk port at `endpoint`. Rejects with a ChunkPortError, at once
   * when `signal` fires (the caller then stops, as its own requests do).
   */
  read(endpoint: string, chunkId: string, signal?: AbortSignal): Promise<Buffer> {
    return this.request(endpoint, (id) => [pack({ op: 'chunk-read', id, chunkId })], true, signal);
  }

  /**
   * Writes a copy of `chunkId`, which rank 0 placed at `endpoint` (put-place); resolves once the
   * data rank has it durably. Rejects as read does.
   */
  async write(
    endpoint: string,
    chunkId: string,
    checksum: string,
    bytes: Uint8Array,
    signal?: AbortSignal,
  ): Promise<void> {
    await this.request(
      endpoint,
      (id) => [pack({ op: 'chunk-write', id, chunkId, checksum }), bytes],
      false,
      signal,
    );
  }

  private request(
    endpoint: string,
    frames: (id: number) => Uint8Array[],
    expectsBytes: boolean,
    signal: AbortSignal | undefined,
  ): Promise<Buffer> {
    if (this.closed) return Promise.reject(new ChunkPortError(true, 'the client is closed'));
    if (signal?.aborted) return Promise.reject(new ChunkPortError(false, 'interrupted'));
    this.forgetExpired();
    if (this.lost.has(endpoint))
      return Promise.reject(new ChunkPortError(true, `${endpoint} was given up on lately`));
    const socket = this.socket(endpoint);
    const id = this.nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(
        () => this.settle(id)?.reject(new ChunkPortError(true, `no answer from ${endpoint}`)),
        this.timeoutMs,
      );
      const detachSignal = this.aborts.watch(signal, () =>
        this.settle(id)?.reject(new ChunkPortError(false, 'interrupted')),
      );
      this.pending.set(id, { endpoint, expectsBytes, resolve, reject, timer, detachSignal });
      socket.send(frames(id)).catch((err: unknown) => {
        // No connection within the connect timeout: not routed from here, or nobody listening.
        this.giveUp(endpoint, socket);
        this.settle(id)?.reject(
          new ChunkPortError(true, `cannot send to ${endpoint}: ${String(err)}`),
        );
      });
    });
  }

  close(): void {
    this.closed = true;
    for (const socket of this.sockets.values()) socket.close();
    this.sockets.clear();
    for (const id of [...this.pending.keys()])
      this.settle(id)?.reject(new ChunkPortError(true, 'the client is closed'));
  }

  private socket(endpoint: string): ClientSocket {
    const known = this.sockets.get(endpoint);
    if (known) return known;
    const socket = new ClientSocket(endpoint, { sendTimeoutMs: this.connectTimeoutMs });
    socket.onMessage((frames) => this.onReply(endpoint, frames));
    // The rank went away (or restarted on another port): what it was asked will not be answered,
    // and the connection is not kept; a later download learns its new endpoint from rank 0.
    socket.onConnection((up) => {
      if (up) return;
      this.giveUp(endpoint, socket);
      for (const [id, entry] of [...this.pending])
        if (entry.endpoint === endpoint)
          this.settle(id)?.reject(new ChunkPortError(true, `${endpoint} closed the connection`));
    });
    this.sockets.set(endpoint, socket);
    return socket;
  }

  /** Closes the connection to `endpoint` and leaves the port alone for LOST_PORT_RETRY_MS. */
  private giveUp(endpoint: string, socket: ClientSocket): void {
    socket.close();
    if (this.sockets.get(endpoint) === socket) this.sockets.delete(endpoint);
    this.lost.set(endpoint, this.now() + LOST_PORT_RETRY_MS);
  }

  /** Drops ports whose time out is over, so the map holds only recent ones. */
  private forgetExpired(): void {
    const now = this.now();
    for (const [endpoint, until] of this.lost) if (until <= now) this.lost.delete(endpoint);
  }

  private settle(id: number): Pending | undefined {
    return takePending(this.pending, id);
  }

  private onReply(endpoint: string, frames: Buffer[]): void {
    let message: unknown;
    try {
      message = frames[0] && unpack(frames[0]);
    } catch {
      return; // Undecodable: its request's deadline sends the chunk through rank 0.
    }
    const id = (message as { id?: unknown } | undefined)?.id;
    if (typeof id !== 'number') return;
    // Only the port a request went to can answer it.
    if (this.pending.get(id)?.endpoint !== endpoint) return;
    const entry = this.settle(id)!;
    const { ok, error } = message as { ok?: unknown; error?: { message?: unknown } };
    const data = frames[1];
    if (ok === true && !entry.expectsBytes) entry.resolve(Buffer.alloc(0));
    else if (ok === true && data !== undefined) entry.resolve(detached(data));
    else {
      const why = typeof error?.message === 'string' ? error.message : 'no data';
      entry.reject(new ChunkPortError(false, `${endpoint}: ${why}`));
    }
  }
}

/** A `{rank, endpoint}` of a chunk port as rank 0's replies give it (a tcp:// endpoint). */
export function isPortEndpoint(e: unknown): e is { rank: number; endpoint: string } {
  return (
    typeof e === 'object' &&
    e !== null &&
    Number.isSafeInteger((e as { rank?: unknown }).rank) &&
    typeof (e as { endpoint?: unknown }).endpoint === 'string' &&
    /^tcp:\/\//.test((e as { endpoint: string }).endpoint)
  );
}

/**
 * Whether a client that reaches rank 0 at `serverHost` can use the chunk port at `endpoint`. One
 * on another machine than the ranks may be: chunk ports on a loopback address would be its own
 * machine's, and are left alone.
 */
export function reachableFrom(serverHost: string, endpoint: string): boolean {
  return isLoopback(serverHost) || !isLoopback(endpointHost(endpoint));
}

/** The host of `tcp://host:port` or `tcp://[v6]:port`. */
function endpointHost(endpoint: string): string {
  const match = /^tcp:\/\/(?:\[([^\]]*)\]|([^:]*)):\d+$/.exec(endpoint);
  return match?.[1] ?? match?.[2] ?? '';
}
