/**
 * Direct reads (docs/PROTOCOL.md): a download of large chunks reads each one from the chunk port
 * of a data rank that holds a copy, instead of through rank 0. Rank 0 still opens the read (and
 * so pins the version) and says where the copies are; this is only a shorter path for the bytes.
 *
 * Anything that goes wrong on the short path (no answer, connection lost, an error reply, bytes
 * that fail their checksum) sends that chunk through rank 0, which knows more: other copies, the
 * ranks it has declared dead, and how to replace a bad copy. A rank that could not be reached is
 * not tried again for the rest of the download.
 */
import { pack, unpack } from 'msgpackr';
import { detached } from '../comm/send-queue.js';
import { isLoopback } from '../comm/world-env.js';
import { ClientSocket } from '../comm/zmq-service.js';
import {
  DIRECT_READ_PIN_RENEW_MS,
  type DirectSources,
  type FileMetadata,
} from '../protocol/client-protocol.js';
import { AbortWatchers } from './abort-watchers.js';
import { takePending, type Waiting } from './pending-requests.js';

/** Why a direct read failed: the rank could not be reached, or it answered with an error. */
export class DirectReadError extends Error {
  constructor(
    readonly unreachable: boolean,
    message: string,
  ) {
    super(message);
    this.name = 'DirectReadError';
  }
}

interface Pending extends Waiting {
  endpoint: string;
  resolve: (data: Buffer) => void;
  reject: (err: Error) => void;
}

/**
 * How long a chunk port that dropped its connection, or could not be connected to, is left
 * alone: its rank died, restarted on another port, or cannot be reached from here, and a new
 * connection would wait in vain for the whole connect timeout of every download.
 */
const LOST_PORT_RETRY_MS = 30_000;

/** A client's connections to data ranks' chunk ports, one per endpoint, kept across downloads. */
export class DirectReader {
  private readonly sockets = new Map<string, ClientSocket>();
  private readonly pending = new Map<number, Pending>();
  /** Chunk ports given up on, and until when they are not tried again. */
  private readonly lost = new Map<string, number>();
  /** One listener per AbortSignal, however many reads wait on it. */
  private readonly aborts = new AbortWatchers();
  private nextId = 1;
  private closed = false;

  /**
   * @param timeoutMs how long a read may go unanswered before the chunk is read through rank 0
   * @param connectTimeoutMs how long a read may wait for a connection to be made
   */
  constructor(
    private readonly timeoutMs: number,
    private readonly connectTimeoutMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * The copy `chunkId` from the chunk port at `endpoint`. Rejects with a DirectReadError, at once
   * when `signal` fires (the caller then stops, as its own requests do).
   */
  read(endpoint: string, chunkId: string, signal?: AbortSignal): Promise<Buffer> {
    if (this.closed) return Promise.reject(new DirectReadError(true, 'the client is closed'));
    if (signal?.aborted) return Promise.reject(new DirectReadError(false, 'interrupted'));
    this.forgetExpired();
    if (this.lost.has(endpoint))
      return Promise.reject(new DirectReadError(true, `${endpoint} was given up on lately`));
    const socket = this.socket(endpoint);
    const id = this.nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(
        () => this.settle(id)?.reject(new DirectReadError(true, `no answer from ${endpoint}`)),
        this.timeoutMs,
      );
      const detachSignal = this.aborts.watch(signal, () =>
        this.settle(id)?.reject(new DirectReadError(false, 'interrupted')),
      );
      this.pending.set(id, { endpoint, resolve, reject, timer, detachSignal });
      socket.send([pack({ op: 'chunk-read', id, chunkId })]).catch((err: unknown) => {
        // No connection within the connect timeout: not routed from here, or nobody listening.
        this.giveUp(endpoint, socket);
        this.settle(id)?.reject(
          new DirectReadError(true, `cannot send to ${endpoint}: ${String(err)}`),
        );
      });
    });
  }

  close(): void {
    this.closed = true;
    for (const socket of this.sockets.values()) socket.close();
    this.sockets.clear();
    for (const id of [...this.pending.keys()])
      this.settle(id)?.reject(new DirectReadError(true, 'the client is closed'));
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
          this.settle(id)?.reject(new DirectReadError(true, `${endpoint} closed the connection`));
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
    // Only the port a read went to can answer it.
    if (this.pending.get(id)?.endpoint !== endpoint) return;
    const entry = this.settle(id)!;
    const { ok, error } = message as { ok?: unknown; error?: { message?: unknown } };
    const data = frames[1];
    if (ok === true && data !== undefined) entry.resolve(detached(data));
    else {
      const why = typeof error?.message === 'string' ? error.message : 'no data';
      entry.reject(new DirectReadError(false, `${endpoint}: ${why}`));
    }
  }
}

/**
 * One download's choice of where each chunk comes from. Each chunk goes to the holder with the
 * fewest of this download's reads outstanding (ties by chunk index, so copies take turns), which
 * keeps every holder's disk busy. A chunk goes through rank 0 instead when no holder can be read
 * directly, when the direct read failed, and at least every renewMs of rank 0's offer (5 s by
 * default), which keeps rank 0's pin of the version while the bytes come from elsewhere.
 */
export class DirectDownload {
  private readonly endpoints = new Map<number, string>();
  private readonly outstanding = new Map<number, number>();
  private lastViaRank0Ms: number;

  constructor(
    private readonly reader: DirectReader,
    private readonly metadata: FileMetadata,
    private readonly sources: DirectSources,
    /** Reads chunk `index` through rank 0, verified. */
    private readonly viaRank0: (index: number) => Promise<Buffer>,
    /** Throws when `data` is not chunk `index` (its size and checksum). */
    private readonly verify: (index: number, data: Buffer) => void,
    private readonly now: () => number = () => performance.now(),
  ) {
    for (const { rank, endpoint } of sources.endpoints) this.endpoints.set(rank, endpoint);
    this.lastViaRank0Ms = now();
  }

  /**
   * Chunk `index`, verified. Rejects only as viaRank0 does: the direct path's failures fall back
   * (after `signal` fires, viaRank0 is what says so).
   */
  async fetch(index: number, signal?: AbortSignal): Promise<Buffer> {
    const rank = this.pick(index);
    const chunkId = this.sources.chunkIds[index];
    const renewMs = this.sources.renewMs ?? DIRECT_READ_PIN_RENEW_MS;
    if (
      rank === undefined ||
      chunkId === undefined ||
      this.now() - this.lastViaRank0Ms >= renewMs
    ) {
      this.lastViaRank0Ms = this.now();
      return this.viaRank0(index);
    }
    this.outstanding.set(rank, (this.outstanding.get(rank) ?? 0) + 1);
    try {
      const data = await this.reader.read(this.endpoints.get(rank)!, chunkId, signal);
      this.verify(index, data);
      return data;
    } catch (err) {
      // Not tried again in this download: a rank that cannot be reached now will not be soon.
      if (err instanceof DirectReadError && err.unreachable) this.endpoints.delete(rank);
      return this.viaRank0(index);
    } finally {
      this.outstanding.set(rank, (this.outstanding.get(rank) ?? 1) - 1);
    }
  }

  private pick(index: number): number | undefined {
    const holders = (this.metadata.chunks[index]?.copies ?? [])
      .map((c) => c.rank)
      .filter((r) => this.endpoints.has(r));
    if (holders.length === 0) return undefined;
    let best = holders[index % holders.length]!;
    for (const r of holders)
      if ((this.outstanding.get(r) ?? 0) < (this.outstanding.get(best) ?? 0)) best = r;
    return best;
  }
}

/**
 * The get-begin reply's `direct` field, when it is well formed and fits the file; else undefined.
 * A client that reaches rank 0 at an address other than loopback is on another machine than the
 * ranks may be: chunk ports on a loopback address would be its own machine's, and are left out.
 */
export function directSourcesOf(
  value: unknown,
  metadata: FileMetadata,
  serverHost: string,
): DirectSources | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { chunkIds, endpoints } = value as Record<string, unknown>;
  if (
    !Array.isArray(chunkIds) ||
    chunkIds.length !== metadata.chunks.length ||
    !chunkIds.every((id) => typeof id === 'string') ||
    !Array.isArray(endpoints) ||
    !endpoints.every(
      (e: unknown) =>
        typeof e === 'object' &&
        e !== null &&
        Number.isSafeInteger((e as { rank?: unknown }).rank) &&
        typeof (e as { endpoint?: unknown }).endpoint === 'string' &&
        /^tcp:\/\//.test((e as { endpoint: string }).endpoint),
    )
  )
    return undefined;
  const offered = endpoints as DirectSources['endpoints'];
  const remote = !isLoopback(serverHost);
  const { renewMs } = value as { renewMs?: unknown };
  return {
    chunkIds,
    endpoints: offered.filter(({ endpoint }) => !(remote && isLoopback(endpointHost(endpoint)))),
    // Rank 0's own figure when it gives a usable one; this client's default otherwise.
    ...(Number.isSafeInteger(renewMs) && (renewMs as number) > 0 && { renewMs: renewMs as number }),
  };
}

/** The host of `tcp://host:port` or `tcp://[v6]:port`. */
function endpointHost(endpoint: string): string {
  const match = /^tcp:\/\/(?:\[([^\]]*)\]|([^:]*)):\d+$/.exec(endpoint);
  return match?.[1] ?? match?.[2] ?? '';
}
