/**
 * Chunk storage on a data rank: the ChunkStore interface, the rules both implementations share,
 * and MemoryChunkStore (for simulations and tests). DiskChunkStore (disk-chunk-store.ts) is the
 * production implementation; test/unit/chunk-store.test.ts holds the one contract suite both
 * pass.
 *
 * A store keeps chunks by id and nothing else: which file a chunk belongs to is the coordinator's
 * business (the master index), so a store can be rebuilt from its own contents after a restart.
 */
import { Buffer } from 'node:buffer';
import { chunkChecksum } from './checksum.js';
import { StoreError } from './errors.js';

export interface StoredChunk {
  id: string;
  sizeBytes: number;
  checksum: string;
}

/**
 * Common contract: every method that takes an id throws StoreError STORE_BAD_REQUEST (before
 * doing anything) unless the id is valid (see validateChunkId), so an id can never name a path
 * outside the store.
 */
export interface ChunkStore {
  /**
   * Verifies chunkChecksum(data) === checksum (else STORE_CORRUPT, nothing stored), then stores
   * durably (disk: write to a temp file, fsync, rename, fsync the directory) before resolving.
   * Idempotent for the same id+checksum. The store keeps its own copy: the caller may reuse
   * `data` as soon as the promise settles.
   *
   * Errors: STORE_BAD_REQUEST (bad id, data not a Uint8Array, checksum not a string, data larger
   * than MAX_CHUNK_BYTES); STORE_CORRUPT (checksum mismatch; detail.expected, detail.actual);
   * STORE_CONFLICT (the id is already stored with another checksum; delete it first to replace
   * it); STORE_NO_SPACE (the store's capacity or the disk is full; detail.neededBytes,
   * detail.availableBytes when known).
   */
  put(id: string, data: Uint8Array, checksum: string): Promise<void>;
  /**
   * Reads and verifies against the checksum recorded at put; a mismatch or missing file throws
   * STORE_CORRUPT / STORE_NOT_FOUND. The returned Buffer belongs to the caller.
   */
  get(id: string): Promise<Buffer>;
  /** Whether a completed put of `id` is stored (and not deleted since). */
  has(id: string): boolean;
  /** Removes the chunk; resolves true if it was stored, false if there was nothing to delete. */
  delete(id: string): Promise<boolean>;
  /** Everything stored, sorted by id, e.g. for the inventory a data rank reports at startup. */
  list(): StoredChunk[];
  /** Sum of sizeBytes over list(): the bytes of chunk data held (not counting file overhead). */
  usedBytes(): number;
  /** How many chunks are held: list().length without building and sorting the list. */
  chunkCount(): number;
}

/** Longest chunk id. With the 64-digit checksum, a disk store's file name stays far below 255. */
export const MAX_CHUNK_ID_LENGTH = 128;
/** Largest chunk a store accepts; chunk sizes are configured well below (4 MiB typically). */
export const MAX_CHUNK_BYTES = 256 * 1024 * 1024;

const CHUNK_ID_PATTERN = /^[A-Za-z0-9_.-]+$/;

/**
 * Returns `id` if it is a valid chunk id: 1 to MAX_CHUNK_ID_LENGTH characters of [A-Za-z0-9_.-],
 * not starting with '.' (which also rules out '.' and '..', and keeps ids apart from the disk
 * store's hidden temp files). Throws StoreError STORE_BAD_REQUEST naming the problem otherwise.
 */
export function validateChunkId(id: unknown): string {
  if (typeof id !== 'string') {
    throw new StoreError('STORE_BAD_REQUEST', `a chunk id must be a string, got ${typeof id}`);
  }
  const shown = JSON.stringify(id.length > 64 ? `${id.slice(0, 64)}…` : id);
  if (id.length === 0 || id.length > MAX_CHUNK_ID_LENGTH) {
    throw new StoreError(
      'STORE_BAD_REQUEST',
      `chunk id ${shown} must have 1 to ${MAX_CHUNK_ID_LENGTH} characters, has ${id.length}`,
      { length: id.length },
    );
  }
  if (!CHUNK_ID_PATTERN.test(id) || id.startsWith('.')) {
    throw new StoreError(
      'STORE_BAD_REQUEST',
      `chunk id ${shown} may hold only A-Z a-z 0-9 _ . - and must not start with '.'`,
      { id: id.slice(0, 64) },
    );
  }
  return id;
}

/**
 * The argument checks and checksum verification of ChunkStore.put, shared by both stores so they
 * refuse exactly the same inputs. Throws STORE_BAD_REQUEST or STORE_CORRUPT as put documents.
 */
export function checkPutArguments(id: unknown, data: unknown, checksum: unknown): void {
  validateChunkId(id);
  if (!(data instanceof Uint8Array)) {
    throw new StoreError('STORE_BAD_REQUEST', `chunk ${String(id)}: data must be a Uint8Array`);
  }
  if (typeof checksum !== 'string') {
    throw new StoreError('STORE_BAD_REQUEST', `chunk ${String(id)}: checksum must be a string`);
  }
  if (data.byteLength > MAX_CHUNK_BYTES) {
    throw new StoreError(
      'STORE_BAD_REQUEST',
      `chunk ${String(id)} has ${data.byteLength} bytes, more than the limit of ${MAX_CHUNK_BYTES}`,
      { sizeBytes: data.byteLength, maxBytes: MAX_CHUNK_BYTES },
    );
  }
  const actual = chunkChecksum(data);
  if (actual !== checksum) {
    throw new StoreError(
      'STORE_CORRUPT',
      `chunk ${String(id)} does not match its checksum: the data was damaged on the way`,
      { id, expected: checksum.slice(0, 128), actual },
    );
  }
}

/** The STORE_CONFLICT a put of an id already stored with different content throws. */
export function conflictError(id: string, stored: string, offered: string): StoreError {
  return new StoreError(
    'STORE_CONFLICT',
    `chunk ${id} is already stored with another checksum; delete it before storing new content`,
    { id, storedChecksum: stored, checksum: offered },
  );
}

/** The STORE_NO_SPACE a put beyond the store's capacity throws. */
export function noSpaceError(id: string, neededBytes: number, availableBytes: number): StoreError {
  return new StoreError(
    'STORE_NO_SPACE',
    `chunk ${id} needs ${neededBytes} bytes but only ${availableBytes} are free in this store`,
    { id, neededBytes, availableBytes },
  );
}

/**
 * Checks bytes read back against what was stored (size and checksum): STORE_CORRUPT naming
 * `where` (e.g. "on disk") when they differ, so the caller moves on to another copy.
 */
export function verifyStoredChunk(
  id: string,
  where: string,
  data: Uint8Array,
  stored: { sizeBytes: number; checksum: string },
): void {
  const actual = chunkChecksum(data);
  if (data.byteLength === stored.sizeBytes && actual === stored.checksum) return;
  throw new StoreError(
    'STORE_CORRUPT',
    `chunk ${id} ${where} no longer matches its checksum (${data.byteLength} bytes read, ` +
      `${stored.sizeBytes} stored)`,
    {
      id,
      expected: stored.checksum,
      actual,
      sizeBytes: data.byteLength,
      storedSizeBytes: stored.sizeBytes,
    },
  );
}

export function notFoundError(id: string): StoreError {
  return new StoreError('STORE_NOT_FOUND', `chunk ${id} is not stored here`, { id });
}

/** A rejected promise for a caught value (always an Error, as the linter and callers expect). */
function rejected(err: unknown): Promise<never> {
  return Promise.reject(err instanceof Error ? err : new Error(String(err)));
}

function compareIds(a: StoredChunk, b: StoredChunk): number {
  // Ids are ASCII, so UTF-16 order is byte order.
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export function sortChunks(chunks: StoredChunk[]): StoredChunk[] {
  return chunks.sort(compareIds);
}

/** What list() answers for a store that keeps each chunk's size and checksum by id. */
export function listChunks(
  chunks: ReadonlyMap<string, { sizeBytes: number; checksum: string }>,
): StoredChunk[] {
  return sortChunks(
    [...chunks].map(([id, c]) => ({ id, sizeBytes: c.sizeBytes, checksum: c.checksum })),
  );
}

/**
 * A ChunkStore in memory, for simulations of many ranks in one process and for tests. It keeps
 * copies of the bytes (never the caller's buffers) and verifies them on get like the disk store,
 * so both behave alike. Optional capacityBytes limits usedBytes(): a put beyond it throws
 * STORE_NO_SPACE. Nothing survives the process.
 */
export class MemoryChunkStore implements ChunkStore {
  private readonly chunks = new Map<string, { data: Buffer; checksum: string }>();
  private used = 0;

  constructor(readonly capacityBytes = Infinity) {
    if (!(capacityBytes >= 0)) {
      throw new RangeError(`capacityBytes must be >= 0, got ${capacityBytes}`);
    }
  }

  put(id: string, data: Uint8Array, checksum: string): Promise<void> {
    try {
      checkPutArguments(id, data, checksum);
      const existing = this.chunks.get(id);
      if (existing !== undefined) {
        if (existing.checksum === checksum) return Promise.resolve();
        throw conflictError(id, existing.checksum, checksum);
      }
      if (this.used + data.byteLength > this.capacityBytes) {
        throw noSpaceError(id, data.byteLength, this.capacityBytes - this.used);
      }
      // Copy: the caller may reuse its buffer (a transport's receive buffer, for example).
      this.chunks.set(id, { data: Buffer.from(data), checksum });
      this.used += data.byteLength;
      return Promise.resolve();
    } catch (err) {
      return rejected(err);
    }
  }

  get(id: string): Promise<Buffer> {
    try {
      validateChunkId(id);
      const chunk = this.chunks.get(id);
      if (chunk === undefined) throw notFoundError(id);
      verifyStoredChunk(id, 'in memory', chunk.data, {
        sizeBytes: chunk.data.byteLength,
        checksum: chunk.checksum,
      });
      return Promise.resolve(Buffer.from(chunk.data));
    } catch (err) {
      return rejected(err);
    }
  }

  has(id: string): boolean {
    validateChunkId(id);
    return this.chunks.has(id);
  }

  delete(id: string): Promise<boolean> {
    try {
      validateChunkId(id);
      const chunk = this.chunks.get(id);
      if (chunk === undefined) return Promise.resolve(false);
      this.chunks.delete(id);
      this.used -= chunk.data.byteLength;
      return Promise.resolve(true);
    } catch (err) {
      return rejected(err);
    }
  }

  list(): StoredChunk[] {
    return sortChunks(
      [...this.chunks].map(([id, c]) => ({
        id,
        sizeBytes: c.data.byteLength,
        checksum: c.checksum,
      })),
    );
  }

  usedBytes(): number {
    return this.used;
  }

  chunkCount(): number {
    return this.chunks.size;
  }

  /**
   * Flips the bits of one stored byte (at `offset`, default the middle), so simulations can
   * inject bit rot: the next get of `id` throws STORE_CORRUPT. Throws STORE_NOT_FOUND if `id` is
   * not stored, RangeError if the chunk is empty or offset is out of range.
   */
  damage(id: string, offset?: number): void {
    const chunk = this.chunks.get(validateChunkId(id));
    if (chunk === undefined) throw notFoundError(id);
    const at = offset ?? Math.floor(chunk.data.byteLength / 2);
    if (!Number.isInteger(at) || at < 0 || at >= chunk.data.byteLength) {
      throw new RangeError(`offset ${at} is outside chunk ${id} of ${chunk.data.byteLength} bytes`);
    }
    chunk.data[at] = (chunk.data[at] ?? 0) ^ 0xff;
  }
}
