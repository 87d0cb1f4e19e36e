/**
 * Rank 0's side of a records upload: checks each chunk's IDs as it arrives (well-formed, none seen
 * before in this upload), keeps each chunk's summary, and at commit builds the dataset's entry in
 * the master index. A refusal here fails the chunk; the client then aborts the upload, so nothing
 * of a refused dataset is ever stored.
 */
import {
  buildRecordsIndex,
  describeId,
  IdRegistry,
  isRecordId,
  summarizeChunk,
  type ChunkSummary,
  type RecordId,
  type RecordsIndex,
} from '../records/record-ids.js';
import { StoreError } from '../store/errors.js';
import { MAX_RECORD_BYTES } from '../store/journal.js';

/** Room left in a journal record for everything but the ID hashes. */
const INDEX_OVERHEAD_BYTES = 1024 * 1024;

export class RecordsUpload {
  private readonly registry = new IdRegistry();
  private readonly summaries = new Map<number, ChunkSummary>();
  /** Records registered so far: the next chunk must start here (chunks come in order). */
  private nextRecord = 0;

  constructor(
    readonly idField: string,
    private readonly name: string,
  ) {}

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
    return this.summaries.has(index);
  }

  /**
   * Registers chunk `index` with its records' IDs. Throws STORE_BAD_REQUEST for a malformed
   * list, a chunk out of order, or an ID an earlier record already has.
   */
  accept(index: number, records: unknown): void {
    const { first, ids } = (records ?? {}) as { first?: unknown; ids?: unknown };
    if (!Number.isSafeInteger(first) || !Array.isArray(ids) || ids.length === 0)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `chunk ${index} of records dataset "${this.name}" must carry records.first and a non-empty records.ids`,
      );
    if (first !== this.nextRecord || index !== this.summaries.size)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `chunk ${index} of "${this.name}" starts at record ${String(first)}, expected chunk ${this.summaries.size} at record ${this.nextRecord}: records chunks are sent in order`,
      );
    for (const id of ids)
      if (!isRecordId(id))
        throw new StoreError(
          'STORE_BAD_REQUEST',
          `chunk ${index} of "${this.name}" has an ID that is neither a string nor a number`,
        );
    const list = ids as RecordId[];
    const duplicate = this.registry.add(first, list);
    if (duplicate) {
      const { id, record, earlier } = duplicate;
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `duplicate ID ${describeId(id)}: record ${record + 1} has the same "${this.idField}" as record ${earlier + 1}`,
        { recordId: id, record: record + 1, earlierRecord: earlier + 1 },
      );
    }
    this.summaries.set(index, summarizeChunk(first, list));
    this.nextRecord = first + list.length;
  }

  /** The dataset's master-index entry, once the client says it sent `chunks` and `count`. */
  finish(records: unknown, storedChunks: number): RecordsIndex {
    const { chunks, count } = (records ?? {}) as { chunks?: unknown; count?: unknown };
    if (chunks !== storedChunks || count !== this.nextRecord)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `cannot commit "${this.name}": the client sent ${String(chunks)} chunks of ${String(count)} records, the store has ${storedChunks} chunks of ${this.nextRecord}`,
      );
    const ordered = [...this.summaries.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s);
    const index = buildRecordsIndex(this.idField, ordered);
    if (index.lookup === 'hashed' && index.count * 4 > MAX_RECORD_BYTES - INDEX_OVERHEAD_BYTES)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `"${this.name}" has ${index.count} records with string or unsorted IDs; the master index holds at most ${Math.floor((MAX_RECORD_BYTES - INDEX_OVERHEAD_BYTES) / 4)} per dataset (sorted numeric IDs have no limit): split the dataset`,
      );
    return index;
  }
}
