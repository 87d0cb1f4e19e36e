/**
 * DiskChunkStore: a data rank's chunks as files on its own disk.
 *
 * Layout: `<dir>/<xx>/<id>.<checksum>`, where xx is the first byte of BLAKE3(id) in hex, so
 * chunks spread over 256 subdirectories and no directory grows huge (a million chunks make about
 * 4,000 entries per directory). The checksum lives in the file name, so a restarted rank rebuilds
 * its whole inventory (id, size, checksum) from a directory scan, with no other metadata to keep
 * consistent. A chunk file holds exactly the chunk's bytes.
 *
 * Durability: a put writes `<xx>/.tmp.<id>.<random>`, fsyncs it, renames it to its final name and
 * fsyncs the directory before it resolves, so after a crash a chunk is either complete under its
 * final name or absent (temp files are removed by the next open). Deletes are not followed by a
 * directory fsync: a chunk that reappears after a power failure is an orphan the coordinator
 * finds in the inventory and deletes again, which is cheaper than an fsync per deleted chunk.
 *
 * One process per directory: two ranks sharing a directory would count each other's chunks.
 */
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import {
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  stat,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { join } from 'node:path';
import { blake3 } from '@napi-rs/blake-hash';
import {
  checkPutArguments,
  conflictError,
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
import { fsyncDirectory } from './durable-fs.js';

export interface DiskChunkStoreOptions {
  /** The most chunk bytes this store will hold; a put beyond it throws STORE_NO_SPACE. */
  capacityBytes?: number;
}

const TEMP_PREFIX = '.tmp.';
const SUBDIR_PATTERN = /^[0-9a-f]{2}$/;
// The checksum is the last 64 hex digits after the last '.', so ids containing '.' parse too.
const CHUNK_FILE_PATTERN = /^([A-Za-z0-9_-][A-Za-z0-9_.-]*)\.([0-9a-f]{64})$/;
/** stat() calls in flight while scanning, so a huge store does not open thousands at once. */
const SCAN_CONCURRENCY = 32;

/** The subdirectory of a chunk id: the first byte of BLAKE3(id) as two hex digits. */
export function chunkSubdir(id: string): string {
  return blake3(Buffer.from(id, 'latin1')).subarray(0, 1).toString('hex');
}

interface Entry {
  sizeBytes: number;
  checksum: string;
}

function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Maps a file-system error to a StoreError: a full disk is STORE_NO_SPACE, anything else is
 * STORE_INTERNAL carrying the errno code (EIO, EACCES, ...) for the operator. */
function ioError(
  err: unknown,
  what: string,
  id: string | undefined,
  neededBytes?: number,
): StoreError {
  if (err instanceof StoreError) return err;
  const code = errnoCode(err);
  const message = err instanceof Error ? err.message : String(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new StoreError(
      'STORE_NO_SPACE',
      `${what}: the disk is full (${code})`,
      {
        ...(id !== undefined ? { id } : {}),
        ...(neededBytes !== undefined ? { neededBytes } : {}),
        errno: code,
      },
      { cause: err },
    );
  }
  return new StoreError(
    'STORE_INTERNAL',
    `${what}: ${message}`,
    { ...(id !== undefined ? { id } : {}), ...(code !== undefined ? { errno: code } : {}) },
    { cause: err },
  );
}

/** Runs `fn` over `items` with at most `limit` calls in flight. */
async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * A ChunkStore in a directory. Open it with DiskChunkStore.open; see ChunkStore for the contract
 * of each method. Operations on one id are serialised (a put racing a delete of the same id ends
 * in one of the two orders, never half of each); operations on different ids run in parallel.
 */
export class DiskChunkStore implements ChunkStore {
  private readonly chunks = new Map<string, Entry>();
  private used = 0;
  /** Bytes of puts in progress, counted against the capacity so parallel puts cannot overshoot. */
  private reserved = 0;
  private readonly locks = new Map<string, Promise<void>>();
  private readonly subdirs = new Map<string, Promise<string>>();

  private constructor(
    readonly dir: string,
    readonly capacityBytes: number,
  ) {}

  /**
   * Opens (creating if needed) the store in `dir`: scans the existing chunks so a restarted rank
   * knows what it holds and its used bytes, and removes temp files left by an interrupted put.
   * When two files hold the same id (possible only after a crash between a delete and a new put
   * with other content), the newest is kept and the others removed. Files that do not follow the
   * layout are left alone and not listed.
   *
   * Throws RangeError for a negative capacity; StoreError STORE_INTERNAL (detail.errno) when the
   * directory cannot be created or read.
   */
  static async open(dir: string, options: DiskChunkStoreOptions = {}): Promise<DiskChunkStore> {
    const capacityBytes = options.capacityBytes ?? Infinity;
    if (!(capacityBytes >= 0)) {
      throw new RangeError(`capacityBytes must be >= 0, got ${capacityBytes}`);
    }
    const store = new DiskChunkStore(dir, capacityBytes);
    try {
      await mkdir(dir, { recursive: true });
      await store.scan();
    } catch (err) {
      throw ioError(err, `cannot open the chunk store in ${dir}`, undefined);
    }
    return store;
  }

  private async scan(): Promise<void> {
    const found = new Map<
      string,
      { checksum: string; path: string; sizeBytes: number; mtimeMs: number }[]
    >();
    const files: { sub: string; name: string; id: string; checksum: string }[] = [];
    for (const dirent of await readdir(this.dir, { withFileTypes: true })) {
      if (!dirent.isDirectory() || !SUBDIR_PATTERN.test(dirent.name)) continue;
      const sub = dirent.name;
      this.subdirs.set(sub, Promise.resolve(join(this.dir, sub)));
      for (const name of await readdir(join(this.dir, sub))) {
        if (name.startsWith(TEMP_PREFIX)) {
          await unlink(join(this.dir, sub, name));
          continue;
        }
        const match = CHUNK_FILE_PATTERN.exec(name);
        if (match === null) continue;
        const [, id = '', checksum = ''] = match;
        if (id.length > MAX_CHUNK_ID_LENGTH || chunkSubdir(id) !== sub) continue;
        files.push({ sub, name, id, checksum });
      }
    }
    await forEachLimited(files, SCAN_CONCURRENCY, async (f) => {
      const path = join(this.dir, f.sub, f.name);
      const st = await stat(path);
      if (!st.isFile()) return;
      const list = found.get(f.id) ?? [];
      list.push({ checksum: f.checksum, path, sizeBytes: st.size, mtimeMs: st.mtimeMs });
      found.set(f.id, list);
    });
    for (const [id, versions] of found) {
      versions.sort((a, b) => b.mtimeMs - a.mtimeMs || (a.path < b.path ? -1 : 1));
      const [keep, ...stale] = versions;
      if (keep === undefined) continue;
      for (const s of stale) await unlink(s.path);
      this.chunks.set(id, { sizeBytes: keep.sizeBytes, checksum: keep.checksum });
      this.used += keep.sizeBytes;
    }
  }

  private pathOf(id: string, checksum: string): string {
    return join(this.dir, chunkSubdir(id), `${id}.${checksum}`);
  }

  /** Creates a subdirectory once and makes its creation durable (fsync of the parent). */
  private subdir(sub: string): Promise<string> {
    let ready = this.subdirs.get(sub);
    if (ready === undefined) {
      const path = join(this.dir, sub);
      ready = (async () => {
        await mkdir(path, { recursive: true });
        await fsyncDirectory(this.dir);
        return path;
      })();
      // A failed creation (a full disk) must not be remembered: the next put tries again.
      ready.catch(() => this.subdirs.delete(sub));
      this.subdirs.set(sub, ready);
    }
    return ready;
  }

  /** Runs `fn` after every earlier operation on `id` has finished. */
  private async serialized<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    let release = (): void => {};
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.locks.set(id, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(id) === tail) this.locks.delete(id);
    }
  }

  async put(id: string, data: Uint8Array, checksum: string): Promise<void> {
    checkPutArguments(id, data, checksum);
    await this.serialized(id, async () => {
      const existing = this.chunks.get(id);
      if (existing !== undefined) {
        if (existing.checksum === checksum) return;
        throw conflictError(id, existing.checksum, checksum);
      }
      const sizeBytes = data.byteLength;
      const free = this.capacityBytes - this.used - this.reserved;
      if (sizeBytes > free) throw noSpaceError(id, sizeBytes, Math.max(0, free));
      this.reserved += sizeBytes;
      try {
        await this.writeDurably(id, data, checksum);
        this.chunks.set(id, { sizeBytes, checksum });
        this.used += sizeBytes;
      } finally {
        this.reserved -= sizeBytes;
      }
    });
  }

  private async writeDurably(id: string, data: Uint8Array, checksum: string): Promise<void> {
    const final = this.pathOf(id, checksum);
    let temp: string | undefined;
    let handle: FileHandle | undefined;
    let renamed = false;
    try {
      const sub = await this.subdir(chunkSubdir(id));
      temp = join(sub, `${TEMP_PREFIX}${id}.${randomBytes(8).toString('hex')}`);
      handle = await open(temp, 'wx');
      await handle.writeFile(data);
      await handle.sync();
      await handle.close();
      handle = undefined;
      await rename(temp, final);
      renamed = true;
      await fsyncDirectory(sub);
    } catch (err) {
      // Leave nothing behind: neither a temp file nor a final file whose rename is not durable
      // (the store would not list it, so nobody would ever delete it).
      await handle?.close().catch(() => {});
      if (temp !== undefined) await unlink(renamed ? final : temp).catch(() => {});
      throw ioError(err, `cannot store chunk ${id}`, id, data.byteLength);
    }
  }

  async get(id: string): Promise<Buffer> {
    validateChunkId(id);
    const entry = this.chunks.get(id);
    if (entry === undefined) throw notFoundError(id);
    let data: Buffer;
    try {
      data = await readFile(this.pathOf(id, entry.checksum));
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') {
        // Deleted meanwhile by us (a concurrent delete) or behind our back: either way, gone.
        if (this.chunks.get(id) === entry) {
          this.chunks.delete(id);
          this.used -= entry.sizeBytes;
        }
        throw notFoundError(id);
      }
      throw ioError(err, `cannot read chunk ${id}`, id);
    }
    verifyStoredChunk(id, 'on disk', data, entry);
    return data;
  }

  has(id: string): boolean {
    validateChunkId(id);
    return this.chunks.has(id);
  }

  async delete(id: string): Promise<boolean> {
    validateChunkId(id);
    return this.serialized(id, async () => {
      const entry = this.chunks.get(id);
      if (entry === undefined) return false;
      try {
        await unlink(this.pathOf(id, entry.checksum));
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw ioError(err, `cannot delete chunk ${id}`, id);
      }
      this.chunks.delete(id);
      this.used -= entry.sizeBytes;
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
}
