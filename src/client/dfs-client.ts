/**
 * DfsClient: the library every client of a MemFlow store uses (the dfs-client CLI is a thin layer
 * on it). It speaks the client protocol of src/protocol/client-protocol.ts to the coordinator over
 * one ZeroMQ DEALER socket.
 *
 * How it keeps its promises:
 * - Every request gets an id and a deadline; replies are matched by id, in whatever order they
 *   come. Nothing waits forever: a request that is not answered in time fails CLIENT_UNREACHABLE
 *   naming the server. Before the first request a plain TCP connect checks the address, so a store
 *   that is not running is reported at once ("connection refused") instead of after the deadline
 *   (ZeroMQ itself retries connecting silently, forever).
 * - Transfers stream: an upload reads one chunk at a time into a fresh buffer and keeps at most
 *   `maxChunksInFlight` chunks outstanding (the window the coordinator grants in its put-begin
 *   reply), so memory is bounded by window × chunk size whatever the file size. A download keeps
 *   the same window and writes chunks in order; chunks that arrive early wait in a reorder buffer
 *   that the window bounds too.
 * - Integrity end to end: every chunk is checked against its checksum before a single byte of it is
 *   written (the BLAKE3 the uploading client computed, in index order: the whole content, end to
 *   end), and, when asked (verifySha256), the whole content against its sha256. A download to a path goes to a
 *   temporary file in the target's directory, renamed into place only when everything checked out,
 *   so a failed download leaves nothing behind.
 * - A program that moves large files through DfsClient runs faster after calling
 *   tuneGcForBulkTransfers() (src/runtime/gc-tuning.ts) once, as dfs-client and the ranks do.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants as fsConstants,
  fstatSync,
  openSync,
  readSync,
  type Stats,
} from 'node:fs';
import { link, lstat, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { pack, unpack } from 'msgpackr';
import { detached } from '../comm/send-queue.js';
import { ClientSocket } from '../comm/zmq-service.js';
import type {
  ChunkInfo,
  FileMetadata,
  ListEntry,
  RebalanceResult,
  Request,
  RequestOp,
  StatusResult,
  StoreErrorCode,
} from '../protocol/client-protocol.js';
import { chunkChecksum, createFileHasher } from '../store/checksum.js';
import { DatasetError } from '../records/record-scanner.js';
import { DatasetReader } from '../records/dataset-reader.js';
import type { RecordsChunk } from '../records/record-chunker.js';
import { AbortWatchers } from './abort-watchers.js';
import { ChunkPorts } from './chunk-ports.js';
import { DirectDownload, directSourcesOf } from './direct-reads.js';
import { DirectUpload } from './direct-writes.js';
import { DfsError } from './errors.js';
import { takePending, type Waiting } from './pending-requests.js';
import type { TransferProgress } from './progress.js';

export const DEFAULT_SERVER = '127.0.0.1:7070';
export const DEFAULT_PORT = 7070;
export const DEFAULT_TIMEOUT_MS = 30_000;
/**
 * A direct read unanswered this long is read through rank 0 instead. A 4 MiB chunk takes tens
 * of milliseconds here; rank 0 knows within seconds when a rank has stopped answering.
 */
const DIRECT_READ_TIMEOUT_MS = 10_000;
/** A chunk port not connected to within this is passed over for rank 0 (it may be unreachable). */
const DIRECT_CONNECT_TIMEOUT_MS = 2_000;
/** Best-effort clean-up requests (put-abort, get-end) wait at most this long. */
const CLEANUP_TIMEOUT_MS = 2_000;

export interface DfsClientOptions {
  /** "host:port", "[ipv6]:port" or "host" (port 7070). Default: MEMFLOW_SERVER, else 127.0.0.1:7070. */
  server?: string;
  /** Deadline of every request, in milliseconds. Default 30 s. */
  timeoutMs?: number;
}

export interface UploadOptions {
  /** Name in the store. Default: the base name of the local path. */
  name?: string;
  onProgress?: (progress: TransferProgress) => void;
  /** Aborts the transfer: the upload is aborted on the store and the call fails CLIENT_ABORTED. */
  signal?: AbortSignal;
}

export interface RecordsUploadOptions {
  /** The field of every record that holds its ID (default "id"). */
  idField?: string;
  onProgress?: (progress: TransferProgress) => void;
  signal?: AbortSignal;
}

export interface DownloadOptions {
  /** Replace an existing file at the target path (ignored for streams). */
  force?: boolean;
  /**
   * How a records dataset comes back: 'json' (default) a JSON array of its records in order,
   * 'ndjson' the stored form, one record a line. Plain files ignore it.
   */
  records?: 'json' | 'ndjson';
  /**
   * Also recompute the whole content's sha256 and compare it with the metadata's (CLIENT_INTEGRITY
   * if they differ). Every chunk is checked against the BLAKE3 checksum the uploading client
   * computed, in index order, whatever this says — that already verifies the whole content end
   * to end; the sha256 on top costs about a third of the client's CPU on a large retrieve.
   */
  verifySha256?: boolean;
  onProgress?: (progress: TransferProgress) => void;
  /** Aborts the transfer; nothing is left at the target path and the call fails CLIENT_ABORTED. */
  signal?: AbortSignal;
}

export interface ServerAddress {
  host: string;
  port: number;
}

/**
 * Parses "host:port", "[ipv6]:port" or a bare "host" (port 7070).
 * Throws DfsError CLIENT_BAD_ARGUMENT naming the text.
 */
export function parseServerAddress(text: string): ServerAddress {
  const trimmed = text.trim();
  const match =
    /^\[([^\]]+)\](?::(\d+))?$/.exec(trimmed) ?? /^([^:\s[\]/]+)(?::(\d+))?$/.exec(trimmed);
  if (match === null || match[1] === undefined) {
    throw new DfsError(
      'CLIENT_BAD_ARGUMENT',
      `bad server address "${text}": expected HOST:PORT, [IPV6]:PORT or HOST`,
      { server: text },
    );
  }
  const port = match[2] === undefined ? DEFAULT_PORT : Number(match[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new DfsError(
      'CLIENT_BAD_ARGUMENT',
      `bad server address "${text}": port ${match[2]} is not in 1-65535`,
      { server: text },
    );
  }
  return { host: match[1], port };
}

// A request as the caller writes it: the id is the client's business.
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type RequestBody = DistributiveOmit<Request, 'id'>;

/** An ok reply: its fields (besides id/ok) and frame 1 when there is one. */
interface Reply {
  fields: Record<string, unknown>;
  data: Buffer | undefined;
}

interface PendingRequest extends Waiting {
  op: RequestOp;
  resolve: (reply: Reply) => void;
  reject: (err: unknown) => void;
}

interface RequestOptions {
  payload?: Uint8Array;
  timeoutMs?: number;
  signal?: AbortSignal | undefined;
}

export class DfsClient {
  /** The address as "host:port", used in messages. */
  readonly server: string;
  readonly timeoutMs: number;
  /**
   * Files up to this size go in one put-whole request, read with synchronous calls
   * (readSmallFile). 64 KiB is below any sane chunk size; a store with smaller chunks says so
   * once and this shrinks to its chunk size.
   */
  private wholeMaxBytes = 64 * 1024;
  private readonly address: ServerAddress;
  private readonly pending = new Map<number, PendingRequest>();
  /** One listener per AbortSignal, however many requests wait on it. */
  private readonly aborts = new AbortWatchers();
  private nextId = 1;
  private connecting: Promise<ClientSocket> | undefined;
  private socket: ClientSocket | undefined;
  private direct: ChunkPorts | undefined;
  /** Set while the connection to rank 0 is down after it was up (see connect()). */
  private connectionLost = false;
  /** Whether any reply ever came: a timeout then means "stopped answering", not "not there". */
  private heard = false;
  private closed = false;

  /**
   * Validates the options; connects lazily on the first request.
   * Throws DfsError CLIENT_BAD_ARGUMENT for a malformed server address or timeout.
   */
  constructor(options: DfsClientOptions = {}) {
    const envServer = process.env.MEMFLOW_SERVER?.trim();
    const server = options.server ?? (envServer ? envServer : DEFAULT_SERVER);
    this.address = parseServerAddress(server);
    this.server = this.address.host.includes(':')
      ? `[${this.address.host}]:${this.address.port}`
      : `${this.address.host}:${this.address.port}`;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new DfsError('CLIENT_BAD_ARGUMENT', `bad timeout ${timeoutMs} ms: must be > 0`, {
        timeoutMs,
      });
    }
    this.timeoutMs = timeoutMs;
  }

  /**
   * Stores the local file `localPath` as `options.name` (default: its base name) and returns the
   * metadata of the committed version. Streams with bounded memory (see the file comment). A
   * file small enough for one put-whole is read with synchronous calls (see readSmallFile).
   *
   * Errors: CLIENT_LOCAL_PATH (missing, unreadable, a directory or not a regular file: checked
   * before the store is contacted), CLIENT_FILE_CHANGED (its size changed while reading),
   * CLIENT_UNREACHABLE, CLIENT_ABORTED, CLIENT_BAD_REPLY, and the store's codes (STORE_BAD_NAME,
   * STORE_NO_SPACE, STORE_UNAVAILABLE, ...). After put-begin, any failure sends put-abort (best
   * effort) before the error is rethrown.
   */
  async upload(localPath: string, options: UploadOptions = {}): Promise<FileMetadata> {
    const { signal, onProgress } = options;
    const name = options.name ?? path.basename(localPath);
    const small = readSmallFile(localPath, this.wholeMaxBytes);
    if (small !== undefined) {
      const stored = await this.putWhole(small, name, signal);
      if (stored) {
        onProgress?.({ doneBytes: small.length, totalBytes: small.length });
        return stored;
      }
    }
    const { handle, sizeBytes } = await openLocalFile(localPath);
    try {
      const begin = await this.request({ op: 'put-begin', name, sizeBytes }, { signal });
      const uploadId = expectString(begin.fields, 'uploadId', 'put-begin');
      const chunkSizeBytes = expectPositiveInteger(begin.fields, 'chunkSizeBytes', 'put-begin');
      const window = expectPositiveInteger(begin.fields, 'maxChunksInFlight', 'put-begin');
      // Large chunks go straight to the data ranks when rank 0 offers it (direct-writes.ts).
      const direct =
        begin.fields.direct === true
          ? new DirectUpload(
              this.chunkPorts(),
              async (body, payload) =>
                (await this.request(body, { ...(payload && { payload }), signal })).fields,
              uploadId,
              this.address.host,
              Math.max(1, Math.floor(window / 2)),
            )
          : undefined;
      try {
        const sha256 = await this.sendChunks(handle, localPath, sizeBytes, {
          uploadId,
          chunkSizeBytes,
          window,
          signal,
          onProgress,
          direct,
        });
        const commit = await this.request({ op: 'put-commit', uploadId, sha256 }, { signal });
        return checkMetadata(commit.fields.metadata, 'put-commit');
      } catch (err) {
        await this.cleanUp({ op: 'put-abort', uploadId }, err);
        throw err;
      }
    } finally {
      await handle.close().catch(() => undefined);
    }
  }

  /**
   * Stores the JSON dataset at `localPath` (an array of objects, or NDJSON) as the records
   * dataset `name`: streamed in chunks cut at record boundaries, each carrying its records' IDs
   * for the master index. Memory stays bounded by the window of chunks in flight, whatever the
   * size of the file.
   *
   * Errors: CLIENT_BAD_DATASET (malformed JSON, a record that is not an object or lacks a string
   * or number ID; detail.offset is the byte offset), STORE_BAD_REQUEST for a duplicate ID
   * (detail.record and detail.earlierRecord, 1-based; detail.offset added here), and those of
   * upload(). Any failure aborts the upload: nothing of the dataset is stored.
   */
  async putRecords(
    localPath: string,
    name: string,
    options: RecordsUploadOptions = {},
  ): Promise<FileMetadata> {
    const { signal, onProgress } = options;
    const idField = options.idField ?? 'id';
    const { handle, sizeBytes } = await openLocalFile(localPath);
    try {
      // The stored form (a line a record) is never longer than the source plus a final newline.
      const begin = await this.request(
        { op: 'put-begin', name, sizeBytes: sizeBytes + 1, records: { idField } },
        { signal },
      );
      const uploadId = expectString(begin.fields, 'uploadId', 'put-begin');
      const chunkSizeBytes = expectPositiveInteger(begin.fields, 'chunkSizeBytes', 'put-begin');
      const window = expectPositiveInteger(begin.fields, 'maxChunksInFlight', 'put-begin');
      try {
        const reader = new DatasetReader(handle, chunkSizeBytes, idField);
        const hasher = createFileHasher();
        const inFlight = new Set<Promise<void>>();
        let failure: { error: unknown } | undefined;
        let chunks = 0;
        let doneBytes = 0;
        try {
          for await (const chunk of reader.chunks()) {
            while (inFlight.size >= window) await Promise.race(inFlight);
            if (failure !== undefined) break;
            throwIfAborted(signal);
            hasher.update(chunk.bytes);
            const index = chunks++;
            const sent: Promise<void> = this.request(
              {
                op: 'put-chunk',
                uploadId,
                index,
                checksum: chunkChecksum(chunk.bytes),
                records: { first: chunk.firstRecord, ids: chunk.ids },
              },
              { payload: chunk.bytes, signal },
            )
              .then(
                () => {
                  doneBytes += chunk.bytes.length;
                  onProgress?.({ doneBytes, totalBytes: sizeBytes });
                },
                (error: unknown) => {
                  failure ??= { error: withRecordOffset(error, chunk) };
                },
              )
              .finally(() => inFlight.delete(sent));
            inFlight.add(sent);
          }
        } catch (err) {
          throw err instanceof DatasetError
            ? new DfsError(
                'CLIENT_BAD_DATASET',
                `${err.message}`,
                {
                  path: localPath,
                  offset: err.offset,
                  ...(err.record !== undefined && { record: err.record + 1 }),
                },
                { cause: err },
              )
            : err;
        } finally {
          await Promise.all(inFlight);
        }
        if (failure !== undefined) throw failure.error;
        await checkNotGrown(handle, localPath, sizeBytes);
        const commit = await this.request(
          {
            op: 'put-commit',
            uploadId,
            sha256: hasher.digestHex(),
            records: { chunks, count: reader.records },
          },
          { signal },
        );
        return checkMetadata(commit.fields.metadata, 'put-commit');
      } catch (err) {
        await this.cleanUp({ op: 'put-abort', uploadId }, err);
        throw err;
      }
    } finally {
      await handle.close().catch(() => undefined);
    }
  }

  /**
   * One record of the records dataset `name` by its ID, parsed (a number and a string are
   * different IDs: 42 is not "42"). Errors: STORE_NOT_FOUND (no such dataset, or no such ID:
   * detail.recordId is set), STORE_BAD_REQUEST (a plain file), STORE_UNAVAILABLE, ...
   */
  async queryRecord(name: string, id: string | number): Promise<unknown> {
    const reply = await this.request({ op: 'query', name, recordId: id });
    if (reply.data === undefined) throw badReply('query', 'the record came without data');
    try {
      return JSON.parse(reply.data.toString('utf8')) as unknown;
    } catch {
      throw badReply('query', 'the record is not valid JSON');
    }
  }

  /**
   * Small files (up to one chunk) go in one round trip (put-whole). Returns undefined when the
   * store's chunk size turns out smaller than the file: the caller then uses the chunked path,
   * and later uploads know the limit.
   */
  private async putWhole(
    data: Buffer,
    name: string,
    signal: AbortSignal | undefined,
  ): Promise<FileMetadata | undefined> {
    const hasher = createFileHasher();
    hasher.update(data);
    try {
      const reply = await this.request(
        { op: 'put-whole', name, checksum: chunkChecksum(data), sha256: hasher.digestHex() },
        { payload: data, signal },
      );
      return checkMetadata(reply.fields.metadata, 'put-whole');
    } catch (err) {
      const limit = err instanceof DfsError ? err.detail.chunkSizeBytes : undefined;
      if (
        err instanceof DfsError &&
        err.code === 'STORE_BAD_REQUEST' &&
        typeof limit === 'number'
      ) {
        this.wholeMaxBytes = Math.min(this.wholeMaxBytes, limit);
        return undefined;
      }
      throw err;
    }
  }

  /**
   * Fetches the current version of `name` into `dest` and returns its metadata. The version is
   * pinned by get-begin and released by get-end whatever happens.
   *
   * `dest` as a path: refused if it exists (unless `force`) or is a directory or not a regular
   * file; written to a temporary file beside it and renamed into place at the end, so on failure
   * nothing is left. Without `force` the final step cannot replace a file that appeared meanwhile.
   * `dest` as a stream: chunks are written in order, waiting for 'drain' when the stream asks; the
   * stream is not ended. A chunk that fails its checksum is never written; the whole-file sha256
   * is checked after the last chunk (for a stream, after the bytes went out).
   *
   * Errors: CLIENT_EXISTS, CLIENT_LOCAL_PATH (target directory missing or not writable, write
   * failed), CLIENT_INTEGRITY, CLIENT_UNREACHABLE, CLIENT_ABORTED, CLIENT_BAD_REPLY, and the
   * store's codes (STORE_NOT_FOUND, STORE_CORRUPT, STORE_UNAVAILABLE, ...).
   */
  async download(
    name: string,
    dest: string | NodeJS.WritableStream,
    options: DownloadOptions = {},
  ): Promise<FileMetadata> {
    const { signal, onProgress } = options;
    const force = options.force === true;
    const verifySha256 = options.verifySha256 === true;
    const targetPath = typeof dest === 'string' ? await checkTarget(dest, force) : undefined;

    // One round trip for a one-chunk file; otherwise this is get-begin and the read goes on.
    const begin = await this.request({ op: 'get-whole', name }, { signal });
    const whole = begin.fields.whole === true;
    const readId = whole ? undefined : expectString(begin.fields, 'readId', 'get-whole');
    let failure: unknown;
    try {
      const metadata = checkMetadata(begin.fields.metadata, 'get-whole');
      const verified = (index: number, data: Buffer): Buffer => {
        verifyChunk(metadata.name, metadata.chunks[index]!, data);
        return data;
      };
      const viaRank0 = whole
        ? (): Promise<Buffer> =>
            Promise.resolve().then(() => verified(0, begin.data ?? Buffer.alloc(0)))
        : async (index: number): Promise<Buffer> =>
            verified(index, await this.fetchChunk(readId!, index, signal));
      const sources = whole
        ? undefined
        : directSourcesOf(begin.fields.direct, metadata, this.address.host);
      const direct =
        sources && new DirectDownload(this.chunkPorts(), metadata, sources, viaRank0, verified);
      const fetch = direct
        ? (index: number): Promise<Buffer> => direct.fetch(index, signal)
        : viaRank0;
      const window = whole
        ? 1
        : expectPositiveInteger(begin.fields, 'maxChunksInFlight', 'get-whole');
      const asArray = metadata.records !== undefined && options.records !== 'ndjson';
      if (targetPath === undefined) {
        const sink = new StreamSink(dest as NodeJS.WritableStream);
        try {
          await this.receiveChunks(
            fetch,
            metadata,
            window,
            asArray ? new JsonArraySink(sink) : sink,
            { signal, onProgress, verifySha256 },
          );
        } finally {
          sink.detach();
        }
      } else {
        await this.downloadToPath(fetch, metadata, window, targetPath, force, asArray, {
          signal,
          onProgress,
          verifySha256,
        });
      }
      return metadata;
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      if (readId !== undefined) await this.cleanUp({ op: 'get-end', readId }, failure);
    }
  }

  /** Metadata of the current version of `name`. Errors: STORE_NOT_FOUND, CLIENT_UNREACHABLE, ... */
  async stat(name: string): Promise<FileMetadata> {
    const reply = await this.request({ op: 'stat', name });
    return checkMetadata(reply.fields.metadata ?? reply.fields, 'stat');
  }

  /** Every file in the store. Errors: CLIENT_UNREACHABLE, CLIENT_BAD_REPLY, STORE_* codes. */
  async list(): Promise<ListEntry[]> {
    const reply = await this.request({ op: 'list' });
    const files = reply.fields.files;
    if (!Array.isArray(files)) throw badReply('list', 'files is not an array');
    return files.map((entry: unknown) => checkListEntry(entry));
  }

  /** Deletes `name` (all versions). Errors: STORE_NOT_FOUND, CLIENT_UNREACHABLE, ... */
  async delete(name: string): Promise<void> {
    await this.request({ op: 'delete', name });
  }

  /** The store's ranks, capacity and health. Errors: CLIENT_UNREACHABLE, CLIENT_BAD_REPLY, ... */
  async status(): Promise<StatusResult> {
    const reply = await this.request({ op: 'status' });
    if (!Array.isArray(reply.fields.ranks)) throw badReply('status', 'ranks is not an array');
    return reply.fields as unknown as StatusResult;
  }

  /** Moves copies until the live data ranks' fractions used are within 5 points of each other. */
  async rebalance(): Promise<RebalanceResult> {
    // Moving copies takes as long as it takes: give it far longer than one request.
    const reply = await this.request(
      { op: 'rebalance' },
      { timeoutMs: Math.max(this.timeoutMs, 3_600_000) },
    );
    if (typeof reply.fields.moves !== 'number')
      throw badReply('rebalance', 'moves is not a number');
    return reply.fields as unknown as RebalanceResult;
  }

  /** Closes the socket; requests still outstanding fail CLIENT_CLOSED. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, entry] of this.pending) {
      this.settle(id);
      entry.reject(new DfsError('CLIENT_CLOSED', `the client was closed during ${entry.op}`));
    }
    this.socket?.close();
    this.direct?.close();
  }

  /** Connections to the data ranks' chunk ports, made on the first transfer that uses them. */
  private chunkPorts(): ChunkPorts {
    this.direct ??= new ChunkPorts(
      Math.min(this.timeoutMs, DIRECT_READ_TIMEOUT_MS),
      Math.min(this.timeoutMs, DIRECT_CONNECT_TIMEOUT_MS),
    );
    return this.direct;
  }

  // ---- transfers ------------------------------------------------------------------------------

  /** Reads, hashes and sends every chunk within the window; returns the whole-file sha256. */
  private async sendChunks(
    handle: FileHandle,
    localPath: string,
    sizeBytes: number,
    params: {
      uploadId: string;
      chunkSizeBytes: number;
      window: number;
      signal: AbortSignal | undefined;
      onProgress: ((progress: TransferProgress) => void) | undefined;
      direct: DirectUpload | undefined;
    },
  ): Promise<string> {
    const { uploadId, chunkSizeBytes, window, signal, onProgress, direct } = params;
    const chunkCount = Math.ceil(sizeBytes / chunkSizeBytes);
    const hasher = createFileHasher();
    // In-flight sends never reject (the first failure is parked in `failure`), so racing them is
    // safe and a failure is seen at the next window check.
    const inFlight = new Set<Promise<void>>();
    let failure: { error: unknown } | undefined;
    let doneBytes = 0;
    onProgress?.({ doneBytes, totalBytes: sizeBytes });

    for (let index = 0; index < chunkCount && failure === undefined; index++) {
      while (inFlight.size >= window) await Promise.race(inFlight);
      if (failure !== undefined) break;
      throwIfAborted(signal);
      const position = index * chunkSizeBytes;
      const length = Math.min(chunkSizeBytes, sizeBytes - position);
      const data = await readChunk(handle, localPath, position, length);
      hasher.update(data);
      const checksum = chunkChecksum(data);
      const sent: Promise<void> = (
        direct
          ? direct.send(index, checksum, data, signal)
          : this.request({ op: 'put-chunk', uploadId, index, checksum }, { payload: data, signal })
      )
        .then(
          () => {
            doneBytes += length;
            onProgress?.({ doneBytes, totalBytes: sizeBytes });
          },
          (error: unknown) => {
            failure ??= { error };
          },
        )
        .finally(() => inFlight.delete(sent));
      inFlight.add(sent);
    }
    await Promise.all(inFlight);
    if (failure !== undefined) throw failure.error;
    await checkNotGrown(handle, localPath, sizeBytes);
    return hasher.digestHex();
  }

  private async downloadToPath(
    fetch: (index: number) => Promise<Buffer>,
    metadata: FileMetadata,
    window: number,
    targetPath: string,
    force: boolean,
    asArray: boolean,
    progress: ReceiveOptions,
  ): Promise<void> {
    const dir = path.dirname(targetPath);
    // A dot-name beside the target: same file system (so rename is atomic), hidden from ls.
    const base = path.basename(targetPath).slice(0, 100);
    const tempPath = path.join(dir, `.${base}.${randomBytes(6).toString('hex')}.memflow-part`);
    let handle: FileHandle;
    try {
      handle = await open(tempPath, 'wx');
    } catch (err) {
      throw localPathError(dir, err, 'cannot write in directory');
    }
    let placed = false;
    try {
      const file = new FileSink(handle, targetPath);
      const sink = asArray ? new JsonArraySink(file) : file;
      await this.receiveChunks(fetch, metadata, window, sink, progress);
      // No fsync before the rename: like cp, curl and scp, a download has the file system's
      // usual durability. It costs a third of the download rate for a 512 MiB file, and the
      // rename already guarantees what matters here: a failed download leaves nothing.
      await handle.close();
      await placeFile(tempPath, targetPath, force);
      placed = true;
    } finally {
      if (!placed) {
        await handle.close().catch(() => undefined);
        await unlink(tempPath).catch(() => undefined);
      }
    }
  }

  /**
   * Fetches chunks 0..n-1 with at most `window` outstanding and hands them to `sink` in order. A
   * chunk is requested only when it is within `window` of the next one to write, so early
   * arrivals plus outstanding requests never exceed the window: the reorder buffer is bounded.
   */
  private async receiveChunks(
    fetch: (index: number) => Promise<Buffer>,
    metadata: FileMetadata,
    window: number,
    sink: ChunkSink,
    progress: ReceiveOptions,
  ): Promise<void> {
    const { signal, onProgress } = progress;
    const { chunks } = metadata;
    const started = new Map<number, Promise<Buffer>>();
    const hasher = progress.verifySha256 ? createFileHasher() : undefined;
    let nextRequest = 0;
    let doneBytes = 0;
    let writing = Promise.resolve();
    onProgress?.({ doneBytes, totalBytes: metadata.sizeBytes });

    try {
      for (const chunk of chunks) {
        throwIfAborted(signal);
        while (nextRequest < chunks.length && nextRequest < chunk.index + window) {
          const fetched = fetch(nextRequest);
          // Awaited below, in order; this only keeps an early rejection from counting as unhandled.
          void fetched.catch(() => undefined);
          started.set(nextRequest, fetched);
          nextRequest++;
        }
        const fetched = started.get(chunk.index);
        if (fetched === undefined) throw new Error(`chunk ${chunk.index} was never requested`);
        started.delete(chunk.index);
        // Verified by `fetch` already (a direct read that fails its check is read again).
        const data = await fetched;
        hasher?.update(data);
        // One write in flight at a time, overlapped with receiving and checking the next chunks:
        // checks and hashing run on this thread, writing on libuv's pool, side by side.
        await writing;
        writing = sink.write(data).then(() => {
          doneBytes += data.length;
          onProgress?.({ doneBytes, totalBytes: metadata.sizeBytes });
        });
        // Awaited at the next chunk or below; this only keeps an early rejection handled.
        void writing.catch(() => undefined);
      }
      await writing;
    } catch (err) {
      // Let a write in flight finish before the caller closes and removes the file.
      await writing.catch(() => undefined);
      throw err;
    }
    const sha256 = hasher?.digestHex();
    if (sha256 !== undefined && sha256 !== metadata.sha256) {
      throw new DfsError(
        'CLIENT_INTEGRITY',
        `"${metadata.name}" does not match its sha256 (expected ${metadata.sha256}, got ${sha256})`,
        { name: metadata.name, expected: metadata.sha256, actual: sha256 },
      );
    }
    await sink.finish?.();
  }

  private async fetchChunk(
    readId: string,
    index: number,
    signal: AbortSignal | undefined,
  ): Promise<Buffer> {
    const reply = await this.request({ op: 'get-chunk', readId, index }, { signal });
    if (reply.data === undefined) throw badReply('get-chunk', `chunk ${index} came without data`);
    return reply.data;
  }

  /**
   * Sends a clean-up request (put-abort, get-end) after `failure` (undefined on success). Best
   * effort: its errors are swallowed. When the store is known unreachable or we were closed, the
   * request is not even attempted, so a dead store does not cost a second full deadline.
   */
  private async cleanUp(body: RequestBody, failure: unknown): Promise<void> {
    if (
      failure instanceof DfsError &&
      (failure.code === 'CLIENT_UNREACHABLE' || failure.code === 'CLIENT_CLOSED')
    ) {
      return;
    }
    if (this.closed) return;
    await this.request(body, { timeoutMs: Math.min(this.timeoutMs, CLEANUP_TIMEOUT_MS) }).catch(
      () => undefined,
    );
  }

  // ---- requests -------------------------------------------------------------------------------

  /**
   * Sends one request and resolves with its ok reply. Rejects with a DfsError carrying the
   * store's code for an error reply, CLIENT_UNREACHABLE past the deadline (or when the connection
   * is refused), CLIENT_ABORTED when `signal` fires, CLIENT_CLOSED after close().
   */
  private async request(body: RequestBody, options: RequestOptions = {}): Promise<Reply> {
    throwIfAborted(options.signal);
    const socket = await this.connect();
    throwIfAborted(options.signal);
    if (this.closed) throw new DfsError('CLIENT_CLOSED', `the client is closed (${body.op})`);
    if (this.connectionLost) throw this.connectionLostError(body.op);
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.settle(id)) reject(this.timeoutError(body.op, timeoutMs));
      }, timeoutMs);
      const detachSignal = this.aborts.watch(options.signal, () => {
        if (this.settle(id)) reject(abortedError());
      });
      this.pending.set(id, { op: body.op, resolve, reject, timer, detachSignal });
      const head = pack({ ...body, id });
      const frames = options.payload === undefined ? [head] : [head, options.payload];
      socket.send(frames).catch((err: unknown) => {
        if (!this.settle(id)) return;
        const closed = (err as { code?: unknown }).code === 'COMM_CLOSED';
        reject(
          closed
            ? new DfsError('CLIENT_CLOSED', `the client was closed during ${body.op}`)
            : new DfsError(
                'CLIENT_UNREACHABLE',
                `cannot send ${body.op} to the store at ${this.server}: ${errorText(err)}`,
                { server: this.server, op: body.op },
                { cause: err },
              ),
        );
      });
    });
  }

  /** Removes a pending request; returns undefined when it was already settled. */
  private settle(id: number): PendingRequest | undefined {
    return takePending(this.pending, id);
  }

  private onReply(frames: Buffer[]): void {
    const head = frames[0];
    if (head === undefined) return;
    let message: unknown;
    try {
      message = unpack(head);
    } catch {
      return; // Undecodable: it cannot be matched to a request, whose deadline will report it.
    }
    if (!isRecord(message) || typeof message.id !== 'number') return;
    // Unknown ids are late replies to requests that already timed out: dropped.
    const entry = this.settle(message.id);
    if (entry === undefined) return;
    this.heard = true;
    if (message.ok === true) {
      // The envelope (id, ok) is the protocol's, not the result's: callers see only the result.
      const { id: _id, ok: _ok, ...fields } = message;
      // Bytes that reach the caller own their memory, not a view of a whole batch of replies.
      const data = frames[1];
      entry.resolve({ fields, data: data && detached(data) });
    } else {
      entry.reject(wireError(entry.op, message.error));
    }
  }

  private connect(): Promise<ClientSocket> {
    if (this.connecting !== undefined) return this.connecting;
    const attempt = (async () => {
      await probe(this.address, this.server, this.timeoutMs);
      if (this.closed) throw new DfsError('CLIENT_CLOSED', 'the client is closed');
      const socket = new ClientSocket(this.address, {
        sendTimeoutMs: this.timeoutMs,
      });
      socket.onMessage((frames) => this.onReply(frames));
      // Rank 0 gone (killed, stopped, restarted): nothing sent so far will be answered, so say
      // so now rather than at each request's deadline; and until a connection is made again,
      // new requests fail at once too (ZeroMQ would hold them for the whole deadline).
      socket.onConnection((up) => {
        this.connectionLost = !up;
        if (!up) this.failPending();
      });
      this.socket = socket;
      return socket;
    })();
    this.connecting = attempt;
    // A failed connection attempt is not remembered: the next request tries again.
    void attempt.catch(() => {
      if (this.connecting === attempt) this.connecting = undefined;
    });
    return attempt;
  }

  /** Fails every outstanding request: the connection they went out on dropped. */
  private failPending(): void {
    for (const [id, entry] of [...this.pending]) {
      if (this.settle(id)) entry.reject(this.connectionLostError(entry.op));
    }
  }

  private connectionLostError(op: RequestOp): DfsError {
    return new DfsError(
      'CLIENT_UNREACHABLE',
      `the store at ${this.server} closed the connection during ${op} (rank 0 stopped or restarted)`,
      { server: this.server, op },
    );
  }

  private timeoutError(op: RequestOp, timeoutMs: number): DfsError {
    const seconds = `${+(timeoutMs / 1000).toFixed(3)} s`;
    const message = this.heard
      ? `the store at ${this.server} did not answer ${op} within ${seconds}`
      : `no answer from the store at ${this.server} within ${seconds}`;
    return new DfsError('CLIENT_UNREACHABLE', message, { server: this.server, op, timeoutMs });
  }
}

// ---- connection probe -------------------------------------------------------------------------

const SOCKET_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused (is the store running, and is this its client port?)',
  ENOTFOUND: 'unknown host',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  ECONNRESET: 'connection reset',
};

/**
 * One plain TCP connect to the server, closed at once. ZeroMQ retries a refused connection
 * silently forever, so without this a stopped store would look like a slow one until the deadline.
 */
function probe(address: ServerAddress, server: string, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const socket = net.connect({ host: address.host, port: address.port });
    const fail = (reason: string, cause?: unknown): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(
        new DfsError(
          'CLIENT_UNREACHABLE',
          `cannot reach the store at ${server}: ${reason}`,
          { server, reason },
          { cause },
        ),
      );
    };
    const timer = setTimeout(
      () => fail(`no connection within ${+(timeoutMs / 1000).toFixed(3)} s`),
      timeoutMs,
    );
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      fail(SOCKET_REASONS[err.code ?? ''] ?? errorText(err), err);
    });
  });
}

// ---- local files ------------------------------------------------------------------------------

const PATH_REASONS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'a component of the path is not a directory',
  ELOOP: 'too many levels of symbolic links',
  ENAMETOOLONG: 'file name too long',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EIO: 'input/output error',
};

/** CLIENT_LOCAL_PATH with the errno turned into words; detail.path and detail.reason. */
function localPathError(filePath: string, err: unknown, what: string): DfsError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const reason = (code !== undefined ? PATH_REASONS[code] : undefined) ?? errorText(err);
  return new DfsError(
    'CLIENT_LOCAL_PATH',
    `${what} "${filePath}": ${reason}`,
    { path: filePath, reason, errno: code },
    { cause: err },
  );
}

function notRegular(filePath: string, reason: string): DfsError {
  return new DfsError('CLIENT_LOCAL_PATH', `cannot read "${filePath}": ${reason}`, {
    path: filePath,
    reason,
  });
}

/** Opens a regular file for reading; stat first, because opening a FIFO would block. */
async function openLocalFile(
  localPath: string,
): Promise<{ handle: FileHandle; sizeBytes: number }> {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below); it changes
  // nothing for a regular file. One open and one fstat, not a stat before: a small upload is
  // mostly such calls, each a round trip to libuv's thread pool.
  const handle = await open(localPath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK).catch(
    (err: unknown) => {
      throw localPathError(localPath, err, 'cannot read');
    },
  );
  try {
    return { handle, sizeBytes: regularFileSize(localPath, await handle.stat()) };
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err instanceof DfsError ? err : localPathError(localPath, err, 'cannot read');
  }
}

/**
 * The content of `localPath` if it is a regular file of at most `maxBytes`; undefined if it is
 * larger, to be streamed instead. Errors: CLIENT_LOCAL_PATH, CLIENT_FILE_CHANGED (it grew or
 * shrank while it was read).
 *
 * Synchronous calls, because each asynchronous fs call is a round trip to libuv's thread pool (a
 * pool thread is woken, then ours). For a 4 KiB upload the four of them (open, fstat, read,
 * close) were ~90 of the client's ~210 µs of CPU and 10 of its 12 context switches. Read
 * synchronously, a small file in the page cache costs a few µs of blocked event loop. The price:
 * on a stalled network file system the client's event loop stalls too, for as long as one open()
 * or one read of at most `maxBytes` (64 KiB, see wholeMaxBytes) takes there.
 *
 * The buffer has room for one byte more than the size: a read that comes back short of what was
 * asked has met the end of the file, so the reads also show that the file has not grown since
 * its size was taken (checkNotGrown's question, without another call). A read that stops short
 * of the size (a network file system may) is followed by another, which 0 bytes ends.
 */
function readSmallFile(localPath: string, maxBytes: number): Buffer | undefined {
  let fd: number;
  try {
    // O_NONBLOCK: as in openLocalFile, a FIFO is refused below instead of waited on.
    fd = openSync(localPath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw localPathError(localPath, err, 'cannot read');
  }
  try {
    const sizeBytes = regularFileSize(localPath, fstatSync(fd));
    if (sizeBytes > maxBytes) return undefined;
    const data = Buffer.allocUnsafe(sizeBytes + 1);
    let filled = 0;
    for (;;) {
      const bytesRead = readSync(fd, data, filled, data.length - filled, filled);
      filled += bytesRead;
      if (filled > sizeBytes) throw grewError(localPath, sizeBytes);
      if (filled === sizeBytes || bytesRead === 0) break;
    }
    if (filled < sizeBytes) throw shrankError(localPath, filled);
    return data.subarray(0, sizeBytes);
  } catch (err) {
    throw err instanceof DfsError ? err : localPathError(localPath, err, 'cannot read');
  } finally {
    closeSync(fd);
  }
}

/** The size of the file `opened` describes if it is a regular file; CLIENT_LOCAL_PATH if not. */
function regularFileSize(localPath: string, opened: Stats): number {
  if (opened.isDirectory()) throw notRegular(localPath, 'is a directory');
  if (!opened.isFile()) throw notRegular(localPath, 'not a regular file');
  return opened.size;
}

/** Reads exactly `length` bytes at `position` into a fresh buffer (it will be in flight). */
async function readChunk(
  handle: FileHandle,
  localPath: string,
  position: number,
  length: number,
): Promise<Buffer> {
  const data = Buffer.allocUnsafe(length);
  let filled = 0;
  while (filled < length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(data, filled, length - filled, position + filled));
    } catch (err) {
      throw localPathError(localPath, err, 'cannot read');
    }
    if (bytesRead === 0) throw shrankError(localPath, position + filled);
    filled += bytesRead;
  }
  return data;
}

async function checkNotGrown(
  handle: FileHandle,
  localPath: string,
  sizeBytes: number,
): Promise<void> {
  const probeByte = Buffer.alloc(1);
  const { bytesRead } = await handle.read(probeByte, 0, 1, sizeBytes).catch((err: unknown) => {
    throw localPathError(localPath, err, 'cannot read');
  });
  if (bytesRead > 0) throw grewError(localPath, sizeBytes);
}

function grewError(localPath: string, sizeBytes: number): DfsError {
  return new DfsError(
    'CLIENT_FILE_CHANGED',
    `"${localPath}" grew while it was being uploaded (it had ${sizeBytes} bytes at the start)`,
    { path: localPath, sizeBytes },
  );
}

function shrankError(localPath: string, atBytes: number): DfsError {
  return new DfsError(
    'CLIENT_FILE_CHANGED',
    `"${localPath}" shrank while it was being uploaded (ended at ${atBytes} bytes)`,
    { path: localPath, atBytes },
  );
}

/**
 * Checks a download target before the store is contacted; returns its absolute path.
 * Refuses a directory or a non-regular file always (renaming over a device node would replace
 * it), an existing file unless `force`, and a missing parent directory.
 */
async function checkTarget(dest: string, force: boolean): Promise<string> {
  const targetPath = path.resolve(dest);
  let info: Awaited<ReturnType<typeof lstat>> | undefined;
  try {
    info = await lstat(targetPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw localPathError(dest, err, 'cannot write');
    }
  }
  if (info !== undefined) {
    if (info.isDirectory()) {
      throw new DfsError('CLIENT_LOCAL_PATH', `cannot write "${dest}": is a directory`, {
        path: dest,
        reason: 'is a directory',
      });
    }
    if (!info.isFile() && !info.isSymbolicLink()) {
      const reason = 'not a regular file (write to a stream instead)';
      throw new DfsError('CLIENT_LOCAL_PATH', `cannot write "${dest}": ${reason}`, {
        path: dest,
        reason,
      });
    }
    if (!force) throw existsError(dest);
    return targetPath;
  }
  const dir = path.dirname(targetPath);
  const dirInfo = await stat(dir).catch((err: unknown) => {
    throw localPathError(path.dirname(dest), err, 'cannot write in directory');
  });
  if (!dirInfo.isDirectory()) {
    throw localPathError(path.dirname(dest), { code: 'ENOTDIR' }, 'cannot write in directory');
  }
  return targetPath;
}

function existsError(dest: string): DfsError {
  return new DfsError('CLIENT_EXISTS', `"${dest}" already exists (pass force to overwrite)`, {
    path: dest,
  });
}

/**
 * Moves the finished temporary file to the target. With force, a rename (atomic replace).
 * Without, a hard link, which fails if the target appeared since checkTarget, so nothing is ever
 * overwritten by surprise; file systems without hard links fall back to check-then-rename.
 */
async function placeFile(tempPath: string, targetPath: string, force: boolean): Promise<void> {
  if (force) {
    await rename(tempPath, targetPath).catch((err: unknown) => {
      throw localPathError(targetPath, err, 'cannot write');
    });
    return;
  }
  try {
    await link(tempPath, targetPath);
    await unlink(tempPath).catch(() => undefined);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw existsError(targetPath);
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EXDEV') {
      throw localPathError(targetPath, err, 'cannot write');
    }
  }
  const existing = await lstat(targetPath).catch(() => undefined);
  if (existing !== undefined) throw existsError(targetPath);
  await rename(tempPath, targetPath).catch((err: unknown) => {
    throw localPathError(targetPath, err, 'cannot write');
  });
}

interface ReceiveOptions {
  signal: AbortSignal | undefined;
  onProgress: ((p: TransferProgress) => void) | undefined;
  verifySha256: boolean;
}

interface ChunkSink {
  write(data: Buffer): Promise<void>;
  /** Called once after the last chunk checked out. */
  finish?(): Promise<void>;
}

/**
 * Turns a records dataset's stored lines back into a JSON document: "[", the records in order
 * separated by ",", "]". Chunks end at record boundaries, so each holds whole lines.
 */
class JsonArraySink implements ChunkSink {
  private started = false;

  constructor(private readonly inner: ChunkSink) {}

  async write(data: Buffer): Promise<void> {
    if (data.length === 0) return;
    const parts: Buffer[] = [Buffer.from(this.started ? ',\n' : '[\n')];
    this.started = true;
    for (let start = 0; start < data.length;) {
      let end = data.indexOf(0x0a, start);
      if (end === -1) end = data.length;
      if (start > 0) parts.push(SEPARATOR);
      parts.push(data.subarray(start, end));
      start = end + 1;
    }
    await this.inner.write(Buffer.concat(parts));
  }

  async finish(): Promise<void> {
    await this.inner.write(Buffer.from(this.started ? '\n]\n' : '[]\n'));
  }
}

const SEPARATOR = Buffer.from(',\n');

class FileSink implements ChunkSink {
  constructor(
    private readonly handle: FileHandle,
    private readonly targetPath: string,
  ) {}

  async write(data: Buffer): Promise<void> {
    let written = 0;
    while (written < data.length) {
      try {
        const { bytesWritten } = await this.handle.write(data, written, data.length - written);
        written += bytesWritten;
      } catch (err) {
        throw localPathError(this.targetPath, err, 'cannot write');
      }
    }
  }
}

/**
 * Writes to a caller's stream with backpressure. It listens for 'error' for the whole download:
 * an unlistened 'error' (EPIPE on stdout, say) would otherwise crash the process.
 */
class StreamSink implements ChunkSink {
  private error: unknown;
  private readonly onError = (err: unknown): void => {
    this.error ??= err;
  };

  constructor(private readonly stream: NodeJS.WritableStream) {
    stream.on('error', this.onError);
  }

  async write(data: Buffer): Promise<void> {
    this.throwIfFailed();
    if (!this.stream.write(data)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.stream.off('drain', done);
          this.stream.off('error', done);
          this.stream.off('close', done);
          resolve();
        };
        this.stream.on('drain', done);
        this.stream.on('error', done);
        this.stream.on('close', done);
      });
      const destroyed = (this.stream as { destroyed?: boolean }).destroyed === true;
      if (this.error === undefined && destroyed) this.error = new Error('the stream was closed');
    }
    this.throwIfFailed();
  }

  detach(): void {
    this.stream.off('error', this.onError);
  }

  private throwIfFailed(): void {
    if (this.error === undefined) return;
    const code = (this.error as NodeJS.ErrnoException).code;
    const reason = code === 'EPIPE' ? 'the reader went away (broken pipe)' : errorText(this.error);
    throw new DfsError(
      'CLIENT_LOCAL_PATH',
      `cannot write the output: ${reason}`,
      { path: '-', reason },
      { cause: this.error },
    );
  }
}

// ---- reply checking ---------------------------------------------------------------------------

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function badReply(op: string, what: string): DfsError {
  return new DfsError('CLIENT_BAD_REPLY', `unexpected reply to ${op} from the store: ${what}`, {
    op,
  });
}

function wireError(op: RequestOp, error: unknown): DfsError {
  if (!isRecord(error) || typeof error.code !== 'string' || typeof error.message !== 'string') {
    return badReply(op, 'an error without code and message');
  }
  const detail = isRecord(error.detail) ? error.detail : {};
  // Codes pass through as the store sent them, even one this client does not know yet.
  return new DfsError(error.code as StoreErrorCode, error.message, detail);
}

function expectString(fields: Record<string, unknown>, key: string, op: string): string {
  const value = fields[key];
  if (typeof value !== 'string') throw badReply(op, `${key} is not a string`);
  return value;
}

function expectPositiveInteger(fields: Record<string, unknown>, key: string, op: string): number {
  const value = fields[key];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw badReply(op, `${key} is not a positive integer`);
  }
  return value;
}

function expectCount(value: unknown, what: string, op: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw badReply(op, `${what} is not a non-negative integer`);
  }
  return value;
}

/**
 * Checks the parts of FileMetadata this client relies on: chunk indexes 0..n-1 in order, sizes
 * that add up, checksums present. Anything else is a CLIENT_BAD_REPLY, never a wrong download.
 */
function checkMetadata(value: unknown, op: string): FileMetadata {
  if (!isRecord(value)) throw badReply(op, 'no metadata');
  if (typeof value.name !== 'string') throw badReply(op, 'metadata.name is not a string');
  if (typeof value.sha256 !== 'string') throw badReply(op, 'metadata.sha256 is missing');
  const sizeBytes = expectCount(value.sizeBytes, 'metadata.sizeBytes', op);
  if (!Array.isArray(value.chunks)) throw badReply(op, 'metadata.chunks is not an array');
  let total = 0;
  value.chunks.forEach((chunk: unknown, position: number) => {
    if (!isRecord(chunk) || chunk.index !== position) {
      throw badReply(op, `metadata.chunks[${position}] is not chunk ${position}`);
    }
    total += expectCount(chunk.sizeBytes, `chunk ${position} sizeBytes`, op);
    if (typeof chunk.checksum !== 'string') {
      throw badReply(op, `chunk ${position} has no checksum`);
    }
    if (!Array.isArray(chunk.copies)) chunk.copies = [];
  });
  if (total !== sizeBytes) {
    throw badReply(op, `chunk sizes add up to ${total}, not ${sizeBytes}`);
  }
  return value as unknown as FileMetadata;
}

function checkListEntry(value: unknown): ListEntry {
  if (!isRecord(value) || typeof value.name !== 'string') {
    throw badReply('list', 'an entry has no name');
  }
  expectCount(value.sizeBytes, `sizeBytes of "${value.name}"`, 'list');
  return value as unknown as ListEntry;
}

function verifyChunk(name: string, chunk: ChunkInfo, data: Buffer): void {
  const checksum = data.length === chunk.sizeBytes ? chunkChecksum(data) : undefined;
  if (checksum === chunk.checksum) return;
  const got =
    checksum === undefined ? `${data.length} bytes instead of ${chunk.sizeBytes}` : checksum;
  throw new DfsError(
    'CLIENT_INTEGRITY',
    `chunk ${chunk.index} of "${name}" failed its checksum (expected ${chunk.checksum}, got ${got})`,
    { name, index: chunk.index, expected: chunk.checksum, actual: got },
  );
}

// ---- small helpers ----------------------------------------------------------------------------

/**
 * A duplicate ID is found by the store, which knows records by position only: add the byte offset
 * of the offending record, which this chunk still knows.
 */
function withRecordOffset(error: unknown, chunk: RecordsChunk): unknown {
  if (!(error instanceof DfsError) || typeof error.detail.record !== 'number') return error;
  const offset = chunk.offsets[error.detail.record - 1 - chunk.firstRecord];
  if (offset === undefined) return error;
  return new DfsError(
    error.code,
    `${error.message} (record ${error.detail.record} is at byte ${offset})`,
    { ...error.detail, offset },
    { cause: error },
  );
}

function abortedError(): DfsError {
  return new DfsError('CLIENT_ABORTED', 'interrupted');
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw abortedError();
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
