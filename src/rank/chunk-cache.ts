import { detached } from '../comm/send-queue.js';

/**
 * Rank 0's cache of small chunks. A small-file read otherwise costs rank 0 a round trip to a data
 * rank for a few kilobytes; with the bytes at hand it answers at once. Chunk ids never change
 * content (a new version has new ids), so nothing is ever stale; entries are verified against
 * their checksum on every hit (BLAKE3 of 4 KiB is about a microsecond), so the cache can never
 * hand out bytes the data ranks would not. Bounded by `maxBytes`, least recently used first out;
 * chunks larger than `maxEntryBytes` are never kept.
 */
export class ChunkCache {
  private readonly entries = new Map<string, Uint8Array>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(
    readonly maxBytes: number,
    readonly maxEntryBytes = 64 * 1024,
  ) {}

  get(id: string): Uint8Array | undefined {
    const data = this.entries.get(id);
    if (data === undefined) {
      this.misses++;
      return undefined;
    }
    // Re-insert: Map keeps insertion order, so the first key is always the least recently used.
    this.entries.delete(id);
    this.entries.set(id, data);
    this.hits++;
    return data;
  }

  set(id: string, data: Uint8Array): void {
    if (data.length > this.maxEntryBytes || data.length > this.maxBytes || this.entries.has(id))
      return;
    // Entries own their bytes: a chunk cut from a received batch is copied (see detached).
    this.entries.set(id, detached(data));
    this.bytes += data.length;
    for (const [oldest, old] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= old.length;
    }
  }

  delete(id: string): void {
    const data = this.entries.get(id);
    if (data === undefined) return;
    this.entries.delete(id);
    this.bytes -= data.length;
  }

  get sizeBytes(): number {
    return this.bytes;
  }
}
