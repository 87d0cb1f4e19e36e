/**
 * A data rank's local query: finds one record by ID in a records chunk it holds (NDJSON, one
 * record a line). The first query of a chunk reads it (checksum verified by the store), parses
 * each line once and keeps a map of ID → line; later queries of that chunk are a map lookup and a
 * slice. Indexed chunks are kept by least-recent use within a byte budget.
 */
import type { RecordId } from './record-ids.js';

const NEWLINE = 0x0a;

/** One chunk's records by ID: line start offsets, numbers and strings apart (42 ≠ "42"). */
export class ChunkRecords {
  private constructor(
    readonly bytes: Buffer,
    private readonly numbers: Map<number, number>,
    private readonly strings: Map<string, number>,
  ) {}

  static index(bytes: Uint8Array, idField: string): ChunkRecords {
    const steps = ChunkRecords.steps(bytes, idField, Infinity);
    for (let step = steps.next(); ; step = steps.next()) if (step.done) return step.value;
  }

  /**
   * The same, handing control back to the event loop every `linesPerSlice` lines: a 256 MiB
   * chunk of small records takes seconds to parse, and a data rank that stops answering that
   * long misses its heartbeats and is declared suspect.
   */
  static async build(
    bytes: Uint8Array,
    idField: string,
    linesPerSlice = 4096,
  ): Promise<ChunkRecords> {
    const steps = ChunkRecords.steps(bytes, idField, linesPerSlice);
    for (let step = steps.next(); ; step = steps.next()) {
      if (step.done) return step.value;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** Parses the lines, yielding after every `linesPerSlice` of them. */
  private static *steps(
    bytes: Uint8Array,
    idField: string,
    linesPerSlice: number,
  ): Generator<void, ChunkRecords> {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const numbers = new Map<number, number>();
    const strings = new Map<string, number>();
    let lines = 0;
    for (let start = 0; start < buf.length;) {
      let end = buf.indexOf(NEWLINE, start);
      if (end === -1) end = buf.length;
      if (end > start) {
        // Records were validated at upload; a line that no longer parses is skipped, not fatal.
        let id: unknown;
        try {
          id = (JSON.parse(buf.toString('utf8', start, end)) as Record<string, unknown>)[idField];
        } catch {
          id = undefined;
        }
        if (typeof id === 'number') numbers.set(id, start);
        else if (typeof id === 'string') strings.set(id, start);
      }
      start = end + 1;
      if (++lines % linesPerSlice === 0) yield;
    }
    return new ChunkRecords(buf, numbers, strings);
  }

  /** The record's bytes (without its newline), or undefined. */
  find(id: RecordId): Uint8Array | undefined {
    const start = typeof id === 'number' ? this.numbers.get(id) : this.strings.get(id);
    if (start === undefined) return undefined;
    let end = this.bytes.indexOf(NEWLINE, start);
    if (end === -1) end = this.bytes.length;
    return this.bytes.subarray(start, end);
  }

  /** Rough memory held: the bytes plus ~64 bytes a map entry. */
  get costBytes(): number {
    return this.bytes.byteLength + 64 * (this.numbers.size + this.strings.size);
  }
}

export class RecordLookupCache {
  /** Chunk id → its index (or the promise of it, so concurrent first queries build it once). */
  private readonly entries = new Map<
    string,
    { idField: string; records: Promise<ChunkRecords>; cost: number }
  >();
  private totalCost = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly load: (chunkId: string) => Promise<Uint8Array>,
  ) {}

  async find(chunkId: string, idField: string, id: RecordId): Promise<Uint8Array | undefined> {
    let entry = this.entries.get(chunkId);
    if (entry && entry.idField !== idField) {
      this.forget(chunkId);
      entry = undefined;
    }
    if (entry) {
      // Least recently used is first in the map: move this one to the end.
      this.entries.delete(chunkId);
      this.entries.set(chunkId, entry);
    } else {
      const created = {
        idField,
        records: this.load(chunkId).then((bytes) => ChunkRecords.build(bytes, idField)),
        cost: 0,
      };
      entry = created;
      this.entries.set(chunkId, created);
      created.records.then(
        (records) => {
          if (this.entries.get(chunkId) !== created) return;
          created.cost = records.costBytes;
          this.totalCost += created.cost;
          this.evict();
        },
        () => {
          // A failed load (missing or corrupt copy) is not cached: the next query tries again.
          if (this.entries.get(chunkId) === created) this.entries.delete(chunkId);
        },
      );
    }
    return (await entry.records).find(id);
  }

  /** Drops a chunk's index (its copy was deleted). */
  forget(chunkId: string): void {
    const entry = this.entries.get(chunkId);
    if (!entry) return;
    this.entries.delete(chunkId);
    this.totalCost -= entry.cost;
  }

  private evict(): void {
    for (const [id, entry] of this.entries) {
      // The newest index stays even when it alone is over the budget (a chunk far larger than
      // the budget): parsing it again for every query would cost seconds each time.
      if (this.totalCost <= this.maxBytes || this.entries.size <= 1) return;
      if (entry.cost === 0) continue; // still loading
      this.forget(id);
    }
  }

  get size(): number {
    return this.entries.size;
  }
}
