/**
 * VolumeChunkStore: a data rank's chunks appended to a few large volume files (as in Haystack or
 * SeaweedFS), so thousands of small puts per second share a handful of fdatasyncs instead of
 * costing two fsyncs each as one file per chunk does (DiskChunkStore).
 *
 * Files in the store directory: `volume-<n>.dat`, n = 1, 2, ... written as 8 digits. Only the
 * newest volume is appended to; when a batch would take it past volumeBytes (default 1 GiB), the
 * next volume is started. All integers are little-endian.
 *
 *   volume   = file header, then records back to back
 *   header   = 16 bytes: "MFVOLUME" (8 ASCII bytes), u32 format (2), u32 volume number n
 *   record   = 56-byte record header, id (idLength ASCII bytes), data (dataLength bytes)
 *   record header:
 *     0  u32  magic 0x5243464d ("MFCR")
 *     4  u8   type: 1 put, 2 delete (a tombstone), 3 pad (id "-", zeros for data: fills the
 *             room up to an aligned offset; format 2 added it, format 1 volumes are still read)
 *     5  u8   idLength, 1 to 128
 *     6  u16  0 (reserved)
 *     8  u64  seq: a store-wide sequence number, higher for every later put or delete
 *     16 u32  dataLength (0 for a delete)
 *     20 32B  BLAKE3 of the data as raw bytes (chunkChecksum in binary; for a delete: the
 *             checksum of the chunk it deletes, for the curious)
 *     52 u32  CRC32 (IEEE) of header bytes 0..51 followed by the id bytes
 *
 * State: the newest record of an id (highest seq, over all volumes) decides: a put means stored,
 * a delete means gone. open() rebuilds the id -> location map by scanning every volume; the order
 * of the files does not matter, only seq does. Compaction copies records verbatim, seq included,
 * so a crash in the middle of one leaves two identical copies, which replay treats as one (the
 * copy in the higher volume wins, the other is garbage).
 *
 * Direct I/O: a batch of at least directIoFromBytes (512 KiB: in practice, large chunks) is written
 * with O_DIRECT, bypassing the page cache, whose first-touch cost dominated uploads on these VMs
 * (see aligned-memory.ts). O_DIRECT needs aligned offsets and lengths, so such a batch starts at
 * the next multiple of 4 KiB, behind a pad record written through the page cache, and ends with a
 * pad record up to the next multiple; large chunks are read back with O_DIRECT too. Where
 * O_DIRECT is not available (tmpfs, unaligned memory) everything goes through the page cache,
 * with the same format and the same guarantees (stats().directIo tells which).
 *
 * Durability: puts and deletes go to a write queue. A write loop appends everything queued as
 * one batch (pwritev at explicit positions, never O_APPEND) as soon as its previous write is
 * done, so puts arriving meanwhile share the next batch (group commit). The newest volume is
 * open with O_DSYNC, so a batch written through the page cache is durable when its pwritev
 * returns, and its puts resolve then: one call to libuv's thread pool per batch rather than a
 * pwritev and an fdatasync, which mattered for small puts (the hand-offs to the pool and back
 * are most of a small put's cost). A batch written with O_DIRECT (below) goes through a handle
 * without O_DSYNC, so large writes never wait for a flush one by one; a sync loop fdatasyncs the
 * volume whenever such puts wait for it, and resolves them only then, while the next batch is
 * written. Deletes in a direct batch resolve without waiting for that sync: a chunk that
 * reappears after a power loss is an orphan the coordinator collects at start-up. A volume is
 * fdatasync'd before the next one is started, and the new file's directory entry is fsync'd, so
 * only the tail of the newest volume can ever be torn.
 *
 * Runway: when small batches (under RUNWAY_BATCH_BYTES) come one after another and one with puts
 * would go past what the volume file holds, the next RUNWAY_BYTES (at most up to volumeBytes) are
 * first written with zeros, durably. Small batches then overwrite blocks already written, and
 * their O_DSYNC writes need no commit of the file system's journal (durable-fs.ts has the
 * measurements). Large batches (bulk uploads, the direct path) never pay for zeros, nor do the
 * tombstones between them when a large file is replaced: a runway is written only after a small
 * batch, and only for puts (tombstones do not wait for a flush). A record header is never all
 * zeros (it starts with a magic), so open() takes a volume whose last good record is followed by
 * nothing but zeros as whole, the zeros as its runway; zeros are never counted as dropped bytes.
 *
 * Recovery: a record header is bad if it is cut off, has no magic, fails its CRC or holds
 * impossible fields; a record is cut off if it runs past the end of the file. In the newest
 * volume, the records ending in its last tailCheckBytes (the only place unsynced writes can be)
 * also have their data checked against their BLAKE3. Then:
 *  - a torn tail (a record cut off by the end of the file, a bad header within that tail, or
 *    records with bad data that no good record follows) is dropped and the file truncated to the
 *    last good record (stats().recovery.droppedTailBytes);
 *  - a put with bad data that a good record follows is kept (either it was synced before that
 *    record was written, so this is damage, or neither was ever acknowledged), and get() reports
 *    STORE_CORRUPT for that chunk only;
 *  - any other bad record is damage in the middle: the rest of that volume is skipped (never
 *    read, never returned), the volume is no longer appended to, and
 *    stats().recovery.damagedVolumes says where. The chunks in it are missing from list(), so the
 *    coordinator's repair copies them back from other ranks.
 * get() verifies every chunk against its checksum, so damage open() does not look for (bit rot
 * in old records) is STORE_CORRUPT, never bad bytes.
 *
 * Compaction: a volume other than the newest whose garbage (bytes of deleted or superseded puts,
 * of tombstones, of a skipped damaged remainder) is more than half its records' bytes is rewritten:
 * its live records are appended to the newest volume through the same write queue (in groups of a
 * few MiB, so puts wait for a group at most), each group locked against puts and deletes of its
 * ids, synced, then the map is pointed at the copies; when the volume holds nothing live, the file
 * is removed. A tombstone is carried over only while a dead put of its id may still lie in some
 * other volume (deadPuts counts those per id); otherwise it is dropped. One compaction runs at a
 * time, in the background after deletes and volume roll-overs, or on demand with compact(). Reads
 * during a compaction use the old copy until the new one is durable; the old file is closed when
 * its last reader finishes. The newest volume is never compacted, so it is sealed early, before
 * its next batch, once its dead puts (deleted or replaced, not counting tombstones) are more than
 * three quarters of its records and at least EARLY_SEAL_SHARE of a volume: otherwise deleting
 * what a rank just stored gave no space back until the rank had written a whole volume more.
 * Three quarters, not the half sealed volumes are compacted at: compaction copies the live rest,
 * and a file replaced again and again (a checkpoint) would be copied once per replacement at
 * half (15 replacements of 100 MB: 8.9-9.2 s against 7.3-9.0 s without early sealing), and
 * about once per three or four at three quarters (8.2-8.9 s), which still keeps 0.5-0.7 GB on
 * disk instead of 2.9 GB.
 * Tombstones do not count, because compaction may have to carry them into the newest volume
 * again, and counting them could seal and compact the same tombstones over and over.
 *
 * One process per directory: the data rank is the only writer.
 */
import { Buffer } from 'node:buffer';
import { constants } from 'node:fs';
import { mkdir, open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AlignedSlab,
  alignDown,
  alignedMemoryAvailable,
  alignUp,
  DIRECT_IO_ALIGN,
  RETAINED_SLAB_BYTES,
  SlabPool,
} from './aligned-memory.js';
import { chunkChecksum } from './checksum.js';
import {
  checkPutArguments,
  conflictError,
  MAX_CHUNK_BYTES,
  MAX_CHUNK_ID_LENGTH,
  noSpaceError,
  notFoundError,
  listChunks,
  validateChunkId,
  verifyStoredChunk,
  type ChunkStore,
  type StoredChunk,
} from './chunk-store.js';
import { StoreError } from './errors.js';
import {
  crc32,
  endOfNonZero,
  fsyncDirectory,
  RUNWAY_BATCH_BYTES,
  RUNWAY_BYTES,
  writeRunway,
} from './durable-fs.js';

/** Default size at which a new volume is started. */
export const DEFAULT_VOLUME_BYTES = 1024 * 1024 * 1024;
/** Default tail of the newest volume whose records are re-verified (data included) at open. */
export const DEFAULT_TAIL_CHECK_BYTES = 64 * 1024 * 1024;
/** Smallest volumeBytes accepted (tests use tiny volumes; production uses the default). */
export const MIN_VOLUME_BYTES = 4096;

export const VOLUME_FILE_HEADER_BYTES = 16;
export const RECORD_HEADER_BYTES = 56;
const FILE_MAGIC = 'MFVOLUME';
/** Written into new volumes; format 1 (no pad records) is still read. */
const FORMAT = 2;
const RECORD_MAGIC = 0x5243464d;
const TYPE_PUT = 1;
const TYPE_DELETE = 2;
const TYPE_PAD = 3;
const PAD_ID = '-';
/** The smallest pad record: a header and its one-byte id, no data. */
const MIN_PAD_BYTES = RECORD_HEADER_BYTES + PAD_ID.length;
const ZERO_CHECKSUM = '0'.repeat(64);
/** Default smallest batch written with O_DIRECT (and smallest chunk read with it). */
export const DEFAULT_DIRECT_IO_FROM_BYTES = 512 * 1024;
/** Large reads with O_DIRECT at once (each holds an aligned buffer of its size); more wait. */
const DIRECT_READS = 4;
/**
 * Largest batch written at once (one record may exceed it on its own). Small, so large records
 * are written one by one and their syncs overlap the next writes instead of all waiting for one
 * big sync and restarting in lockstep (measured: 2-3x the MB/s for 4 MiB puts, 4 in flight).
 * Small records still share batches: 1 MiB holds 250 records of 4 KiB.
 */
const MAX_BATCH_BYTES = 1024 * 1024;
/**
 * The write loop waits for the syncs when this much is written but not yet synced, so a crash
 * can tear only the last MAX_UNSYNCED_BYTES + one batch of the newest volume, which open()
 * re-verifies (DEFAULT_TAIL_CHECK_BYTES).
 */
const MAX_UNSYNCED_BYTES = 48 * 1024 * 1024;
/**
 * How the newest volume is opened: every write through this handle is durable when it returns
 * (O_DSYNC: as if each were followed by an fdatasync). See the file comment.
 */
const APPEND_FLAGS = constants.O_RDWR | constants.O_DSYNC;
/** Parts below this size are copied into one buffer per batch rather than given as iovecs. */
const GATHER_BELOW_BYTES = 64 * 1024;
/** Most iovecs per pwritev call (Linux IOV_MAX). */
const MAX_IOVECS = 1024;
const SCAN_BLOCK_BYTES = 4 * 1024 * 1024;
/** Bytes of records one compaction step copies (puts of its ids wait at most one step). */
const COMPACT_GROUP_BYTES = 8 * 1024 * 1024;
/** A volume with more garbage than this share of its record bytes is compacted. */
const GARBAGE_RATIO = 0.5;
/**
 * The newest volume is sealed before it is full once its dead puts are more than
 * EARLY_SEAL_RATIO of its records and at least EARLY_SEAL_SHARE of a volume (64 MiB of 1 GiB):
 * see the file comment.
 */
const EARLY_SEAL_RATIO = 0.75;
const EARLY_SEAL_SHARE = 1 / 16;

const VOLUME_PATTERN = /^volume-(\d{1,12})\.dat$/;
const ID_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/;

/** File name of volume n. */
export function volumeFileName(n: number): string {
  return `volume-${String(n).padStart(8, '0')}.dat`;
}

export interface VolumeChunkStoreOptions {
  /** The most chunk bytes this store will hold; a put beyond it throws STORE_NO_SPACE. */
  capacityBytes?: number;
  /** Size at which the next volume is started (default 1 GiB). */
  volumeBytes?: number;
  /** Run compactions in the background after deletes and roll-overs (default true). */
  autoCompact?: boolean;
  /**
   * Tail of the newest volume re-verified at open (default 64 MiB, more than the writer ever
   * leaves unsynced). A bad record there is taken for a torn write; elsewhere it is damage.
   */
  tailCheckBytes?: number;
  /**
   * Batches of at least this many bytes are written, and chunks of at least this size read, with
   * O_DIRECT when the file system allows it (default 512 KiB; Infinity: never).
   */
  directIoFromBytes?: number;
}

export interface CompactOptions {
  /** Compact every volume (other than the newest) whose garbage share exceeds this (0.5). */
  minGarbageRatio?: number;
  /**
   * Test hook: stop after copying this many records, as a crash would, leaving the source
   * volume in place (the store stays consistent and a later compaction finishes the job).
   */
  stopAfterRecords?: number;
}

export interface CompactionResult {
  /** Volumes rewritten and removed. */
  volumes: number[];
  /** Records (puts and tombstones) copied into the newest volume. */
  copiedRecords: number;
  /** Disk bytes freed: sizes of the removed files minus the bytes copied. */
  reclaimedBytes: number;
  /** True when stopAfterRecords cut the compaction short. */
  stopped: boolean;
}

export interface DamagedVolume {
  volume: number;
  file: string;
  /** Where the first bad record starts; everything from here to the end is skipped. */
  offset: number;
  skippedBytes: number;
  reason: string;
}

export interface VolumeChunkStoreStats {
  chunks: number;
  usedBytes: number;
  volumes: number;
  currentVolume: number;
  /** Sum of the volume files' sizes. */
  diskBytes: number;
  /** Bytes in volumes that hold no live chunk data (dead records, tombstones, damage). */
  garbageBytes: number;
  /**
   * Points where written records became durable: fdatasyncs, and batches written through the
   * O_DSYNC handle. Far fewer than puts under concurrent load (group commit).
   */
  syncs: number;
  /** Batches written (one pwritev series each). */
  batches: number;
  /** Puts written (not counting idempotent repeats). */
  puts: number;
  /** Whether large batches and chunks bypass the page cache (see the file comment). */
  directIo: boolean;
  /** Batches written with O_DIRECT. */
  directBatches: number;
  compaction: {
    running: boolean;
    volumesCompacted: number;
    copiedRecords: number;
    reclaimedBytes: number;
    /** Chunks found damaged while being copied: dropped from the store (repair restores them). */
    corruptDropped: number;
    lastError: string | undefined;
  };
  recovery: {
    /** Bytes of torn records cut off the newest volume at open (0 after a clean shutdown). */
    droppedTailBytes: number;
    /** Volumes with damage found at open (their remainder is skipped) or by compaction. */
    damagedVolumes: DamagedVolume[];
  };
}

/** Where a chunk lives, for tests and tools (see damage()). */
export interface ChunkLocation {
  volume: number;
  path: string;
  recordOffset: number;
  dataOffset: number;
  sizeBytes: number;
}

// ---- CRC32 ------------------------------------------------------------------------------------

/** CRC of a record header (bytes 0..51) and the id that follows it. */
function headerCrc(record: Buffer, idLength: number): number {
  const head = crc32(record.subarray(0, 52));
  return crc32(record.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + idLength), head) >>> 0;
}

// ---- encoding ---------------------------------------------------------------------------------

/** Record header plus id, ready to be followed by dataLength bytes of data. */
function encodeRecordHead(
  type: number,
  id: string,
  seq: number,
  dataLength: number,
  checksumHex: string,
): Buffer {
  const head = Buffer.allocUnsafe(RECORD_HEADER_BYTES + id.length);
  head.writeUInt32LE(RECORD_MAGIC, 0);
  head[4] = type;
  head[5] = id.length;
  head.writeUInt16LE(0, 6);
  head.writeUInt32LE(seq % 0x1_0000_0000, 8);
  head.writeUInt32LE(Math.floor(seq / 0x1_0000_0000), 12);
  head.writeUInt32LE(dataLength, 16);
  head.write(checksumHex, 20, 32, 'hex');
  head.write(id, RECORD_HEADER_BYTES, 'latin1');
  head.writeUInt32LE(headerCrc(head, id.length), 52);
  return head;
}

/** Writes a pad record of `totalBytes` (at least MIN_PAD_BYTES) into `buffer` at `at`. */
function writePad(buffer: Buffer, at: number, totalBytes: number): void {
  const head = encodeRecordHead(TYPE_PAD, PAD_ID, 0, totalBytes - MIN_PAD_BYTES, ZERO_CHECKSUM);
  buffer.set(head, at);
  buffer.fill(0, at + head.byteLength, at + totalBytes);
}

/** Bytes of pad needed after `offset` to reach an aligned offset: 0, or MIN_PAD_BYTES or more. */
function padBytesAfter(offset: number): number {
  const gap = alignUp(offset) - offset;
  return gap === 0 || gap >= MIN_PAD_BYTES ? gap : gap + DIRECT_IO_ALIGN;
}

function encodeFileHeader(volume: number): Buffer {
  const header = Buffer.alloc(VOLUME_FILE_HEADER_BYTES);
  header.write(FILE_MAGIC, 0, 'latin1');
  header.writeUInt32LE(FORMAT, 8);
  header.writeUInt32LE(volume, 12);
  return header;
}

function fileHeaderProblem(header: Buffer, volume: number): string | undefined {
  if (header.byteLength < VOLUME_FILE_HEADER_BYTES) return 'the volume header is cut off';
  if (header.toString('latin1', 0, 8) !== FILE_MAGIC) return 'the file is not a volume';
  const format = header.readUInt32LE(8);
  if (format !== 1 && format !== FORMAT) return `unknown volume format ${format}`;
  if (header.readUInt32LE(12) !== volume) {
    return `the header names volume ${header.readUInt32LE(12)}, not ${volume}`;
  }
  return undefined;
}

// ---- file helpers -----------------------------------------------------------------------------

function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Maps a file-system error to a StoreError: a full disk is STORE_NO_SPACE, anything else is
 * STORE_INTERNAL carrying the errno code (EIO, EACCES, ...) for the operator. */
function ioError(err: unknown, what: string, id?: string, neededBytes?: number): StoreError {
  if (err instanceof StoreError) return err;
  const code = errnoCode(err);
  const message = err instanceof Error ? err.message : String(err);
  const detail = {
    ...(id !== undefined ? { id } : {}),
    ...(code !== undefined ? { errno: code } : {}),
  };
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new StoreError(
      'STORE_NO_SPACE',
      `${what}: the disk is full (${code})`,
      { ...detail, ...(neededBytes !== undefined ? { neededBytes } : {}) },
      { cause: err },
    );
  }
  return new StoreError('STORE_INTERNAL', `${what}: ${message}`, detail, { cause: err });
}

/** pwritev of all of `buffers` at `position`, continuing after short writes. */
async function writevFully(
  handle: FileHandle,
  buffers: Uint8Array[],
  position: number,
): Promise<void> {
  let list = buffers;
  let pos = position;
  while (list.length > 0) {
    const { bytesWritten } = await handle.writev(list.slice(0, MAX_IOVECS), pos);
    if (bytesWritten === 0) throw new Error('the file system wrote nothing (short write)');
    pos += bytesWritten;
    let left = bytesWritten;
    let done = 0;
    while (done < list.length && left >= (list[done] as Uint8Array).byteLength) {
      left -= (list[done] as Uint8Array).byteLength;
      done++;
    }
    list = list.slice(done);
    if (left > 0 && list.length > 0) list[0] = (list[0] as Uint8Array).subarray(left);
  }
}

/**
 * Reads an aligned range with O_DIRECT into the aligned `buffer`; returns the bytes read (less at
 * the end of the file, where the kernel returns the unaligned remainder and a read after it at an
 * unaligned offset would be refused).
 */
async function readAlignedFully(
  handle: FileHandle,
  buffer: Buffer,
  position: number,
): Promise<number> {
  let got = 0;
  while (got < buffer.byteLength) {
    const { bytesRead } = await handle.read(buffer, got, buffer.byteLength - got, position + got);
    got += bytesRead;
    if (bytesRead === 0 || bytesRead % DIRECT_IO_ALIGN !== 0) break;
  }
  return got;
}

/** Reads into all of `buffer` from `position`; returns the bytes read (less only at EOF). */
async function readFully(handle: FileHandle, buffer: Buffer, position: number): Promise<number> {
  let got = 0;
  while (got < buffer.byteLength) {
    const { bytesRead } = await handle.read(buffer, got, buffer.byteLength - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/** Sequential reader over a file in large blocks, handing out views of its current block. */
class BlockReader {
  private block = Buffer.alloc(0);
  private blockStart = 0;

  constructor(
    private readonly handle: FileHandle,
    private readonly fileBytes: number,
  ) {}

  /**
   * A view of bytes [pos, pos+n), valid until the next call; undefined past the end. Reads at
   * least `readAhead` bytes when it has to read.
   */
  async view(pos: number, n: number, readAhead = SCAN_BLOCK_BYTES): Promise<Buffer | undefined> {
    if (pos + n > this.fileBytes) return undefined;
    if (pos >= this.blockStart && pos + n <= this.blockStart + this.block.byteLength) {
      return this.block.subarray(pos - this.blockStart, pos - this.blockStart + n);
    }
    const length = Math.min(Math.max(n, readAhead), this.fileBytes - pos);
    const next = Buffer.allocUnsafe(length);
    const got = await readFully(this.handle, next, pos);
    this.block = next.subarray(0, got);
    this.blockStart = pos;
    return got >= n ? this.block.subarray(0, n) : undefined;
  }
}

interface ScannedRecord {
  type: number;
  id: string;
  seq: number;
  offset: number;
  /** Header + id + data. */
  totalBytes: number;
  dataLength: number;
  checksum: string;
  /** The data was checked (tail of the newest volume) and does not match the checksum. */
  dataBad: boolean;
}

interface ScanProblem {
  offset: number;
  reason: string;
  /**
   * An interrupted write rather than damage: a record cut off by the end of the file, or
   * anything bad from which no good record follows within the re-verified tail.
   */
  torn: boolean;
}

/**
 * Calls `onRecord` for each good record of a volume from its first record up to `endBytes`, in
 * order, and returns where the good records end plus the first problem, if any.
 *
 * From `tailFrom` on (the re-verified tail of the newest volume; Infinity elsewhere) puts also
 * have their data checked, and a bad header counts as torn. A put whose data fails is held back:
 * if a good record follows, it is not the torn end of the file, so it is passed on with dataBad
 * set (get() will report STORE_CORRUPT for it and for it only); if nothing good follows, the scan
 * ends before it as at a torn write.
 */
async function scanVolume(
  handle: FileHandle,
  endBytes: number,
  tailFrom: number,
  onRecord: (record: ScannedRecord) => void | Promise<void>,
): Promise<{ end: number; padBytes: number; problem?: ScanProblem }> {
  const reader = new BlockReader(handle, endBytes);
  let pos = VOLUME_FILE_HEADER_BYTES;
  let held: ScannedRecord[] = [];
  const pads: { offset: number; bytes: number }[] = [];
  const padBytesBefore = (end: number): number =>
    pads.reduce((sum, pad) => (pad.offset < end ? sum + pad.bytes : sum), 0);
  const stop = (
    reason: string,
    cutOff: boolean,
  ): { end: number; padBytes: number; problem: ScanProblem } => {
    const first = held[0];
    if (first !== undefined) {
      // Nothing good after the held records: they are the torn end.
      const why = 'the data of the last records does not match their checksums';
      return {
        end: first.offset,
        padBytes: padBytesBefore(first.offset),
        problem: { offset: first.offset, reason: why, torn: true },
      };
    }
    return {
      end: pos,
      padBytes: padBytesBefore(pos),
      problem: { offset: pos, reason, torn: cutOff || pos >= tailFrom },
    };
  };
  // After a large record, read little ahead: the next header is all we need of the next block.
  let readAhead = SCAN_BLOCK_BYTES;
  while (pos < endBytes) {
    const head = await reader.view(pos, RECORD_HEADER_BYTES, readAhead);
    if (head === undefined) return stop('a record header is cut off by the end of the file', true);
    if (head.readUInt32LE(0) !== RECORD_MAGIC) return stop('no record starts here', false);
    const idLength = head[5] ?? 0;
    if (idLength < 1 || idLength > MAX_CHUNK_ID_LENGTH) {
      return stop(`impossible id length ${idLength}`, false);
    }
    const withId = await reader.view(pos, RECORD_HEADER_BYTES + idLength, readAhead);
    if (withId === undefined) return stop('a record id is cut off by the end of the file', true);
    if (headerCrc(withId, idLength) !== withId.readUInt32LE(52)) {
      return stop('the record header fails its CRC', false);
    }
    const type = withId[4] ?? 0;
    const seq = withId.readUInt32LE(8) + withId.readUInt32LE(12) * 0x1_0000_0000;
    const dataLength = withId.readUInt32LE(16);
    const id = withId.toString('latin1', RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + idLength);
    if (
      (type !== TYPE_PUT && type !== TYPE_DELETE && type !== TYPE_PAD) ||
      withId.readUInt16LE(6) !== 0 ||
      dataLength > MAX_CHUNK_BYTES ||
      (type === TYPE_DELETE && dataLength !== 0) ||
      (type === TYPE_PAD && (id !== PAD_ID || dataLength >= 2 * DIRECT_IO_ALIGN)) ||
      !ID_PATTERN.test(id)
    ) {
      return stop('the record header passes its CRC but holds impossible fields', false);
    }
    const checksum = withId.toString('hex', 20, 52);
    const totalBytes = RECORD_HEADER_BYTES + idLength + dataLength;
    if (pos + totalBytes > endBytes)
      return stop('a record is cut off by the end of the file', true);
    if (type === TYPE_PAD) {
      // Not a good record following held ones: a direct write torn inside the data it pads
      // can leave its pad whole.
      pads.push({ offset: pos, bytes: totalBytes });
      pos += totalBytes;
      continue;
    }
    let dataBad = false;
    if (type === TYPE_PUT && pos + totalBytes > tailFrom) {
      const data = await reader.view(pos + RECORD_HEADER_BYTES + idLength, dataLength);
      if (data === undefined) return stop('a record is cut off by the end of the file', true);
      dataBad = chunkChecksum(data) !== checksum;
    }
    const record = { type, id, seq, offset: pos, totalBytes, dataLength, checksum, dataBad };
    if (dataBad) {
      held.push(record);
    } else {
      for (const h of held) await onRecord(h);
      held = [];
      await onRecord(record);
    }
    pos += totalBytes;
    readAhead = totalBytes > SCAN_BLOCK_BYTES / 16 ? 64 * 1024 : SCAN_BLOCK_BYTES;
  }
  return held.length > 0 ? stop('', true) : { end: pos, padBytes: padBytesBefore(pos) };
}

/** A rejected promise for a caught value (always an Error, as the linter and callers expect). */
function rejected(err: unknown): Promise<never> {
  return Promise.reject(err instanceof Error ? err : new Error(String(err)));
}

const increment = (map: Map<string, number>, key: string, by = 1): void => {
  const value = (map.get(key) ?? 0) + by;
  if (value > 0) map.set(key, value);
  else map.delete(key);
};

// ---- the store --------------------------------------------------------------------------------

/** Closes a volume's file handles (errors ignored: nothing is left to flush). */
async function closeVolumeFiles(volume: Volume): Promise<void> {
  await volume.handle.close().catch(() => {});
  await volume.direct?.close().catch(() => {});
}

interface Volume {
  number: number;
  path: string;
  handle: FileHandle;
  /** The same file opened with O_DIRECT, when the store uses direct I/O. */
  direct: FileHandle | undefined;
  /** End of the good records: the append position of the newest volume. */
  end: number;
  /** Size of the file's records (larger than `end` when a damaged remainder is skipped). */
  fileBytes: number;
  /**
   * End of the zeros written ahead of `end` for small writes (the runway: see the file comment);
   * at most `end` when there are none.
   */
  runwayEnd: number;
  /** Record bytes (header + id + data) of the live chunks in this volume, and their number. */
  liveBytes: number;
  liveCount: number;
  /** Bytes of pad records: not counted as garbage when deciding what to compact. */
  padBytes: number;
  /** Record bytes of puts here that were deleted or replaced since (compaction moves excluded). */
  deadPutBytes: number;
  /** End of what the last fdatasync covered (tombstones do not wait for one). */
  syncedEnd: number;
  /** get()s reading from it now: a removed volume's file is closed when they finish. */
  readers: number;
  retired: boolean;
  /** Set when compaction must leave it alone (damage found while compacting, an I/O error). */
  noCompact: boolean;
}

interface Entry {
  volume: Volume;
  offset: number;
  idLength: number;
  sizeBytes: number;
  checksum: string;
  seq: number;
}

const recordBytesOf = (e: Entry): number => RECORD_HEADER_BYTES + e.idLength + e.sizeBytes;

interface WriteItem {
  parts: Uint8Array[];
  bytes: number;
  /** Resolve only once durable (puts, compaction copies), or once written (tombstones). */
  sync: boolean;
  resolve: (where: { volume: Volume; offset: number }) => void;
  reject: (err: unknown) => void;
}

/**
 * A ChunkStore in volume files. Open it with VolumeChunkStore.open; see ChunkStore for the
 * contract of each method. Operations on one id are serialised (a put racing a delete of the same
 * id ends in one of the two orders, never half of each); operations on different ids run in
 * parallel and their writes share batches and fdatasyncs.
 */
export class VolumeChunkStore implements ChunkStore {
  private readonly chunks = new Map<string, Entry>();
  private readonly volumes = new Map<number, Volume>();
  /** Per id: put records on disk that are no longer live (tombstones are kept while > 0). */
  private readonly deadPuts = new Map<string, number>();
  private readonly locks = new Map<string, Promise<void>>();
  /** The volume appended to (assigned by open() before the store is handed out). */
  private current!: Volume;
  private used = 0;
  private reserved = 0;
  private nextSeq = 1;
  private lastVolumeNumber = 0;

  private readonly queue: WriteItem[] = [];
  private writing = false;
  /** Whether the last batch written was small (see the runway in the file comment). */
  private lastBatchSmall = false;
  /** Written records waiting for an fdatasync, and whether the sync loop runs. */
  private unsynced: { item: WriteItem; where: { volume: Volume; offset: number } }[] = [];
  private syncing = false;
  private idleWaiters: (() => void)[] = [];
  private syncWaiters: (() => void)[] = [];

  private compactionChain: Promise<unknown> = Promise.resolve();
  /** The newest volume, when sealing it early failed (the next one could not be created). */
  private noEarlySeal: Volume | undefined;
  private compactionRunning = false;
  private backgroundScheduled = false;

  private closed = false;
  private closing: Promise<void> | undefined;
  /** Set when a volume can no longer be trusted (an fdatasync failed): writes reject from then. */
  private failed: StoreError | undefined;

  /** Set by open() once direct I/O is known to work here (see the file comment). */
  private direct: { writeSlab: AlignedSlab; readSlabs: SlabPool } | undefined;

  private readonly counters = {
    syncs: 0,
    batches: 0,
    directBatches: 0,
    puts: 0,
    volumesCompacted: 0,
    copiedRecords: 0,
    reclaimedBytes: 0,
    corruptDropped: 0,
  };
  private lastCompactionError: string | undefined;
  private droppedTailBytes = 0;
  private readonly damaged: DamagedVolume[] = [];

  private constructor(
    readonly dir: string,
    readonly capacityBytes: number,
    readonly volumeBytes: number,
    private readonly autoCompact: boolean,
    private readonly tailCheckBytes: number,
    private readonly directIoFromBytes: number,
  ) {}

  /**
   * Opens (creating if needed) the store in `dir`: scans every volume to rebuild the map of
   * chunks, cuts a torn tail off the newest volume and skips damaged remainders (see the file
   * comment; stats().recovery reports both). Never refuses to start because of damage.
   *
   * Throws RangeError for a negative capacity or volumeBytes below MIN_VOLUME_BYTES; StoreError
   * STORE_INTERNAL (detail.errno) or STORE_NO_SPACE when the directory cannot be read or written.
   */
  static async open(dir: string, options: VolumeChunkStoreOptions = {}): Promise<VolumeChunkStore> {
    const capacityBytes = options.capacityBytes ?? Infinity;
    if (!(capacityBytes >= 0)) {
      throw new RangeError(`capacityBytes must be >= 0, got ${capacityBytes}`);
    }
    const volumeBytes = options.volumeBytes ?? DEFAULT_VOLUME_BYTES;
    if (!Number.isSafeInteger(volumeBytes) || volumeBytes < MIN_VOLUME_BYTES) {
      throw new RangeError(`volumeBytes must be an integer >= ${MIN_VOLUME_BYTES}`);
    }
    const tailCheckBytes = options.tailCheckBytes ?? DEFAULT_TAIL_CHECK_BYTES;
    if (!(tailCheckBytes >= 0)) {
      throw new RangeError(`tailCheckBytes must be >= 0, got ${tailCheckBytes}`);
    }
    const directIoFromBytes = options.directIoFromBytes ?? DEFAULT_DIRECT_IO_FROM_BYTES;
    if (!(directIoFromBytes >= 0)) {
      throw new RangeError(`directIoFromBytes must be >= 0, got ${directIoFromBytes}`);
    }
    const store = new VolumeChunkStore(
      dir,
      capacityBytes,
      volumeBytes,
      options.autoCompact ?? true,
      tailCheckBytes,
      directIoFromBytes,
    );
    try {
      await mkdir(dir, { recursive: true });
      await store.recover();
      if (directIoFromBytes !== Infinity) await store.startDirectIo();
    } catch (err) {
      await Promise.all([...store.volumes.values()].map((v) => closeVolumeFiles(v)));
      throw ioError(err, `cannot open the chunk store in ${dir}`);
    }
    store.scheduleCompaction();
    return store;
  }

  private async recover(): Promise<void> {
    const files = (await readdir(this.dir))
      .map((name) => VOLUME_PATTERN.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ name: m[0], number: Number(m[1]) }))
      .filter((f) => f.number > 0)
      .sort((a, b) => a.number - b.number);
    type Best = { put: Entry } | { deleteSeq: number };
    const best = new Map<string, Best>();
    const seqOf = (b: Best): number => ('put' in b ? b.put.seq : b.deleteSeq);
    const kill = (entry: Entry, id: string): void => {
      entry.volume.liveBytes -= recordBytesOf(entry);
      entry.volume.deadPutBytes += recordBytesOf(entry);
      entry.volume.liveCount--;
      increment(this.deadPuts, id);
    };
    let maxSeq = 0;
    let current: Volume | undefined;

    for (const [i, file] of files.entries()) {
      const last = i === files.length - 1;
      const path = join(this.dir, file.name);
      const handle = await open(path, last ? APPEND_FLAGS : 'r');
      const fileBytes = (await handle.stat()).size;
      const volume: Volume = {
        number: file.number,
        path,
        handle,
        direct: undefined,
        end: VOLUME_FILE_HEADER_BYTES,
        fileBytes,
        runwayEnd: 0,
        liveBytes: 0,
        deadPutBytes: 0,
        liveCount: 0,
        padBytes: 0,
        syncedEnd: 0,
        readers: 0,
        retired: false,
        noCompact: false,
      };
      this.volumes.set(file.number, volume);
      this.lastVolumeNumber = file.number;

      const header = Buffer.alloc(VOLUME_FILE_HEADER_BYTES);
      const headerBytes = await readFully(handle, header, 0);
      const headerProblem = fileHeaderProblem(header.subarray(0, headerBytes), file.number);
      if (headerProblem !== undefined) {
        if (last && fileBytes <= VOLUME_FILE_HEADER_BYTES) {
          // A crash while the volume was being created: start it again.
          await handle.truncate(0);
          await writevFully(handle, [encodeFileHeader(file.number)], 0);
          await handle.datasync();
          this.droppedTailBytes += fileBytes;
          volume.fileBytes = VOLUME_FILE_HEADER_BYTES;
          current = volume;
        } else {
          volume.end = Math.min(fileBytes, VOLUME_FILE_HEADER_BYTES);
          this.damaged.push({
            volume: file.number,
            file: file.name,
            offset: 0,
            skippedBytes: fileBytes,
            reason: headerProblem,
          });
        }
        continue;
      }

      // A newest volume of format 1 is sealed and a new one begun: pads are format 2.
      const appendable = header.readUInt32LE(8) === FORMAT;
      // Unsynced writes can only be just before the end of what the newest volume holds, which
      // is not the end of the file when a runway of zeros follows it.
      const contentEnd = last ? await endOfNonZero(handle, fileBytes) : fileBytes;
      const tailFrom = last ? contentEnd - this.tailCheckBytes : Infinity;
      const scanned = await scanVolume(handle, fileBytes, tailFrom, (r) => {
        maxSeq = Math.max(maxSeq, r.seq);
        const previous = best.get(r.id);
        if (r.type === TYPE_PUT) {
          // Equal seqs: two copies of one record (a compaction interrupted by a crash): the
          // later wins, unless its data was found damaged.
          const seq = previous === undefined ? -1 : seqOf(previous);
          if (r.seq > seq || (r.seq === seq && !r.dataBad)) {
            if (previous !== undefined && 'put' in previous) kill(previous.put, r.id);
            const entry: Entry = {
              volume,
              offset: r.offset,
              idLength: r.id.length,
              sizeBytes: r.dataLength,
              checksum: r.checksum,
              seq: r.seq,
            };
            volume.liveBytes += r.totalBytes;
            volume.liveCount++;
            best.set(r.id, { put: entry });
          } else {
            volume.deadPutBytes += r.totalBytes;
            increment(this.deadPuts, r.id);
          }
        } else if (previous === undefined || r.seq > seqOf(previous)) {
          if (previous !== undefined && 'put' in previous) kill(previous.put, r.id);
          best.set(r.id, { deleteSeq: r.seq });
        }
      });
      const { end, padBytes } = scanned;
      let problem = scanned.problem;
      // Where nothing but zeros follows the last good record, they are its runway.
      if (
        problem?.offset === end &&
        (last ? contentEnd : await endOfNonZero(handle, fileBytes)) <= end
      ) {
        problem = undefined;
        volume.fileBytes = end;
        volume.runwayEnd = fileBytes;
      }
      volume.end = end;
      volume.padBytes = padBytes;
      if (problem === undefined) {
        if (last && appendable) current = volume;
      } else if (last && problem.torn) {
        await handle.truncate(end);
        await handle.datasync();
        // What held something: zeros are never counted as dropped.
        this.droppedTailBytes += Math.max(0, contentEnd - end);
        volume.fileBytes = end;
        if (appendable) current = volume;
      } else {
        this.damaged.push({
          volume: file.number,
          file: file.name,
          offset: problem.offset,
          skippedBytes: fileBytes - end,
          reason: problem.reason,
        });
      }
    }

    for (const [id, b] of best) {
      if (!('put' in b)) continue;
      this.chunks.set(id, b.put);
      this.used += b.put.sizeBytes;
    }
    this.nextSeq = maxSeq + 1;
    // What open() found is on disk already (or in the page cache of a process that crashed).
    for (const v of this.volumes.values()) v.syncedEnd = v.end;
    // No usable newest volume (none yet, or the newest is damaged): start a fresh one.
    this.current = current ?? (await this.createVolume(this.lastVolumeNumber + 1));
  }

  /** Creates volume n holding its header, durably (file and directory entry). */
  private async createVolume(n: number): Promise<Volume> {
    const path = join(this.dir, volumeFileName(n));
    const handle = await open(path, APPEND_FLAGS | constants.O_CREAT | constants.O_EXCL);
    try {
      // Durable on return (O_DSYNC).
      await writevFully(handle, [encodeFileHeader(n)], 0);
      await fsyncDirectory(this.dir);
    } catch (err) {
      await handle.close().catch(() => {});
      await unlink(path).catch(() => {});
      throw err;
    }
    this.counters.syncs++;
    const volume: Volume = {
      number: n,
      path,
      handle,
      direct: await this.openDirect(path),
      end: VOLUME_FILE_HEADER_BYTES,
      fileBytes: VOLUME_FILE_HEADER_BYTES,
      runwayEnd: VOLUME_FILE_HEADER_BYTES,
      liveBytes: 0,
      deadPutBytes: 0,
      liveCount: 0,
      padBytes: 0,
      syncedEnd: VOLUME_FILE_HEADER_BYTES,
      readers: 0,
      retired: false,
      noCompact: false,
    };
    this.volumes.set(n, volume);
    this.lastVolumeNumber = n;
    return volume;
  }

  /**
   * Turns direct I/O on if a direct read of the newest volume into aligned memory works here
   * (the file system accepts O_DIRECT and the memory is aligned as it must be), and opens every
   * volume for it. Otherwise everything keeps going through the page cache.
   */
  private async startDirectIo(): Promise<void> {
    if (constants.O_DIRECT === undefined || !alignedMemoryAvailable) return;
    const writeSlab = new AlignedSlab();
    let probe: FileHandle | undefined;
    try {
      probe = await open(this.current.path, constants.O_RDWR | constants.O_DIRECT);
      await probe.read(writeSlab.view(DIRECT_IO_ALIGN), 0, DIRECT_IO_ALIGN, 0);
    } catch {
      await probe?.close().catch(() => {});
      return;
    }
    this.direct = { writeSlab, readSlabs: new SlabPool(DIRECT_READS) };
    this.current.direct = probe;
    for (const v of this.volumes.values()) v.direct ??= await this.openDirect(v.path);
  }

  /** `path` opened with O_DIRECT when the store uses direct I/O (undefined when not, or on error). */
  private async openDirect(path: string): Promise<FileHandle | undefined> {
    if (this.direct === undefined) return undefined;
    return open(path, constants.O_RDWR | constants.O_DIRECT).catch(() => undefined);
  }

  // ---- per-id locks ---------------------------------------------------------------------------

  /** Waits for every earlier operation on `id`, then returns the function that releases it. */
  private lock(id: string): Promise<() => void> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    let release = (): void => {};
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.locks.set(id, tail);
    return previous.then(() => () => {
      release();
      if (this.locks.get(id) === tail) this.locks.delete(id);
    });
  }

  private async serialized<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const release = await this.lock(id);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private checkWritable(): void {
    if (this.closed) throw new StoreError('STORE_UNAVAILABLE', 'the chunk store is closed');
    if (this.failed) throw this.failed;
  }

  // ---- ChunkStore -----------------------------------------------------------------------------

  async put(id: string, data: Uint8Array, checksum: string): Promise<void> {
    checkPutArguments(id, data, checksum);
    this.checkWritable();
    await this.serialized(id, async () => {
      const existing = this.chunks.get(id);
      if (existing !== undefined) {
        if (existing.checksum === checksum) return;
        throw conflictError(id, existing.checksum, checksum);
      }
      const sizeBytes = data.byteLength;
      const free = this.capacityBytes - this.used - this.reserved;
      if (sizeBytes > free) throw noSpaceError(id, sizeBytes, Math.max(0, free));
      this.checkWritable();
      this.reserved += sizeBytes;
      try {
        const seq = this.nextSeq++;
        const head = encodeRecordHead(TYPE_PUT, id, seq, sizeBytes, checksum);
        const where = await this.enqueue([head, data], head.byteLength + sizeBytes, true);
        const entry: Entry = {
          volume: where.volume,
          offset: where.offset,
          idLength: id.length,
          sizeBytes,
          checksum,
          seq,
        };
        this.chunks.set(id, entry);
        this.used += sizeBytes;
        where.volume.liveBytes += recordBytesOf(entry);
        where.volume.liveCount++;
        this.counters.puts++;
      } catch (err) {
        throw ioError(err, `cannot store chunk ${id}`, id, sizeBytes);
      } finally {
        this.reserved -= sizeBytes;
      }
    });
  }

  async get(id: string): Promise<Buffer> {
    validateChunkId(id);
    if (this.closed) throw new StoreError('STORE_UNAVAILABLE', 'the chunk store is closed');
    const entry = this.chunks.get(id);
    if (entry === undefined) throw notFoundError(id);
    const volume = entry.volume;
    const dataOffset = entry.offset + RECORD_HEADER_BYTES + entry.idLength;
    let got: number;
    // Counted before any wait: a compaction that moves the chunk meanwhile keeps this file open.
    volume.readers++;
    const slab =
      volume.direct !== undefined && entry.sizeBytes >= this.directIoFromBytes
        ? await this.direct?.readSlabs.acquire()
        : undefined;
    const data = Buffer.allocUnsafeSlow(entry.sizeBytes);
    try {
      if (slab !== undefined && volume.direct !== undefined) {
        // The aligned blocks around the data, then the data copied out of them.
        const from = alignDown(dataOffset);
        const blocks = slab.view(alignUp(dataOffset + entry.sizeBytes) - from);
        const read = await readAlignedFully(volume.direct, blocks, from);
        got = Math.max(0, Math.min(entry.sizeBytes, read - (dataOffset - from)));
        blocks.copy(data, 0, dataOffset - from, dataOffset - from + got);
      } else {
        got = await readFully(volume.handle, data, dataOffset);
      }
    } catch (err) {
      throw ioError(err, `cannot read chunk ${id}`, id);
    } finally {
      if (slab !== undefined) this.direct?.readSlabs.release(slab);
      volume.readers--;
      if (volume.retired && volume.readers === 0) void closeVolumeFiles(volume);
    }
    verifyStoredChunk(id, `in ${volumeFileName(volume.number)}`, data.subarray(0, got), entry);
    return data;
  }

  has(id: string): boolean {
    validateChunkId(id);
    return this.chunks.has(id);
  }

  async delete(id: string): Promise<boolean> {
    validateChunkId(id);
    this.checkWritable();
    return this.serialized(id, async () => {
      const entry = this.chunks.get(id);
      if (entry === undefined) return false;
      this.checkWritable();
      const head = encodeRecordHead(TYPE_DELETE, id, this.nextSeq++, 0, entry.checksum);
      try {
        await this.enqueue([head], head.byteLength, false);
      } catch (err) {
        throw ioError(err, `cannot delete chunk ${id}`, id);
      }
      this.forget(id, entry);
      this.scheduleCompaction();
      return true;
    });
  }

  list(): StoredChunk[] {
    return listChunks(this.chunks);
  }

  usedBytes(): number {
    return this.used;
  }

  chunkCount(): number {
    return this.chunks.size;
  }

  // ---- beyond the interface -------------------------------------------------------------------

  stats(): VolumeChunkStoreStats {
    let diskBytes = 0;
    let liveBytes = 0;
    for (const v of this.volumes.values()) {
      diskBytes += Math.max(v.fileBytes, v.runwayEnd);
      liveBytes += v.liveBytes;
    }
    return {
      chunks: this.chunks.size,
      usedBytes: this.used,
      volumes: this.volumes.size,
      currentVolume: this.current.number,
      diskBytes,
      garbageBytes: diskBytes - liveBytes - this.volumes.size * VOLUME_FILE_HEADER_BYTES,
      syncs: this.counters.syncs,
      batches: this.counters.batches,
      puts: this.counters.puts,
      directIo: this.direct !== undefined,
      directBatches: this.counters.directBatches,
      compaction: {
        running: this.compactionRunning,
        volumesCompacted: this.counters.volumesCompacted,
        copiedRecords: this.counters.copiedRecords,
        reclaimedBytes: this.counters.reclaimedBytes,
        corruptDropped: this.counters.corruptDropped,
        lastError: this.lastCompactionError,
      },
      recovery: {
        droppedTailBytes: this.droppedTailBytes,
        damagedVolumes: this.damaged.map((d) => ({ ...d })),
      },
    };
  }

  /** Where chunk `id` lies on disk. Throws STORE_NOT_FOUND if it is not stored. */
  locate(id: string): ChunkLocation {
    const entry = this.chunks.get(validateChunkId(id));
    if (entry === undefined) throw notFoundError(id);
    return {
      volume: entry.volume.number,
      path: entry.volume.path,
      recordOffset: entry.offset,
      dataOffset: entry.offset + RECORD_HEADER_BYTES + entry.idLength,
      sizeBytes: entry.sizeBytes,
    };
  }

  /**
   * For tests: flips the bits of one byte of chunk `id` in its volume file (at `offset` within
   * the chunk, default the middle), so the next get throws STORE_CORRUPT. Throws STORE_NOT_FOUND
   * if `id` is not stored, RangeError if the chunk is empty or offset is out of range.
   */
  async damage(id: string, offset?: number): Promise<void> {
    const where = this.locate(id);
    const at = offset ?? Math.floor(where.sizeBytes / 2);
    if (!Number.isInteger(at) || at < 0 || at >= where.sizeBytes) {
      throw new RangeError(`offset ${at} is outside chunk ${id} of ${where.sizeBytes} bytes`);
    }
    const handle = await open(where.path, 'r+');
    try {
      const byte = Buffer.alloc(1);
      await readFully(handle, byte, where.dataOffset + at);
      byte[0] = (byte[0] ?? 0) ^ 0xff;
      await writevFully(handle, [byte], where.dataOffset + at);
    } finally {
      await handle.close();
    }
  }

  /**
   * Compacts now, one volume at a time, every volume other than the newest whose garbage share
   * exceeds options.minGarbageRatio (default 0.5), after any compaction already running. Puts,
   * gets and deletes go on meanwhile. Rejects with STORE_NO_SPACE or STORE_INTERNAL when copying
   * fails (nothing is lost: the volume being compacted stays), STORE_UNAVAILABLE after close().
   */
  compact(options: CompactOptions = {}): Promise<CompactionResult> {
    try {
      this.checkWritable();
    } catch (err) {
      return rejected(err);
    }
    const minGarbageRatio = options.minGarbageRatio ?? GARBAGE_RATIO;
    const run = this.compactionChain.then(() =>
      this.compactAll(minGarbageRatio, options.stopAfterRecords, true),
    );
    this.compactionChain = run.catch(() => {});
    return run;
  }

  /**
   * Finishes queued writes and any running compaction step, makes the newest volume durable and
   * closes the files. Later puts, deletes, gets and compactions reject with STORE_UNAVAILABLE;
   * has, list and usedBytes keep answering. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing === undefined) {
      this.closed = true;
      this.closing = (async () => {
        await this.compactionChain;
        await this.idle();
        if (this.current.syncedEnd < this.current.end && this.failed === undefined) {
          await this.current.handle.datasync().catch(() => {});
        }
        await Promise.all(
          [...this.volumes.values()].map(async (v) => {
            v.retired = true;
            if (v.readers === 0) await closeVolumeFiles(v);
          }),
        );
      })();
    }
    return this.closing;
  }

  // ---- bookkeeping ----------------------------------------------------------------------------

  /** Drops a live entry whose record stays on disk as a dead put. */
  private forget(id: string, entry: Entry): void {
    this.chunks.delete(id);
    this.used -= entry.sizeBytes;
    entry.volume.liveBytes -= recordBytesOf(entry);
    entry.volume.deadPutBytes += recordBytesOf(entry);
    entry.volume.liveCount--;
    increment(this.deadPuts, id);
  }

  // ---- the writer -----------------------------------------------------------------------------
  //
  // Two loops. The write loop appends everything queued, as one batch at explicit positions, to
  // the newest volume as soon as its previous write is done. A batch written through the page
  // cache is durable when written (O_DSYNC) and resolves then, unless records written before it
  // still wait for a sync. The sync loop fdatasyncs the volume whenever records written since its
  // last sync wait for one (direct batches, and what was written behind them), then resolves
  // them. Records queued while a sync runs are written meanwhile and made durable together by the
  // next sync, so the disk is not left idle while a large batch is copied to the kernel.

  private enqueue(
    parts: Uint8Array[],
    bytes: number,
    sync: boolean,
  ): Promise<{ volume: Volume; offset: number }> {
    return new Promise((resolve, reject) => {
      this.queue.push({ parts, bytes, sync, resolve, reject });
      if (!this.writing) {
        this.writing = true;
        // On the next turn of the event loop, not in a microtask: the puts of one message from
        // rank 0 reach here each after several promise hops, and a microtask would start the
        // write after the first of them. Measured under 16 small uploads in flight: a data rank
        // received 4,670 puts in 1,319 messages and wrote them in 1,722 batches; now ~1,100.
        setImmediate(() => void this.writeLoop());
      }
    });
  }

  private isIdle(): boolean {
    return !this.writing && !this.syncing && this.queue.length === 0 && this.unsynced.length === 0;
  }

  /** Resolves when everything queued is written and every sync asked for is done. */
  private idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdle(): void {
    if (!this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  private async writeLoop(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        if (this.failed) {
          for (const item of this.queue.splice(0)) item.reject(this.failed);
          break;
        }
        if (this.current.end - this.current.syncedEnd >= MAX_UNSYNCED_BYTES && this.syncing) {
          // Far enough ahead of the syncs (see MAX_UNSYNCED_BYTES): let them catch up.
          await this.syncsDone();
          continue;
        }
        const first = this.queue[0] as WriteItem;
        let volume = this.current;
        const full = volume.end + first.bytes > this.volumeBytes;
        if (volume.end > VOLUME_FILE_HEADER_BYTES && (full || this.worthSealing(volume))) {
          try {
            volume = await this.roll();
          } catch (err) {
            if (full || this.failed) {
              // Could not start the next volume (a full disk?): fail what waits, try again later.
              for (const item of this.queue.splice(0)) item.reject(err);
              continue;
            }
            // Sealing early only gives space back; on a full disk it must not stop the deletions
            // that would free some. This volume goes on, and is sealed when full.
            this.noEarlySeal = volume;
          }
        }
        let count = 0;
        let bytes = 0;
        for (const item of this.queue) {
          if (
            count > 0 &&
            (bytes + item.bytes > MAX_BATCH_BYTES ||
              volume.end + bytes + item.bytes > this.volumeBytes)
          ) {
            break;
          }
          count++;
          bytes += item.bytes;
        }
        const batch = this.queue.splice(0, count);
        try {
          await this.writeBatch(volume, batch);
        } catch (err) {
          // writeBatch settles its items on I/O errors; this is for the unexpected.
          for (const item of batch) item.reject(err);
        }
      }
    } finally {
      this.writing = false;
      this.wakeIdle();
    }
  }

  /** Writes `batch` at the end of `volume`; hands the items that need a sync to the sync loop. */
  private async writeBatch(volume: Volume, batch: WriteItem[]): Promise<void> {
    const start = volume.end;
    const bytes = batch.reduce((sum, item) => sum + item.bytes, 0);
    const direct =
      this.direct !== undefined && volume.direct !== undefined && bytes >= this.directIoFromBytes
        ? { handle: volume.direct, slab: this.direct.writeSlab }
        : undefined;
    let written: { offsets: number[]; end: number };
    const small = direct === undefined && bytes < RUNWAY_BATCH_BYTES;
    const smallAgain = small && this.lastBatchSmall;
    this.lastBatchSmall = small;
    try {
      if (smallAgain && start + bytes > volume.runwayEnd && batch.some((item) => item.sync)) {
        // Zeros ahead first, so that this write and the next small ones overwrite written blocks.
        const runwayEnd = Math.min(this.volumeBytes, start + bytes + RUNWAY_BYTES);
        const from = Math.max(start, volume.runwayEnd);
        if (runwayEnd > from && (await writeRunway(volume.handle, from, runwayEnd)))
          volume.runwayEnd = runwayEnd;
      }
      written = direct
        ? await this.writeDirect(volume, direct.handle, direct.slab, batch, bytes)
        : await this.writeBuffered(volume, batch);
    } catch (err) {
      // Cut off what was written, so the next batch follows the last good record; if even that
      // fails, later records would sit behind garbage: stop accepting writes.
      try {
        await volume.handle.truncate(start);
        volume.runwayEnd = start;
      } catch (truncateErr) {
        this.failed = ioError(
          truncateErr,
          `${volumeFileName(volume.number)} cannot cut off a failed write; restart the rank`,
        );
      }
      // A full disk may clear. Any other error (EIO: the device, or the flush inside an O_DSYNC
      // write) is treated as a failed fdatasync is in the sync loop: nothing is trusted until a
      // restart rescans the volumes.
      const failure = ioError(
        err,
        `${volumeFileName(volume.number)} could not be written durably; restart the rank to rescan the volumes`,
      );
      if (failure.code !== 'STORE_NO_SPACE') this.failed ??= failure;
      for (const item of batch) item.reject(err);
      return;
    }
    volume.end = written.end;
    volume.fileBytes = written.end;
    this.counters.batches++;
    if (direct === undefined && !this.syncing && this.unsynced.length === 0) {
      // Written through the O_DSYNC handle behind nothing that still waits for a sync: durable.
      this.counters.syncs++;
      volume.syncedEnd = written.end;
      batch.forEach((item, i) => item.resolve({ volume, offset: written.offsets[i] as number }));
      return;
    }
    batch.forEach((item, i) => {
      const where = { volume, offset: written.offsets[i] as number };
      // Tombstones need not wait for an fdatasync.
      if (item.sync) this.unsynced.push({ item, where });
      else item.resolve(where);
    });
    if (this.unsynced.length > 0 && !this.syncing) {
      this.syncing = true;
      void this.syncLoop();
    }
  }

  /**
   * Appends `batch` with O_DIRECT: a pad record through the page cache up to the next aligned
   * offset, then the records and a closing pad record, copied into the aligned slab and written
   * in one go. Returns where each record starts and the new end of the volume.
   */
  private async writeDirect(
    volume: Volume,
    direct: FileHandle,
    slab: AlignedSlab,
    batch: WriteItem[],
    bytes: number,
  ): Promise<{ offsets: number[]; end: number }> {
    const lead = padBytesAfter(volume.end);
    const bodyStart = volume.end + lead;
    const tail = padBytesAfter(bytes);
    // A batch larger than what is worth keeping gets a slab of its own, dropped afterwards.
    const body = (bytes + tail > RETAINED_SLAB_BYTES ? new AlignedSlab() : slab).view(bytes + tail);
    const offsets: number[] = [];
    let at = 0;
    for (const item of batch) {
      offsets.push(bodyStart + at);
      for (const part of item.parts) {
        body.set(part, at);
        at += part.byteLength;
      }
    }
    if (tail > 0) writePad(body, at, tail);
    if (lead > 0) {
      const pad = Buffer.allocUnsafe(lead);
      writePad(pad, 0, lead);
      await writevFully(volume.handle, [pad], volume.end);
    }
    await writevFully(direct, [body], bodyStart);
    volume.padBytes += lead + tail;
    this.counters.directBatches++;
    return { offsets, end: bodyStart + body.byteLength };
  }

  /** Appends `batch` through the page cache (pwritev, small parts gathered into one buffer). */
  private async writeBuffered(
    volume: Volume,
    batch: WriteItem[],
  ): Promise<{ offsets: number[]; end: number }> {
    const start = volume.end;
    const offsets: number[] = [];
    const buffers: Uint8Array[] = [];
    let small: Uint8Array[] = [];
    let smallBytes = 0;
    const flushSmall = (): void => {
      if (small.length === 1) buffers.push(small[0] as Uint8Array);
      else if (small.length > 1) buffers.push(Buffer.concat(small, smallBytes));
      small = [];
      smallBytes = 0;
    };
    let position = start;
    for (const item of batch) {
      offsets.push(position);
      position += item.bytes;
      for (const part of item.parts) {
        if (part.byteLength === 0) continue;
        if (part.byteLength >= GATHER_BELOW_BYTES) {
          flushSmall();
          buffers.push(part);
        } else {
          small.push(part);
          smallBytes += part.byteLength;
        }
      }
    }
    flushSmall();
    await writevFully(volume.handle, buffers, start);
    return { offsets, end: position };
  }

  private async syncLoop(): Promise<void> {
    try {
      while (this.unsynced.length > 0) {
        // Everything here was written before this sync starts, so the sync covers it.
        const group = this.unsynced.splice(0);
        if (this.failed) {
          for (const { item } of group) item.reject(this.failed);
          continue;
        }
        // One volume, normally: a roll waits for the syncs of the volume it seals.
        const volumes = new Set(group.map((g) => g.where.volume));
        try {
          for (const volume of volumes) {
            const end = volume.end;
            await volume.handle.datasync();
            volume.syncedEnd = Math.max(volume.syncedEnd, end);
            this.counters.syncs++;
          }
        } catch (err) {
          // After a failed fsync the kernel may have dropped the dirty pages and report success
          // next time (the PostgreSQL "fsyncgate" lesson): nothing written since can be trusted.
          this.failed = ioError(
            err,
            "a volume could not be fdatasync'd; restart the rank to rescan the volumes",
          );
          for (const { item } of group) item.reject(this.failed);
          continue;
        }
        for (const { item, where } of group) item.resolve(where);
      }
    } finally {
      this.syncing = false;
      const waiters = this.syncWaiters;
      this.syncWaiters = [];
      for (const wake of waiters) wake();
      this.wakeIdle();
    }
  }

  /** Resolves when no sync runs or waits (the sync loop is kicked whenever one is needed). */
  private syncsDone(): Promise<void> {
    if (!this.syncing) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  /** Seals the newest volume (durably) and starts the next one. */
  private async roll(): Promise<Volume> {
    await this.syncsDone();
    if (this.failed) throw this.failed;
    const old = this.current;
    if (old.syncedEnd < old.end) {
      // Tombstones written since the last sync.
      try {
        await old.handle.datasync();
      } catch (err) {
        this.failed = ioError(
          err,
          `${volumeFileName(old.number)} could not be fdatasync'd; restart the rank to rescan it`,
        );
        throw this.failed;
      }
      old.syncedEnd = old.end;
      this.counters.syncs++;
    }
    this.current = await this.createVolume(this.lastVolumeNumber + 1);
    this.scheduleCompaction();
    return this.current;
  }

  // ---- compaction -----------------------------------------------------------------------------

  /**
   * The share of a volume's records that is garbage. Pads are left out: they come with every
   * direct write (a few KiB against the 512 KiB or more written), so counting them could make a
   * volume of small direct writes compact forever, its copies padded again.
   */
  private garbageRatio(v: Volume): number {
    const recordBytes = v.fileBytes - VOLUME_FILE_HEADER_BYTES - v.padBytes;
    if (recordBytes <= 0) return 1;
    return (recordBytes - v.liveBytes) / recordBytes;
  }

  /** Whether the newest volume should be sealed early (see the file comment). */
  private worthSealing(v: Volume): boolean {
    const recordBytes = v.end - VOLUME_FILE_HEADER_BYTES - v.padBytes;
    return (
      v !== this.noEarlySeal &&
      v.deadPutBytes >= this.volumeBytes * EARLY_SEAL_SHARE &&
      v.deadPutBytes > EARLY_SEAL_RATIO * recordBytes
    );
  }

  /** The sealed volume with the largest garbage share above `minRatio`, if any. */
  private pickVolume(minRatio: number, skip: ReadonlySet<Volume>): Volume | undefined {
    let pick: Volume | undefined;
    let pickRatio = -1;
    for (const v of this.volumes.values()) {
      if (v === this.current || v.retired || v.noCompact || skip.has(v)) continue;
      const ratio = this.garbageRatio(v);
      if (ratio > minRatio && ratio > pickRatio) {
        pick = v;
        pickRatio = ratio;
      }
    }
    return pick;
  }

  /** Starts a background compaction if one is worth it and none is running or queued. */
  private scheduleCompaction(): void {
    if (!this.autoCompact || this.closed || this.backgroundScheduled || this.compactionRunning) {
      return;
    }
    if (this.pickVolume(GARBAGE_RATIO, new Set()) === undefined) return;
    this.backgroundScheduled = true;
    const run = this.compactionChain.then(async () => {
      this.backgroundScheduled = false;
      if (this.closed) return;
      await this.compactAll(GARBAGE_RATIO, undefined, false);
    });
    this.compactionChain = run.catch((err: unknown) => {
      this.lastCompactionError = err instanceof Error ? err.message : String(err);
    });
  }

  private async compactAll(
    minRatio: number,
    stopAfterRecords: number | undefined,
    explicit: boolean,
  ): Promise<CompactionResult> {
    const result: CompactionResult = {
      volumes: [],
      copiedRecords: 0,
      reclaimedBytes: 0,
      stopped: false,
    };
    this.compactionRunning = true;
    const tried = new Set<Volume>();
    try {
      for (;;) {
        if (this.closed && !explicit) break;
        const volume = this.pickVolume(minRatio, tried);
        if (volume === undefined) break;
        tried.add(volume);
        const budget =
          stopAfterRecords === undefined ? undefined : stopAfterRecords - result.copiedRecords;
        let outcome: { copied: number; copiedBytes: number; removed: boolean; stopped: boolean };
        try {
          outcome = await this.compactVolume(volume, budget);
        } catch (err) {
          volume.noCompact = !explicit; // the background task does not retry it in a loop
          this.lastCompactionError = err instanceof Error ? err.message : String(err);
          throw ioError(err, `cannot compact ${volumeFileName(volume.number)}`);
        }
        result.copiedRecords += outcome.copied;
        if (outcome.removed) {
          const reclaimed = volume.fileBytes - outcome.copiedBytes;
          result.volumes.push(volume.number);
          result.reclaimedBytes += reclaimed;
          this.counters.volumesCompacted++;
          this.counters.reclaimedBytes += reclaimed;
        }
        if (outcome.stopped) {
          result.stopped = true;
          break;
        }
        if (!outcome.removed && this.closed) break;
      }
    } finally {
      this.compactionRunning = false;
    }
    return result;
  }

  /**
   * Rewrites the live records of `volume` into the newest volume and removes its file. Copies at
   * most `budget` records when given (then stops, the volume kept). Returns what it copied and
   * whether the volume is gone.
   */
  private async compactVolume(
    volume: Volume,
    budget: number | undefined,
  ): Promise<{ copied: number; copiedBytes: number; removed: boolean; stopped: boolean }> {
    /** Put records of this volume already counted in deadPuts, per id. */
    const deadSeen = new Map<string, number>();
    let copied = 0;
    let copiedBytes = 0;
    let group: ScannedRecord[] = [];
    let groupBytes = 0;
    let stopped = false;

    const isLive = (r: ScannedRecord): boolean => {
      const e = this.chunks.get(r.id);
      return e !== undefined && e.volume === volume && e.offset === r.offset;
    };

    const flush = async (): Promise<void> => {
      const records = group;
      group = [];
      groupBytes = 0;
      if (records.length === 0) return;
      const ids = [...new Set(records.map((r) => r.id))];
      const releases = await Promise.all(ids.map((id) => this.lock(id)));
      try {
        // Puts first: copy the live ones, count the others as seen.
        const puts = records.filter((r) => r.type === TYPE_PUT);
        const toCopy: ScannedRecord[] = [];
        for (const r of puts) {
          if (isLive(r) && (budget === undefined || copied + toCopy.length < budget)) {
            toCopy.push(r);
          } else if (!isLive(r)) {
            increment(deadSeen, r.id);
          } else {
            stopped = true;
          }
        }
        copied += await this.copyRecords(volume, toCopy, deadSeen, (bytes) => {
          copiedBytes += bytes;
        });
        // Then tombstones: keep one only while a dead put of its id may lie in another volume
        // and the id is not stored again (a newer put outranks every older record anyway).
        const tombstones = records.filter(
          (r) =>
            r.type === TYPE_DELETE &&
            !this.chunks.has(r.id) &&
            (this.deadPuts.get(r.id) ?? 0) - (deadSeen.get(r.id) ?? 0) > 0,
        );
        const room = budget === undefined ? tombstones.length : Math.max(0, budget - copied);
        if (room < tombstones.length) stopped = true;
        copied += await this.copyRecords(volume, tombstones.slice(0, room), deadSeen, (bytes) => {
          copiedBytes += bytes;
        });
      } finally {
        for (const release of releases) release();
      }
    };

    const { problem } = await scanVolume(volume.handle, volume.end, Infinity, async (r) => {
      if (stopped || this.closed) return;
      group.push(r);
      groupBytes += r.type === TYPE_PUT && isLive(r) ? r.totalBytes : RECORD_HEADER_BYTES;
      if (groupBytes >= COMPACT_GROUP_BYTES) await flush();
    });
    if (!stopped && !this.closed) await flush();

    if (problem !== undefined) {
      // The file changed under us since open: leave it (its live chunks stay readable, or
      // STORE_CORRUPT) rather than delete records we could not see.
      volume.noCompact = true;
      this.damaged.push({
        volume: volume.number,
        file: volumeFileName(volume.number),
        offset: problem.offset,
        skippedBytes: volume.end - problem.offset,
        reason: `found while compacting: ${problem.reason}`,
      });
      return { copied, copiedBytes, removed: false, stopped: false };
    }
    if (stopped || this.closed || volume.liveCount > 0) {
      return { copied, copiedBytes, removed: false, stopped };
    }

    // Nothing live is left: the copies are durable, remove the file.
    this.volumes.delete(volume.number);
    volume.retired = true;
    try {
      await unlink(volume.path);
      await fsyncDirectory(this.dir);
    } finally {
      if (volume.readers === 0) await closeVolumeFiles(volume);
    }
    // Its put records (all dead by now) are gone from the disk.
    for (const [id, n] of deadSeen) increment(this.deadPuts, id, -n);
    return { copied, copiedBytes, removed: true, stopped: false };
  }

  /**
   * Copies `records` of `volume` verbatim into the newest volume (durably), then points the map
   * at the copies of live puts. Called with the ids locked. A put whose data no longer matches
   * its checksum is not copied but dropped from the store. Returns the records copied.
   */
  private async copyRecords(
    volume: Volume,
    records: ScannedRecord[],
    deadSeen: Map<string, number>,
    onCopiedBytes: (bytes: number) => void,
  ): Promise<number> {
    if (records.length === 0) return 0;
    // Read runs of adjacent records in one go.
    const bodies: Buffer[] = [];
    for (let i = 0; i < records.length;) {
      let j = i + 1;
      let runBytes = (records[i] as ScannedRecord).totalBytes;
      while (
        j < records.length &&
        runBytes < COMPACT_GROUP_BYTES &&
        (records[j - 1] as ScannedRecord).offset + (records[j - 1] as ScannedRecord).totalBytes ===
          (records[j] as ScannedRecord).offset
      ) {
        runBytes += (records[j] as ScannedRecord).totalBytes;
        j++;
      }
      const start = (records[i] as ScannedRecord).offset;
      const run = Buffer.allocUnsafe(runBytes);
      if ((await readFully(volume.handle, run, start)) !== runBytes) {
        throw new Error(`${volumeFileName(volume.number)} is shorter than its records`);
      }
      for (let k = i; k < j; k++) {
        const r = records[k] as ScannedRecord;
        bodies.push(run.subarray(r.offset - start, r.offset - start + r.totalBytes));
      }
      i = j;
    }

    const writes: Promise<{ volume: Volume; offset: number }>[] = [];
    const written: { record: ScannedRecord; index: number }[] = [];
    records.forEach((r, index) => {
      const body = bodies[index] as Buffer;
      if (r.type === TYPE_PUT) {
        const data = body.subarray(RECORD_HEADER_BYTES + r.id.length);
        if (chunkChecksum(data) !== r.checksum) {
          // Damaged on disk: copying it would only move the damage (and could make a later
          // open take it for a torn tail). Drop it; the coordinator's repair brings it back.
          const entry = this.chunks.get(r.id);
          if (entry !== undefined) this.forget(r.id, entry);
          increment(deadSeen, r.id);
          this.counters.corruptDropped++;
          return;
        }
      }
      written.push({ record: r, index });
      writes.push(this.enqueue([body], body.byteLength, true));
    });
    const settled = await Promise.allSettled(writes);
    let failure: Error | undefined;
    let count = 0;
    settled.forEach((s, i) => {
      const { record } = written[i] as { record: ScannedRecord };
      if (s.status === 'rejected') {
        failure ??= s.reason instanceof Error ? s.reason : new Error(String(s.reason));
        return;
      }
      count++;
      onCopiedBytes(record.totalBytes);
      this.counters.copiedRecords++;
      if (record.type !== TYPE_PUT) return;
      const entry = this.chunks.get(record.id);
      if (entry === undefined) return;
      // The old record becomes a dead put until its volume is removed.
      entry.volume.liveBytes -= record.totalBytes;
      entry.volume.liveCount--;
      entry.volume = s.value.volume;
      entry.offset = s.value.offset;
      s.value.volume.liveBytes += record.totalBytes;
      s.value.volume.liveCount++;
      increment(this.deadPuts, record.id);
      increment(deadSeen, record.id);
    });
    if (failure !== undefined) throw failure;
    return count;
  }
}
