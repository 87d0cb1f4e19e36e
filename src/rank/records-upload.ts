/**
 * Rank 0's side of a records upload: checks each chunk's IDs as it arrives (well-formed, none seen
 * before in this upload), keeps each chunk's summary, and at commit builds the dataset's entry in
 * the master index. A refusal here fails the chunk; the client then aborts the upload, so nothing
 * of a refused dataset is ever stored.
 */
import {
  buildRecordsIndex,
  describeId,
  hashIds,
  IdRegistry,
  isRecordId,
  summarizeChunk,
  type ChunkIds,
  type RecordId,
  type RecordsIndex,
} from '../records/record-ids.js';
import { StoreError } from '../store/errors.js';
import { MAX_RECORD_BYTES } from '../store/journal.js';

/** Room left in a journal record for everything but the ID hashes. */
const INDEX_OVERHEAD_BYTES = 1024 * 1024;

/** Records a dataset with string or unsorted IDs may have: 4 bytes each in one journal record. */
export const MAX_HASHED_RECORDS = Math.floor((MAX_RECORD_BYTES - INDEX_OVERHEAD_BYTES) / 4);

export class RecordsUpload {
  private readonly registry: IdRegistry;
  /**
   * Each chunk's entry; its ID hashes only once the IDs stopped increasing (a sorted dataset is
   * indexed by ranges and never needs them, so it costs rank 0 no memory per record).
   */
  private readonly chunks = new Map<number, { ids: ChunkIds; hashes?: Uint8Array }>();
  /** Records registered so far: the next chunk must start here (chunks come in order). */
  private nextRecord = 0;
  private receivedBytes = 0;

  /**
   * `maxBytes`: the size given at put-begin, which the chunks may not exceed together.
   * `maxHashedRecords`: the most records with string or unsorted IDs (tests make it small).
   */
  constructor(
    readonly idField: string,
    private readonly name: string,
    private readonly maxBytes: number,
    private readonly maxHashedRecords = MAX_HASHED_RECORDS,
  ) {
    this.registry = new IdRegistry(maxHashedRecords);
  }

  static check(records: unknown): { idField: string } {
    const idField = (records as { idField?: unknown } | null)?.idField;
    if (typeof idField !== 'string' || idField === '' || idField.length > 256)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        'put-begin: records.idField must be a field name of 1 to 256 characters',
      );
    return { idField };
  }

  /** Whether chunk `index` was already registered (a retried put-chunk). */
  has(index: number): boolean {
    return this.chunks.has(index);
  }

  /**
   * Registers chunk `index` (its bytes, one record a line) with its records' IDs. Throws
   * STORE_BAD_REQUEST for a malformed list, IDs that do not match the chunk's lines, a chunk out
   * of order or beyond the size given at put-begin, an ID an earlier record already has, or a
   * dataset past the limit of the hashed index.
   */
  accept(index: number, records: unknown, bytes: Uint8Array): void {
    const { first, ids } = (records ?? {}) as { first?: unknown; ids?: unknown };
    if (!Number.isSafeInteger(first) || !Array.isArray(ids) || ids.length === 0)
      throw this.bad(
        `chunk ${index} of records dataset "${this.name}" must carry records.first and a non-empty records.ids`,
      );
    if (first !== this.nextRecord || index !== this.chunks.size)
      throw this.bad(
        `chunk ${index} of "${this.name}" starts at record ${String(first)}, expected chunk ${this.chunks.size} at record ${this.nextRecord}: records chunks are sent in order`,
      );
    for (const id of ids)
      if (!isRecordId(id))
        throw this.bad(
          `chunk ${index} of "${this.name}" has an ID that is neither a string nor a number`,
        );
    const lines = countLines(bytes);
    if (lines !== ids.length || bytes[bytes.length - 1] !== NEWLINE)
      throw this.bad(
        `chunk ${index} of "${this.name}" holds ${lines} whole lines but carries ${ids.length} IDs: a records chunk is one record a line, each with its ID`,
      );
    this.receivedBytes += bytes.length;
    if (this.receivedBytes > this.maxBytes)
      throw this.bad(`"${this.name}" is larger than the ${this.maxBytes} bytes given at put-begin`);
    const list = ids as RecordId[];
    const wasIncreasing = this.registry.increasing;
    const increasing = this.registry.keepsIncreasing(list);
    if (!increasing && first + list.length > this.maxHashedRecords)
      throw this.bad(
        `"${this.name}" has more than ${this.maxHashedRecords} records with string or unsorted IDs, the most the master index holds per dataset (sorted numeric IDs have no limit): split the dataset`,
      );
    const duplicate = this.registry.add(first, list);
    if (duplicate) {
      const { id, record, earlier } = duplicate;
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `duplicate ID ${describeId(id)}: record ${record + 1} has the same "${this.idField}" as record ${earlier + 1}`,
        { recordId: id, record: record + 1, earlierRecord: earlier + 1 },
      );
    }
    if (wasIncreasing && !increasing) {
      // The order just broke: the chunks so far need their hashes after all.
      for (const entry of this.chunks.values())
        entry.hashes = hashIds(this.registry.increasingIds(entry.ids.first, entry.ids.count));
    }
    this.chunks.set(
      index,
      increasing
        ? {
            ids: {
              first,
              count: list.length,
              min: list[0] as number,
              max: list[list.length - 1] as number,
            },
          }
        : summarizeChunk(first, list),
    );
    this.nextRecord = first + list.length;
  }

  /** The dataset's master-index entry, once the client says it sent `chunks` and `count`. */
  finish(records: unknown, storedChunks: number): RecordsIndex {
    const { chunks, count } = (records ?? {}) as { chunks?: unknown; count?: unknown };
    if (chunks !== storedChunks || count !== this.nextRecord)
      throw this.bad(
        `cannot commit "${this.name}": the client sent ${String(chunks)} chunks of ${String(count)} records, the store has ${storedChunks} chunks of ${this.nextRecord}`,
      );
    const ordered = [...this.chunks.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([, c]) => ({ ids: c.ids, hashes: c.hashes ?? new Uint8Array(0) }));
    return buildRecordsIndex(this.idField, ordered);
  }

  private bad(message: string): StoreError {
    return new StoreError('STORE_BAD_REQUEST', message);
  }
}

const NEWLINE = 0x0a;

function countLines(bytes: Uint8Array): number {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let n = 0;
  for (let i = buf.indexOf(NEWLINE); i !== -1; i = buf.indexOf(NEWLINE, i + 1)) n++;
  return n;
}
