/**
 * Record IDs in the master index: what rank 0 keeps per chunk of a records file so that a query
 * by ID asks only the chunk that can hold it.
 *
 * - Sorted numeric IDs (every ID a number, strictly increasing through the dataset — the common
 *   case of a generated or exported table) need only each chunk's first and last ID: a query is a
 *   binary search over the chunks' ranges, and the index costs 16 bytes a chunk.
 * - Anything else (string IDs, unsorted numbers) keeps, per chunk, the sorted 32-bit hashes of its
 *   IDs (4 bytes a record): a query binary-searches each chunk's hashes. A hash can collide, so a
 *   match only says "ask this chunk"; the data rank holding it compares the real ID, and rank 0
 *   asks the next candidate when it is not there. The answer is exact; a collision costs one extra
 *   local lookup.
 *
 * Numbers and strings are different IDs: 42 and "42" may both exist.
 */

export type RecordId = string | number;

/** Longest string ID accepted (a query carries it; the master index hashes it). */
export const MAX_ID_LENGTH = 4096;

export function isRecordId(value: unknown): value is RecordId {
  return (
    (typeof value === 'string' && value.length <= MAX_ID_LENGTH) ||
    (typeof value === 'number' && Number.isFinite(value))
  );
}

/** An ID as a user would write it in JSON: 42, "abc". */
export function describeId(id: RecordId): string {
  const text = JSON.stringify(id);
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

/** FNV-1a over the ID's type and UTF-16 code units: stable across runs and machines. */
export function idHash(id: RecordId): number {
  const text = typeof id === 'number' ? `n${id}` : `s${id}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** What the master index keeps for one chunk of a records file. */
export interface ChunkIds {
  /** Position of the chunk's first record in the dataset (0-based), and how many it holds. */
  first: number;
  count: number;
  /** The chunk's smallest and largest ID, when all its IDs are numbers in increasing order. */
  min?: number;
  max?: number;
  /** 'hashed' lookup only: the sorted idHash of every ID, as little-endian uint32s. */
  hashes?: Uint8Array;
}

export interface RecordsIndex {
  /** The field of each record that holds its ID. */
  idField: string;
  /** Records in the dataset. */
  count: number;
  lookup: 'ranges' | 'hashed';
  /** One entry per chunk, in chunk order. */
  chunks: ChunkIds[];
}

/** A chunk's entry, with its hashes kept aside until the whole dataset shows which lookup fits. */
export interface ChunkSummary {
  ids: ChunkIds;
  hashes: Uint8Array;
}

export function summarizeChunk(first: number, ids: readonly RecordId[]): ChunkSummary {
  const entry: ChunkIds = { first, count: ids.length };
  let increasing = ids.length > 0;
  for (let i = 0; i < ids.length && increasing; i++) {
    const id = ids[i];
    increasing = typeof id === 'number' && (i === 0 || id > (ids[i - 1] as number));
  }
  if (increasing) {
    entry.min = ids[0] as number;
    entry.max = ids[ids.length - 1] as number;
  }
  return { ids: entry, hashes: hashIds(ids) };
}

/** The sorted idHash of every ID, as little-endian uint32s (what a 'hashed' chunk entry keeps). */
export function hashIds(ids: readonly RecordId[]): Uint8Array {
  const hashes = new Uint32Array(ids.length);
  for (let i = 0; i < ids.length; i++) hashes[i] = idHash(ids[i]!);
  hashes.sort();
  return new Uint8Array(hashes.buffer);
}

/** The index of a whole dataset from its chunks' summaries, in chunk order. */
export function buildRecordsIndex(idField: string, chunks: readonly ChunkSummary[]): RecordsIndex {
  let ranges = true;
  for (let i = 0; i < chunks.length && ranges; i++) {
    const c = chunks[i]!.ids;
    const prev = i > 0 ? chunks[i - 1]!.ids : undefined;
    ranges = c.max !== undefined && (prev === undefined || c.min! > prev.max!);
  }
  const count = chunks.reduce((n, c) => n + c.ids.count, 0);
  return {
    idField,
    count,
    lookup: ranges ? 'ranges' : 'hashed',
    chunks: chunks.map(({ ids, hashes }) => {
      const { first, count: n } = ids;
      return ranges
        ? { first, count: n, min: ids.min!, max: ids.max! }
        : { first, count: n, hashes };
    }),
  };
}

/** The chunks (by index) that may hold `id`, most likely first. */
export function candidateChunks(index: RecordsIndex, id: RecordId): number[] {
  const { chunks } = index;
  if (index.lookup === 'ranges') {
    if (typeof id !== 'number') return [];
    let lo = 0;
    let hi = chunks.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = chunks[mid]!;
      if (id < c.min!) hi = mid - 1;
      else if (id > c.max!) lo = mid + 1;
      else return [mid];
    }
    return [];
  }
  const h = idHash(id);
  const out: number[] = [];
  chunks.forEach((c, i) => {
    if (c.hashes && containsHash(c.hashes, h)) out.push(i);
  });
  return out;
}

function containsHash(bytes: Uint8Array, h: number): boolean {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let lo = 0;
  let hi = bytes.byteLength / 4 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = view.getUint32(mid * 4, true);
    if (v === h) return true;
    if (v < h) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

/** The first repeated ID in an upload: `record` repeats the ID of `earlier` (0-based positions). */
export interface DuplicateId {
  id: RecordId;
  record: number;
  earlier: number;
}

/**
 * Every ID of an upload in progress, to refuse a repeated one. Chunks are added in the order the
 * client sent them (which is the dataset's order), so the first duplicate found is the first one
 * in the document.
 *
 * The common case — numeric IDs in increasing order — cannot repeat, so while the IDs keep
 * increasing they only go into a typed array (8 bytes an ID, no hashing); once the order breaks,
 * later IDs are checked against that sorted prefix by binary search and against a map of the rest.
 */
export class IdRegistry {
  private prefix = new Float64Array(1024);
  private prefixLength = 0;
  /** The record the prefix starts at (records in it are consecutive). */
  private prefixFirst = 0;
  private increasingSoFar = true;
  /** The last ID while they increase (the prefix may stop keeping them: see prefixLimit). */
  private lastIncreasing = -Infinity;
  private increasingCount = 0;
  private readonly numbers = new Map<number, number>();
  private readonly strings = new Map<string, number>();

  /**
   * `prefixLimit`: increasing IDs kept for duplicate checks. Past it only the last is kept (a
   * sorted dataset costs no memory per record), and an ID that breaks the order then throws:
   * the caller must refuse such a dataset before adding it (RecordsUpload does, by its size).
   */
  constructor(private readonly prefixLimit = Infinity) {}

  /** Whether every ID so far was a number greater than the one before. */
  get increasing(): boolean {
    return this.increasingSoFar;
  }

  /** Records `first`..`first + count - 1`'s IDs, while they are among the increasing ones kept. */
  increasingIds(first: number, count: number): number[] {
    const start = first - this.prefixFirst;
    if (start < 0 || start + count > this.prefixLength)
      throw new Error(`IdRegistry: records ${first}..${first + count - 1} are not kept`);
    return Array.from(this.prefix.subarray(start, start + count));
  }

  /** Whether `ids`, added now, would keep the IDs increasing. */
  keepsIncreasing(ids: readonly RecordId[]): boolean {
    if (!this.increasingSoFar) return false;
    let last = this.lastIncreasing;
    for (const id of ids) {
      if (typeof id !== 'number' || !(id > last)) return false;
      last = id;
    }
    return true;
  }

  add(first: number, ids: readonly RecordId[]): DuplicateId | undefined {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const record = first + i;
      if (this.increasingSoFar && typeof id === 'number' && id > this.lastIncreasing) {
        if (this.increasingCount === 0) this.prefixFirst = record;
        if (this.increasingCount < this.prefixLimit) this.append(id);
        this.lastIncreasing = id;
        this.increasingCount++;
        continue;
      }
      if (this.increasingCount > this.prefixLength)
        throw new Error(
          `IdRegistry: the order broke after ${this.increasingCount} increasing IDs, more than the ${this.prefixLimit} kept`,
        );
      this.increasingSoFar = false;
      const earlier = this.find(id);
      if (earlier !== undefined) return { id, record, earlier };
      if (typeof id === 'number') this.numbers.set(id, record);
      else this.strings.set(id, record);
    }
    return undefined;
  }

  /** The position of an earlier record with `id`. */
  private find(id: RecordId): number | undefined {
    if (typeof id === 'string') return this.strings.get(id);
    let lo = 0;
    let hi = this.prefixLength - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.prefix[mid]!;
      if (v === id) return this.prefixFirst + mid;
      if (v < id) lo = mid + 1;
      else hi = mid - 1;
    }
    return this.numbers.get(id);
  }

  private append(id: number): void {
    if (this.prefixLength === this.prefix.length) {
      const grown = new Float64Array(this.prefix.length * 2);
      grown.set(this.prefix);
      this.prefix = grown;
    }
    this.prefix[this.prefixLength++] = id;
  }
}

/**
 * The IDs a command-line argument may mean, in the order to try them: text that is a JSON number
 * is the number first and then the same text as a string (a dataset of string IDs "42" is still
 * found by `query data 42`); text in double quotes is exactly that string; anything else is the
 * string as typed.
 */
export function idCandidates(text: string): RecordId[] {
  if (/^"(?:[^"\\]|\\.)*"$/.test(text)) {
    try {
      return [JSON.parse(text) as string];
    } catch {
      return [text];
    }
  }
  if (/^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/.test(text)) {
    const n = Number(text);
    if (Number.isFinite(n)) return [n, text];
  }
  return [text];
}
