/**
 * A data rank: keeps chunk copies in its ChunkStore, answers rank 0's point-to-point chunk
 * requests, and takes part in the collectives rank 0's commands call for.
 *
 * Two loops run side by side: the request loop (put/get/delete of single chunks, many at once,
 * bounded by `maxConcurrentRequests`) and the command loop (one collective at a time, in rank 0's
 * order). Both stop when `signal` aborts or rank 0 sends 'shutdown'.
 */
import { ANY_SOURCE, type Communicator } from '../comm/communicator.js';
import { isCommError } from '../comm/errors.js';
import type { ChunkStore, StoredChunk } from '../store/chunk-store.js';
import { StoreError } from '../store/errors.js';
import { chunkChecksum } from '../store/checksum.js';
import { RecordLookupCache } from '../records/chunk-lookup.js';
import { DataClient } from './data-client.js';
import {
  TAG_COMMAND,
  TAG_HEARTBEAT,
  TAG_NOTICE,
  TAG_PEER,
  TAG_DATA_REPLY,
  TAG_DATA_REQUEST,
  type Command,
  type DataReply,
  type DataRequest,
  type InventoryReport,
  type Notice,
  type PeerUpdate,
  type RankReport,
} from './messages.js';
import { ChunkPort } from './chunk-port.js';
import type { ClientChannel } from './client-channel.js';
import { Semaphore } from '../runtime/semaphore.js';
import { WriteGrants } from './write-grants.js';
import { SCRUB_BUSY_WINDOW_MS, scrubPauseMs } from './scrub-pace.js';

/**
 * Request slots that clients' direct reads can never take all of: rank 0's requests (uploads'
 * copies, repairs) always find these free or wait behind a bounded number of reads.
 */
const SLOTS_KEPT_FOR_RANK_0 = 4;

export interface DataRankOptions {
  host: string;
  /**
   * The capacity configured for this rank (from --capacity or the hostfile); Infinity when none
   * was, and the rank offers what its disk can hold.
   */
  capacityBytes: number;
  /**
   * The disk under the store: which file system (device), what it had free at start, and how to
   * ask again. Each heartbeat asks and reports it; rank 0 caps the capacity by this rank's share
   * of it (ranks of one host may share a file system), so what is offered never exceeds what the
   * disk can really take.
   */
  disk?: { id: string; freeBytes: number; sample: () => Promise<number> };
  /** Requests served at once, rank 0's and clients' direct reads together (default 16). */
  maxConcurrentRequests?: number;
  /** Period of the heartbeat to rank 0 (each carries this rank's usage). */
  heartbeatIntervalMs?: number;
  /**
   * How long rank 0 may stay unreachable before this rank gives up and stops (default 10 minutes).
   * Long on purpose: a data rank cut off by a partition must still be there to rejoin when the
   * network heals; only a coordinator that is really gone should end it (and a launcher that saw
   * rank 0 end stops the job sooner).
   */
  rootGiveUpMs?: number;
  /** Deadline of one collective a command calls for. */
  commandTimeoutMs?: number;
  /** Memory for records chunks indexed by ID for local queries (default 128 MiB). */
  recordCacheBytes?: number;
  /** Bytes per second the background scrub re-reads and verifies (0 turns it off). */
  scrubBytesPerSecond?: number;
  /** Tells the transport where a restarted or joined rank can now be reached. */
  onPeer?: (rank: number, endpoint: string) => void;
  /**
   * The socket clients read and write large chunks at directly (chunk-port.ts), and the endpoint
   * they reach it at, which every report carries to rank 0. Without one, both go through rank 0.
   */
  chunkPort?: { channel: ClientChannel; endpoint: string };
  log?: (line: string) => void;
}

export class DataRank {
  private readonly slots: Semaphore;
  private readonly stop = new AbortController();
  private readonly peers: DataClient;
  /** Records chunks indexed by ID, for queries (the chunk is read and parsed on first use). */
  private readonly records: RecordLookupCache;
  /** The communicator commands' collectives run over: the world at first, the live ranks later. */
  private commandComm: Communicator;
  private stopHeartbeat: () => void = () => {};
  private stopRootWatch: () => void = () => {};
  /** Set when the rank stopped because rank 0 is gone (run() then rejects with it). */
  private rootLost: Error | undefined;
  /** Stored bytes when the disk last said it was full: the capacity we offer until space is freed. */
  private fullAtBytes: number | undefined;
  private stopScrub: () => void = () => {};
  /** When the last data request arrived (the scrub slows down while requests keep coming). */
  private lastRequestMs = -Infinity;
  /** The seq of the last report made (RankReport.seq). */
  private reportSeq = 0;
  /** The disk's free bytes at the last sample. */
  private diskFreeBytes: number | undefined;
  private readonly chunkPort: ChunkPort | undefined;
  /** Copies rank 0 placed here for clients to write directly (direct writes). */
  private readonly grants: WriteGrants;

  constructor(
    private readonly comm: Communicator,
    private readonly store: ChunkStore,
    private readonly options: DataRankOptions,
  ) {
    const slots = options.maxConcurrentRequests ?? 16;
    this.slots = new Semaphore(slots);
    this.peers = new DataClient(comm, options.commandTimeoutMs ?? 30_000);
    this.commandComm = comm;
    this.records = new RecordLookupCache(options.recordCacheBytes ?? 128 * 1024 * 1024, (id) =>
      store.get(id),
    );
    this.diskFreeBytes = options.disk?.freeBytes;
    this.grants = new WriteGrants({
      clock: comm.clock,
      put: (chunkId, bytes, checksum) => {
        this.lastRequestMs = this.comm.clock.now();
        return this.slots.with(() => this.putCopy(chunkId, bytes, checksum));
      },
    });
    if (options.chunkPort) {
      this.chunkPort = new ChunkPort(options.chunkPort.channel, {
        get: (id) => store.get(id),
        slots: this.slots,
        readSlots: Math.max(1, slots - SLOTS_KEPT_FOR_RANK_0),
        onBadCopy: (chunkId, reason) => this.tellBadCopy(chunkId, reason),
        onRequest: () => (this.lastRequestMs = this.comm.clock.now()),
        write: (chunkId, checksum, bytes) => this.grants.write(chunkId, checksum, bytes),
      });
    }
  }

  /**
   * Runs until rank 0 says shutdown or `signal` aborts. Rejects when rank 0 stayed unreachable
   * for deadAfterMs (the coordinator is gone: a data rank alone serves nobody).
   */
  async run(signal: AbortSignal): Promise<void> {
    const onAbort = (): void => this.stop.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    this.watchRoot();
    this.heartbeat();
    this.scrub();
    try {
      await Promise.all([this.requestLoop(), this.commandLoop(), this.peerLoop()]);
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.stopHeartbeat();
      this.stopRootWatch();
      this.stopScrub();
      this.peers.close();
    }
    if (this.rootLost) throw this.rootLost;
  }

  private heartbeat(): void {
    const periodMs = this.options.heartbeatIntervalMs ?? 1000;
    const beat = (): void => {
      if (this.stop.signal.aborted) return;
      this.comm.send(0, TAG_HEARTBEAT, this.report()).catch(() => {
        // Rank 0 unreachable for now: the root watch decides when to give up.
      });
      // The next beat carries this sample: statfs is cheap, but not worth delaying a beat for.
      this.options.disk
        ?.sample()
        .then((free) => (this.diskFreeBytes = free))
        .catch(() => undefined);
      this.stopHeartbeat = this.comm.clock.setTimer(periodMs, beat);
    };
    beat();
  }

  /**
   * The background scrub: re-reads every copy in turn, paced to scrubBytesPerSecond (slower
   * while requests are being served: scrub-pace.ts), and tells rank 0 about any that fails its
   * checksum or has vanished, so it is replaced from a good copy.
   */
  private scrub(): void {
    const rate = this.options.scrubBytesPerSecond ?? 32 * 1024 * 1024;
    if (!(rate > 0)) return;
    let queue: StoredChunk[] = [];
    const next = (): void => {
      if (this.stop.signal.aborted) return;
      if (queue.length === 0) queue = this.store.list();
      const chunk = queue.shift();
      // An empty store looks again after a second; otherwise pace by the bytes just read.
      const busy = this.comm.clock.now() - this.lastRequestMs < SCRUB_BUSY_WINDOW_MS;
      const pauseMs = chunk ? scrubPauseMs(chunk.sizeBytes, rate, busy) : 1000;
      const check =
        chunk && this.store.has(chunk.id)
          ? this.store.get(chunk.id).then(() => undefined)
          : Promise.resolve();
      check
        .catch((err: unknown) => {
          if (
            !(err instanceof StoreError) ||
            (err.code !== 'STORE_CORRUPT' && err.code !== 'STORE_NOT_FOUND')
          )
            return;
          this.options.log?.(`scrub: ${err.message}`);
          this.tellBadCopy(chunk!.id, err.message);
        })
        .finally(() => {
          if (!this.stop.signal.aborted) this.stopScrub = this.comm.clock.setTimer(pauseMs, next);
        });
    };
    this.stopScrub = this.comm.clock.setTimer(1000, next);
  }

  /** Tells rank 0 that a copy here is bad, so it replaces it from a good one. */
  private tellBadCopy(chunkId: string, reason: string): void {
    const notice: Notice = { op: 'bad-copy', chunkId, reason };
    this.comm.send(0, TAG_NOTICE, notice).catch(() => {
      // Rank 0 unreachable: its own reads and the next scrub pass find the copy again.
    });
  }

  /** Stops this rank when its connection to rank 0 stays down for rootGiveUpMs. */
  private watchRoot(): void {
    const deadAfterMs = this.options.rootGiveUpMs ?? 600_000;
    this.comm.onPeerEvent((event) => {
      if (event.rank !== 0) return;
      this.stopRootWatch();
      if (event.kind === 'connected') return;
      this.stopRootWatch = this.comm.clock.setTimer(deadAfterMs, () => {
        this.rootLost = new Error(`rank 0 has been unreachable for ${deadAfterMs} ms; stopping`);
        this.stop.abort(this.rootLost);
      });
    });
  }

  report(): RankReport {
    return {
      seq: ++this.reportSeq,
      rank: this.comm.worldRank,
      host: this.options.host,
      usedBytes: this.store.usedBytes(),
      capacityBytes: this.capacityBytes(),
      chunkCount: this.store.chunkCount(),
      ...(this.chunkPort && {
        portEndpoint: this.options.chunkPort!.endpoint,
        directReads: this.chunkPort.readsServed,
        directWrites: this.grants.writesServed,
      }),
      // Rank 0 caps the capacity by this rank's share of the disk: ranks of one host may share it.
      ...(this.options.disk &&
        this.diskFreeBytes !== undefined && {
          disk: {
            id: `${this.options.host}:${this.options.disk.id}`,
            freeBytes: this.diskFreeBytes,
          },
        }),
    };
  }

  /** The configured capacity, capped where the disk last said it was full (the disk's share: rank 0). */
  private capacityBytes(): number {
    const capacity = Math.min(this.options.capacityBytes, this.fullAtBytes ?? Infinity);
    return Number.isFinite(capacity) ? capacity : Number.MAX_SAFE_INTEGER;
  }

  private async requestLoop(): Promise<void> {
    for (;;) {
      let msg;
      try {
        msg = await this.comm.recv<DataRequest>(ANY_SOURCE, TAG_DATA_REQUEST, {
          timeoutMs: Infinity,
          signal: this.stop.signal,
        });
      } catch (err) {
        if (this.stop.signal.aborted || isCommError(err, 'COMM_CLOSED')) return;
        throw err;
      }
      const source = msg.source;
      // Grants hold no slot while they wait for the client's bytes; the write takes one.
      if (msg.data.op === 'accept' || msg.data.op === 'revoke') {
        void this.serveGrant(msg.data).then(({ reply }) =>
          this.comm
            .send(source, TAG_DATA_REPLY, reply)
            .catch((err: unknown) =>
              this.options.log?.(`reply to rank ${source} failed: ${String(err)}`),
            ),
        );
        continue;
      }
      await this.slots.acquire();
      this.lastRequestMs = this.comm.clock.now();
      void this.serve(msg.data, msg.payload[0])
        .then(({ reply, payload }) => this.comm.send(source, TAG_DATA_REPLY, reply, payload))
        .catch((err: unknown) =>
          this.options.log?.(`reply to rank ${source} failed: ${String(err)}`),
        )
        .finally(() => this.slots.release());
    }
  }

  private async serve(
    req: Exclude<DataRequest, { op: 'accept' | 'revoke' }>,
    bytes: Uint8Array | undefined,
  ): Promise<{ reply: DataReply; payload: Uint8Array[] }> {
    try {
      switch (req.op) {
        case 'put':
          if (!bytes)
            throw new StoreError('STORE_BAD_REQUEST', `put of ${req.chunkId} carries no bytes`);
          await this.putCopy(req.chunkId, bytes, req.checksum);
          // Read at once: no report can be made between the store counting the chunk and here.
          return { reply: { reqId: req.reqId, ok: true, reportSeq: this.reportSeq }, payload: [] };
        case 'get':
          return {
            reply: { reqId: req.reqId, ok: true },
            payload: [await this.store.get(req.chunkId)],
          };
        case 'copy': {
          // The copy goes straight to its new rank, not through rank 0; get() verified it.
          const data = await this.store.get(req.chunkId);
          const { reply } = await this.peers.request(
            req.to,
            { op: 'put', chunkId: req.chunkId, checksum: chunkChecksum(data) },
            [data],
          );
          // The target's reportSeq: rank 0 counts the copy against the target's reports.
          const target = reply.reportSeq === undefined ? {} : { reportSeq: reply.reportSeq };
          return { reply: { reqId: req.reqId, ok: true, ...target }, payload: [] };
        }
        case 'list':
          return { reply: { reqId: req.reqId, ok: true, chunks: this.store.list() }, payload: [] };
        case 'find': {
          const record = await this.records.find(req.chunkId, req.idField, req.id);
          return {
            reply: { reqId: req.reqId, ok: true, found: record !== undefined },
            payload: record ? [record] : [],
          };
        }
        case 'delete': {
          // Taken before the first deletion: a report made after it may show some of them, and
          // rank 0 then leaves its count to that report (see Cluster.forget).
          const reportSeq = this.reportSeq;
          let deleted = 0;
          for (const id of req.chunkIds) {
            this.records.forget(id);
            if (await this.store.delete(id)) deleted++;
          }
          if (deleted > 0) this.fullAtBytes = undefined;
          return {
            reply: { reqId: req.reqId, ok: true, deleted, reportSeq },
            payload: [],
          };
        }
      }
    } catch (err) {
      const code = err instanceof StoreError ? err.code : 'STORE_INTERNAL';
      const message = err instanceof Error ? err.message : String(err);
      return { reply: { reqId: req.reqId, ok: false, code, message }, payload: [] };
    }
  }

  private async putCopy(chunkId: string, bytes: Uint8Array, checksum: string): Promise<void> {
    try {
      await this.store.put(chunkId, bytes, checksum);
    } catch (err) {
      // A full disk: offer no more than what is stored now, so placement moves on.
      if (err instanceof StoreError && err.code === 'STORE_NO_SPACE')
        this.fullAtBytes = this.store.usedBytes();
      throw err;
    }
  }

  /** Rank 0's 'accept' (answered once the client's copy is durable) and 'revoke'. */
  private async serveGrant(
    req: Extract<DataRequest, { op: 'accept' | 'revoke' }>,
  ): Promise<{ reply: DataReply }> {
    try {
      if (req.op === 'revoke') this.grants.revoke(req.chunkId);
      else await this.grants.accept(req.chunkId, req.sizeBytes, req.checksum, req.ttlMs);
      // Read at once, as for 'put': the grant settles in the same turn as the store's put.
      return { reply: { reqId: req.reqId, ok: true, reportSeq: this.reportSeq } };
    } catch (err) {
      const code = err instanceof StoreError ? err.code : 'STORE_INTERNAL';
      const message = err instanceof Error ? err.message : String(err);
      return { reply: { reqId: req.reqId, ok: false, code, message } };
    }
  }

  /** Rank 0's news of ranks that restarted (new port) or joined (new number). */
  private async peerLoop(): Promise<void> {
    for (;;) {
      let update: PeerUpdate;
      try {
        update = (
          await this.comm.recv<PeerUpdate>(0, TAG_PEER, {
            timeoutMs: Infinity,
            signal: this.stop.signal,
          })
        ).data;
      } catch (err) {
        if (this.stop.signal.aborted || isCommError(err, 'COMM_CLOSED')) return;
        throw err;
      }
      this.options.onPeer?.(update.rank, update.endpoint);
      if (update.rank >= this.comm.size) this.comm.admit(update.rank);
    }
  }

  private async commandLoop(): Promise<void> {
    const wait = { timeoutMs: Infinity, signal: this.stop.signal };
    for (;;) {
      let command: Command;
      try {
        command = (await this.comm.recv<Command>(0, TAG_COMMAND, wait)).data;
      } catch (err) {
        if (this.stop.signal.aborted || isCommError(err, 'COMM_CLOSED')) return;
        throw err;
      }
      if (command.op === 'shutdown') {
        this.stop.abort('shutdown');
        return;
      }
      try {
        await this.runCommand(command);
      } catch (err) {
        // A collective that failed (a member died mid-way) is not fatal: rank 0 follows it with a
        // 'reconfigure' over the live ranks, which starts a fresh context.
        this.options.log?.(
          `command ${command.op} failed: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
  }

  private async runCommand(command: Exclude<Command, { op: 'shutdown' }>): Promise<void> {
    const comm = this.commandComm;
    const opts = { timeoutMs: this.options.commandTimeoutMs ?? 30_000 };
    switch (command.op) {
      case 'inventory': {
        const report: InventoryReport = { ...this.report(), chunks: this.store.list() };
        await comm.gather(report, 0, opts);
        return;
      }
      case 'report':
        await comm.gather(this.report(), 0, opts);
        return;
      case 'collect-garbage': {
        const ids = (await comm.scatter<string[]>(undefined, 0, opts)) ?? [];
        let deleted = 0;
        for (const id of ids) if (await this.store.delete(id)) deleted++;
        if (deleted > 0) this.options.log?.(`removed ${deleted} chunk copies no file refers to`);
        await comm.gather(deleted, 0, opts);
        return;
      }
      case 'reconfigure':
        if (this.commandComm !== this.comm) this.commandComm.close();
        this.commandComm = this.comm.sub(command.group, { name: `cmd${command.epoch}` });
        return;
    }
  }
}
