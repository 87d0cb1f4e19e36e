/**
 * The aligned memory behind direct I/O: a slab grows to what it is asked for and keeps its
 * contents' alignment; the pool lends at most its size at once, hands slabs back first come
 * first served, and does not keep slabs larger than RETAINED_SLAB_BYTES.
 */
import { describe, expect, it } from 'vitest';
import {
  AlignedSlab,
  alignDown,
  alignUp,
  DIRECT_IO_ALIGN,
  RETAINED_SLAB_BYTES,
  SlabPool,
} from '../../src/store/aligned-memory.js';

describe('aligned memory', () => {
  it('rounds offsets to the alignment', () => {
    expect(alignUp(0)).toBe(0);
    expect(alignUp(1)).toBe(DIRECT_IO_ALIGN);
    expect(alignUp(DIRECT_IO_ALIGN)).toBe(DIRECT_IO_ALIGN);
    expect(alignDown(DIRECT_IO_ALIGN * 3 - 1)).toBe(DIRECT_IO_ALIGN * 2);
  });

  it('a slab grows to the view asked for and keeps it', () => {
    const slab = new AlignedSlab();
    expect(slab.byteLength).toBe(0);
    const small = slab.view(1000);
    expect(small.byteLength).toBe(1000);
    small.fill(7);
    const large = slab.view(3 * 1024 * 1024 + 5);
    expect(large.byteLength).toBe(3 * 1024 * 1024 + 5);
    expect(slab.byteLength).toBeGreaterThanOrEqual(3 * 1024 * 1024 + 5);
    // Growing keeps what was written (the old view is detached; a new one sees the bytes).
    expect(large[999]).toBe(7);
    expect(() => slab.view(5 * 1024 * 1024 * 1024)).toThrow(RangeError);
  });

  it('a pool lends at most its size, then hands slabs back in the order they were asked for', async () => {
    const pool = new SlabPool(2);
    const a = await pool.acquire();
    const b = await pool.acquire();
    const order: string[] = [];
    const c = pool.acquire().then((s) => (order.push('c'), s));
    const d = pool.acquire().then((s) => (order.push('d'), s));
    await Promise.resolve();
    expect(order).toEqual([]);
    pool.release(b);
    expect(await c).toBe(b);
    pool.release(a);
    expect(await d).toBe(a);
    expect(order).toEqual(['c', 'd']);
  });

  it('a pool drops a slab grown past RETAINED_SLAB_BYTES and makes a new one instead', async () => {
    const pool = new SlabPool(1);
    const big = await pool.acquire();
    big.view(RETAINED_SLAB_BYTES + 1);
    const waiting = pool.acquire();
    pool.release(big);
    const next = await waiting;
    expect(next).not.toBe(big);
    expect(next.byteLength).toBe(0);
    next.view(RETAINED_SLAB_BYTES + 1);
    pool.release(next);
    // Nothing waited: the big slab is dropped, and the pool may make another one.
    const again = await pool.acquire();
    expect(again).not.toBe(next);
  });
});
