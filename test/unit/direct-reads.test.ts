/**
 * Direct reads, the client's side (src/client/direct-reads.ts). Goal: a download of large chunks
 * reads each chunk from a data rank that holds a copy, spread over the holders by their reads
 * outstanding; anything that goes wrong on that path (the rank cannot be reached, answers with an
 * error, sends bytes that fail their check) costs only a detour through rank 0 for that chunk,
 * and a rank that cannot be reached is not asked again in that download; at least every 5 s one
 * chunk goes through rank 0 (which keeps the read's pin there). ChunkPorts, the connections to
 * the chunk ports, matches replies to requests by id, turns an error reply into an error that says
 * "answered", and no answer, a dropped connection or a port it cannot connect to into one that
 * says "unreachable"; a port that dropped its connection is not tried for 30 s. directSourcesOf
 * takes only a well-formed offer that fits the file.
 *
 * Method: DirectDownload with a fake reader whose reads the test settles one by one (so "reads
 * outstanding at once" is exact, not a timing accident), fake viaRank0/verify that record their
 * calls, and a clock the test moves. ChunkPorts against a real ServiceSocket (rank 0's own
 * client socket class, as a data rank's chunk port uses it) bound on 127.0.0.1 port 0 and
 * answering as the test says; its lost-port rule on an injected clock. Every wait has a deadline;
 * every socket and reader is closed in afterEach.
 */
import net from 'node:net';
import { pack, unpack } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { ChunkPortError, ChunkPorts } from '../../src/client/chunk-ports.js';
import {
  DIRECT_READ_HEDGE_MS,
  DirectDownload,
  directSourcesOf,
} from '../../src/client/direct-reads.js';
import { ManualClock } from '../../src/runtime/clock.js';
import { ServiceSocket } from '../../src/comm/zmq-service.js';
import type { DirectSources, FileMetadata } from '../../src/protocol/client-protocol.js';

// ---- helpers ---------------------------------------------------------------------------------

/** File metadata whose chunk i has copies on the ranks `holders[i]`. */
function metadataOf(holders: number[][]): FileMetadata {
  return {
    name: 'big.bin',
    sizeBytes: holders.length * 1024,
    sha256: '0'.repeat(64),
    version: 1,
    created: '2026-01-01T00:00:00.000Z',
    modified: '2026-01-01T00:00:00.000Z',
    chunkSizeBytes: 1024,
    replicas: 2,
    chunks: holders.map((ranks, index) => ({
      index,
      sizeBytes: 1024,
      checksum: `checksum-${index}`,
      copies: ranks.map((rank) => ({ rank, host: '127.0.0.1', state: 'alive' as const })),
    })),
    underReplicatedChunks: 0,
  };
}

const ENDPOINT: Record<number, string> = {
  1: 'tcp://127.0.0.1:40001',
  2: 'tcp://127.0.0.1:40002',
};
const RANK_OF = new Map(Object.entries(ENDPOINT).map(([rank, ep]) => [ep, Number(rank)]));

/** The offer rank 0 makes for `chunks` chunks, with chunk ports for `ranks` only. */
function sourcesOf(chunks: number, ranks = [1, 2]): DirectSources {
  return {
    chunkIds: Array.from({ length: chunks }, (_, i) => `id-${i}`),
    endpoints: ranks.map((rank) => ({ rank, endpoint: ENDPOINT[rank]! })),
  };
}

interface ReadCall {
  endpoint: string;
  chunkId: string;
  signal: AbortSignal | undefined;
  /** The rank the endpoint belongs to (undefined: not an endpoint rank 0 offered). */
  rank: number | undefined;
  settled: boolean;
  resolve(data: Buffer): void;
  reject(err: Error): void;
}

/**
 * Stands in for ChunkPorts: records every read. With `answer` it settles each read as that
 * returns (a Buffer: resolves; an Error: rejects; undefined: never); without, reads stay
 * outstanding until the test settles them.
 */
class FakeReader {
  readonly calls: ReadCall[] = [];
  constructor(private readonly answer?: (call: ReadCall) => Buffer | Error | undefined) {}

  read(endpoint: string, chunkId: string, signal?: AbortSignal): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const call: ReadCall = {
        endpoint,
        chunkId,
        signal,
        rank: RANK_OF.get(endpoint),
        settled: false,
        resolve: (data) => {
          call.settled = true;
          resolve(data);
        },
        reject: (err) => {
          call.settled = true;
          reject(err);
        },
      };
      this.calls.push(call);
      const answer = this.answer?.(call);
      if (answer instanceof Error) call.reject(answer);
      else if (answer !== undefined) call.resolve(answer);
    });
  }

  /** The ranks asked, in order. */
  ranks(): Array<number | undefined> {
    return this.calls.map((c) => c.rank);
  }
}

const directBytes = (chunkId: string, rank: number | undefined): Buffer =>
  Buffer.from(`direct ${chunkId} from rank ${rank}`);
const rank0Bytes = (index: number): Buffer => Buffer.from(`rank 0 chunk ${index}`);

/** A DirectDownload over a fake reader, with viaRank0 and verify that record their calls. */
function download(
  holders: number[][],
  reader: FakeReader,
  options: {
    ranks?: number[];
    now?: () => number;
    /** The clock whose timers start the hedges (default: one the test never moves). */
    clock?: ManualClock;
    /** verify throws for these (index, data) */
    badCopy?: (index: number, data: Buffer) => boolean;
  } = {},
): { dl: DirectDownload; viaRank0: number[]; verified: Array<[number, string]> } {
  const viaRank0: number[] = [];
  const verified: Array<[number, string]> = [];
  const dl = new DirectDownload(
    reader as unknown as ChunkPorts,
    metadataOf(holders),
    sourcesOf(holders.length, options.ranks),
    (index) => {
      viaRank0.push(index);
      return Promise.resolve(rank0Bytes(index));
    },
    (index, data) => {
      verified.push([index, data.toString()]);
      if (options.badCopy?.(index, data)) throw new Error(`chunk ${index} fails its checksum`);
    },
    options.now ?? (() => 0),
    (ms, fn) => (options.clock ?? new ManualClock()).setTimer(ms, fn),
    DIRECT_READ_HEDGE_MS,
  );
  return { dl, viaRank0, verified };
}

/** Lets every settled read's continuation (fetch's finally, its caller) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Fetches chunks `indices` one after another (each awaited before the next starts). */
async function fetchInTurn(dl: DirectDownload, indices: number[]): Promise<string[]> {
  const out: string[] = [];
  for (const i of indices) out.push((await dl.fetch(i)).toString());
  return out;
}

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);
const onBoth = (n: number): number[][] => range(n).map(() => [1, 2]);

// ---- DirectDownload ----------------------------------------------------------------------------

describe('DirectDownload: where each chunk is read', () => {
  it('a window of 8 reads outstanding at once is spread 4 and 4 over the two holders; new reads go to the holder with fewer outstanding; each chunk is asked for by its own id and verified', async () => {
    const reader = new FakeReader();
    const { dl, viaRank0, verified } = download(onBoth(16), reader);

    const first = range(8).map((i) => dl.fetch(i));
    expect(reader.calls.map((c) => c.chunkId)).toEqual(range(8).map((i) => `id-${i}`));
    expect(reader.ranks()).toEqual([1, 2, 1, 2, 1, 2, 1, 2]);

    // Rank 2 answers all of its reads; rank 1 answers none: rank 1 has 4 outstanding, rank 2 none.
    for (const call of reader.calls.filter((c) => c.rank === 2))
      call.resolve(directBytes(call.chunkId, call.rank));
    await settle();
    const next = range(4, 8).map((i) => dl.fetch(i));
    expect(reader.ranks().slice(8), 'reads after rank 2 caught up').toEqual([2, 2, 2, 2]);

    for (const call of reader.calls.filter((c) => !c.settled))
      call.resolve(directBytes(call.chunkId, call.rank));
    const got = (await Promise.all([...first, ...next])).map((b) => b.toString());
    expect(got).toEqual(reader.calls.map((c) => directBytes(c.chunkId, c.rank).toString()));
    expect(viaRank0, 'chunks read through rank 0').toEqual([]);
    expect(verified.map(([i]) => i).sort((a, b) => a - b)).toEqual(range(12));
    for (const [i, data] of verified)
      expect(data, `chunk ${i} verified as read`).toContain(`id-${i} `);
  });

  it('chunks read one at a time take turns between the holders (ties by chunk index)', async () => {
    const reader = new FakeReader((c) => directBytes(c.chunkId, c.rank));
    const { dl, viaRank0 } = download(onBoth(6), reader);
    await fetchInTurn(dl, range(6));
    expect(reader.ranks()).toEqual([1, 2, 1, 2, 1, 2]);
    expect(viaRank0).toEqual([]);
  });

  it('a rank that cannot be reached (ChunkPortError unreachable): that chunk comes through rank 0, and no later chunk is asked of that rank, even one only it holds', async () => {
    const reader = new FakeReader((c) =>
      c.rank === 1
        ? new ChunkPortError(true, `${c.endpoint} closed the connection`)
        : directBytes(c.chunkId, c.rank),
    );
    // Chunk 3 has its only copy on rank 1.
    const holders = [[1, 2], [1, 2], [1, 2], [1], [1, 2], [2, 1], [1, 2]];
    const { dl, viaRank0, verified } = download(holders, reader);
    const got = await fetchInTurn(dl, range(7));
    expect(got[0], 'chunk 0').toBe(rank0Bytes(0).toString());
    expect(got[3], 'chunk 3').toBe(rank0Bytes(3).toString());
    expect(viaRank0).toEqual([0, 3]);
    expect(reader.ranks(), 'ranks asked, in order').toEqual([1, 2, 2, 2, 2, 2]);
    expect(
      verified.map(([i]) => i),
      'verified direct reads',
    ).toEqual([1, 2, 4, 5, 6]);
  });

  it('an error reply (ChunkPortError not unreachable, e.g. NOT_FOUND): that chunk comes through rank 0, and the rank is still asked for later chunks', async () => {
    const reader = new FakeReader((c) =>
      c.chunkId === 'id-0'
        ? new ChunkPortError(false, `${c.endpoint}: no copy of id-0 here`)
        : directBytes(c.chunkId, c.rank),
    );
    const { dl, viaRank0 } = download(onBoth(6), reader);
    const got = await fetchInTurn(dl, range(6));
    expect(got[0]).toBe(rank0Bytes(0).toString());
    expect(viaRank0).toEqual([0]);
    expect(reader.ranks()).toEqual([1, 2, 1, 2, 1, 2]);
    expect(got.slice(1)).toEqual(
      range(5, 1).map((i) => directBytes(`id-${i}`, i % 2 === 0 ? 1 : 2).toString()),
    );
  });

  it('bytes that fail their check (verify throws): that chunk comes through rank 0, never the bad bytes; the rank is still asked later', async () => {
    const reader = new FakeReader((c) => directBytes(c.chunkId, c.rank));
    const { dl, viaRank0 } = download(onBoth(6), reader, {
      badCopy: (index, data) => index === 1 && data.toString().startsWith('direct'),
    });
    const got = await fetchInTurn(dl, range(6));
    expect(got[1]).toBe(rank0Bytes(1).toString());
    expect(viaRank0).toEqual([1]);
    expect(reader.ranks()).toEqual([1, 2, 1, 2, 1, 2]);
  });

  it('any other failure of the read (a plain Error) also falls back to rank 0 for that chunk only', async () => {
    const reader = new FakeReader((c) =>
      c.chunkId === 'id-2' ? new Error('something odd') : directBytes(c.chunkId, c.rank),
    );
    const { dl, viaRank0 } = download(onBoth(5), reader);
    const got = await fetchInTurn(dl, range(5));
    expect(got[2]).toBe(rank0Bytes(2).toString());
    expect(viaRank0).toEqual([2]);
    expect(reader.ranks()).toEqual([1, 2, 1, 2, 1]);
  });

  it('a failure through rank 0 as well is the fetch\u2019s failure (the only way fetch rejects)', async () => {
    const reader = new FakeReader((c) => new ChunkPortError(true, `${c.endpoint} is gone`));
    const dl = new DirectDownload(
      reader as unknown as ChunkPorts,
      metadataOf(onBoth(2)),
      sourcesOf(2),
      () => Promise.reject(new Error('rank 0 says no')),
      () => undefined,
      () => 0,
    );
    await expect(dl.fetch(0)).rejects.toThrow('rank 0 says no');
  });

  it('once 5 s have passed since the last chunk through rank 0 (by its clock), the next chunk goes through rank 0 and the following ones directly again', async () => {
    let now = 1_000;
    const reader = new FakeReader((c) => directBytes(c.chunkId, c.rank));
    const { dl, viaRank0 } = download(onBoth(12), reader, { now: () => now });

    await fetchInTurn(dl, [0, 1]);
    now = 5_999; // 4999 ms after the download began
    await fetchInTurn(dl, [2]);
    expect(viaRank0, 'before 5 s').toEqual([]);
    now = 6_000;
    // Three fetches at once: only the first goes through rank 0.
    await Promise.all([dl.fetch(3), dl.fetch(4), dl.fetch(5)]);
    expect(viaRank0, 'at 5 s').toEqual([3]);
    now = 10_999;
    await fetchInTurn(dl, [6, 7]);
    expect(viaRank0, '4999 ms after that').toEqual([3]);
    now = 11_000;
    await fetchInTurn(dl, [8, 9, 10, 11]);
    expect(viaRank0, 'another 5 s on').toEqual([3, 8]);
    expect(reader.calls.map((c) => c.chunkId)).toEqual(
      [0, 1, 2, 4, 5, 6, 7, 9, 10, 11].map((i) => `id-${i}`),
    );
  });

  it("rank 0's renewMs in the offer replaces the 5 s default; the caller's abort signal reaches every read", async () => {
    let now = 0;
    const reader = new FakeReader((c) => directBytes(c.chunkId, c.rank));
    const viaRank0: number[] = [];
    const dl = new DirectDownload(
      reader as unknown as ChunkPorts,
      metadataOf(onBoth(4)),
      { ...sourcesOf(4), renewMs: 1_000 },
      (index) => {
        viaRank0.push(index);
        return Promise.resolve(rank0Bytes(index));
      },
      () => undefined,
      () => now,
    );
    const signal = new AbortController().signal;
    now = 999;
    await dl.fetch(0, signal);
    expect(viaRank0).toEqual([]);
    now = 1_000;
    await dl.fetch(1, signal);
    await dl.fetch(2, signal);
    expect(viaRank0).toEqual([1]);
    expect(reader.calls.map((c) => c.signal)).toEqual([signal, signal]);
  });

  it('holders without a chunk port are never asked: a chunk held only by such a rank comes through rank 0, one held by it and another from the other', async () => {
    // Rank 3 holds copies but rank 0 offered no chunk port for it.
    const reader = new FakeReader((c) => directBytes(c.chunkId, c.rank));
    const holders = [[3, 1], [3, 1], [3], [2, 3], [3, 1], [3, 2], [3]];
    const { dl, viaRank0 } = download(holders, reader);
    const got = await fetchInTurn(dl, range(7));
    expect(viaRank0).toEqual([2, 6]);
    expect(reader.calls.map((c) => c.endpoint)).toEqual(
      [1, 1, 2, 1, 2].map((rank) => ENDPOINT[rank]),
    );
    expect(got[2]).toBe(rank0Bytes(2).toString());
  });

  it('no chunk port for any holder: every chunk comes through rank 0', async () => {
    const reader = new FakeReader((c) => directBytes(c.chunkId, c.rank));
    const { dl, viaRank0 } = download(onBoth(3), reader, { ranks: [] });
    await fetchInTurn(dl, range(3));
    expect(viaRank0).toEqual([0, 1, 2]);
    expect(reader.calls).toEqual([]);
  });

  it(`a read with no answer after ${DIRECT_READ_HEDGE_MS} ms (a stopped rank) is asked of rank 0 as well, whose answer is taken; that rank is passed over from then on`, async () => {
    const clock = new ManualClock();
    // Rank 1 never answers; rank 2 answers at once.
    const reader = new FakeReader((c) => (c.rank === 1 ? undefined : directBytes(c.chunkId, 2)));
    const { dl, viaRank0 } = download(onBoth(4), reader, { clock });
    const first = dl.fetch(0); // index 0 goes to rank 1 (ties by index)
    let got: string | undefined;
    void first.then((b) => (got = b.toString()));
    clock.advance(DIRECT_READ_HEDGE_MS - 1);
    await settle();
    expect([got, viaRank0]).toEqual([undefined, []]);
    clock.advance(1);
    await settle();
    expect(got).toBe(rank0Bytes(0).toString());
    expect(viaRank0).toEqual([0]);
    // Later chunks, even those rank 1 would have served, come from rank 2.
    expect(await fetchInTurn(dl, [1, 2, 3])).toEqual(
      ['id-1', 'id-2', 'id-3'].map((id) => directBytes(id, 2).toString()),
    );
    expect(reader.ranks()).toEqual([1, 2, 2, 2]);
  });

  it('a slow read that answers before rank 0 is taken; one that answers within the hedge time asks nothing of rank 0', async () => {
    const clock = new ManualClock();
    const reader = new FakeReader();
    const rank0: Array<(b: Buffer) => void> = [];
    const dl = new DirectDownload(
      reader as unknown as ChunkPorts,
      metadataOf(onBoth(2)),
      sourcesOf(2),
      () => new Promise<Buffer>((resolve) => rank0.push(resolve)),
      () => undefined,
      () => 0,
      (ms, fn) => clock.setTimer(ms, fn),
      DIRECT_READ_HEDGE_MS,
    );
    const quick = dl.fetch(0);
    await settle();
    reader.calls[0]!.resolve(Buffer.from('quick'));
    expect((await quick).toString()).toBe('quick');
    clock.advance(DIRECT_READ_HEDGE_MS);
    expect(rank0).toHaveLength(0);
    expect(clock.pendingTimers()).toBe(0);

    const slow = dl.fetch(1);
    await settle();
    clock.advance(DIRECT_READ_HEDGE_MS);
    await settle();
    expect(rank0).toHaveLength(1);
    reader.calls[1]!.resolve(Buffer.from('direct, late'));
    expect((await slow).toString()).toBe('direct, late');
  });
});

// ---- ChunkPorts against a real socket ----------------------------------------------------------

interface ReadRequest {
  op: string;
  id: number;
  chunkId: string;
}

/** A chunk port: a ServiceSocket on 127.0.0.1, port 0, that records requests and answers as told. */
class FakeReadPort {
  readonly requests: ReadRequest[] = [];
  private constructor(
    readonly socket: ServiceSocket,
    answer: ((port: FakeReadPort, client: Buffer, req: ReadRequest) => void) | undefined,
  ) {
    socket.onMessage((client, frames) => {
      const req = unpack(frames[0]!) as ReadRequest;
      this.requests.push(req);
      answer?.(this, client, req);
    });
  }

  static async bind(
    answer?: (port: FakeReadPort, client: Buffer, req: ReadRequest) => void,
    port = 0,
  ): Promise<FakeReadPort> {
    const socket = await ServiceSocket.bind('127.0.0.1', port, { maxMessageBytes: 64 * 1024 });
    const fake = new FakeReadPort(socket, answer);
    ports.push(fake);
    return fake;
  }

  get endpoint(): string {
    return this.socket.endpoint;
  }

  get port(): number {
    return Number(/:(\d+)$/.exec(this.endpoint)?.[1]);
  }

  reply(client: Buffer, fields: object, data?: Buffer): void {
    const frames = data === undefined ? [pack(fields)] : [pack(fields), data];
    this.socket.send(client, frames).catch(() => undefined);
  }

  close(): void {
    this.socket.close();
  }
}

const ports: FakeReadPort[] = [];
const readers: ChunkPorts[] = [];

function reader(timeoutMs: number, connectTimeoutMs: number, now?: () => number): ChunkPorts {
  const r = new ChunkPorts(timeoutMs, connectTimeoutMs, now);
  readers.push(r);
  return r;
}

afterEach(() => {
  for (const r of readers.splice(0)) r.close();
  for (const p of ports.splice(0)) p.close();
});

/** The bytes a fake chunk port serves for `chunkId`. */
const served = (chunkId: string): Buffer => Buffer.from(`bytes of ${chunkId}`.repeat(100));

/** Polls `condition` every 5 ms; fails after `timeoutMs`. */
async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The ChunkPortError a promise rejects with, and after how many ms. */
async function failure(promise: Promise<unknown>): Promise<{ err: ChunkPortError; ms: number }> {
  const started = performance.now();
  const err = await promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${String(value)}`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ChunkPortError);
  return { err: err as ChunkPortError, ms: performance.now() - started };
}

/** Binds a ServiceSocket on `port` again once the port is free (a closed socket lets go soon). */
async function rebind(
  port: number,
  answer: (p: FakeReadPort, client: Buffer, req: ReadRequest) => void,
): Promise<FakeReadPort> {
  const deadline = performance.now() + 5_000;
  for (;;) {
    try {
      return await FakeReadPort.bind(answer, port);
    } catch (err) {
      if (performance.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

const serve = (p: FakeReadPort, client: Buffer, req: ReadRequest): void =>
  p.reply(client, { id: req.id, ok: true }, served(req.chunkId));

describe('ChunkPorts against a chunk port (a real ServiceSocket on 127.0.0.1)', () => {
  it('a read sends {op: chunk-read, id, chunkId} and resolves with the bytes served; three at once, answered in reverse order, each get their own', async () => {
    const held: Array<[Buffer, ReadRequest]> = [];
    const port = await FakeReadPort.bind((p, client, req) => {
      held.push([client, req]);
      if (held.length === 3) for (const [c, r] of held.reverse()) serve(p, c, r);
    });
    const r = reader(5_000, 2_000);
    const got = await Promise.all(['c-1', 'c-2', 'c-3'].map((id) => r.read(port.endpoint, id)));
    expect(got.map((b) => b.toString())).toEqual(
      ['c-1', 'c-2', 'c-3'].map((id) => served(id).toString()),
    );
    expect(port.requests.map(({ op, chunkId }) => ({ op, chunkId }))).toEqual(
      ['c-1', 'c-2', 'c-3'].map((chunkId) => ({ op: 'chunk-read', chunkId })),
    );
    expect(new Set(port.requests.map((q) => q.id)).size, 'distinct ids').toBe(3);
    expect(port.requests.every((q) => Number.isInteger(q.id))).toBe(true);
  });

  it('an error reply rejects with ChunkPortError, unreachable false, carrying the message; the port is asked again at once', async () => {
    const port = await FakeReadPort.bind((p, client, req) => {
      if (req.chunkId === 'missing')
        p.reply(client, {
          id: req.id,
          ok: false,
          error: { code: 'STORE_NOT_FOUND', message: 'no copy of missing here' },
        });
      else serve(p, client, req);
    });
    const r = reader(5_000, 2_000);
    const { err } = await failure(r.read(port.endpoint, 'missing'));
    expect(err.unreachable).toBe(false);
    expect(err.message).toContain('no copy of missing here');
    expect((await r.read(port.endpoint, 'there')).toString()).toBe(served('there').toString());
  });

  it('ok without the bytes (no frame 1) rejects, unreachable false', async () => {
    const port = await FakeReadPort.bind((p, client, req) =>
      p.reply(client, { id: req.id, ok: true }),
    );
    const { err } = await failure(reader(5_000, 2_000).read(port.endpoint, 'c'));
    expect(err.unreachable).toBe(false);
  });

  it('no answer: rejects unreachable after its timeout (200 ms), not before, not much later; the late answer settles nothing', async () => {
    const late: Array<[Buffer, ReadRequest]> = [];
    const port = await FakeReadPort.bind((p, client, req) => {
      if (req.chunkId === 'c-silent') late.push([client, req]);
      else serve(p, client, req);
    });
    const r = reader(200, 2_000);
    const { err, ms } = await failure(r.read(port.endpoint, 'c-silent'));
    expect(err.unreachable).toBe(true);
    expect(err.message).toMatch(/no answer/);
    expect(ms).toBeGreaterThanOrEqual(190);
    expect(ms).toBeLessThan(2_000);
    // The answer after the deadline is dropped: the next read gets its own bytes, not those.
    expect(late).toHaveLength(1);
    for (const [client, req] of late) serve(port, client, req);
    expect((await r.read(port.endpoint, 'c-next')).toString()).toBe(served('c-next').toString());
  });

  it('a port nothing listens on: rejects unreachable within the connect timeout, then is given up on for 30 s: the next download does not wait again', async () => {
    const free = await new Promise<number>((resolve) => {
      const server = net.createServer();
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    let now = 0;
    const r = reader(10_000, 200, () => now);
    const endpoint = `tcp://127.0.0.1:${free}`;
    const { err, ms } = await failure(r.read(endpoint, 'c'));
    expect(err.unreachable).toBe(true);
    expect(ms).toBeLessThan(5_000);
    now = 29_999;
    const again = await failure(r.read(endpoint, 'd'));
    expect(again.err.message).toMatch(/given up on/);
    expect(again.ms, 'at once, not after another connect timeout').toBeLessThan(100);
    now = 30_000;
    const retried = await failure(r.read(endpoint, 'e'));
    expect(retried.err.message, 'tried again after 30 s').toMatch(/cannot send/);
  });

  it('many reads waiting on one abort signal (downloads sharing it) add one listener to it: Node warns on stderr past 10', async () => {
    const port = await FakeReadPort.bind(() => {
      // Never answers.
    });
    const r = reader(10_000, 2_000);
    const controller = new AbortController();
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const reads = Array.from({ length: 12 }, (_, i) =>
        r.read(port.endpoint, `c${i}`, controller.signal),
      );
      await waitFor('the requests to arrive', () => port.requests.length === 12);
      controller.abort();
      for (const read of reads) expect((await failure(read)).err.unreachable).toBe(false);
      // Node emits its warning on a later tick.
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('an abort rejects the read at once (unreachable false: the port is not to blame), and a read after it is not sent', async () => {
    const port = await FakeReadPort.bind(() => {
      // Never answers.
    });
    const r = reader(10_000, 2_000);
    const controller = new AbortController();
    const pending = r.read(port.endpoint, 'a', controller.signal);
    await waitFor('the request to arrive', () => port.requests.length === 1);
    controller.abort();
    const { err, ms } = await failure(pending);
    expect(err.unreachable).toBe(false);
    expect(ms, 'at the abort, not at the 10 s timeout').toBeLessThan(1_000);
    expect((await failure(r.read(port.endpoint, 'b', controller.signal))).err.unreachable).toBe(
      false,
    );
    expect(port.requests).toHaveLength(1);
  });

  it('the port closes its connection: pending reads reject unreachable at once (not at their 10 s timeout), later reads of it reject without trying until 30 s have passed (injected clock), then it is tried again', async () => {
    let now = 0;
    const port = await FakeReadPort.bind(); // never answers
    const endpoint = port.endpoint;
    const r = reader(10_000, 2_000, () => now);
    const pending = [r.read(endpoint, 'a'), r.read(endpoint, 'b')];
    await waitFor('the chunk port to get both requests', () => port.requests.length === 2);
    port.close();
    for (const p of pending) {
      const { err, ms } = await failure(p);
      expect(err.unreachable).toBe(true);
      expect(err.message).toMatch(/closed the connection/);
      expect(ms, 'well before the 10 s timeout').toBeLessThan(5_000);
    }

    // Someone listens on the port again, but the reader does not try it within 30 s.
    const back = await rebind(Number(/:(\d+)$/.exec(endpoint)?.[1]), serve);
    expect(back.endpoint).toBe(endpoint);
    now = 29_999;
    const refused = await failure(r.read(endpoint, 'c'));
    expect(refused.err.unreachable).toBe(true);
    expect(refused.err.message).toMatch(/given up on/);
    expect(refused.ms).toBeLessThan(100);
    expect(back.requests, 'requests the port got within the 30 s').toEqual([]);

    now = 30_000;
    expect((await r.read(endpoint, 'd')).toString()).toBe(served('d').toString());
    expect(back.requests.map((q) => q.chunkId)).toEqual(['d']);
  });

  it('close() rejects the reads outstanding, unreachable, and every read after', async () => {
    const port = await FakeReadPort.bind();
    const r = reader(10_000, 2_000);
    const pending = r.read(port.endpoint, 'a');
    await waitFor('the request to arrive', () => port.requests.length === 1);
    r.close();
    expect((await failure(pending)).err.unreachable).toBe(true);
    expect((await failure(r.read(port.endpoint, 'b'))).err.unreachable).toBe(true);
  });
});

// ---- directSourcesOf -----------------------------------------------------------------------------

describe('directSourcesOf: the get-begin offer, checked against the file', () => {
  const meta = metadataOf([
    [1, 2],
    [2, 3],
    [3, 1],
  ]);
  const good = {
    chunkIds: ['a', 'b', 'c'],
    endpoints: [
      { rank: 1, endpoint: 'tcp://10.0.0.1:41001' },
      { rank: 2, endpoint: 'tcp://[::1]:41002' },
    ],
  };

  it("keeps rank 0's renewMs when it is a positive integer, and leaves out any other", () => {
    expect(directSourcesOf({ ...good, renewMs: 2_500 }, meta, '127.0.0.1')).toEqual({
      ...good,
      renewMs: 2_500,
    });
    for (const renewMs of [0, -1, 1.5, '2500', null])
      expect(directSourcesOf({ ...good, renewMs }, meta, '127.0.0.1'), String(renewMs)).toEqual(
        good,
      );
  });

  it('takes a well-formed offer as it is (an empty endpoint list too)', () => {
    expect(directSourcesOf(good, meta, '127.0.0.1')).toEqual(good);
    expect(directSourcesOf({ ...good, endpoints: [] }, meta, 'localhost')).toEqual({
      ...good,
      endpoints: [],
    });
  });

  it("leaves out loopback chunk ports when rank 0 is reached at another address: they would be the client's own machine's", () => {
    const offer = {
      ...good,
      endpoints: [...good.endpoints, { rank: 3, endpoint: 'tcp://127.0.0.1:41003' }],
    };
    expect(directSourcesOf(offer, meta, '10.0.0.9')).toEqual({
      ...good,
      endpoints: [{ rank: 1, endpoint: 'tcp://10.0.0.1:41001' }],
    });
    expect(directSourcesOf(offer, meta, '::1')).toEqual(offer);
    expect(directSourcesOf(offer, meta, '127.0.0.1')).toEqual(offer);
  });

  it.each<[string, unknown]>([
    ['undefined', undefined],
    ['null', null],
    ['a string', 'tcp://10.0.0.1:41001'],
    ['a number', 7],
    ['chunkIds missing', { endpoints: good.endpoints }],
    ['chunkIds too short', { ...good, chunkIds: ['a', 'b'] }],
    ['chunkIds too long', { ...good, chunkIds: ['a', 'b', 'c', 'd'] }],
    ['chunkIds not an array', { ...good, chunkIds: 'abc' }],
    ['a chunk id not a string', { ...good, chunkIds: ['a', 2, 'c'] }],
    ['a chunk id null', { ...good, chunkIds: ['a', null, 'c'] }],
    ['endpoints missing', { chunkIds: good.chunkIds }],
    ['endpoints not an array', { ...good, endpoints: { rank: 1, endpoint: 'tcp://a:1' } }],
    ['an endpoint null', { ...good, endpoints: [null] }],
    [
      'an endpoint without tcp://',
      { ...good, endpoints: [{ rank: 1, endpoint: '10.0.0.1:41001' }] },
    ],
    ['an endpoint ipc://', { ...good, endpoints: [{ rank: 1, endpoint: 'ipc:///tmp/x' }] }],
    ['an endpoint not a string', { ...good, endpoints: [{ rank: 1, endpoint: 41001 }] }],
    ['a rank not an integer', { ...good, endpoints: [{ rank: 1.5, endpoint: 'tcp://a:1' }] }],
    ['a rank a string', { ...good, endpoints: [{ rank: '1', endpoint: 'tcp://a:1' }] }],
    ['a rank missing', { ...good, endpoints: [{ endpoint: 'tcp://a:1' }] }],
  ])('refuses %s (undefined)', (_label, offer) => {
    expect(directSourcesOf(offer, meta, '127.0.0.1')).toBeUndefined();
  });
});
