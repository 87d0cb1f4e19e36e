/**
 * A whole MemFlow store in one process, for simulation tests: rank 0's Coordinator and N data
 * ranks on the in-memory transport (with its fault injection), memory chunk stores, an in-memory
 * journal, and a protocol-level client that speaks the client protocol over a fake channel.
 * Nothing here sleeps: tests await the operations themselves, and the idle sweep runs on a
 * ManualClock the test advances.
 */
import { pack, unpack } from 'msgpackr';
import { afterEach, expect } from 'vitest';
import { Communicator } from '../../src/comm/communicator.js';
import { MemoryNetwork } from '../../src/comm/memory-transport.js';
import type {
  ChunkPortRequest,
  FileMetadata,
  Request,
  WireError,
} from '../../src/protocol/client-protocol.js';
import { Coordinator, type ClientChannel, type JournalWriter } from '../../src/rank/coordinator.js';
import { DataRank } from '../../src/rank/data-rank.js';
import { ManualClock } from '../../src/runtime/clock.js';
import type { Random } from '../../src/runtime/random.js';
import { MemoryChunkStore } from '../../src/store/chunk-store.js';
import { chunkChecksum, createFileHasher } from '../../src/store/checksum.js';
import { FileIndex, type IndexRecord } from '../../src/store/file-index.js';
import { RecordChunker, type RecordsChunk } from '../../src/records/record-chunker.js';
import { RecordScanner } from '../../src/records/record-scanner.js';

export class MemoryJournal implements JournalWriter {
  readonly records: IndexRecord[] = [];
  append(record: IndexRecord): Promise<void> {
    this.records.push(structuredClone(record));
    return Promise.resolve();
  }
}

type Reply = { id: number; ok: boolean; error?: WireError; [k: string]: unknown };

/**
 * A service socket in memory (rank 0's client socket, a data rank's chunk port): each client is a
 * numbered id. A closed channel is a port whose process is gone: what is sent to it is never
 * answered.
 */
export class MemoryChannel implements ClientChannel {
  private handler: ((client: Buffer, frames: Buffer[]) => void) | undefined;
  private closed = false;
  readonly clients = new Map<string, (frames: Buffer[]) => void>();

  onMessage(handler: (client: Buffer, frames: Buffer[]) => void): void {
    this.handler = handler;
  }

  send(client: Buffer, frames: readonly Uint8Array[]): Promise<void> {
    const deliver = this.closed ? undefined : this.clients.get(client.toString('hex'));
    if (!deliver) return Promise.reject(new Error('client gone'));
    const copy = frames.map((f) => Buffer.from(f));
    queueMicrotask(() => deliver(copy));
    return Promise.resolve();
  }

  fromClient(client: Buffer, frames: Uint8Array[]): void {
    if (this.closed) return;
    const copy = frames.map((f) => Buffer.from(f));
    queueMicrotask(() => this.handler?.(client, copy));
  }

  close(): void {
    this.closed = true;
  }
}

export class ProtocolError extends Error {
  constructor(readonly wire: WireError) {
    super(`${wire.code}: ${wire.message}`);
  }
}

/** Speaks the client protocol over a MemoryChannel (to rank 0, or chunk-read to a chunk port). */
export class SimClient {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    (r: { reply: Reply; payload: Buffer | undefined }) => void
  >();
  readonly id: Buffer;

  constructor(
    private readonly channel: MemoryChannel,
    clientNumber: number,
  ) {
    this.id = Buffer.from(clientNumber.toString(16).padStart(8, '0'), 'hex');
    channel.clients.set(this.id.toString('hex'), (frames) => {
      const reply = unpack(frames[0]!) as Reply;
      this.pending.get(reply.id)?.({ reply, payload: frames[1] });
      this.pending.delete(reply.id);
    });
  }

  async call<T = Reply>(
    request: Record<string, unknown> & { op: Request['op'] | ChunkPortRequest['op'] },
    payload?: Uint8Array,
  ): Promise<{ reply: T; payload: Buffer | undefined }> {
    const id = this.nextId++;
    const answer = new Promise<{ reply: Reply; payload: Buffer | undefined }>((resolve) =>
      this.pending.set(id, resolve),
    );
    this.channel.fromClient(
      this.id,
      payload ? [pack({ ...request, id }), payload] : [pack({ ...request, id })],
    );
    const got = await answer;
    if (!got.reply.ok) throw new ProtocolError(got.reply.error!);
    return got as unknown as { reply: T; payload: Buffer | undefined };
  }

  /** Sends raw frames and returns the reply (for malformed-input tests). */
  async raw(frames: Uint8Array[], id: number): Promise<Reply> {
    const answer = new Promise<{ reply: Reply; payload: Buffer | undefined }>((resolve) =>
      this.pending.set(id, resolve),
    );
    this.channel.fromClient(this.id, frames);
    return (await answer).reply;
  }

  async upload(
    name: string,
    content: Buffer,
    options: { commit?: boolean } = {},
  ): Promise<FileMetadata | string> {
    const { reply: begin } = await this.call<{ uploadId: string; chunkSizeBytes: number }>({
      op: 'put-begin',
      name,
      sizeBytes: content.length,
    });
    const hasher = createFileHasher();
    const sends: Promise<unknown>[] = [];
    for (let off = 0, index = 0; off < content.length; off += begin.chunkSizeBytes, index++) {
      const bytes = content.subarray(off, off + begin.chunkSizeBytes);
      hasher.update(bytes);
      sends.push(
        this.call(
          { op: 'put-chunk', uploadId: begin.uploadId, index, checksum: chunkChecksum(bytes) },
          bytes,
        ),
      );
    }
    await Promise.all(sends);
    if (options.commit === false) return begin.uploadId;
    const { reply } = await this.call<{ metadata: FileMetadata }>({
      op: 'put-commit',
      uploadId: begin.uploadId,
      sha256: hasher.digestHex(),
    });
    return reply.metadata;
  }

  /**
   * Uploads a JSON dataset as records, as DfsClient.putRecords does (chunks in order, each with
   * its records' IDs). Rejects with the first refusal; the upload is aborted then.
   */
  async uploadRecords(name: string, document: Buffer, idField = 'id'): Promise<FileMetadata> {
    const { reply: begin } = await this.call<{ uploadId: string; chunkSizeBytes: number }>({
      op: 'put-begin',
      name,
      sizeBytes: document.length + 1,
      records: { idField },
    });
    const scanner = new RecordScanner(RecordChunker.maxRecordBytes(begin.chunkSizeBytes));
    const chunker = new RecordChunker(begin.chunkSizeBytes, idField);
    const chunks: RecordsChunk[] = [];
    for (const record of scanner.push(document)) {
      const full = chunker.add(record);
      if (full) chunks.push(full);
    }
    scanner.end();
    const last = chunker.finish();
    if (last) chunks.push(last);
    const hasher = createFileHasher();
    try {
      // In order, at most 8 in flight (the window the coordinator grants).
      // The first refusal in reply order is the one the client reports.
      const inFlight = new Set<Promise<unknown>>();
      let failure: { error: unknown } | undefined;
      for (const [index, chunk] of chunks.entries()) {
        while (inFlight.size >= 8) await Promise.race(inFlight);
        if (failure) break;
        hasher.update(chunk.bytes);
        const sent = this.call(
          {
            op: 'put-chunk',
            uploadId: begin.uploadId,
            index,
            checksum: chunkChecksum(chunk.bytes),
            records: { first: chunk.firstRecord, ids: chunk.ids },
          },
          chunk.bytes,
        )
          .catch((error: unknown) => {
            failure ??= { error };
          })
          .finally(() => inFlight.delete(sent));
        inFlight.add(sent);
      }
      await Promise.all(inFlight);
      if (failure) throw failure.error;
      const { reply } = await this.call<{ metadata: FileMetadata }>({
        op: 'put-commit',
        uploadId: begin.uploadId,
        sha256: hasher.digestHex(),
        records: { chunks: chunks.length, count: scanner.count },
      });
      return reply.metadata;
    } catch (err) {
      await this.call({ op: 'put-abort', uploadId: begin.uploadId });
      throw err;
    }
  }

  /** One record by ID: the parsed record, and which chunk and rank answered. */
  async query(
    name: string,
    recordId: string | number,
  ): Promise<{ record: unknown; chunk: number; rank: number }> {
    const { reply, payload } = await this.call<{ chunk: number; rank: number }>({
      op: 'query',
      name,
      recordId,
    });
    return {
      record: JSON.parse(payload!.toString('utf8')) as unknown,
      chunk: reply.chunk,
      rank: reply.rank,
    };
  }

  async download(name: string): Promise<Buffer> {
    const { reply } = await this.call<{ readId: string; metadata: FileMetadata }>({
      op: 'get-begin',
      name,
    });
    try {
      const parts = await Promise.all(
        reply.metadata.chunks.map(async (c) => {
          const { payload } = await this.call({
            op: 'get-chunk',
            readId: reply.readId,
            index: c.index,
          });
          if (!payload || chunkChecksum(payload) !== c.checksum)
            throw new Error(`chunk ${c.index} failed its checksum`);
          return payload;
        }),
      );
      return Buffer.concat(parts);
    } finally {
      await this.call({ op: 'get-end', readId: reply.readId });
    }
  }
}

export interface StoreWorldOptions {
  dataRanks: number;
  /** Seeded randomness for the network's fault injection. */
  random?: Random;
  replicas?: number;
  chunkSizeBytes?: number;
  capacityBytes?: number | number[];
  hosts?: string[];
  /** Scrub rate of the data ranks (default off). */
  scrubBytesPerSecond?: number;
  /** Rank 0's small-chunk cache (default off, so reads exercise the data ranks). */
  readCacheBytes?: number;
}

export class StoreWorld {
  readonly network: MemoryNetwork;
  readonly clock = new ManualClock(0);
  readonly channel = new MemoryChannel();
  readonly journal = new MemoryJournal();
  readonly stores: MemoryChunkStore[] = [];
  /** Every line rank 0 logged, in order. */
  readonly rank0Log: string[] = [];
  readonly comms: Communicator[] = [];
  /** Data rank r's chunk port (its current one: a restart binds a new one) and its endpoint. */
  readonly chunkPorts: MemoryChannel[] = [];
  readonly portEndpoints: string[] = [];
  /** Every chunk port ever bound, by endpoint (the ports of crashed processes are closed). */
  private readonly portsByEndpoint = new Map<string, MemoryChannel>();
  coordinator!: Coordinator;
  private readonly stops: Array<AbortController | undefined> = [];
  private readonly runs: Array<Promise<void> | undefined> = [];
  private clients = 0;

  constructor(readonly options: StoreWorldOptions) {
    this.network = new MemoryNetwork({ clock: this.clock, random: options.random });
  }

  async start(index = new FileIndex()): Promise<void> {
    const size = this.options.dataRanks + 1;
    for (let r = 0; r < size; r++) {
      this.comms.push(
        Communicator.world(this.network.createTransport(r), size, {
          clock: this.clock,
          defaultTimeoutMs: 10_000,
        }),
      );
    }
    for (let r = 1; r < size; r++) {
      const cap = Array.isArray(this.options.capacityBytes)
        ? this.options.capacityBytes[r - 1]
        : this.options.capacityBytes;
      this.stores[r] = new MemoryChunkStore(cap);
      this.startDataRank(r);
    }
    this.coordinator = new Coordinator(this.comms[0]!, index, this.journal, this.clock, {
      replicas: this.options.replicas ?? 2,
      chunkSizeBytes: this.options.chunkSizeBytes ?? 1024,
      sessionIdleMs: 10_000,
      dataTimeoutMs: 5_000,
      wallClockMs: () => 1_700_000_000_000 + this.clock.now(),
      heartbeatIntervalMs: 1000,
      deadAfterMs: 5000,
      readCacheBytes: this.options.readCacheBytes ?? 0,
      log: (line) => {
        this.rank0Log.push(line);
        if (process.env.MEMFLOW_SIM_LOG) console.log(`[${this.clock.now()} ms] rank 0: ${line}`);
      },
    });
    await this.coordinator.start(this.channel);
  }

  /** Flips a byte of every chunk copy data rank `rank` holds, as a failing disk would. */
  corruptCopies(rank: number): void {
    const chunks = (this.stores[rank] as unknown as { chunks: Map<string, { data: Buffer }> })
      .chunks;
    for (const c of chunks.values()) c.data[0] = (c.data[0] ?? 0) ^ 0xff;
  }

  private startDataRank(r: number): void {
    const cap = Array.isArray(this.options.capacityBytes)
      ? this.options.capacityBytes[r - 1]
      : this.options.capacityBytes;
    const stop = new AbortController();
    this.stops[r] = stop;
    // A new process binds a new chunk port, on a port number no earlier process had.
    const channel = new MemoryChannel();
    const endpoint = `tcp://sim-rank-${r}:${this.portsByEndpoint.size + 1}`;
    this.chunkPorts[r] = channel;
    this.portEndpoints[r] = endpoint;
    this.portsByEndpoint.set(endpoint, channel);
    const dataRank = new DataRank(this.comms[r]!, this.stores[r]!, {
      host: this.options.hosts?.[r - 1] ?? 'sim',
      capacityBytes: cap ?? 2 ** 40,
      heartbeatIntervalMs: 1000,
      commandTimeoutMs: 5000,
      scrubBytesPerSecond: this.options.scrubBytesPerSecond ?? 0,
      chunkPort: { channel, endpoint },
      log: process.env.MEMFLOW_SIM_LOG
        ? (line) => console.log(`[${this.clock.now()} ms] rank ${r}: ${line}`)
        : undefined,
    });
    this.runs[r] = dataRank.run(stop.signal).catch(() => undefined);
  }

  /** kill -9 of data rank r: its process is gone, its disk (the memory store) stays. */
  crash(r: number): void {
    this.stops[r]?.abort();
    this.comms[r]?.close();
    this.chunkPorts[r]?.close();
    this.network.crash(r);
  }

  /** Starts data rank r again on its old disk, as a restarted process would. */
  restart(r: number): void {
    const transport = this.network.restart(r);
    this.comms[r] = Communicator.world(transport, this.comms.length, {
      clock: this.clock,
      defaultTimeoutMs: 10_000,
    });
    this.startDataRank(r);
  }

  /**
   * Lets simulated time pass in steps, letting every message and promise settle between steps,
   * until `done` settles or `maxMs` of simulated time has passed. Returns whether it settled.
   */
  async runUntil(done: Promise<unknown>, maxMs: number, stepMs = 50): Promise<boolean> {
    let settled = false;
    void done.then(
      () => (settled = true),
      () => (settled = true),
    );
    await flush();
    for (let t = 0; t < maxMs && !settled; t += stepMs) {
      this.clock.advance(stepMs);
      await flush();
    }
    return settled;
  }

  /**
   * A new data rank joins the running world (as memflow-run --join does): it gets the next
   * number, rank 0 admits it and tells the others, and it starts with an empty store.
   */
  join(capacityBytes?: number): number {
    const r = this.comms.length;
    const transport = this.network.createTransport(r);
    this.coordinator.onRankRegistered(r, `memory:${r}`);
    this.comms[r] = Communicator.world(transport, r + 1, {
      clock: this.clock,
      defaultTimeoutMs: 10_000,
    });
    this.stores[r] = new MemoryChunkStore(capacityBytes);
    if (capacityBytes !== undefined) {
      const caps = Array.isArray(this.options.capacityBytes) ? this.options.capacityBytes : [];
      caps[r - 1] = capacityBytes;
      this.options.capacityBytes = caps;
    }
    this.startDataRank(r);
    return r;
  }

  /** Lets `ms` of simulated time pass in steps, settling messages between steps. */
  async elapse(ms: number, stepMs = 50): Promise<void> {
    for (let t = 0; t < ms; t += stepMs) {
      this.clock.advance(stepMs);
      await flush();
    }
  }

  client(): SimClient {
    return new SimClient(this.channel, ++this.clients);
  }

  /**
   * A client of a data rank's chunk port: data rank `at`'s current one, or the one bound at the
   * endpoint `at` (as a get-begin reply's `direct` offer names it).
   */
  chunkPortClient(at: number | string): SimClient {
    const channel = typeof at === 'number' ? this.chunkPorts[at] : this.portsByEndpoint.get(at);
    if (!channel) throw new Error(`no chunk port ${at}`);
    return new SimClient(channel, ++this.clients);
  }

  async stop(): Promise<void> {
    for (const s of this.stops) s?.abort();
    await Promise.allSettled(this.runs.filter((r): r is Promise<void> => r !== undefined));
    for (const c of this.comms) c.close();
  }
}

/** Lets queued microtasks and immediates run (messages without delay are delivered in microtasks). */
export async function flush(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Deterministic content of `length` bytes. */
export function content(length: number, seed = 1): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf[i] = x & 0xff;
  }
  return buf;
}

/**
 * Starts the StoreWorld a test asks for, and stops it after that test, also when the test fails.
 * Call once at the top of a test file; each test then calls the function it returns.
 */
export function worldPerTest(): (options: StoreWorldOptions) => Promise<StoreWorld> {
  let world: StoreWorld | undefined;
  afterEach(async () => {
    await world?.stop();
    world = undefined;
  });
  return async (options) => {
    world = new StoreWorld(options);
    await world.start();
    return world;
  };
}

/** Lets simulated time run until `promise` settles (at most 60 s of it), then returns it. */
export async function settle<T>(w: StoreWorld, promise: Promise<T>): Promise<T> {
  expect(await w.runUntil(promise, 60_000), 'settled within 60 s of simulated time').toBe(true);
  return promise;
}
