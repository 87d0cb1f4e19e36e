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
import type {
  FileMetadata,
  ListEntry,
  PutBegin,
  Request,
  StatusResult,
  WireError,
} from '../protocol/client-protocol.js';
import { StoreError, toWireError } from '../store/errors.js';
import type { ChunkRecord, FileIndex, FileVersion, IndexRecord } from '../store/file-index.js';
import { validateName } from '../store/names.js';
import { checkFit, placeChunk } from '../store/placement.js';
import { Cluster } from './cluster.js';
import { CommandRunner } from './commands.js';
import { DataClient } from './data-client.js';
import { decodeRequest } from './validate.js';

/** Where committed index records are made durable (the fsync'd Journal in production). */
export interface JournalWriter {
  /** Resolves once `record` would survive a crash. */
  append(record: IndexRecord): Promise<void>;
}

/** The client-facing socket, as the coordinator needs it (ServiceSocket in production, a fake in simulation). */
export interface ClientChannel {
  onMessage(handler: (client: Buffer, frames: Buffer[]) => void): void;
  send(client: Buffer, frames: readonly Uint8Array[]): Promise<void>;
}

export interface CoordinatorOptions {
  replicas: number;
  chunkSizeBytes: number;
  /** Outstanding chunk requests allowed per client (told to clients). */
  maxChunksInFlight?: number;
  /** An upload or read with no request for this long is abandoned and cleaned up. */
  sessionIdleMs?: number;
  /** Deadline for one chunk request to a data rank. */
  dataTimeoutMs?: number;
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
  chunkCount: number;
  chunks: Map<number, ChunkRecord>;
  lastActiveMs: number;
  closed: boolean;
}

interface Read {
  id: string;
  client: string;
  file: FileVersion;
  lastActiveMs: number;
}

const versionKey = (f: FileVersion): string => `${f.name}\u0000${f.version}`;

export class Coordinator {
  readonly cluster = new Cluster();
  private readonly data: DataClient;
  private readonly commands: CommandRunner;
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
      wallClockMs: () => Date.now(),
      randomId: () => `${Date.now().toString(36)}${(this.nextId++).toString(36)}`,
      log: () => {},
      ...options,
    };
    this.data = new DataClient(comm, this.opts.dataTimeoutMs);
    this.commands = new CommandRunner(comm);
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
    for (const report of inventory) {
      this.cluster.update(report);
      orphans[report.rank] = report.chunks.filter((c) => !referenced.has(c.id)).map((c) => c.id);
    }
    const removed = await this.commands.collectGarbage(orphans);
    if (removed > 0) {
      this.opts.log(`removed ${removed} leftover chunk copies of unfinished uploads`);
      for (const report of await this.commands.report()) this.cluster.update(report);
    }
    channel.onMessage((client, frames) => void this.handle(channel, client, frames));
    this.scheduleSweep();
  }

  /** Tells the data ranks to stop and releases timers. */
  async stop(): Promise<void> {
    this.stopSweep?.();
    await this.commands.shutdown().catch(() => undefined);
    this.data.close();
  }

  dataRankCount(): number {
    return this.cluster.all().length;
  }

  // ---- request handling ---------------------------------------------------------------------

  private async handle(channel: ClientChannel, clientId: Buffer, frames: Buffer[]): Promise<void> {
    const { id, request, error } = decodeRequest(frames[0]);
    const client = clientId.toString('hex');
    let reply: Record<string, unknown>;
    let payload: Uint8Array[] = [];
    if (!request) {
      reply = { id, ok: false, error: toWireError(error) };
    } else {
      const counted = request.op === 'put-chunk' || request.op === 'get-chunk';
      try {
        if (counted) this.enter(client);
        const result = await this.dispatch(client, request, frames[1]);
        reply = { id, ok: true, ...result.fields };
        payload = result.payload ?? [];
      } catch (err) {
        const wire: WireError = toWireError(err);
        if (wire.code === 'STORE_INTERNAL')
          this.opts.log(`internal error on ${request.op}: ${String(err)}`);
        reply = { id, ok: false, error: wire };
      } finally {
        if (counted) this.leave(client);
      }
    }
    await channel.send(clientId, [pack(reply), ...payload]).catch(() => {
      // The client went away; its sessions expire on their own.
    });
  }

  private enter(client: string): void {
    const n = this.inFlight.get(client) ?? 0;
    if (n >= this.opts.maxChunksInFlight * 2) {
      throw new StoreError(
        'STORE_BUSY',
        `too many chunk requests in flight (limit ${this.opts.maxChunksInFlight})`,
      );
    }
    this.inFlight.set(client, n + 1);
  }

  private leave(client: string): void {
    const n = (this.inFlight.get(client) ?? 1) - 1;
    if (n <= 0) this.inFlight.delete(client);
    else this.inFlight.set(client, n);
  }

  private async dispatch(
    client: string,
    req: Request,
    bytes: Buffer | undefined,
  ): Promise<{ fields: object; payload?: Uint8Array[] }> {
    switch (req.op) {
      case 'put-begin':
        return { fields: this.putBegin(client, req) };
      case 'put-chunk':
        await this.putChunk(this.upload(client, req.uploadId), req.index, req.checksum, bytes);
        return { fields: {} };
      case 'put-commit':
        return {
          fields: { metadata: await this.putCommit(this.upload(client, req.uploadId), req.sha256) },
        };
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
    }
  }

  // ---- uploads --------------------------------------------------------------------------------

  private effectiveReplicas(): number {
    return Math.max(
      1,
      Math.min(this.opts.replicas, this.cluster.all().filter((r) => r.state === 'alive').length),
    );
  }

  private putBegin(
    client: string,
    req: PutBegin,
  ): { uploadId: string; chunkSizeBytes: number; maxChunksInFlight: number } {
    const name = validateName(req.name);
    const chunkSizeBytes = this.opts.chunkSizeBytes;
    const chunkCount = Math.ceil(req.sizeBytes / chunkSizeBytes);
    const sizes = [...Array(chunkCount).keys()].map((i) =>
      Math.min(chunkSizeBytes, req.sizeBytes - i * chunkSizeBytes),
    );
    const fit = checkFit(this.cluster.usage(), this.effectiveReplicas(), sizes);
    if (!fit.fits) {
      throw new StoreError(
        'STORE_NO_SPACE',
        `not enough space for "${name}": ${fit.neededBytes} bytes needed for ${this.effectiveReplicas()} copies, ${fit.availableBytes} bytes available`,
        { neededBytes: fit.neededBytes, availableBytes: fit.availableBytes },
      );
    }
    const id = `u${this.opts.randomId()}`;
    this.uploads.set(id, {
      id,
      client,
      name,
      sizeBytes: req.sizeBytes,
      chunkSizeBytes,
      chunkCount,
      chunks: new Map(),
      lastActiveMs: this.clock.now(),
      closed: false,
    });
    return { uploadId: id, chunkSizeBytes, maxChunksInFlight: this.opts.maxChunksInFlight };
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
  ): Promise<void> {
    if (index >= upload.chunkCount)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `chunk ${index} is beyond the ${upload.chunkCount} chunks of "${upload.name}"`,
      );
    const expected = Math.min(
      upload.chunkSizeBytes,
      upload.sizeBytes - index * upload.chunkSizeBytes,
    );
    if (!bytes || bytes.length !== expected) {
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `chunk ${index} of "${upload.name}" has ${bytes?.length ?? 0} bytes, expected ${expected}`,
      );
    }
    const done = upload.chunks.get(index);
    if (done) {
      if (done.checksum === checksum) return; // a retried request: already stored
      throw new StoreError(
        'STORE_CONFLICT',
        `chunk ${index} of "${upload.name}" was already sent with other content`,
      );
    }
    const id = `${upload.id}.${index}`;
    const ranks = await this.storeCopies(id, checksum, bytes);
    if (upload.closed) {
      // Aborted while the copies were being written: they are leftovers now.
      this.deleteCopies([{ id, sizeBytes: bytes.length, ranks }]);
      throw new StoreError('STORE_CONFLICT', `upload of "${upload.name}" was aborted`);
    }
    upload.chunks.set(index, { index, id, sizeBytes: bytes.length, checksum, ranks });
  }

  /**
   * Writes one chunk to `replicas` ranks chosen by placement, moving on to the next best rank
   * when one fails. Resolves with the ranks that hold a durable copy; throws when none could.
   */
  private async storeCopies(id: string, checksum: string, bytes: Buffer): Promise<number[]> {
    const want = this.effectiveReplicas();
    const stored: number[] = [];
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
        this.cluster.release(r, bytes.length, res.status === 'fulfilled');
        if (res.status === 'fulfilled') stored.push(r);
        else {
          refused.add(r);
          lastError = res.reason;
          this.opts.log(
            `rank ${r} could not store chunk ${id}: ${res.reason instanceof Error ? res.reason.message : String(res.reason)}`,
          );
        }
      });
    }
    if (stored.length === 0) {
      if (
        lastError instanceof StoreError &&
        (lastError.code === 'STORE_CORRUPT' || lastError.code === 'STORE_NO_SPACE')
      )
        throw lastError;
      throw new StoreError(
        'STORE_UNAVAILABLE',
        `no data rank could store chunk ${id}`,
        {},
        { cause: lastError },
      );
    }
    return stored.sort((a, b) => a - b);
  }

  private putCommit(upload: Upload, sha256: string): Promise<FileMetadata> {
    const missing = [...Array(upload.chunkCount).keys()].filter((i) => !upload.chunks.has(i));
    if (missing.length > 0) {
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `cannot commit "${upload.name}": chunks ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''} were not stored`,
      );
    }
    if (!/^[0-9a-f]{64}$/.test(sha256))
      throw new StoreError('STORE_BAD_REQUEST', 'sha256 must be 64 lowercase hex digits');
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
    });
    this.commitChain = applied.catch(() => undefined);
    return applied;
  }

  private abortUpload(upload: Upload, why: string): void {
    if (upload.closed) return;
    upload.closed = true;
    this.uploads.delete(upload.id);
    this.opts.log(`upload of "${upload.name}" ${why}; removing its ${upload.chunks.size} chunks`);
    this.deleteCopies([...upload.chunks.values()]);
  }

  // ---- reads ----------------------------------------------------------------------------------

  private existing(name: string): FileVersion {
    const file = this.index.get(validateName(name));
    if (!file)
      throw new StoreError('STORE_NOT_FOUND', `no file named "${name}" in the store`, { name });
    return file;
  }

  private getBegin(
    client: string,
    name: string,
  ): { readId: string; metadata: FileMetadata; maxChunksInFlight: number } {
    const file = this.existing(name);
    const id = `r${this.opts.randomId()}`;
    this.reads.set(id, { id, client, file, lastActiveMs: this.clock.now() });
    const key = versionKey(file);
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1);
    return {
      readId: id,
      metadata: this.metadata(file),
      maxChunksInFlight: this.opts.maxChunksInFlight,
    };
  }

  private read(client: string, readId: string): Read {
    const read = this.reads.get(readId);
    if (!read || read.client !== client)
      throw new StoreError('STORE_CONFLICT', `read ${readId} is not open (it ended or went idle)`);
    read.lastActiveMs = this.clock.now();
    return read;
  }

  private async getChunk(read: Read, index: number): Promise<Uint8Array> {
    const chunk = read.file.chunks[index];
    if (!chunk)
      throw new StoreError('STORE_BAD_REQUEST', `"${read.file.name}" has no chunk ${index}`);
    // Live copies first, in the order placement chose them.
    const order = [...chunk.ranks].sort(
      (a, b) => Number(!this.cluster.isAlive(a)) - Number(!this.cluster.isAlive(b)),
    );
    const failures: string[] = [];
    for (const rank of order) {
      try {
        const { payload } = await this.data.request(rank, { op: 'get', chunkId: chunk.id });
        const bytes = payload[0];
        if (bytes && bytes.length === chunk.sizeBytes) return bytes;
        failures.push(`rank ${rank}: wrong length`);
      } catch (err) {
        failures.push(`rank ${rank}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    this.opts.log(`no good copy of chunk ${index} of "${read.file.name}": ${failures.join('; ')}`);
    throw new StoreError(
      'STORE_CORRUPT',
      `no good copy of chunk ${index} of "${read.file.name}" could be read (${failures.join('; ')})`,
      { index },
    );
  }

  private endRead(read: Read): void {
    this.reads.delete(read.id);
    const key = versionKey(read.file);
    const left = (this.pins.get(key) ?? 1) - 1;
    if (left > 0) {
      this.pins.set(key, left);
      return;
    }
    this.pins.delete(key);
    const retired = this.retired.get(key);
    if (retired) {
      this.retired.delete(key);
      this.deleteCopies(retired.chunks);
    }
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
    else this.deleteCopies(file.chunks);
  }

  /** Best effort: a copy that cannot be deleted now is collected at the next start-up. */
  private deleteCopies(
    chunks: ReadonlyArray<Pick<ChunkRecord, 'id' | 'sizeBytes' | 'ranks'>>,
  ): void {
    const byRank = new Map<number, Array<{ id: string; sizeBytes: number }>>();
    for (const c of chunks) for (const r of c.ranks) byRank.set(r, [...(byRank.get(r) ?? []), c]);
    for (const [rank, list] of byRank) {
      this.data
        .request(rank, { op: 'delete', chunkIds: list.map((c) => c.id) })
        .then(() => list.forEach((c) => this.cluster.forget(rank, c.sizeBytes)))
        .catch((err: unknown) =>
          this.opts.log(`rank ${rank} could not delete ${list.length} chunks: ${String(err)}`),
        );
    }
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
      if (
        copies.filter((x) => x.state === 'alive').length <
        Math.min(file.replicas, this.dataRankCount())
      )
        under++;
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
    };
  }

  private list(): ListEntry[] {
    const want = (f: FileVersion): number => Math.min(f.replicas, this.dataRankCount());
    return this.index.list().map((f) => {
      let health: ListEntry['health'] = 'healthy';
      for (const c of f.chunks) {
        const live = c.ranks.filter((r) => this.cluster.isAlive(r)).length;
        if (live === 0) {
          health = 'unavailable';
          break;
        }
        if (live < want(f)) health = 'under-replicated';
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

  private status(): StatusResult {
    let under = 0;
    for (const { file, chunk } of this.index.allChunks()) {
      if (
        chunk.ranks.filter((r) => this.cluster.isAlive(r)).length <
        Math.min(file.replicas, this.dataRankCount())
      )
        under++;
    }
    return {
      ranks: this.cluster.all().map((r) => ({
        rank: r.rank,
        host: r.host,
        state: r.state,
        usedBytes: r.usedBytes,
        capacityBytes: r.capacityBytes,
        chunkCopies: r.chunkCopies,
      })),
      replicas: this.opts.replicas,
      chunkSizeBytes: this.opts.chunkSizeBytes,
      files: this.index.size(),
      underReplicatedChunks: under,
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
