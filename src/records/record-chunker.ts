/**
 * Cuts a stream of records into chunks at record boundaries: a record never spans two chunks, so
 * the data rank that holds a chunk can answer a query about any record in it on its own.
 *
 * A records chunk is NDJSON: each record's own bytes on one line. A record's raw newlines can only
 * be whitespace between its tokens (JSON strings cannot hold them), so they become spaces and
 * everything else — number spellings, key order, escapes — is kept as the user wrote it.
 */
import type { ScannedRecord } from './record-scanner.js';
import { DatasetError, syntaxErrorAt } from './record-scanner.js';
import { describeId, MAX_ID_LENGTH, type RecordId } from './record-ids.js';

export interface RecordsChunk {
  bytes: Buffer;
  /** Position of the chunk's first record in the dataset (0-based). */
  firstRecord: number;
  /** The ID of every record in the chunk, in order. */
  ids: RecordId[];
  /** Byte offset of every record in the source document (to point at a refused one). */
  offsets: number[];
}

const NEWLINE = 0x0a;
const RETURN = 0x0d;
const SPACE = 0x20;

export class RecordChunker {
  private buffer: Buffer;
  private used = 0;
  private ids: RecordId[] = [];
  private offsets: number[] = [];
  private firstRecord = 0;

  constructor(
    private readonly chunkSizeBytes: number,
    private readonly idField: string,
  ) {
    this.buffer = Buffer.allocUnsafe(chunkSizeBytes);
  }

  /** The longest record a chunk can hold (its line ends with a newline). */
  static maxRecordBytes(chunkSizeBytes: number): number {
    return chunkSizeBytes - 1;
  }

  /**
   * Adds a record; returns the chunk it filled up, if it did not fit in the current one.
   * Throws DatasetError for a record that is not valid JSON or lacks a usable ID.
   */
  add(record: ScannedRecord): RecordsChunk | undefined {
    // The scanner refuses such a record first, but a caller that skips it must not get a chunk
    // cut mid-record: Buffer.copy would silently truncate it and the chunk would run past its size.
    const max = RecordChunker.maxRecordBytes(this.chunkSizeBytes);
    if (record.bytes.length > max)
      throw new DatasetError(
        `record ${record.index + 1} (at byte ${record.offset}) is larger than ${max} bytes, the most one chunk holds`,
        record.offset,
        record.index,
      );
    const id = this.idOf(record);
    const lineBytes = record.bytes.length + 1;
    let full: RecordsChunk | undefined;
    if (this.used + lineBytes > this.chunkSizeBytes) full = this.cut();
    if (this.ids.length === 0) this.firstRecord = record.index;
    const start = this.used;
    record.bytes.copy(this.buffer, start);
    this.used += record.bytes.length;
    flattenNewlines(this.buffer, start, this.used);
    this.buffer[this.used++] = NEWLINE;
    this.ids.push(id);
    this.offsets.push(record.offset);
    return full;
  }

  /** The last, partly filled chunk (undefined when no record is waiting). */
  finish(): RecordsChunk | undefined {
    return this.ids.length > 0 ? this.cut() : undefined;
  }

  private cut(): RecordsChunk {
    const chunk: RecordsChunk = {
      bytes: this.buffer.subarray(0, this.used),
      firstRecord: this.firstRecord,
      ids: this.ids,
      offsets: this.offsets,
    };
    // The chunk keeps its buffer (it is in flight); the next chunk gets a new one.
    this.buffer = Buffer.allocUnsafe(this.chunkSizeBytes);
    this.used = 0;
    this.ids = [];
    this.offsets = [];
    return chunk;
  }

  private idOf(record: ScannedRecord): RecordId {
    let value: unknown;
    try {
      value = JSON.parse(record.bytes.toString('utf8'));
    } catch (err) {
      throw syntaxErrorAt(err, record);
    }
    const where = `record ${record.index + 1} (at byte ${record.offset})`;
    const id = (value as Record<string, unknown>)[this.idField];
    if (id === undefined || !Object.hasOwn(value as object, this.idField))
      throw new DatasetError(
        `${where} has no "${this.idField}" field`,
        record.offset,
        record.index,
      );
    if (typeof id === 'string') {
      // The store refuses a longer ID (a query could not carry it); say so here, at the record,
      // rather than have the upload fail part way without saying which record.
      if (id.length > MAX_ID_LENGTH)
        throw new DatasetError(
          `${where} has a "${this.idField}" of ${id.length} characters; an ID has at most ${MAX_ID_LENGTH}`,
          record.offset,
          record.index,
        );
      return id;
    }
    if (typeof id === 'number') {
      // JSON.parse reads a number beyond the double range (1e400) as ±Infinity, which is no ID
      // (the store would refuse it part way through the upload, without naming the record).
      if (!Number.isFinite(id))
        throw new DatasetError(
          `${where} has a numeric "${this.idField}" too large for a JSON number to hold (it reads as ${id}); store such IDs as strings`,
          record.offset,
          record.index,
        );
      if (Number.isInteger(id) && !Number.isSafeInteger(id))
        throw new DatasetError(
          `${where} has the ID ${describeId(id)}, an integer beyond 2^53 that JSON numbers cannot hold exactly; store such IDs as strings`,
          record.offset,
          record.index,
        );
      return id;
    }
    throw new DatasetError(
      `${where} has a "${this.idField}" that is ${id === null ? 'null' : Array.isArray(id) ? 'a list' : typeof id === 'object' ? 'an object' : `a ${typeof id}`}; an ID must be a string or a number`,
      record.offset,
      record.index,
    );
  }
}

function flattenNewlines(buf: Buffer, start: number, end: number): void {
  // A view, so indexOf stops at the record's end instead of searching the rest of the buffer.
  const record = buf.subarray(start, end);
  for (const byte of [NEWLINE, RETURN]) {
    for (let i = record.indexOf(byte); i !== -1; i = record.indexOf(byte, i + 1)) record[i] = SPACE;
  }
}
