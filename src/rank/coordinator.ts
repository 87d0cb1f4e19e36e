/**
 * The coordinator (rank 0): serves clients, keeps the master index, and drives the data ranks.
 *
 * Writes: put-begin checks the name and that every copy fits; each put-chunk is placed by the
 * seed's rule (placement.ts) and sent to its ranks, and acknowledged only when every copy is
 * fsync'd; put-commit appends the new version to the fsync'd journal and only then swaps it into
 * the index, so a reader sees the old version or the new one, whole. Chunks belong to one upload
 * (their ids carry the upload id), so an unfinished upload never touches a committed file; its
 * chunks are deleted when it is aborted or goes idle, and at start-up any chunk no file refers to
 * is collected.
 *
 * Reads: get-begin pins the current version until get-end (or idleness), so replacing or
 * deleting a file never pulls chunks from under a reader; a retired version's chunks are deleted
 * when its last reader lets go. Each chunk is read from the first copy that answers with verified
 * bytes; a bad or missing copy is skipped, never returned.
 */
import { pack } from 'msgpackr';
import type { Communicator } from '../comm/communicator.js';
import type { Clock } from '../runtime/clock.js';
import {
  DIRECT_READ_MIN_CHUNK_BYTES,
  DIRECT_READ_PIN_RENEW_MS,
  DIRECT_WRITE_MIN_CHUNK_BYTES,
  type DirectSources,
  type FileMetadata,
  type GetBeginResult,
  type ListEntry,
  type PutBegin,
  type PutBeginResult,
  type PutPlaceResult,
  type RebalanceResult,
  type Request,
  type StatusResult,
  type WireError,
} from '../protocol/client-protocol.js';
import { StoreError, toWireError } from '../store/errors.js';
import type { ChunkRecord, FileIndex, FileVersion, IndexRecord } from '../store/file-index.js';
import { validateName } from '../store/names.js';
import { formatSize } from '../store/sizes.js';
import { checkFit, placeChunk } from '../store/placement.js';
import { chunkChecksum } from '../store/checksum.js';
import { ChunkCache } from './chunk-cache.js';
import { Cluster } from './cluster.js';
import { CommandRunner } from './commands.js';
import { DataClient } from './data-client.js';
import type { Transition } from './failure-detector.js';
import { HealthMonitor } from './health.js';
import { ANY_SOURCE } from '../comm/communicator.js';
import { isCommError } from '../comm/errors.js';
import type { ClientChannel } from './client-channel.js';
import { TAG_NOTICE, TAG_PEER, type Notice, type PeerUpdate, type RankReport } from './messages.js';
import { OpMetrics, type OpMetricsView } from './op-metrics.js';
import { rebalance } from './rebalance.js';
import { RecentTransitions, type RecentTransitionsView } from './recent-transitions.js';
import { liveHolders, Repairer, wantedCopies } from './repair.js';
import { decodeRequest } from './validate.js';
import { RecordsUpload } from './records-upload.js';
import {
  candidateChunks,
  describeId,
  type RecordId,
  type RecordsIndex,
} from '../records/record-ids.js';

/** Where committed index records are made durable (the fsync'd Journal in production). */
export interface JournalWriter {
  /** Resolves once `record` would survive a crash. */
  append(record: IndexRecord): Promise<void>;
}

export type { ClientChannel } from './client-channel.js';

export interface CoordinatorOptions {
  replicas: number;
  chunkSizeBytes: number;
  /**
   * The window of an upload or a read: chunk requests a client keeps outstanding (told in
   * put-begin and get-begin). A read window of 16 measured faster here (1 GiB retrieves 776-867
   * against 631-694 MB/s), but with it a retrieve right after a restart stalled for 30 s in two
   * of five loaded test runs, cause not yet found; reads keep 8 until that is understood.
   */
  maxChunksInFlight?: number;
  /** An upload or read with no request for this long is abandoned and cleaned up. */
  sessionIdleMs?: number;
  /** Deadline for one chunk request to a data rank. */
  dataTimeoutMs?: number;
  /** Heartbeat period of the data ranks; a rank is suspect after 3 missed beats. */
  heartbeatIntervalMs?: number;
  /** Silence after which a data rank is dead and its copies are re-created elsewhere. */
  deadAfterMs?: number;
  /** How long a dropped connection may stay down before its rank is dead (see FailureDetector). */
  disconnectGraceMs?: number;
  /** Chunk copies re-replication makes at once. */
  repairParallelism?: number;
  /** Bytes of small chunks rank 0 keeps in memory to answer small reads itself (0: none). */
  readCacheBytes?: number;
  /** Wall-clock time for created/modified stamps (injected so simulations are repeatable). */
  wallClockMs?: () => number;
  randomId?: () => string;
  log?: (line: string) => void;
}

interface Upload {
  id: string;
  client: string;
  name: string;
  sizeBytes: number;
  chunkSizeBytes: number;
  /** For a records upload, the most chunks it may have (its count is known at commit). */
  chunkCount: number;
  chunks: Map<number, ChunkRecord>;
  /**
   * Chunks placed for direct writes (put-place) and not yet stored. Whoever takes a placement out
   * of this map owns its copies: a confirmation that finds them all there, a put-chunk with the
   * bytes, or abortUpload, which deletes them.
   */
  placements: Map<number, Placement>;
  /** put-begin offered direct writes (put-place) for this upload. */
  direct: boolean;
  lastActiveMs: number;
  closed: boolean;
  records?: RecordsUpload;
}

/** A chunk whose copies a client writes straight to the data ranks (docs/PROTOCOL.md). */
interface Placement {
  id: string;
  sizeBytes: number;
  checksum: string;
  /** Ranks whose 'accept' has not been answered yet. */
  waiting: Set<number>;
  /** Resolves with the ranks that confirmed a durable copy once every accept is answered. */
  settled: Promise<number[]>;
}

/**
 * How long a data rank waits for the client's copy of a chunk placed on it, at most: a client
 * that placed a chunk and went away holds that space no longer (half the data deadline when that
 * is shorter, so the rank answers the accept before rank 0 gives up on it).
 */
const DIRECT_WRITE_TTL_MS = 20_000;

interface Read {
  id: string;
  client: string;
  file: FileVersion;
  lastActiveMs: number;
}

/** put-whole/get-whole requests one client may have outstanding (each carries at most a chunk). */
const MAX_WHOLE_IN_FLIGHT = 256;

const versionKey = (f: FileVersion): string => `${f.name}\u0000${f.version}`;

/** The size of chunk `index` of a plain (not records) upload: full chunks, then the rest. */
const chunkSizeOf = (upload: Upload, index: number): number =>
  Math.min(upload.chunkSizeBytes, upload.sizeBytes - index * upload.chunkSizeBytes);

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export class Coordinator {
  readonly cluster = new Cluster();
  readonly data: DataClient;
  readonly repairer: Repairer;
  private readonly cache: ChunkCache;
  private readonly health: HealthMonitor;
  private readonly startedAtMs: number;
  private readonly commands: CommandRunner;
  private readonly opMetrics = new OpMetrics();
  private readonly recentTransitions = new RecentTransitions();
  private readonly stopping = new AbortController();
  private readonly uploads = new Map<string, Upload>();
  private readonly reads = new Map<string, Read>();
  private readonly pins = new Map<string, number>();
  private readonly retired = new Map<string, FileVersion>();
  private readonly inFlight = new Map<string, number>();
  private readonly issuedVersions = new Map<string, number>();
  private commitChain: Promise<unknown> = Promise.resolve();
  private readonly opts: Required<CoordinatorOptions>;
  private stopSweep: (() => void) | undefined;
  private nextId = 0;

  constructor(
    private readonly comm: Communicator,
    private readonly index: FileIndex,
    private readonly journal: JournalWriter,
    private readonly clock: Clock,
    options: CoordinatorOptions,
  ) {
    this.opts = {
      maxChunksInFlight: 8,
      sessionIdleMs: 60_000,
      dataTimeoutMs: 30_000,
      heartbeatIntervalMs: 1000,
      deadAfterMs: 5000,
      disconnectGraceMs: Math.max(250, (options.heartbeatIntervalMs ?? 1000) / 2),
      repairParallelism: 8,
      readCacheBytes: 64 * 1024 * 1024,
      wallClockMs: () => Date.now(),
      randomId: () => `${Date.now().toString(36)}${(this.nextId++).toString(36)}`,
      log: () => {},
      ...options,
    };
    this.startedAtMs = clock.now();
    this.data = new DataClient(comm, this.opts.dataTimeoutMs);
    this.cache = new ChunkCache(this.opts.readCacheBytes);
    this.commands = new CommandRunner(comm, Math.min(this.opts.dataTimeoutMs, 10_000));
    this.health = new HealthMonitor(
      comm,
      {
        heartbeatIntervalMs: this.opts.heartbeatIntervalMs,
        deadAfterMs: this.opts.deadAfterMs,
        disconnectGraceMs: this.opts.disconnectGraceMs,
      },
      {
        onReport: (report, fromDeadRank) => this.onReport(report, fromDeadRank),
        onTransition: (t) => this.onTransition(t),
      },
    );
    this.repairer = new Repairer(
      {
        index,
        cluster: this.cluster,
        data: this.data,
        clock,
        commit: (record) => this.commit(record),
        log: (line) => this.opts.log(line),
      },
      this.opts.repairParallelism,
    );
  }

  /**
   * Learns what every data rank holds, removes chunk copies no file refers to (leftovers of
   * uploads cut off by a crash), then starts serving `channel`.
   */
  async start(channel: ClientChannel): Promise<void> {
    const inventory = await this.commands.inventory();
    const referenced = new Set<string>();
    for (const { chunk } of this.index.allChunks()) referenced.add(chunk.id);
    const orphans: string[][] = [];
    this.cluster.updateAll(inventory);
    for (const report of inventory)
      orphans[report.rank] = report.chunks.filter((c) => !referenced.has(c.id)).map((c) => c.id);
    const removed = await this.commands.collectGarbage(orphans);
    if (removed > 0) {
      this.opts.log(`removed ${removed} leftover chunk copies of unfinished uploads`);
      this.cluster.updateAll(await this.commands.report());
    }
    this.health.start(inventory.map((r) => r.rank));
    void this.noticeLoop();
    channel.onMessage((client, frames) => void this.handle(channel, client, frames));
    this.scheduleSweep();
    // Copies may have gone missing while the store was down (a rank not back, a disk replaced).
    void this.repairer.schedule();
  }

  /** Tells the data ranks to stop and releases timers. */
  async stop(): Promise<void> {
    this.stopping.abort();
    this.stopSweep?.();
    this.health.close();
    this.repairer.stop();
    await this.commands.shutdown().catch(() => undefined);
    this.data.close();
  }

  // ---- health: heartbeats, deaths, rejoins, bad copies ----------------------------------------

  /**
   * A rank registered with the rendezvous after the launch: a data rank restarted on its data
   * (same number, new port) or a new one joining (next number). Every data rank learns where it
   * is; a restarted rank is taken back at once (its old incarnation's collectives are void).
   */
  onRankRegistered(rank: number, endpoint: string): void {
    this.comm.admit(rank);
    const update: PeerUpdate = { rank, endpoint };
    for (const r of this.cluster.all()) {
      if (r.rank !== rank && r.state !== 'dead')
        void this.comm.send(r.rank, TAG_PEER, update).catch(() => undefined);
    }
    if (this.cluster.get(rank)) {
      this.opts.log(`rank ${rank} restarted and registered again`);
      this.health.restarted(rank);
    } else {
      this.opts.log(`rank ${rank} joined the world`);
    }
  }

  private onReport(report: RankReport, fromDeadRank: boolean): void {
    const known = this.cluster.get(report.rank);
    this.cluster.update(report);
    if (!known) {
      // A new data rank's first heartbeat: it takes part in commands and placement from now on.
      this.cluster.setState(report.rank, 'alive');
      this.health.admit(report.rank);
      void this.commands.reconfigure(this.liveDataRanks()).catch(() => undefined);
      return;
    }
    // A rank declared dead that speaks again (restarted on its data, or woken from a stop)
    // rejoins: it is watched again, and what it holds is reconciled with the index.
    if (fromDeadRank) this.health.admit(report.rank);
  }

  private onTransition(t: Transition): void {
    this.cluster.setState(t.rank, t.to);
    this.recentTransitions.add(t, this.opts.wallClockMs());
    this.opts.log(`rank ${t.rank} is ${t.to} (${t.reason})`);
    if (t.to === 'dead') {
      this.comm.markFailed(t.rank);
      this.data.failRank(t.rank, 'was declared dead');
      void this.commands.reconfigure(this.liveDataRanks()).catch(() => undefined);
      void this.repairer.schedule();
    } else if (t.to === 'alive' && (t.from === 'dead' || t.restarted)) {
      this.comm.markAlive(t.rank);
      void this.commands.reconfigure(this.liveDataRanks()).catch(() => undefined);
      void this.rejoin(t.rank);
    }
  }

  private liveDataRanks(): number[] {
    return this.cluster
      .all()
      .filter((r) => r.state !== 'dead')
      .map((r) => r.rank);
  }

  /**
   * A rank came back with whatever it held: copies of chunks that lack copies are taken back
   * into the index; copies of deleted files or of chunks that meanwhile got all their copies
   * elsewhere are surplus, and deleted.
   */
  private async reconcile(rank: number): Promise<void> {
    let held: Array<{ id: string; sizeBytes: number }>;
    try {
      held = (await this.data.request(rank, { op: 'list' })).reply.chunks ?? [];
    } catch (err) {
      this.opts.log(
        `cannot list rank ${rank}'s chunks: ${err instanceof Error ? err.message : String(err)}`,
      );
      return;
    }
    const byId = new Map<string, { file: FileVersion; chunk: ChunkRecord }>();
    for (const item of this.index.allChunks()) byId.set(item.chunk.id, item);
    const surplus: Array<{ id: string; sizeBytes: number; ranks: number[] }> = [];
    let reclaimed = 0;
    for (const copy of held) {
      const uploadId = copy.id.slice(0, copy.id.lastIndexOf('.'));
      if (this.uploads.has(uploadId)) continue; // an upload in progress owns it
      const item = byId.get(copy.id);
      if (!item) {
        surplus.push({ ...copy, ranks: [rank] });
        continue;
      }
      const { file, chunk } = item;
      if (chunk.ranks.includes(rank)) continue;
      if (liveHolders(chunk, this.cluster).length < wantedCopies(file, this.cluster)) {
        await this.commit({
          op: 'set-copies',
          name: file.name,
          version: file.version,
          index: chunk.index,
          ranks: [...liveHolders(chunk, this.cluster), rank],
        });
        reclaimed++;
      } else {
        surplus.push({ ...copy, ranks: [rank] });
      }
    }
    if (surplus.length > 0 || reclaimed > 0) {
      this.opts.log(
        `rank ${rank} rejoined: ${reclaimed} copies taken back, ${surplus.length} surplus or stale copies trimmed`,
      );
    }
    // Awaited: rejoin looks again after repairs, and a rank serves requests concurrently, so its
    // list could otherwise come back before these deletions and count the same copies again
    // (deleted twice, and their bytes taken off the rank's usage twice).
    await this.deleteCopies(surplus);
  }

  /**
   * Takes a returning rank back: reconcile what it holds, let re-replication finish, then
   * reconcile again — a repair pass that was copying its chunks elsewhere when it came back drops
   * it from those chunks only when the pass ends, which turns its copies into surplus then.
   */
  private async rejoin(rank: number): Promise<void> {
    await this.reconcile(rank);
    await this.repairer.schedule();
    await this.reconcile(rank);
  }

  /** A copy failed its checksum or vanished: drop it from the index, delete it, make a new one. */
  private async badCopy(
    name: string,
    version: number,
    chunk: ChunkRecord,
    rank: number,
    reason: string,
  ): Promise<void> {
    const current = this.index.get(name);
    const record = current && current.version === version ? current.chunks[chunk.index] : undefined;
    if (!record || !record.ranks.includes(rank)) return;
    this.opts.log(
      `copy of chunk ${chunk.index} of "${name}" on rank ${rank} is bad (${reason}); replacing it`,
    );
    await this.commit({
      op: 'set-copies',
      name,
      version,
      index: chunk.index,
      ranks: record.ranks.filter((r) => r !== rank),
    });
    void this.deleteCopies([{ id: record.id, sizeBytes: record.sizeBytes, ranks: [rank] }]);
    void this.repairer.schedule();
  }

  /** Notices from the data ranks' scrubs. */
  private async noticeLoop(): Promise<void> {
    for (;;) {
      let msg;
      try {
        msg = await this.comm.recv<Notice>(ANY_SOURCE, TAG_NOTICE, {
          timeoutMs: Infinity,
          signal: this.stopping.signal,
        });
      } catch (err) {
        if (this.stopping.signal.aborted || isCommError(err, 'COMM_CLOSED')) return;
        throw err;
      }
      const rank = this.comm.worldRankOf(msg.source);
      if (msg.data.op !== 'bad-copy') continue;
      for (const { file, chunk } of this.index.allChunks()) {
        if (chunk.id === msg.data.chunkId) {
          await this.badCopy(file.name, file.version, chunk, rank, msg.data.reason).catch(
            () => undefined,
          );
          break;
        }
      }
    }
  }

  dataRankCount(): number {
    return this.cluster.all().length;
  }

  // ---- request handling ---------------------------------------------------------------------

  private async handle(channel: ClientChannel, clientId: Buffer, frames: Buffer[]): Promise<void> {
    const startedMs = this.clock.now();
    const { id, request, error } = decodeRequest(frames[0]);
    const client = clientId.toString('hex');
    let reply: Record<string, unknown>;
    let payload: Uint8Array[] = [];
    if (!request) {
      reply = { id, ok: false, error: toWireError(error) };
    } else {
      // Requests that carry chunk bytes are bounded per client, so one client cannot make rank 0
      // hold unbounded data: chunk requests by the window, whole-file requests (small files,
      // which clients send many at once) by a larger budget of their own. put-place and a
      // put-chunk without bytes hold none; an upload's placements have a bound of their own.
      const budget =
        (request.op === 'put-chunk' && frames[1] !== undefined) || request.op === 'get-chunk'
          ? 'chunk'
          : request.op === 'put-whole' || request.op === 'get-whole'
            ? 'whole'
            : undefined;
      let entered = false;
      try {
        if (budget) {
          this.enter(client, budget);
          entered = true;
        }
        const result = await this.dispatch(client, request, frames[1]);
        reply = { id, ok: true, ...result.fields };
        payload = result.payload ?? [];
      } catch (err) {
        const wire: WireError = toWireError(err);
        if (wire.code === 'STORE_INTERNAL')
          this.opts.log(`internal error on ${request.op}: ${String(err)}`);
        reply = { id, ok: false, error: wire };
      } finally {
        if (entered && budget) this.leave(client, budget);
      }
    }
    await channel.send(clientId, [pack(reply), ...payload]).catch(() => {
      // The client went away; its sessions expire on their own.
    });
    const outcome = reply.ok === true ? 'ok' : (reply.error as WireError).code;
    this.opMetrics.observe(
      request?.op ?? 'invalid',
      outcome,
      (this.clock.now() - startedMs) / 1000,
    );
  }

  private enter(client: string, budget: 'chunk' | 'whole'): void {
    const key = `${budget}:${client}`;
    const n = this.inFlight.get(key) ?? 0;
    const limit = budget === 'chunk' ? this.opts.maxChunksInFlight * 2 : MAX_WHOLE_IN_FLIGHT;
    if (n >= limit) {
      throw new StoreError(
        'STORE_BUSY',
        `too many ${budget === 'chunk' ? 'chunk' : 'small-file'} requests in flight from this client (limit ${limit})`,
        { limit },
      );
    }
    this.inFlight.set(key, n + 1);
  }

  private leave(client: string, budget: 'chunk' | 'whole'): void {
    const key = `${budget}:${client}`;
    const n = (this.inFlight.get(key) ?? 1) - 1;
    if (n <= 0) this.inFlight.delete(key);
    else this.inFlight.set(key, n);
  }

  private async dispatch(
    client: string,
    req: Request,
    bytes: Buffer | undefined,
  ): Promise<{ fields: object; payload?: Uint8Array[] }> {
    switch (req.op) {
      case 'put-begin':
        return { fields: this.putBegin(client, req) };
      case 'put-whole':
        return {
          fields: {
            metadata: await this.putWhole(client, req.name, req.checksum, req.sha256, bytes),
          },
        };
      case 'get-whole':
        return this.getWhole(client, req.name);
      case 'put-chunk':
        await this.putChunk(
          this.upload(client, req.uploadId),
          req.index,
          req.checksum,
          bytes,
          req.records,
        );
        return { fields: {} };
      case 'put-place':
        return {
          fields: this.putPlace(this.upload(client, req.uploadId), req.index, req.checksum),
        };
      case 'put-commit':
        return {
          fields: {
            metadata: await this.putCommit(
              this.upload(client, req.uploadId),
              req.sha256,
              req.records,
            ),
          },
        };
      case 'query':
        return this.query(req.name, req.recordId);
      case 'put-abort': {
        const upload = this.uploads.get(req.uploadId);
        if (upload && upload.client === client) this.abortUpload(upload, 'aborted by the client');
        return { fields: {} };
      }
      case 'get-begin':
        return { fields: this.getBegin(client, req.name) };
      case 'get-chunk':
        return {
          fields: {},
          payload: [await this.getChunk(this.read(client, req.readId), req.index)],
        };
      case 'get-end': {
        const read = this.reads.get(req.readId);
        if (read && read.client === client) this.endRead(read);
        return { fields: {} };
      }
      case 'stat':
        return { fields: { metadata: this.metadata(this.existing(req.name)) } };
      case 'list':
        return { fields: { files: this.list() } };
      case 'delete':
        await this.deleteFile(validateName(req.name));
        return { fields: {} };
      case 'status':
        return { fields: this.status() };
      case 'rebalance':
        return { fields: await this.rebalance() };
    }
  }

  // ---- uploads --------------------------------------------------------------------------------

  private effectiveReplicas(): number {
    return Math.max(
      1,
      Math.min(this.opts.replicas, this.cluster.all().filter((r) => r.state === 'alive').length),
    );
  }

  private putBegin(client: string, req: PutBegin): PutBeginResult {
    const name = validateName(req.name);
    const records = req.records === undefined ? undefined : RecordsUpload.check(req.records);
    const chunkSizeBytes = this.opts.chunkSizeBytes;
    // Records chunks end at record boundaries, so how many there will be is known only at the
    // end; a record line is at least 3 bytes ("{}" and a newline), which bounds it.
    const chunkCount = records
      ? Math.ceil(req.sizeBytes / 3)
      : Math.ceil(req.sizeBytes / chunkSizeBytes);
    const replicas = this.effectiveReplicas();
    const usage = this.cluster.usage();
    const noSpace = (neededBytes: number, availableBytes: number): StoreError =>
      new StoreError(
        'STORE_NO_SPACE',
        `not enough space for "${name}": ${formatSize(neededBytes)} needed for ${replicas} copies, ${formatSize(availableBytes)} available`,
        { neededBytes, availableBytes },
      );
    // The cheap bound first: a size beyond all free space is refused without listing its chunks
    // (a request for 4 PiB must not make rank 0 build a billion-entry array).
    const freeBytes = usage
      .filter((u) => u.writable)
      .reduce((sum, u) => sum + Math.max(0, u.capacityBytes - u.usedBytes), 0);
    if (req.sizeBytes * replicas > freeBytes) throw noSpace(req.sizeBytes * replicas, freeBytes);
    // For records the full-chunk split is an estimate: the space check is on the upper bound.
    const sizes = Array.from({ length: Math.ceil(req.sizeBytes / chunkSizeBytes) }, (_, i) =>
      Math.min(chunkSizeBytes, req.sizeBytes - i * chunkSizeBytes),
    );
    const fit = checkFit(usage, replicas, sizes);
    if (!fit.fits) throw noSpace(fit.neededBytes, fit.availableBytes);
    // Large chunks may skip rank 0 (put-place); small ones are cheaper batched through it. A
    // direct chunk waits for more round trips, so it gets a deeper window: rank 0 holds none of
    // its bytes. A client sends at most half of it through rank 0 at once (DirectUpload), which
    // keeps the chunks that fall back within the same budget as an upload through rank 0.
    const direct = !records && chunkSizeBytes >= DIRECT_WRITE_MIN_CHUNK_BYTES && chunkCount >= 2;
    const id = `u${this.opts.randomId()}`;
    this.uploads.set(id, {
      id,
      client,
      name,
      sizeBytes: req.sizeBytes,
      chunkSizeBytes,
      chunkCount,
      chunks: new Map(),
      placements: new Map(),
      direct,
      lastActiveMs: this.clock.now(),
      closed: false,
      ...(records && { records: new RecordsUpload(records.idField, name, req.sizeBytes) }),
    });
    return {
      uploadId: id,
      chunkSizeBytes,
      maxChunksInFlight: direct ? this.directWindow() : this.opts.maxChunksInFlight,
      ...(direct && { direct: true as const }),
    };
  }

  /** Chunks a direct upload may have in flight: as many as the chunk budget allows a client. */
  private directWindow(): number {
    return this.opts.maxChunksInFlight * 2;
  }

  private upload(client: string, uploadId: string): Upload {
    const upload = this.uploads.get(uploadId);
    if (!upload || upload.client !== client || upload.closed) {
      throw new StoreError(
        'STORE_CONFLICT',
        `upload ${uploadId} is not open (it finished, was aborted, or went idle)`,
      );
    }
    upload.lastActiveMs = this.clock.now();
    return upload;
  }

  private async putChunk(
    upload: Upload,
    index: number,
    checksum: string,
    bytes: Buffer | undefined,
    records?: unknown,
  ): Promise<void> {
    this.checkIndex(upload, index);
    const done = upload.chunks.get(index);
    if (done) {
      if (done.checksum === checksum) return; // a retried request: already stored
      throw new StoreError(
        'STORE_CONFLICT',
        `chunk ${index} of "${upload.name}" was already sent with other content`,
      );
    }
    const placement = upload.placements.get(index);
    if (placement && placement.checksum !== checksum)
      throw new StoreError(
        'STORE_CONFLICT',
        `chunk ${index} of "${upload.name}" was placed with another checksum`,
      );
    if (!bytes && placement) return this.confirmPlaced(upload, index, placement);
    if (upload.records) {
      if (!bytes || bytes.length === 0 || bytes.length > upload.chunkSizeBytes)
        throw new StoreError(
          'STORE_BAD_REQUEST',
          `chunk ${index} of records dataset "${upload.name}" has ${bytes?.length ?? 0} bytes, expected 1 to ${upload.chunkSizeBytes}`,
        );
    } else {
      const expected = chunkSizeOf(upload, index);
      if (!bytes || bytes.length !== expected) {
        throw new StoreError(
          'STORE_BAD_REQUEST',
          `chunk ${index} of "${upload.name}" has ${bytes?.length ?? 0} bytes, expected ${expected}`,
        );
      }
    }
    // Before any await: requests are handled in arrival order, which is the dataset's order, so
    // the first repeated ID found is the first in the document.
    if (upload.records && !upload.records.has(index)) upload.records.accept(index, records, bytes);
    const id = `${upload.id}.${index}`;
    // Copies already written directly are kept; the bytes make the rest.
    let written: number[] = [];
    if (placement) {
      upload.placements.delete(index);
      this.revoke(placement);
      written = await placement.settled;
    }
    const ranks = await this.storeCopies(id, checksum, bytes, written);
    if (upload.closed) {
      // Aborted while the copies were being written: they are leftovers now.
      void this.deleteCopies([{ id, sizeBytes: bytes.length, ranks }]);
      throw new StoreError('STORE_CONFLICT', `upload of "${upload.name}" was aborted`);
    }
    upload.chunks.set(index, { index, id, sizeBytes: bytes.length, checksum, ranks });
    this.cache.set(id, bytes);
  }

  /**
   * Writes one chunk to `replicas` ranks chosen by placement, moving on to the next best rank
   * when one fails. Resolves with the ranks that hold a durable copy; throws when none could.
   */
  private async storeCopies(
    id: string,
    checksum: string,
    bytes: Buffer,
    written: readonly number[] = [],
  ): Promise<number[]> {
    const want = this.effectiveReplicas();
    const stored: number[] = [...written];
    const refused = new Set<number>();
    let lastError: unknown;
    for (let round = 0; round < 4 && stored.length < want; round++) {
      const usage = this.cluster
        .usage()
        .map((u) =>
          refused.has(u.rank) || stored.includes(u.rank) ? { ...u, writable: false } : u,
        );
      const targets = placeChunk(usage, want - stored.length, bytes.length);
      if (targets.length === 0) break;
      for (const r of targets) this.cluster.reserve(r, bytes.length);
      const results = await Promise.allSettled(
        targets.map((r) => this.data.request(r, { op: 'put', chunkId: id, checksum }, [bytes])),
      );
      results.forEach((res, i) => {
        const r = targets[i]!;
        if (this.copyOutcome(r, bytes.length, res)) stored.push(r);
        else {
          refused.add(r);
          lastError = res.reason;
          this.opts.log(`rank ${r} could not store chunk ${id}: ${messageOf(res.reason)}`);
        }
      });
    }
    if (stored.length < want) {
      // Acknowledging fewer copies than promised would let one more failure lose the chunk:
      // take back what was written and fail this chunk instead.
      if (stored.length > 0)
        void this.deleteCopies([{ id, sizeBytes: bytes.length, ranks: stored }]);
      if (
        lastError instanceof StoreError &&
        (lastError.code === 'STORE_CORRUPT' || lastError.code === 'STORE_NO_SPACE')
      )
        throw lastError;
      throw new StoreError(
        'STORE_UNAVAILABLE',
        `only ${stored.length} of ${want} data ranks could store chunk ${id}`,
        {},
        { cause: lastError },
      );
    }
    return stored;
  }

  /**
   * Settles the space reserved on `rank` for a copy once its request is answered (counted as
   * stored, with the rank's reportSeq, or given back); a rank that said its disk is full gets no
   * more. Returns whether the copy is stored.
   */
  private copyOutcome(
    rank: number,
    sizeBytes: number,
    res: PromiseSettledResult<{ reply: { reportSeq?: number } }>,
  ): res is PromiseFulfilledResult<{ reply: { reportSeq?: number } }> {
    const ok = res.status === 'fulfilled';
    this.cluster.release(rank, sizeBytes, ok, ok ? res.value.reply.reportSeq : undefined);
    if (!ok && res.reason instanceof StoreError && res.reason.code === 'STORE_NO_SPACE')
      this.cluster.markFull(rank);
    return ok;
  }

  private checkIndex(upload: Upload, index: number): void {
    if (index >= upload.chunkCount)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `chunk ${index} is beyond the ${upload.chunkCount} chunks of "${upload.name}"`,
      );
  }

  /**
   * put-place: places chunk `index` and tells the chosen data ranks to expect the client's copy
   * ('accept'); the client writes the copies to their chunk ports, then confirms with put-chunk.
   * Rank 0 counts a copy only when its data rank says it is durable, never on the client's word.
   */
  private putPlace(upload: Upload, index: number, checksum: string): PutPlaceResult {
    if (!upload.direct)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `put-place is only for uploads that put-begin offered direct writes`,
      );
    this.checkIndex(upload, index);
    const done = upload.chunks.get(index);
    if (done?.checksum === checksum) return { stored: true };
    if (done || upload.placements.has(index))
      throw new StoreError(
        'STORE_CONFLICT',
        `chunk ${index} of "${upload.name}" was already ${done ? 'stored' : 'placed'}`,
      );
    if (upload.placements.size >= this.directWindow())
      throw new StoreError(
        'STORE_BUSY',
        `more than ${this.directWindow()} chunks of "${upload.name}" placed and not yet confirmed`,
        { limit: this.directWindow() },
      );
    const sizeBytes = chunkSizeOf(upload, index);
    const want = this.effectiveReplicas();
    const usage = this.cluster
      .usage()
      .map((u) =>
        this.cluster.get(u.rank)?.portEndpoint === undefined ? { ...u, writable: false } : u,
      );
    const targets = placeChunk(usage, want, sizeBytes);
    if (targets.length < want)
      throw new StoreError(
        'STORE_UNAVAILABLE',
        `only ${targets.length} of ${want} data ranks can take a direct copy of chunk ${index}`,
      );
    const id = `${upload.id}.${index}`;
    const ttlMs = Math.min(DIRECT_WRITE_TTL_MS, Math.floor(this.opts.dataTimeoutMs / 2));
    const waiting = new Set(targets);
    for (const r of targets) this.cluster.reserve(r, sizeBytes);
    const accepts = targets.map((r) =>
      this.data
        .request(r, { op: 'accept', chunkId: id, sizeBytes, checksum, ttlMs })
        .finally(() => waiting.delete(r)),
    );
    const settled = Promise.allSettled(accepts).then((results) =>
      targets.filter((r, i) => {
        const res = results[i]!;
        if (this.copyOutcome(r, sizeBytes, res)) return true;
        // A revoked or unfulfilled placement is the client's change of path, not the rank's fault.
        if (!(res.reason instanceof StoreError && res.reason.code === 'STORE_CONFLICT'))
          this.opts.log(`rank ${r} could not take chunk ${id} directly: ${messageOf(res.reason)}`);
        return false;
      }),
    );
    upload.placements.set(index, { id, sizeBytes, checksum, waiting, settled });
    return {
      chunkId: id,
      copies: targets.map((rank) => ({ rank, endpoint: this.cluster.get(rank)!.portEndpoint! })),
    };
  }

  /**
   * put-chunk without bytes: the client has sent the placed copies (a client may send this with
   * its writes, not after them). Answered once every data rank placed has confirmed its copy, or
   * as soon as one cannot (declared dead, refused, its grant ended): the copies that did arrive
   * stay with the placement for the bytes the client then sends (STORE_UNAVAILABLE says so).
   */
  private async confirmPlaced(upload: Upload, index: number, placement: Placement): Promise<void> {
    const stored = await placement.settled;
    // Taken meanwhile by the chunk's bytes (the client fell back) or by an abort: theirs now.
    if (upload.placements.get(index) !== placement)
      throw new StoreError(
        'STORE_CONFLICT',
        upload.closed
          ? `upload of "${upload.name}" was aborted`
          : `chunk ${index} of "${upload.name}" was sent through rank 0 instead`,
      );
    if (stored.length < this.effectiveReplicas())
      throw new StoreError(
        'STORE_UNAVAILABLE',
        `${stored.length} of the copies of chunk ${index} placed for direct writes arrived; send its bytes`,
      );
    upload.placements.delete(index);
    const { id, sizeBytes, checksum } = placement;
    upload.chunks.set(index, { index, id, sizeBytes, checksum, ranks: stored });
  }

  /** Takes back the accepts of `placement` not yet answered (their ranks then answer at once). */
  private revoke(placement: Placement): void {
    for (const r of placement.waiting)
      void this.data.request(r, { op: 'revoke', chunkId: placement.id }).catch(() => undefined);
  }

  /**
   * A one-chunk file in one request: the same steps as put-begin, put-chunk and put-commit (the
   * same checks, placement, durability and atomic swap), without two round trips.
   */
  private async putWhole(
    client: string,
    name: string,
    checksum: string,
    sha256: string,
    bytes: Buffer | undefined,
  ): Promise<FileMetadata> {
    const sizeBytes = bytes?.length ?? 0;
    if (sizeBytes > this.opts.chunkSizeBytes) {
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `put-whole takes at most one chunk (${this.opts.chunkSizeBytes} bytes); use put-begin`,
        {
          chunkSizeBytes: this.opts.chunkSizeBytes,
        },
      );
    }
    const { uploadId } = this.putBegin(client, { op: 'put-begin', id: 0, name, sizeBytes });
    const upload = this.upload(client, uploadId);
    try {
      if (sizeBytes > 0) await this.putChunk(upload, 0, checksum, bytes);
      return await this.putCommit(upload, sha256);
    } catch (err) {
      this.abortUpload(upload, 'failed');
      throw err;
    }
  }

  /** A one-chunk file's metadata and bytes in one reply; a larger file starts a pinned read. */
  private async getWhole(
    client: string,
    name: string,
  ): Promise<{ fields: object; payload?: Uint8Array[] }> {
    const begin = this.getBegin(client, name);
    const read = this.read(client, begin.readId);
    if (read.file.chunks.length > 1) return { fields: begin };
    try {
      const payload = read.file.chunks.length === 1 ? [await this.getChunk(read, 0)] : [];
      return { fields: { metadata: begin.metadata, whole: true }, payload };
    } finally {
      this.endRead(read);
    }
  }

  private putCommit(upload: Upload, sha256: string, records?: unknown): Promise<FileMetadata> {
    let recordsIndex: RecordsIndex | undefined;
    if (upload.records) {
      const sent = (records as { chunks?: unknown } | undefined)?.chunks;
      if (
        !Number.isSafeInteger(sent) ||
        (sent as number) < 0 ||
        (sent as number) > upload.chunkCount
      )
        throw new StoreError(
          'STORE_BAD_REQUEST',
          'put-commit: records.chunks must be the number of chunks sent',
        );
      upload.chunkCount = sent as number;
    }
    const missing = [...Array(upload.chunkCount).keys()].filter((i) => !upload.chunks.has(i));
    if (missing.length > 0) {
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `cannot commit "${upload.name}": chunks ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''} were not stored`,
      );
    }
    if (!/^[0-9a-f]{64}$/.test(sha256))
      throw new StoreError('STORE_BAD_REQUEST', 'sha256 must be 64 lowercase hex digits');
    if (upload.records) {
      recordsIndex = upload.records.finish(records, upload.chunks.size);
      // The upper bound given at put-begin becomes the real size.
      upload.sizeBytes = [...upload.chunks.values()].reduce((n, c) => n + c.sizeBytes, 0);
    }
    upload.closed = true;
    this.uploads.delete(upload.id);
    const version = Math.max(
      this.index.nextVersion(upload.name),
      (this.issuedVersions.get(upload.name) ?? 0) + 1,
    );
    this.issuedVersions.set(upload.name, version);
    const now = this.opts.wallClockMs();
    const file: FileVersion = {
      name: upload.name,
      version,
      sizeBytes: upload.sizeBytes,
      sha256,
      createdMs: now,
      modifiedMs: now,
      chunkSizeBytes: upload.chunkSizeBytes,
      replicas: this.opts.replicas,
      chunks: [...upload.chunks.values()].sort((a, b) => a.index - b.index),
      ...(recordsIndex && { records: recordsIndex }),
    };
    return this.commit({ op: 'commit', file }).then(() =>
      this.metadata(this.index.get(upload.name) ?? file),
    );
  }

  /**
   * Makes `record` durable, then applies it to the index. Journal appends run concurrently (the
   * journal fsyncs them as a group), but records are applied in the order they were issued.
   */
  private commit(record: IndexRecord): Promise<void> {
    if (record.op === 'commit') {
      const previous = this.index.get(record.file.name);
      if (previous) record.file.createdMs = previous.createdMs;
    }
    const durable = this.journal.append(record);
    const applied = this.commitChain.then(async () => {
      await durable;
      const { replaced, removed } = this.index.apply(record);
      for (const old of [replaced, removed]) if (old) this.retire(old);
      // A copy may have died while the upload was still open (its chunks were not in the index
      // when the repair pass ran): a new version that lacks copies gets them now.
      if (record.op === 'commit') {
        const want = wantedCopies(record.file, this.cluster);
        if (record.file.chunks.some((c) => liveHolders(c, this.cluster).length < want))
          void this.repairer.schedule();
      }
    });
    this.commitChain = applied.catch(() => undefined);
    return applied;
  }

  private abortUpload(upload: Upload, why: string): void {
    if (upload.closed) return;
    upload.closed = true;
    this.uploads.delete(upload.id);
    this.opts.log(`upload of "${upload.name}" ${why}; removing its ${upload.chunks.size} chunks`);
    void this.deleteCopies([...upload.chunks.values()]);
    for (const placement of upload.placements.values()) {
      this.revoke(placement);
      void placement.settled.then((ranks) => {
        if (ranks.length > 0)
          void this.deleteCopies([{ id: placement.id, sizeBytes: placement.sizeBytes, ranks }]);
      });
    }
    upload.placements.clear();
  }

  // ---- reads ----------------------------------------------------------------------------------

  private existing(name: string): FileVersion {
    const file = this.index.get(validateName(name));
    if (!file)
      throw new StoreError('STORE_NOT_FOUND', `no file named "${name}" in the store`, { name });
    return file;
  }

  private getBegin(client: string, name: string): GetBeginResult {
    const file = this.existing(name);
    const id = `r${this.opts.randomId()}`;
    this.reads.set(id, { id, client, file, lastActiveMs: this.clock.now() });
    this.pin(file);
    const direct = this.directSources(file);
    return {
      readId: id,
      metadata: this.metadata(file),
      maxChunksInFlight: this.opts.maxChunksInFlight,
      ...(direct && { direct }),
    };
  }

  /**
   * Where the client may read a file of large chunks itself: each chunk's id, and the chunk ports
   * of the live ranks that hold copies. None for small chunks (rank 0 batches and caches those)
   * or when no holder has a chunk port; the client then reads every chunk through rank 0.
   */
  private directSources(file: FileVersion): DirectSources | undefined {
    if (file.chunks.length < 2 || file.chunkSizeBytes < DIRECT_READ_MIN_CHUNK_BYTES)
      return undefined;
    const holders = new Set(file.chunks.flatMap((c) => c.ranks));
    const endpoints: DirectSources['endpoints'] = [];
    for (const rank of [...holders].sort((a, b) => a - b)) {
      const endpoint = this.cluster.get(rank)?.portEndpoint;
      if (endpoint !== undefined && this.cluster.isAlive(rank)) endpoints.push({ rank, endpoint });
    }
    if (endpoints.length === 0) return undefined;
    // A quarter of the idle time at most: a renewal may be late by a chunk's read or two.
    const renewMs = Math.min(DIRECT_READ_PIN_RENEW_MS, Math.floor(this.opts.sessionIdleMs / 4));
    return { chunkIds: file.chunks.map((c) => c.id), endpoints, renewMs };
  }

  private read(client: string, readId: string): Read {
    const read = this.reads.get(readId);
    if (!read || read.client !== client)
      throw new StoreError('STORE_CONFLICT', `read ${readId} is not open (it ended or went idle)`);
    read.lastActiveMs = this.clock.now();
    return read;
  }

  private async getChunk(read: Read, index: number): Promise<Uint8Array> {
    const chunk = this.currentChunk(read.file, index);
    const cached = this.cache.get(chunk.id);
    if (cached && chunkChecksum(cached) === chunk.checksum) return cached;
    const order = this.readOrder(chunk);
    const failures: string[] = [];
    for (const rank of order) {
      try {
        const { payload } = await this.data.request(rank, { op: 'get', chunkId: chunk.id });
        const bytes = payload[0];
        if (bytes && bytes.length === chunk.sizeBytes) {
          this.cache.set(chunk.id, bytes);
          return bytes;
        }
        failures.push(`rank ${rank}: wrong length`);
      } catch (err) {
        failures.push(`rank ${rank}: ${err instanceof Error ? err.message : String(err)}`);
        if (
          err instanceof StoreError &&
          (err.code === 'STORE_CORRUPT' || err.code === 'STORE_NOT_FOUND')
        ) {
          void this.badCopy(read.file.name, read.file.version, chunk, rank, err.code).catch(
            () => undefined,
          );
        }
      }
    }
    if (order.length === 0) {
      throw new StoreError(
        'STORE_UNAVAILABLE',
        `no live rank holds chunk ${index} of "${read.file.name}" now (holders: ranks ${chunk.ranks.join(', ')})`,
        { index },
      );
    }
    this.opts.log(`no good copy of chunk ${index} of "${read.file.name}": ${failures.join('; ')}`);
    throw new StoreError(
      'STORE_CORRUPT',
      `no good copy of chunk ${index} of "${read.file.name}" could be read (${failures.join('; ')})`,
      { index },
    );
  }

  /**
   * Chunk `index` of a pinned version, with its holders as the index has them now: re-replication
   * may have moved copies since the version was pinned.
   */
  private currentChunk(file: FileVersion, index: number): ChunkRecord {
    const pinned = file.chunks[index];
    if (!pinned) throw new StoreError('STORE_BAD_REQUEST', `"${file.name}" has no chunk ${index}`);
    const current = this.index.get(file.name);
    return current && current.version === file.version ? (current.chunks[index] ?? pinned) : pinned;
  }

  /**
   * The ranks to read a chunk from: live copies first (suspect ones after, dead never), and
   * among those the one with fewer of our requests waiting first, so that a large read keeps
   * the disks of all holders busy rather than queueing on the primaries.
   */
  private readOrder(chunk: ChunkRecord): number[] {
    const waiting = this.data.inFlightByRank();
    const busy = (r: number): number => waiting.get(r) ?? 0;
    return chunk.ranks
      .filter((r) => this.cluster.stateOf(r) !== 'dead')
      .sort(
        (a, b) =>
          Number(!this.cluster.isAlive(a)) - Number(!this.cluster.isAlive(b)) || busy(a) - busy(b),
      );
  }

  // ---- records queries -------------------------------------------------------------------------

  /**
   * One record by ID: the master index names the chunks that can hold it (one, for sorted
   * numeric IDs), and a data rank holding a copy looks the record up itself; only the record
   * travels back. A rank that fails is passed over for the chunk's other copy. The version is
   * pinned meanwhile, so a replacement cannot delete the chunk under the lookup.
   */
  private async query(
    name: string,
    recordId: RecordId,
  ): Promise<{ fields: object; payload: Uint8Array[] }> {
    const file = this.existing(name);
    const records = file.records;
    if (!records)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `"${file.name}" is a plain file, not a records dataset (upload JSON records with -a --records)`,
        { name: file.name },
      );
    this.pin(file);
    try {
      for (const index of candidateChunks(records, recordId)) {
        const found = await this.findInChunk(file, records.idField, index, recordId);
        if (found) return { fields: { chunk: index, rank: found.rank }, payload: [found.bytes] };
      }
    } finally {
      this.unpin(file);
    }
    throw new StoreError(
      'STORE_NOT_FOUND',
      `no record with ${records.idField} ${describeId(recordId)} in "${file.name}"`,
      { name: file.name, recordId },
    );
  }

  /** Asks a holder of chunk `index` for the record; undefined when the chunk does not hold it. */
  private async findInChunk(
    file: FileVersion,
    idField: string,
    index: number,
    id: RecordId,
  ): Promise<{ rank: number; bytes: Uint8Array } | undefined> {
    const chunk = this.currentChunk(file, index);
    const order = this.readOrder(chunk);
    const failures: string[] = [];
    for (const rank of order) {
      try {
        const { reply, payload } = await this.data.request(rank, {
          op: 'find',
          chunkId: chunk.id,
          idField,
          id,
        });
        return reply.found === true ? { rank, bytes: payload[0] ?? new Uint8Array() } : undefined;
      } catch (err) {
        failures.push(`rank ${rank}: ${err instanceof Error ? err.message : String(err)}`);
        if (
          err instanceof StoreError &&
          (err.code === 'STORE_CORRUPT' || err.code === 'STORE_NOT_FOUND')
        )
          void this.badCopy(file.name, file.version, chunk, rank, err.code).catch(() => undefined);
      }
    }
    throw new StoreError(
      'STORE_UNAVAILABLE',
      order.length === 0
        ? `no live rank holds chunk ${index} of "${file.name}" now (holders: ranks ${chunk.ranks.join(', ')})`
        : `chunk ${index} of "${file.name}" could not be searched (${failures.join('; ')})`,
      { index },
    );
  }

  // ---- pins ------------------------------------------------------------------------------------

  /** Keeps a version's chunks from being deleted while it is read (see retire). */
  private pin(file: FileVersion): void {
    const key = versionKey(file);
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1);
  }

  /** Ends a pin; the last one out deletes the chunks of a version retired meanwhile. */
  private unpin(file: FileVersion): void {
    const key = versionKey(file);
    const left = (this.pins.get(key) ?? 1) - 1;
    if (left > 0) {
      this.pins.set(key, left);
      return;
    }
    this.pins.delete(key);
    const retired = this.retired.get(key);
    if (retired) {
      this.retired.delete(key);
      void this.deleteCopies(retired.chunks);
    }
  }

  private endRead(read: Read): void {
    this.reads.delete(read.id);
    this.unpin(read.file);
  }

  // ---- deletion and retirement -----------------------------------------------------------------

  private async deleteFile(name: string): Promise<void> {
    this.existing(name);
    await this.commit({ op: 'delete', name, atMs: this.opts.wallClockMs() });
  }

  /** A version left the index: delete its chunks now, or when its last reader finishes. */
  private retire(file: FileVersion): void {
    const key = versionKey(file);
    if ((this.pins.get(key) ?? 0) > 0) this.retired.set(key, file);
    else void this.deleteCopies(file.chunks);
  }

  /**
   * Best effort: a copy that cannot be deleted now is collected at the next start-up. Resolves
   * once every rank asked has answered or failed; never rejects (most callers do not wait).
   */
  private async deleteCopies(
    chunks: ReadonlyArray<Pick<ChunkRecord, 'id' | 'sizeBytes' | 'ranks'>>,
  ): Promise<void> {
    const byRank = new Map<number, Array<{ id: string; sizeBytes: number }>>();
    for (const c of chunks) {
      this.cache.delete(c.id);
      for (const r of c.ranks) byRank.set(r, [...(byRank.get(r) ?? []), c]);
    }
    await Promise.all(
      [...byRank].map(([rank, list]) =>
        this.data
          .request(rank, { op: 'delete', chunkIds: list.map((c) => c.id) })
          .then(({ reply }) =>
            list.forEach((c) => this.cluster.forget(rank, c.sizeBytes, reply.reportSeq)),
          )
          .catch((err: unknown) =>
            this.opts.log(`rank ${rank} could not delete ${list.length} chunks: ${String(err)}`),
          ),
      ),
    );
  }

  /** One rebalance at a time; a second request waits for the running one and gets its result. */
  private rebalancing: Promise<RebalanceResult> | undefined;

  private rebalance(): Promise<RebalanceResult> {
    this.rebalancing ??= rebalance({
      index: this.index,
      cluster: this.cluster,
      data: this.data,
      commit: (record) => this.commit(record),
      deleteCopy: (rank, id, sizeBytes) =>
        void this.deleteCopies([{ id, sizeBytes, ranks: [rank] }]),
      log: (line) => this.opts.log(line),
    }).finally(() => (this.rebalancing = undefined));
    return this.rebalancing;
  }

  // ---- metadata -------------------------------------------------------------------------------

  metadata(file: FileVersion): FileMetadata {
    let under = 0;
    const chunks = file.chunks.map((c) => {
      const copies = c.ranks.map((rank) => ({
        rank,
        host: this.cluster.hostOf(rank),
        state: this.cluster.stateOf(rank),
      }));
      if (this.lacksCopies(file, c)) under++;
      return { index: c.index, sizeBytes: c.sizeBytes, checksum: c.checksum, copies };
    });
    return {
      name: file.name,
      sizeBytes: file.sizeBytes,
      sha256: file.sha256,
      version: file.version,
      created: new Date(file.createdMs).toISOString(),
      modified: new Date(file.modifiedMs).toISOString(),
      chunkSizeBytes: file.chunkSizeBytes,
      replicas: file.replicas,
      chunks,
      underReplicatedChunks: under,
      ...(file.records && {
        records: {
          idField: file.records.idField,
          count: file.records.count,
          lookup: file.records.lookup,
        },
      }),
    };
  }

  /** Request counters and latency histograms, for `/metrics` (read-only). */
  get metrics(): OpMetricsView {
    return this.opMetrics;
  }

  /** The last rank state changes, oldest first, for the status page (read-only). */
  get transitions(): RecentTransitionsView {
    return this.recentTransitions;
  }

  /** Every current file with its replica health, as `list` answers it. */
  files(): ListEntry[] {
    return this.list();
  }

  private list(): ListEntry[] {
    return this.index.list().map((f) => {
      let health: ListEntry['health'] = 'healthy';
      for (const c of f.chunks) {
        if (liveHolders(c, this.cluster).length === 0) {
          health = 'unavailable';
          break;
        }
        if (this.lacksCopies(f, c)) health = 'under-replicated';
      }
      return {
        name: f.name,
        sizeBytes: f.sizeBytes,
        modified: new Date(f.modifiedMs).toISOString(),
        chunks: f.chunks.length,
        health,
      };
    });
  }

  /**
   * What users are shown: a chunk lacks copies while fewer ranks than it should have hold one
   * (a dead rank's copy does not count). "Should" is the file's replicas, or the number of data
   * ranks there are if fewer — counting dead ones, since a copy that cannot be remade for want
   * of ranks is still missing. (Re-replication aims only at what the live ranks can take.)
   */
  private lacksCopies(file: FileVersion, chunk: ChunkRecord): boolean {
    return liveHolders(chunk, this.cluster).length < Math.min(file.replicas, this.dataRankCount());
  }

  /** The cluster as `dfs-client status`/`metrics` and the status page show it. */
  status(): StatusResult {
    let under = 0;
    let chunks = 0;
    const primaries = new Map<number, number>();
    const replicas = new Map<number, number>();
    for (const { file, chunk } of this.index.allChunks()) {
      chunks++;
      if (this.lacksCopies(file, chunk)) under++;
      chunk.ranks.forEach((r, i) => {
        const counts = i === 0 ? primaries : replicas;
        counts.set(r, (counts.get(r) ?? 0) + 1);
      });
    }
    const now = this.clock.now();
    return {
      ranks: this.cluster.all().map((r) => {
        const heard = this.health.detector.lastHeardMs(r.rank);
        return {
          rank: r.rank,
          host: r.host,
          state: r.state,
          heartbeatAgeMs: heard === undefined ? null : Math.max(0, now - heard),
          usedBytes: r.usedBytes,
          capacityBytes: r.capacityBytes,
          chunkCopies: r.chunkCopies,
          primaryCopies: primaries.get(r.rank) ?? 0,
          replicaCopies: replicas.get(r.rank) ?? 0,
          ...(r.directReads && { directReads: r.directReads }),
          ...(r.directWrites && { directWrites: r.directWrites }),
        };
      }),
      replicas: this.opts.replicas,
      chunkSizeBytes: this.opts.chunkSizeBytes,
      files: this.index.size(),
      chunks,
      underReplicatedChunks: under,
      uptimeMs: Math.max(0, now - this.startedAtMs),
    };
  }

  // ---- idle sessions --------------------------------------------------------------------------

  private scheduleSweep(): void {
    const periodMs = Math.max(100, Math.floor(this.opts.sessionIdleMs / 4));
    this.stopSweep = this.clock.setTimer(periodMs, () => {
      this.sweepIdle();
      this.scheduleSweep();
    });
  }

  /** Abandons uploads and reads whose client has been silent for sessionIdleMs (it crashed or vanished). */
  sweepIdle(): void {
    const cutoff = this.clock.now() - this.opts.sessionIdleMs;
    for (const upload of [...this.uploads.values()])
      if (upload.lastActiveMs < cutoff) this.abortUpload(upload, 'went idle');
    for (const read of [...this.reads.values()]) if (read.lastActiveMs < cutoff) this.endRead(read);
  }
}
