/**
 * Rank 0's small-chunk cache. Goal: bounded by bytes, least recently used out first, large
 * chunks never kept, and no entry keeps a larger buffer alive. Method: direct calls.
 */
import { describe, expect, it } from 'vitest';
import { ChunkCache } from '../../src/rank/chunk-cache.js';

const bytes = (n: number): Uint8Array => new Uint8Array(n);

describe('ChunkCache (100 bytes, entries up to 40)', () => {
  it('keeps what fits and drops the least recently used first', () => {
    const cache = new ChunkCache(100, 40);
    cache.set('a', bytes(40));
    cache.set('b', bytes(40));
    expect(cache.get('a')).toBeDefined(); // a is now the most recently used
    cache.set('c', bytes(40)); // 120 > 100: b goes
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')).toBeDefined();
    expect(cache.get('c')).toBeDefined();
    expect(cache.sizeBytes).toBe(80);
  });

  it('never keeps a chunk larger than the entry limit, and forgets deleted ones', () => {
    const cache = new ChunkCache(100, 40);
    cache.set('big', bytes(41));
    expect(cache.get('big')).toBeUndefined();
    cache.set('x', bytes(10));
    cache.delete('x');
    expect(cache.get('x')).toBeUndefined();
    expect(cache.sizeBytes).toBe(0);
  });

  it('keeps its own copy of a chunk cut from a larger buffer (a received batch), so the batch can go', () => {
    const cache = new ChunkCache(100, 40);
    const batch = Buffer.alloc(4096, 9);
    cache.set('cut', batch.subarray(8, 40));
    const kept = cache.get('cut')!;
    expect(kept.buffer).not.toBe(batch.buffer);
    expect(kept.buffer.byteLength).toBe(32);
    expect(Buffer.from(kept).equals(batch.subarray(8, 40))).toBe(true);
    expect(cache.sizeBytes).toBe(32);
  });

  it('a zero-byte cache keeps nothing', () => {
    const cache = new ChunkCache(0);
    cache.set('a', bytes(1));
    expect(cache.get('a')).toBeUndefined();
    expect([cache.hits, cache.misses]).toEqual([0, 1]);
  });
});
