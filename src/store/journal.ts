/**
 * The coordinator's durable master index: an append-only log of IndexRecords, each append
 * durable before it is acknowledged, plus a snapshot that compaction writes now and then.
 * Replaying the snapshot and then the logs, in order, into an empty FileIndex rebuilds the index
 * as it was at the last acknowledged append.
 *
 * Files in the journal directory:
 *   index.snapshot        frames: a header { kind, format, logGeneration, records }, then records
 *   journal-<gen>.log     frames: a header { kind, format, generation }, then records
 *   index.snapshot.tmp    a snapshot being written (removed by open)
 * The snapshot holds the state as of the start of log `logGeneration`; logs of older generations
 * are obsolete and removed. Compaction (1) starts log g+1 and sends new appends there, (2) writes
 * the snapshot for g+1 atomically (temp, fsync, rename, fsync dir), (3) removes logs before g+1.
 * A crash anywhere in between leaves either the old snapshot plus logs g and g+1, or the new
 * snapshot plus log g+1: both replay to the same state.
 *
 * Framing: each frame is [u32 LE payload length][u32 LE CRC32 of length bytes + payload][msgpack
 * payload]. A crash in the middle of an append leaves an incomplete or garbled frame at the tail
 * of the newest log; open detects it (short frame, impossible length, CRC mismatch), drops it and
 * everything after it, and truncates the file to the last good frame. Nothing after the first
 * bad frame is trusted: a write that never completed may have reached the disk in any order,
 * and no append after it was acknowledged. A frame whose CRC matches but whose content is not an
 * IndexRecord is not a torn write but a bug or foreign file, so open refuses with STORE_CORRUPT.
 *
 * Runway: before a small batch would grow the newest log, the next RUNWAY_BYTES past it are
 * written with zeros (durable-fs.ts says why: appends then overwrite blocks already written, and
 * their O_DSYNC writes need no commit of the file system's journal). A zero length ends the
 * frames, so the zeros read as the end of the log; open keeps them, and does not count them as
 * dropped, when nothing but zeros follows the last good frame.
 *
 * One process per directory: the coordinator is the only writer.
 */
import { Buffer } from 'node:buffer';
import { constants } from 'node:fs';
import { mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { StoreError } from './errors.js';
import { validateIndexRecord, type IndexRecord } from './file-index.js';
import {
  crc32,
  endOfNonZero,
  fsyncDirectory,
  RUNWAY_BATCH_BYTES,
  RUNWAY_BYTES,
  writeRunway,
} from './durable-fs.js';

/** Largest record payload (msgpack bytes). A commit needs ~150 B per chunk: ~100k chunks. */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024;
/** Default bound on bytes of appends waiting to be written; beyond it append throws STORE_BUSY. */
export const DEFAULT_MAX_PENDING_BYTES = 256 * 1024 * 1024;
/** Largest group of appends written and made durable together. */
const MAX_BATCH_BYTES = 64 * 1024 * 1024;
/**
 * How the newest log is opened: a write through it is durable when it returns (O_DSYNC, as if
 * each write were followed by an fdatasync, which is enough for a log that is only appended to:
 * its size is flushed with the data). One call to libuv's thread pool per group of appends
 * instead of a write and an fsync, as for the data ranks' volumes (volume-chunk-store.ts).
 */
const LOG_FLAGS = constants.O_RDWR | constants.O_DSYNC;
/** Read and write block for scanning logs and writing snapshots. */
const IO_BLOCK_BYTES = 4 * 1024 * 1024;
const FRAME_HEADER_BYTES = 8;
const FORMAT = 1;

const SNAPSHOT_FILE = 'index.snapshot';
const SNAPSHOT_TEMP = 'index.snapshot.tmp';
const LOG_PATTERN = /^journal-(\d{1,15})\.log$/;
const logFile = (generation: number): string =>
  `journal-${String(generation).padStart(12, '0')}.log`;

// Plain msgpack maps (no msgpackr record extension), so the files can be read by any msgpack tool.
const packr = new Packr({ useRecords: false });

export interface JournalOptions {
  /** Bound on bytes of appends queued but not yet written (default 256 MiB). */
  maxPendingBytes?: number;
}

export interface JournalStats {
  /** Generation of the log appends go to now. */
  generation: number;
  /** Bytes in the current log (header included): a signal for when to compact. */
  logBytes: number;
  /** Durable writes of the log so far: with group commit, far fewer than appends under load. */
  syncs: number;
  /** Appends queued or being written, and their bytes. */
  pendingAppends: number;
  pendingBytes: number;
}

export interface JournalOpenResult {
  journal: Journal;
  /** Snapshot records then log records, in order: apply them to an empty FileIndex. */
  records: IndexRecord[];
  /** Bytes of torn frames dropped at log tails (0 after a clean shutdown). */
  droppedBytes: number;
}

// ---- CRC32 and framing ------------------------------------------------------------------------

function frameCrc(lengthBytes: Uint8Array, payload: Uint8Array): number {
  return crc32(payload, crc32(lengthBytes)) >>> 0;
}

/** One frame around `value`. Throws STORE_BAD_REQUEST if the payload exceeds MAX_RECORD_BYTES. */
function encodeFrame(value: unknown): Buffer {
  const payload = packr.pack(value);
  if (payload.byteLength > MAX_RECORD_BYTES) {
    throw new StoreError(
      'STORE_BAD_REQUEST',
      `an index record of ${payload.byteLength} bytes is larger than the limit of ${MAX_RECORD_BYTES}`,
      { sizeBytes: payload.byteLength, maxBytes: MAX_RECORD_BYTES },
    );
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.byteLength);
  frame.writeUInt32LE(payload.byteLength, 0);
  payload.copy(frame, FRAME_HEADER_BYTES);
  frame.writeUInt32LE(frameCrc(frame.subarray(0, 4), payload), 4);
  return frame;
}

async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const { bytesWritten } = await handle.write(
      data,
      done,
      data.byteLength - done,
      position + done,
    );
    done += bytesWritten;
  }
}

/**
 * Calls `onPayload` for each intact frame of the file from its start, and returns the offset
 * just after the last intact frame (= the file size when nothing is torn). Reads in blocks, so a
 * large log is not held in memory twice.
 */
async function scanFrames(
  handle: FileHandle,
  fileBytes: number,
  onPayload: (payload: Buffer, offset: number) => void,
): Promise<number> {
  let block = Buffer.alloc(0);
  let blockStart = 0;
  const ensure = async (pos: number, n: number): Promise<boolean> => {
    if (pos + n > fileBytes) return false;
    if (pos >= blockStart && pos + n <= blockStart + block.byteLength) return true;
    const length = Math.min(Math.max(n, IO_BLOCK_BYTES), fileBytes - pos);
    const next = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await handle.read(next, got, length - got, pos + got);
      if (bytesRead === 0) return false;
      got += bytesRead;
    }
    block = next;
    blockStart = pos;
    return true;
  };
  let pos = 0;
  for (;;) {
    if (!(await ensure(pos, FRAME_HEADER_BYTES))) return pos;
    let at = pos - blockStart;
    const length = block.readUInt32LE(at);
    if (length === 0 || length > MAX_RECORD_BYTES) return pos;
    if (!(await ensure(pos, FRAME_HEADER_BYTES + length))) return pos;
    at = pos - blockStart;
    const payload = block.subarray(at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + length);
    if (frameCrc(block.subarray(at, at + 4), payload) !== block.readUInt32LE(at + 4)) return pos;
    onPayload(payload, pos);
    pos += FRAME_HEADER_BYTES + length;
  }
}

// ---- errors -----------------------------------------------------------------------------------

function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function ioError(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const code = errnoCode(err);
  const message = err instanceof Error ? err.message : String(err);
  const detail = code !== undefined ? { errno: code } : {};
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new StoreError('STORE_NO_SPACE', `${what}: the disk is full (${code})`, detail, {
      cause: err,
    });
  }
  return new StoreError('STORE_INTERNAL', `${what}: ${message}`, detail, { cause: err });
}

function corrupt(file: string, what: string, cause?: unknown): StoreError {
  return new StoreError(
    'STORE_CORRUPT',
    `journal file ${file} is damaged: ${what}; refusing to start on a partial index`,
    { file },
    { cause },
  );
}

function decode(file: string, payload: Buffer, offset: number): unknown {
  try {
    return packr.unpack(payload) as unknown;
  } catch (err) {
    throw corrupt(file, `the frame at byte ${offset} passes its CRC but is not msgpack`, err);
  }
}

function decodeRecord(file: string, payload: Buffer, offset: number): IndexRecord {
  const value = decode(file, payload, offset);
  try {
    return validateIndexRecord(value);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw corrupt(file, `the frame at byte ${offset} is not an index record (${why})`, err);
  }
}

/** A rejected promise for a caught value (always an Error, as the linter and callers expect). */
function rejected(err: unknown): Promise<never> {
  return Promise.reject(err instanceof Error ? err : new Error(String(err)));
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

// ---- the journal ------------------------------------------------------------------------------

interface Batch {
  frames: Buffer[];
  bytes: number;
  waiters: { resolve: () => void; reject: (err: Error) => void }[];
  /** Set once the batch is durable. */
  durable: boolean;
}

interface AppendItem {
  kind: 'append';
  frame: Buffer;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface RotateItem {
  kind: 'rotate';
  /** The batch being written when compaction was asked for: re-logged in the new log. */
  carry: Batch | undefined;
  resolve: (generation: number) => void;
  reject: (err: Error) => void;
}

interface Log {
  handle: FileHandle;
  generation: number;
  /** Where the frames end: the next batch goes here. */
  bytes: number;
  /** Where the zeros written ahead of the frames end (the runway, durable-fs.ts); >= bytes. */
  runwayEnd: number;
}

/**
 * The journal. Appends are written in call order; each resolves after its frame, and every frame
 * appended before it, is durable (the log is open with O_DSYNC). Appends that arrive while a
 * write runs are written together by the next one (group commit), so thousands of small commits
 * per second cost a few hundred durable writes, not thousands.
 */
export class Journal {
  private readonly queue: (AppendItem | RotateItem)[] = [];
  private writing: Batch | undefined;
  private running = false;
  private idleWaiters: (() => void)[] = [];
  private compactions: Promise<void> = Promise.resolve();
  private pendingBytes = 0;
  private pendingAppends = 0;
  private syncs = 0;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Set when the log can no longer be trusted (a write failed): every later call rejects. */
  private failed: StoreError | undefined;

  private constructor(
    readonly dir: string,
    private log: Log,
    private readonly maxPendingBytes: number,
  ) {}

  /**
   * Opens (creating if needed) the journal in `dir` and replays it: the snapshot's records, then
   * each live log's, in order. Removes a leftover snapshot temp file and obsolete logs, drops a
   * torn tail (reporting its size in droppedBytes) and truncates the newest log to its last
   * intact frame, so appends continue after it.
   *
   * Throws StoreError STORE_CORRUPT when the snapshot is damaged, a log generation is missing, or
   * an intact frame does not hold an index record (the journal is not silently rebuilt from part
   * of the data); STORE_INTERNAL or STORE_NO_SPACE for I/O failures (detail.errno).
   */
  static async open(dir: string, options: JournalOptions = {}): Promise<JournalOpenResult> {
    const maxPendingBytes = options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    if (!(maxPendingBytes >= MAX_RECORD_BYTES + FRAME_HEADER_BYTES)) {
      throw new RangeError(
        `maxPendingBytes must be at least ${MAX_RECORD_BYTES + FRAME_HEADER_BYTES}`,
      );
    }
    try {
      return await Journal.recover(dir, maxPendingBytes);
    } catch (err) {
      throw ioError(err, `cannot open the journal in ${dir}`);
    }
  }

  private static async recover(dir: string, maxPendingBytes: number): Promise<JournalOpenResult> {
    await mkdir(dir, { recursive: true });
    const names = await readdir(dir);
    if (names.includes(SNAPSHOT_TEMP)) await unlink(join(dir, SNAPSHOT_TEMP));
    const logs = names
      .map((name) => LOG_PATTERN.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ name: m[0], generation: Number(m[1]) }))
      .sort((a, b) => a.generation - b.generation);

    const records: IndexRecord[] = [];
    let firstGeneration: number;
    if (names.includes(SNAPSHOT_FILE)) {
      firstGeneration = await readSnapshot(join(dir, SNAPSHOT_FILE), records);
    } else {
      firstGeneration = logs[0]?.generation ?? 1;
    }
    for (const log of logs) {
      if (log.generation < firstGeneration) await unlink(join(dir, log.name));
    }
    const live = logs.filter((l) => l.generation >= firstGeneration);
    live.forEach((log, i) => {
      if (log.generation !== firstGeneration + i) {
        throw corrupt(log.name, `log generation ${firstGeneration + i} is missing before it`);
      }
    });

    let droppedBytes = 0;
    let current: Log | undefined;
    for (const [i, log] of live.entries()) {
      const last = i === live.length - 1;
      const path = join(dir, log.name);
      const handle = await open(path, last ? LOG_FLAGS : 'r');
      try {
        const fileBytes = (await handle.stat()).size;
        let headerOk = false;
        const goodBytes = await scanFrames(handle, fileBytes, (payload, offset) => {
          if (offset === 0) {
            const header = decode(log.name, payload, offset);
            if (
              !isObject(header) ||
              header.kind !== 'memflow-journal' ||
              header.generation !== log.generation
            ) {
              throw corrupt(log.name, 'its header does not name this log');
            }
            if (header.format !== FORMAT)
              throw corrupt(log.name, `unknown format ${String(header.format)}`);
            headerOk = true;
            return;
          }
          records.push(decodeRecord(log.name, payload, offset));
        });
        // Zeros after the last good frame are the runway written ahead of it, not a torn tail:
        // what is dropped is what held something.
        const contentEnd = goodBytes < fileBytes ? await endOfNonZero(handle, fileBytes) : 0;
        const runway = contentEnd <= goodBytes;
        droppedBytes += Math.max(0, contentEnd - goodBytes);
        if (!last) {
          // Only the newest log can be torn by a crash: older ones were complete before the
          // next one started. Keep what is intact, as for the newest.
          if (!headerOk && fileBytes > 0) throw corrupt(log.name, 'its header is unreadable');
          await handle.close();
          continue;
        }
        if (!headerOk) {
          // Crash while the log was being created: start it again.
          await handle.truncate(0);
          const header = encodeFrame({
            kind: 'memflow-journal',
            format: FORMAT,
            generation: log.generation,
          });
          await writeFully(handle, header, 0);
          await handle.sync();
          const bytes = header.byteLength;
          current = { handle, generation: log.generation, bytes, runwayEnd: bytes };
        } else {
          if (goodBytes < fileBytes && !runway) {
            await handle.truncate(goodBytes);
            await handle.sync();
          }
          const runwayEnd = runway ? fileBytes : goodBytes;
          current = { handle, generation: log.generation, bytes: goodBytes, runwayEnd };
        }
      } catch (err) {
        await handle.close().catch(() => {});
        throw err;
      }
    }
    current ??= await createLog(dir, firstGeneration, []);
    return { journal: new Journal(dir, current, maxPendingBytes), records, droppedBytes };
  }

  /**
   * Makes `record` durable: resolves only after its frame (and every frame appended before it)
   * is written durably. Records are replayed in the order append was called.
   *
   * Rejects with STORE_BAD_REQUEST if the record is malformed or its msgpack form exceeds
   * MAX_RECORD_BYTES (nothing is written); STORE_BUSY when more than maxPendingBytes wait to be
   * written (the caller must slow down); STORE_NO_SPACE when the disk is full (the partial write
   * is cut off, later appends may succeed); STORE_INTERNAL when any other write failed, the
   * flush that O_DSYNC makes part of it included (the journal refuses everything from then on:
   * the coordinator must restart and replay); STORE_UNAVAILABLE after close().
   */
  append(record: IndexRecord): Promise<void> {
    let frame: Buffer;
    try {
      this.checkUsable();
      frame = encodeFrame(validateIndexRecord(record));
    } catch (err) {
      return rejected(err);
    }
    if (this.pendingBytes + frame.byteLength > this.maxPendingBytes) {
      return Promise.reject(
        new StoreError(
          'STORE_BUSY',
          `the journal has ${this.pendingBytes} bytes waiting to be written (limit ${this.maxPendingBytes})`,
          { pendingBytes: this.pendingBytes, maxPendingBytes: this.maxPendingBytes },
        ),
      );
    }
    this.pendingBytes += frame.byteLength;
    this.pendingAppends++;
    return new Promise<void>((resolve, reject) => {
      const settle = (): void => {
        this.pendingBytes -= frame.byteLength;
        this.pendingAppends--;
      };
      this.queue.push({
        kind: 'append',
        frame,
        resolve: () => {
          settle();
          resolve();
        },
        reject: (err) => {
          settle();
          reject(err);
        },
      });
      this.kick();
    });
  }

  /**
   * Replaces the journal's history with `records` (normally FileIndex.snapshot()): starts a new
   * log at once (appends made from now on go there), writes the snapshot atomically (temp file,
   * fsync, rename, fsync of the directory), then removes the older logs. Resolves when all of
   * that is done. Appends continue while the snapshot is written.
   *
   * Contract: `records` must include the effect of every append whose promise has resolved
   * before this call (the coordinator: call it from its commit chain, after the index has applied
   * every settled append). Appends still pending at the call may or may not be included: the
   * journal writes them to the new log (again, if they were already on their way to the old one),
   * and replaying a record whose effect is already in the snapshot changes nothing
   * (FileIndex.apply ignores stale commits and deletes of absent names). `records` and the objects
   * they reference must not be modified until the promise settles.
   *
   * Rejects with STORE_BAD_REQUEST if a record is malformed or too large, STORE_NO_SPACE or
   * STORE_INTERNAL on I/O failure (the journal keeps working on its logs; nothing is lost), and
   * STORE_UNAVAILABLE after close(). Compactions run one after another.
   */
  compact(records: readonly IndexRecord[]): Promise<void> {
    try {
      this.checkUsable();
    } catch (err) {
      return rejected(err);
    }
    const rotated = new Promise<number>((resolve, reject) => {
      // Before any queued append (they must land in the new log, since `records` cannot include
      // them), but after rotations already waiting, so generations follow the calls' order.
      let at = 0;
      while (this.queue[at]?.kind === 'rotate') at++;
      this.queue.splice(at, 0, { kind: 'rotate', carry: this.writing, resolve, reject });
    });
    this.kick();
    const run = this.compactions.then(async () => {
      const generation = await rotated;
      await this.writeSnapshot(records, generation);
      await this.removeLogsBefore(generation);
    });
    this.compactions = run.catch(() => {});
    return run;
  }

  /**
   * Waits for queued appends and running compactions to finish, then closes the log. Later
   * calls to append and compact reject with STORE_UNAVAILABLE. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing === undefined) {
      this.closed = true;
      this.closing = (async () => {
        await this.idle();
        await this.compactions;
        await this.log.handle.close();
      })();
    }
    return this.closing;
  }

  stats(): JournalStats {
    return {
      generation: this.log.generation,
      logBytes: this.log.bytes,
      syncs: this.syncs,
      pendingAppends: this.pendingAppends,
      pendingBytes: this.pendingBytes,
    };
  }

  private checkUsable(): void {
    if (this.closed) throw new StoreError('STORE_UNAVAILABLE', 'the journal is closed');
    if (this.failed) throw this.failed;
  }

  private idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Starts the writer unless it runs. It starts on the next turn of the event loop, so appends
   * made during this one go into one batch: the commits that one message of replies from the
   * data ranks completes each reach append() after several promise hops, and a microtask would
   * start the write after the first of them.
   */
  private kick(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => void this.drain());
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const head = this.queue[0] as AppendItem | RotateItem;
        if (head.kind === 'rotate') {
          this.queue.shift();
          await this.rotate(head);
          continue;
        }
        const batch: Batch = { frames: [], bytes: 0, waiters: [], durable: false };
        while (this.queue[0]?.kind === 'append') {
          const item = this.queue[0];
          if (batch.frames.length > 0 && batch.bytes + item.frame.byteLength > MAX_BATCH_BYTES)
            break;
          this.queue.shift();
          batch.frames.push(item.frame);
          batch.bytes += item.frame.byteLength;
          batch.waiters.push(item);
        }
        this.writing = batch;
        try {
          await this.writeBatch(batch);
        } catch (err) {
          // writeBatch settles its waiters on I/O errors; this is for the unexpected (no memory
          // for the concatenated batch): nobody may be left waiting forever.
          this.writing = undefined;
          for (const w of batch.waiters) w.reject(ioError(err, 'cannot write to the journal'));
        }
      }
    } finally {
      this.running = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  private async writeBatch(batch: Batch): Promise<void> {
    const fail = (err: StoreError): void => {
      this.writing = undefined;
      for (const w of batch.waiters) w.reject(err);
    };
    if (this.failed) return fail(this.failed);
    const log = this.log;
    const data =
      batch.frames.length === 1
        ? (batch.frames[0] as Buffer)
        : Buffer.concat(batch.frames, batch.bytes);
    try {
      const end = log.bytes + data.byteLength;
      if (data.byteLength < RUNWAY_BATCH_BYTES && end > log.runwayEnd) {
        // Zeros ahead first, so that this write and the next ones overwrite written blocks.
        const runwayEnd = end + RUNWAY_BYTES;
        const from = Math.max(log.bytes, log.runwayEnd);
        if (await writeRunway(log.handle, from, runwayEnd)) log.runwayEnd = runwayEnd;
      }
      // Durable when it returns (LOG_FLAGS).
      await writeFully(log.handle, data, log.bytes);
    } catch (err) {
      // Cut off what was written, so the next batch follows the last good frame; if even that
      // fails, later frames would sit behind garbage and be lost on replay: stop accepting.
      try {
        await log.handle.truncate(log.bytes);
        log.runwayEnd = log.bytes;
      } catch (truncateErr) {
        this.failed = ioError(
          truncateErr,
          'the journal cannot cut off a failed write; restart the coordinator',
        );
      }
      const failure = ioError(err, 'cannot write to the journal');
      if (failure.code === 'STORE_NO_SPACE') return fail(failure);
      // Anything else may be the flush inside the O_DSYNC write. After a failed flush the kernel
      // may have dropped the dirty pages and report success next time (the PostgreSQL
      // "fsyncgate" lesson): nothing written from now on can be trusted.
      this.failed ??= ioError(
        err,
        'the journal could not be written durably; restart the coordinator to replay it',
      );
      return fail(this.failed);
    }
    log.bytes += data.byteLength;
    this.syncs++;
    batch.durable = true;
    // From here on the appends count as settled: a compaction asked for after this point
    // receives records that include them, so it must not carry them into the new log.
    this.writing = undefined;
    for (const w of batch.waiters) w.resolve();
  }

  private async rotate(item: RotateItem): Promise<void> {
    if (this.failed) return item.reject(this.failed);
    const generation = this.log.generation + 1;
    const carried = item.carry?.durable === true ? item.carry.frames : [];
    let next: Log;
    try {
      next = await createLog(this.dir, generation, carried);
    } catch (err) {
      return item.reject(ioError(err, `cannot start journal log ${generation}`));
    }
    const old = this.log;
    this.log = next;
    await old.handle.close().catch(() => {});
    item.resolve(generation);
  }

  private async writeSnapshot(records: readonly IndexRecord[], generation: number): Promise<void> {
    const temp = join(this.dir, SNAPSHOT_TEMP);
    let handle: FileHandle | undefined;
    try {
      handle = await open(temp, 'w');
      let position = 0;
      let pending: Buffer[] = [
        encodeFrame({
          kind: 'memflow-snapshot',
          format: FORMAT,
          logGeneration: generation,
          records: records.length,
        }),
      ];
      let pendingBytes = pending[0]?.byteLength ?? 0;
      const flush = async (): Promise<void> => {
        const data = Buffer.concat(pending, pendingBytes);
        await writeFully(handle as FileHandle, data, position);
        position += data.byteLength;
        pending = [];
        pendingBytes = 0;
      };
      for (const record of records) {
        const frame = encodeFrame(validateIndexRecord(record));
        pending.push(frame);
        pendingBytes += frame.byteLength;
        if (pendingBytes >= IO_BLOCK_BYTES) await flush();
      }
      await flush();
      await handle.sync();
      await handle.close();
      handle = undefined;
      await rename(temp, join(this.dir, SNAPSHOT_FILE));
      await fsyncDirectory(this.dir);
    } catch (err) {
      await handle?.close().catch(() => {});
      await unlink(temp).catch(() => {});
      throw ioError(err, 'cannot write the index snapshot');
    }
  }

  private async removeLogsBefore(generation: number): Promise<void> {
    try {
      for (const name of await readdir(this.dir)) {
        const m = LOG_PATTERN.exec(name);
        if (m !== null && Number(m[1]) < generation) await unlink(join(this.dir, name));
      }
    } catch {
      // Harmless: open removes logs the snapshot covers.
    }
  }
}

/** Creates log `generation` holding its header and `frames`, durably (file and directory). */
async function createLog(dir: string, generation: number, frames: readonly Buffer[]): Promise<Log> {
  const path = join(dir, logFile(generation));
  const handle = await open(path, LOG_FLAGS | constants.O_CREAT | constants.O_EXCL);
  try {
    const header = encodeFrame({ kind: 'memflow-journal', format: FORMAT, generation });
    const data = Buffer.concat([header, ...frames]);
    // Durable on return (LOG_FLAGS).
    await writeFully(handle, data, 0);
    await fsyncDirectory(dir);
    return { handle, generation, bytes: data.byteLength, runwayEnd: data.byteLength };
  } catch (err) {
    await handle.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw err;
  }
}

/** Reads the snapshot into `records`; returns the log generation it covers up to. */
async function readSnapshot(path: string, records: IndexRecord[]): Promise<number> {
  const handle = await open(path, 'r');
  try {
    const fileBytes = (await handle.stat()).size;
    let generation: number | undefined;
    let expected = 0;
    let count = 0;
    const goodBytes = await scanFrames(handle, fileBytes, (payload, offset) => {
      if (offset === 0) {
        const header = decode(SNAPSHOT_FILE, payload, offset);
        if (!isObject(header) || header.kind !== 'memflow-snapshot' || header.format !== FORMAT) {
          throw corrupt(SNAPSHOT_FILE, 'its header is not a MemFlow snapshot header');
        }
        if (!Number.isSafeInteger(header.logGeneration) || !Number.isSafeInteger(header.records)) {
          throw corrupt(SNAPSHOT_FILE, 'its header lacks logGeneration or records');
        }
        generation = header.logGeneration as number;
        expected = header.records as number;
        return;
      }
      records.push(decodeRecord(SNAPSHOT_FILE, payload, offset));
      count++;
    });
    // A snapshot is renamed into place only after its fsync, so it is never torn by a crash:
    // any damage is real corruption, and replaying part of it would lose files silently.
    if (goodBytes !== fileBytes || generation === undefined || count !== expected) {
      throw corrupt(
        SNAPSHOT_FILE,
        `${fileBytes - goodBytes} bytes unreadable from byte ${goodBytes}, ${count} of ${expected} records read`,
      );
    }
    return generation;
  } finally {
    await handle.close();
  }
}
