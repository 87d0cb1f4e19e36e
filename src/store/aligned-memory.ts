/**
 * Page-aligned memory for O_DIRECT reads and writes.
 *
 * Why: on this kind of machine (a VM whose memory the host backs lazily) copying chunk data into
 * the page cache costs about 3 CPU-seconds per GiB, because every write lands in page-cache pages
 * touched for the first time; an O_DIRECT write of the same GiB costs 0.2 (measured with dd: 3.5 s
 * buffered against 0.63 s direct). O_DIRECT needs the buffer's address, the file offset and the
 * length aligned to the device's block; Node's Buffers come from malloc at no particular
 * alignment, but V8 maps a WebAssembly.Memory at a page boundary. Nothing in the language
 * promises that, so VolumeChunkStore confirms it with a direct read before it relies on it, and
 * writes through the page cache when the check fails (or the file system, tmpfs for one, refuses
 * O_DIRECT).
 */
import { Buffer } from 'node:buffer';

/** Alignment of offsets, lengths and buffers for direct I/O: covers 512 B and 4 KiB devices. */
export const DIRECT_IO_ALIGN = 4096;

const WASM_PAGE_BYTES = 64 * 1024;
/** WebAssembly.Memory holds at most 65,536 pages (4 GiB). */
const MAX_WASM_PAGES = 65536;

/** The part of WebAssembly.Memory used here (the project's TypeScript libs do not declare it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
const WasmMemoryClass = (
  globalThis as { WebAssembly?: { Memory: new (descriptor: { initial: number }) => WasmMemory } }
).WebAssembly?.Memory;

/** False where WebAssembly is off (node --jitless): callers then use the page cache. */
export const alignedMemoryAvailable = WasmMemoryClass !== undefined;

export const alignUp = (n: number): number => Math.ceil(n / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;
export const alignDown = (n: number): number => Math.floor(n / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;

/**
 * Slabs up to this size are kept for reuse: a chunk of up to 16 MiB with its pads, rounded up to
 * whole WebAssembly pages. Larger ones (a --chunk-size beyond 16 MiB) are dropped after their
 * I/O, so a few large chunks do not pin that much memory for good.
 */
export const RETAINED_SLAB_BYTES = 16 * 1024 * 1024 + WASM_PAGE_BYTES;

/** One growable page-aligned buffer, reused for every I/O its owner does (one at a time). */
export class AlignedSlab {
  private memory: WasmMemory | undefined;

  /** Bytes the slab holds now (it never shrinks). */
  get byteLength(): number {
    return this.memory?.buffer.byteLength ?? 0;
  }

  /** A view of the slab's first `bytes` bytes (contents unspecified), growing it when needed. */
  view(bytes: number): Buffer {
    const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE_BYTES));
    if (pages > MAX_WASM_PAGES) throw new RangeError(`${bytes} bytes is more than a slab holds`);
    if (WasmMemoryClass === undefined) throw new Error('WebAssembly is not available');
    this.memory ??= new WasmMemoryClass({ initial: pages });
    const have = this.memory.buffer.byteLength / WASM_PAGE_BYTES;
    // grow() detaches the old ArrayBuffer: views handed out before are not used after this call.
    if (have < pages) this.memory.grow(pages - have);
    return Buffer.from(this.memory.buffer, 0, bytes);
  }
}

/**
 * A bounded set of slabs for I/O that runs concurrently (reads). acquire() waits, first come
 * first served, while all are lent out: a read through the page cache instead would fill fresh
 * page-cache pages, the very cost direct I/O is there to avoid.
 */
export class SlabPool {
  private readonly free: AlignedSlab[] = [];
  private readonly waiting: ((slab: AlignedSlab) => void)[] = [];
  private created = 0;

  constructor(private readonly size: number) {}

  acquire(): Promise<AlignedSlab> {
    const slab = this.free.pop();
    if (slab !== undefined) return Promise.resolve(slab);
    if (this.created < this.size) {
      this.created++;
      return Promise.resolve(new AlignedSlab());
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(slab: AlignedSlab): void {
    const next = this.waiting.shift();
    if (next !== undefined) next(slab.byteLength > RETAINED_SLAB_BYTES ? new AlignedSlab() : slab);
    else if (slab.byteLength > RETAINED_SLAB_BYTES) this.created--;
    else this.free.push(slab);
  }
}
