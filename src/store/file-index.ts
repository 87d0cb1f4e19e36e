/**
 * The master index in memory: which files exist, their current version, and where each chunk's
 * copies are. Pure (no I/O): the coordinator journals an IndexRecord first (journal.ts) and then
 * applies it here, and a restart rebuilds the same state by applying the replayed records in
 * order. So `apply` must be total and deterministic: it never throws for a well-formed record,
 * and a record that no longer makes sense (a stale version) is ignored, not an error.
 *
 * FileVersion objects are treated as immutable once applied: set-copies builds a new object
 * rather than editing the old one, so a FileVersion handed out (to a reader, to a snapshot being
 * written) never changes under its holder.
 */
import type { RecordsIndex } from '../records/record-ids.js';
import { StoreError } from './errors.js';

export interface ChunkRecord {
  index: number;
  id: string;
  sizeBytes: number;
  checksum: string;
  /** Data ranks holding a copy, primary first. */
  ranks: number[];
}

export interface FileVersion {
  name: string;
  version: number;
  sizeBytes: number;
  /** sha256 of the whole content, hex. */
  sha256: string;
  /** Wall-clock ms when the name was first stored (carried over from version to version). */
  createdMs: number;
  /** Wall-clock ms when this version was committed. */
  modifiedMs: number;
  chunkSizeBytes: number;
  replicas: number;
  /** chunks[i].index === i. */
  chunks: ChunkRecord[];
  /** A records dataset (JSON records, one a line, chunks cut at record boundaries): its IDs. */
  records?: RecordsIndex;
}

export type IndexRecord =
  | { op: 'commit'; file: FileVersion }
  | { op: 'delete'; name: string; atMs: number }
  | { op: 'set-copies'; name: string; version: number; index: number; ranks: number[] }
  /**
   * Raises nextVersion(name) to at least version + 1 and changes nothing else. Only snapshot()
   * writes it, for names deleted (or re-created below an older version), so version numbers
   * are never reused across a compaction.
   */
  | { op: 'version-floor'; name: string; version: number };

export interface ApplyResult {
  /** The version a commit replaced (its chunks can be deleted once no reader holds it). */
  replaced?: FileVersion;
  /** The version a delete removed. */
  removed?: FileVersion;
  /** Set when the record changed nothing (see FileIndex.apply for when). */
  ignored?: true;
}

/** Code-point order of two valid UTF-16 strings, which is also the byte order of their UTF-8. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return rankUnit(x) - rankUnit(y);
  }
  return a.length - b.length;
}

// UTF-16 puts surrogates (D800-DFFF, which encode code points above FFFF) below E000-FFFF;
// lifting them above FFFF-range units gives code-point order.
function rankUnit(u: number): number {
  if (u < 0xd800) return u;
  return u <= 0xdfff ? u + 0x2000 : u - 0x800;
}

export class FileIndex {
  private readonly files = new Map<string, FileVersion>();
  /** Highest version ever committed (or floored) per name; kept after a delete. */
  private readonly highest = new Map<string, number>();
  /** Names in code-point order; rebuilt lazily after the set of names changes. */
  private sortedNames: string[] | undefined;
  private chunkCount = 0;

  /**
   * Applies one record and says what it displaced:
   * - commit: makes `file` the current version of its name and returns the version it replaced.
   *   Ignored if the name's current version is already `file.version` or newer (a late commit
   *   must not roll a name back).
   * - delete: removes the name and returns the removed version; ignored if the name is absent.
   * - set-copies: replaces the rank list of chunk `index` of the current version (used by
   *   re-replication); ignored if `version` is no longer current or there is no such chunk.
   * - version-floor: raises nextVersion(name); never changes the current version.
   * Never throws; the record is trusted (validateIndexRecord checks records from outside).
   */
  apply(r: IndexRecord): ApplyResult {
    switch (r.op) {
      case 'commit': {
        const name = r.file.name;
        const previous = this.files.get(name);
        this.raise(name, r.file.version);
        if (previous !== undefined && previous.version >= r.file.version) return { ignored: true };
        this.files.set(name, r.file);
        this.chunkCount += r.file.chunks.length - (previous?.chunks.length ?? 0);
        if (previous === undefined) {
          this.sortedNames = undefined;
          return {};
        }
        return { replaced: previous };
      }
      case 'delete': {
        const previous = this.files.get(r.name);
        if (previous === undefined) return { ignored: true };
        this.files.delete(r.name);
        this.chunkCount -= previous.chunks.length;
        this.sortedNames = undefined;
        return { removed: previous };
      }
      case 'set-copies': {
        const current = this.files.get(r.name);
        const chunk = current?.chunks[r.index];
        if (current === undefined || current.version !== r.version || chunk === undefined) {
          return { ignored: true };
        }
        const chunks = current.chunks.slice();
        chunks[r.index] = { ...chunk, ranks: [...r.ranks] };
        this.files.set(r.name, { ...current, chunks });
        return {};
      }
      case 'version-floor':
        this.raise(r.name, r.version);
        return {};
    }
  }

  private raise(name: string, version: number): void {
    if (version > (this.highest.get(name) ?? 0)) this.highest.set(name, version);
  }

  /** The current version of `name`, or undefined if there is none. */
  get(name: string): FileVersion | undefined {
    return this.files.get(name);
  }

  /** All current versions, sorted by name in code-point order (= UTF-8 byte order). */
  list(): FileVersion[] {
    this.sortedNames ??= [...this.files.keys()].sort(compareCodePoints);
    return this.sortedNames.map((name) => this.files.get(name) as FileVersion);
  }

  /** The number of files (names with a current version). */
  size(): number {
    return this.files.size;
  }

  /** The number of chunks over all current versions (each counted once, not per copy). */
  chunks(): number {
    return this.chunkCount;
  }

  /** Every chunk of every current version. Do not apply records while iterating. */
  *allChunks(): Iterable<{ file: FileVersion; chunk: ChunkRecord }> {
    for (const file of this.files.values()) {
      for (const chunk of file.chunks) yield { file, chunk };
    }
  }

  /** 1 + the highest version ever committed for `name` (kept across delete); 1 for a new name. */
  nextVersion(name: string): number {
    return (this.highest.get(name) ?? 0) + 1;
  }

  /**
   * Records that rebuild the current state in an empty FileIndex (for compaction): per name in
   * code-point order, a version-floor when the highest version ever used is above the current
   * one (or the name is deleted), then a commit of the current version.
   */
  snapshot(): IndexRecord[] {
    const names = [...this.highest.keys()].sort(compareCodePoints);
    const records: IndexRecord[] = [];
    for (const name of names) {
      const current = this.files.get(name);
      const highest = this.highest.get(name) ?? 0;
      if (highest > (current?.version ?? 0))
        records.push({ op: 'version-floor', name, version: highest });
      if (current !== undefined) records.push({ op: 'commit', file: current });
    }
    return records;
  }
}

// ---- validation of records read from outside (the journal) -------------------------------------

/** Largest chunk count of one file version a record may carry (a 4 MiB chunk size → 4 PiB). */
const MAX_CHUNKS_PER_FILE = 1 << 30;

function bad(what: string): never {
  throw new StoreError('STORE_BAD_REQUEST', `malformed index record: ${what}`);
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isRankList = (v: unknown): v is number[] => Array.isArray(v) && v.every(isCount);

function checkChunk(c: unknown, i: number): ChunkRecord {
  if (!isObject(c)) bad(`chunk ${i} is not an object`);
  if (c.index !== i) bad(`chunk ${i} has index ${String(c.index)}`);
  if (typeof c.id !== 'string' || c.id === '') bad(`chunk ${i} has no id`);
  if (!isCount(c.sizeBytes)) bad(`chunk ${i} has no sizeBytes`);
  if (typeof c.checksum !== 'string') bad(`chunk ${i} has no checksum`);
  if (!isRankList(c.ranks)) bad(`chunk ${i} ranks must be a list of ranks`);
  return c as unknown as ChunkRecord;
}

/** A records dataset's ID index: one entry per chunk, of the kind its lookup reads. */
function checkRecordsIndex(r: unknown, chunkCount: number): void {
  if (!isObject(r)) bad('file.records is not an object');
  if (typeof r.idField !== 'string' || r.idField === '') bad('file.records.idField is missing');
  if (!isCount(r.count)) bad('file.records.count must be a non-negative integer');
  if (r.lookup !== 'ranges' && r.lookup !== 'hashed') bad('file.records.lookup is unknown');
  if (!Array.isArray(r.chunks) || r.chunks.length !== chunkCount)
    bad('file.records.chunks must have one entry per chunk');
  r.chunks.forEach((c: unknown, i: number) => {
    if (!isObject(c) || !isCount(c.first) || !isCount(c.count))
      bad(`file.records.chunks[${i}] needs first and count`);
    const ok =
      r.lookup === 'ranges'
        ? typeof c.min === 'number' && typeof c.max === 'number' && c.min <= c.max
        : c.hashes instanceof Uint8Array && c.hashes.byteLength === 4 * c.count;
    if (!ok) bad(`file.records.chunks[${i}] does not fit lookup ${String(r.lookup)}`);
  });
}

/**
 * Returns `value` typed as an IndexRecord if it has the shape of one (every field present with
 * the right type, chunks[i].index === i). Throws StoreError STORE_BAD_REQUEST naming the first
 * problem otherwise. Does not check names with validateName: records come from the coordinator,
 * which validated them when the request arrived.
 */
export function validateIndexRecord(value: unknown): IndexRecord {
  if (!isObject(value)) bad('not an object');
  switch (value.op) {
    case 'commit': {
      const f = value.file;
      if (!isObject(f)) bad('commit without a file');
      if (typeof f.name !== 'string') bad('file.name must be a string');
      for (const key of [
        'version',
        'sizeBytes',
        'createdMs',
        'modifiedMs',
        'chunkSizeBytes',
        'replicas',
      ] as const) {
        if (!isCount(f[key])) bad(`file.${key} must be a non-negative integer`);
      }
      if (typeof f.sha256 !== 'string') bad('file.sha256 must be a string');
      if (!Array.isArray(f.chunks) || f.chunks.length > MAX_CHUNKS_PER_FILE)
        bad('file.chunks must be a list');
      f.chunks.forEach(checkChunk);
      if (f.records !== undefined) checkRecordsIndex(f.records, f.chunks.length);
      return value as unknown as IndexRecord;
    }
    case 'delete':
      if (typeof value.name !== 'string') bad('delete.name must be a string');
      if (!isCount(value.atMs)) bad('delete.atMs must be a non-negative integer');
      return value as unknown as IndexRecord;
    case 'set-copies':
      if (typeof value.name !== 'string') bad('set-copies.name must be a string');
      if (!isCount(value.version) || !isCount(value.index))
        bad('set-copies.version and index must be integers');
      if (!isRankList(value.ranks)) bad('set-copies.ranks must be a list of ranks');
      return value as unknown as IndexRecord;
    case 'version-floor':
      if (typeof value.name !== 'string') bad('version-floor.name must be a string');
      if (!isCount(value.version)) bad('version-floor.version must be a non-negative integer');
      return value as unknown as IndexRecord;
    default:
      return bad(`unknown op ${JSON.stringify(value.op)?.slice(0, 40) ?? 'undefined'}`);
  }
}
