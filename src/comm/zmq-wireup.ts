/**
 * Wire-up, in the manner of PMI's put/fence/get: every rank binds its own endpoint on its host's
 * address, registers {rank, endpoint} with the rendezvous that rank 0 serves at MEMFLOW_ROOT, and
 * receives the endpoint table once every rank of the world has registered. Rank 0 keeps the
 * rendezvous open afterwards so that a restarted rank (same number, new port) or a new rank
 * joining a running world (number assigned by rank 0) can register later.
 */
import { lookup } from 'node:dns/promises';
import { pack, unpack } from 'msgpackr';
import * as zmq from 'zeromq';
import { CommError } from './errors.js';
import { retryOnInterrupt } from './interrupted.js';
import { formatHost, ZmqTransport, type ZmqTransportOptions } from './zmq-transport.js';

export interface WireupOptions extends ZmqTransportOptions {
  /** Deadline for the whole world to register (rank 0) or for the table to arrive (others). */
  wireupTimeoutMs?: number;
  /** Called on rank 0 when a rank registers after the initial table was sent. */
  onLateRegistration?: (rank: number, endpoint: string) => void;
}

export interface WireupParams {
  /** This rank, or -1 to join a running world and be given the next free number. */
  rank: number;
  /** World size at launch (ignored when joining). */
  size: number;
  root: { host: string; port: number };
  /** The address this rank binds and advertises. */
  host: string;
  jobId: string;
}

type RendezvousRequest = { type: 'register'; rank: number; endpoint: string; jobId: string };
type RendezvousReply =
  | { type: 'table'; rank: number; size: number; endpoints: Array<[number, string]> }
  | { type: 'error'; message: string };

export interface WiredWorld {
  transport: ZmqTransport;
  rank: number;
  /** Ranks in the table when this rank was wired (for a joiner: all ranks known at that time). */
  size: number;
  /** Present on rank 0 only: stops the rendezvous. */
  rendezvous?: Rendezvous;
}

async function resolveHost(host: string): Promise<string> {
  try {
    return (await lookup(host)).address;
  } catch (err) {
    throw new CommError('COMM_WIREUP', `cannot resolve host ${host}`, { host }, { cause: err });
  }
}

/** Rank 0's side: collects registrations and hands out the endpoint table. */
export class Rendezvous {
  private readonly router = new zmq.Router({ linger: 0 });
  private readonly endpoints = new Map<number, string>();
  private readonly waiting: Array<{ routingId: Buffer; rank: number }> = [];
  private complete = false;
  private closed = false;
  private onComplete: (() => void) | undefined;

  constructor(
    private readonly size: number,
    private readonly jobId: string,
    private readonly onLate: ((rank: number, endpoint: string) => void) | undefined,
  ) {}

  async bind(host: string, port: number): Promise<void> {
    const address = `tcp://${formatHost(await resolveHost(host))}:${port}`;
    try {
      await this.router.bind(address);
    } catch (err) {
      // The reason in the message ("Address already in use"): it is what a user acts on.
      const reason = err instanceof Error ? `: ${err.message}` : '';
      throw new CommError(
        'COMM_WIREUP',
        `rank 0 cannot bind the rendezvous at ${host}:${port}${reason}`,
        { host, port },
        { cause: err },
      );
    }
    void this.serve();
  }

  /** Registers rank 0 itself and resolves once every rank has registered. */
  async awaitWorld(selfEndpoint: string, timeoutMs: number): Promise<Array<[number, string]>> {
    this.endpoints.set(0, selfEndpoint);
    this.checkComplete();
    if (!this.complete) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          const missing = [...Array(this.size).keys()].filter((r) => !this.endpoints.has(r));
          reject(
            new CommError(
              'COMM_WIREUP',
              `ranks ${missing.join(', ')} did not register within ${timeoutMs} ms`,
              { ranks: missing },
            ),
          );
        }, timeoutMs);
        this.onComplete = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.table();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.router.close();
  }

  private table(): Array<[number, string]> {
    return [...this.endpoints.entries()].sort((a, b) => a[0] - b[0]);
  }

  private async serve(): Promise<void> {
    try {
      for await (const [routingId, body] of this.router) {
        if (!routingId || !body) continue;
        await this.handle(routingId, body);
      }
    } catch (err) {
      if (!this.closed) throw err;
    }
  }

  private async reply(routingId: Buffer, message: RendezvousReply): Promise<void> {
    await this.router.send([routingId, pack(message)]);
  }

  private async handle(routingId: Buffer, body: Buffer): Promise<void> {
    let request: RendezvousRequest;
    try {
      request = unpack(body) as RendezvousRequest;
      if (
        request?.type !== 'register' ||
        typeof request.endpoint !== 'string' ||
        !Number.isInteger(request.rank)
      ) {
        throw new Error('not a registration');
      }
    } catch {
      return; // a stranger on the port: ignore it rather than crash the world
    }
    // The job id keeps two launches from wiring up together. Once the world is complete, a rank
    // that registers was sent here on purpose (a restart, or memflow-run --join): take it.
    if (!this.complete && request.jobId !== this.jobId) {
      await this.reply(routingId, {
        type: 'error',
        message: `job id ${request.jobId} does not match this world's ${this.jobId}`,
      });
      return;
    }
    let rank = request.rank;
    if (rank < 0) rank = Math.max(this.size - 1, ...this.endpoints.keys()) + 1;
    if (!this.complete && rank >= this.size) {
      await this.reply(routingId, {
        type: 'error',
        message: `rank ${rank} is outside a world of ${this.size}`,
      });
      return;
    }
    this.endpoints.set(rank, request.endpoint);
    if (this.complete) {
      this.onLate?.(rank, request.endpoint);
      await this.reply(routingId, {
        type: 'table',
        rank,
        size: this.endpoints.size,
        endpoints: this.table(),
      });
      return;
    }
    this.waiting.push({ routingId, rank });
    this.checkComplete();
  }

  private checkComplete(): void {
    if (this.complete || this.endpoints.size < this.size) return;
    this.complete = true;
    const endpoints = this.table();
    for (const w of this.waiting.splice(0)) {
      void this.reply(w.routingId, { type: 'table', rank: w.rank, size: this.size, endpoints });
    }
    this.onComplete?.();
  }
}

/**
 * Wires this rank into the world and returns a connected transport. Throws COMM_WIREUP on a bad
 * address, a rendezvous error, or when the world is not complete within `wireupTimeoutMs`.
 */
export async function wireUp(
  params: WireupParams,
  options: WireupOptions = {},
): Promise<WiredWorld> {
  const timeoutMs = options.wireupTimeoutMs ?? 60_000;
  const host = await resolveHost(params.host);
  if (params.rank === 0) {
    const rendezvous = new Rendezvous(params.size, params.jobId, (rank, endpoint) => {
      transport.addPeer(rank, endpoint);
      options.onLateRegistration?.(rank, endpoint);
    });
    await rendezvous.bind(params.root.host, params.root.port);
    const transport = await ZmqTransport.bind(0, host, options);
    try {
      const table = await rendezvous.awaitWorld(transport.endpoint, timeoutMs);
      for (const [rank, endpoint] of table) transport.addPeer(rank, endpoint);
    } catch (err) {
      rendezvous.close();
      await transport.close();
      throw err;
    }
    return { transport, rank: 0, size: params.size, rendezvous };
  }

  // A joining rank (rank -1) binds before it has a number, registers its endpoint, and takes the
  // number rank 0 assigns.
  const transport = await ZmqTransport.bind(params.rank, host, options);
  const reply = await register(params, transport.endpoint, timeoutMs).catch(
    async (err: unknown) => {
      await transport.close();
      throw err;
    },
  );
  if (params.rank < 0) transport.assignRank(reply.rank);
  for (const [rank, endpoint] of reply.endpoints) transport.addPeer(rank, endpoint);
  return { transport, rank: reply.rank, size: reply.size };
}

async function register(
  params: WireupParams,
  endpoint: string,
  timeoutMs: number,
): Promise<Extract<RendezvousReply, { type: 'table' }>> {
  const dealer = new zmq.Dealer({ linger: 0, receiveTimeout: timeoutMs });
  try {
    const root = `tcp://${formatHost(await resolveHost(params.root.host))}:${params.root.port}`;
    retryOnInterrupt(() => dealer.connect(root));
    const request: RendezvousRequest = {
      type: 'register',
      rank: params.rank,
      endpoint,
      jobId: params.jobId,
    };
    await dealer.send(pack(request));
    let body: Buffer | undefined;
    try {
      [body] = await dealer.receive();
    } catch (err) {
      throw new CommError(
        'COMM_WIREUP',
        `rank ${params.rank} got no endpoint table from the rendezvous at ${params.root.host}:${params.root.port} within ${timeoutMs} ms`,
        { ranks: [0] },
        { cause: err },
      );
    }
    const reply = unpack(body ?? Buffer.alloc(0)) as RendezvousReply;
    if (reply.type === 'error')
      throw new CommError(
        'COMM_WIREUP',
        `rendezvous refused rank ${params.rank}: ${reply.message}`,
      );
    return reply;
  } finally {
    dealer.close();
  }
}
