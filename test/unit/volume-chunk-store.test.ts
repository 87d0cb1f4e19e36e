/**
 * VolumeChunkStore beyond the ChunkStore contract (which test/unit/chunk-store.test.ts runs on
 * it): the on-disk format, reopening, torn tails and damage found at open, runways of zeros for
 * small writes, group commit, volume roll-over, compaction (including one interrupted midway),
 * capacity, and I/O failures injected through a mocked node:fs/promises. Every test works in its
 * own temp directory, removed after it, and closes the stores it opened.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import {
  appendFile,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { writeAt } from '../helpers/file-writes.js';
import { directIoInTmpdir } from '../helpers/direct-io.js';
import { chunkChecksum } from '../../src/store/checksum.js';
import { DIRECT_IO_ALIGN } from '../../src/store/aligned-memory.js';
import { StoreError, isStoreError, type StoreErrorCode } from '../../src/store/errors.js';
import {
  RECORD_HEADER_BYTES,
  VOLUME_FILE_HEADER_BYTES,
  VolumeChunkStore,
  volumeFileName,
  type VolumeChunkStoreOptions,
} from '../../src/store/volume-chunk-store.js';

// Faults injected into every file handle opened through node:fs/promises, checked at each call:
// 'enospc' writes half of the first buffer and then fails with ENOSPC (a disk filling up in the
// middle of a record); 'eio' fails fdatasync, and the writes of a handle opened with O_DSYNC
// (whose every write ends with the flush that failed); 'einval' refuses opens with O_DIRECT, as
// tmpfs does; `fileLimit` refuses, with ENOSPC and nothing written, a write that would take a
// file past that many bytes (a disk with that little room); `creates` 'enospc' refuses to create
// files (a full disk, on which files already there may still have blocks to write into).
interface Faults {
  writes: 'ok' | 'enospc';
  creates: 'ok' | 'enospc';
  fileLimit: number | undefined;
  partialWritten: boolean;
  datasync: 'ok' | 'eio';
  direct: 'ok' | 'einval';
  /** Counted, not injected: handles opened with O_DSYNC, and fdatasync calls. */
  dsyncOpens: string[];
  datasyncs: number;
}
const fault = vi.hoisted((): Faults => ({
  writes: 'ok',
  creates: 'ok',
  fileLimit: undefined,
  partialWritten: false,
  datasync: 'ok',
  direct: 'ok',
  dsyncOpens: [],
  datasyncs: 0,
}));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const failure = (code: string, syscall: string): Promise<never> =>
    Promise.reject(Object.assign(new Error(`${code}: injected, ${syscall}`), { code, syscall }));
  const open: typeof real.open = async (...args) => {
    const flags = args[1];
    if (fault.direct === 'einval' && typeof flags === 'number' && flags & constants.O_DIRECT) {
      return failure('EINVAL', 'open');
    }
    if (fault.creates === 'enospc' && typeof flags === 'number' && flags & constants.O_CREAT) {
      return failure('ENOSPC', 'open');
    }
    const handle = await real.open(...args);
    const dsync = typeof flags === 'number' && (flags & constants.O_DSYNC) !== 0;
    if (dsync) fault.dsyncOpens.push(String(args[0]));
    return new Proxy(handle, {
      get(target, prop) {
        if (prop === 'writev') {
          return async (buffers: NodeJS.ArrayBufferView[], position?: number) => {
            if (dsync && fault.datasync === 'eio') return failure('EIO', 'write');
            const bytes = buffers.reduce((n, b) => n + b.byteLength, 0);
            if (fault.fileLimit !== undefined && (position ?? 0) + bytes > fault.fileLimit)
              return failure('ENOSPC', 'write');
            if (fault.writes !== 'enospc') return target.writev(buffers, position);
            const first = buffers[0];
            if (fault.partialWritten || first === undefined || first.byteLength < 2) {
              return failure('ENOSPC', 'write');
            }
            fault.partialWritten = true;
            const half = new Uint8Array(first.buffer, first.byteOffset, first.byteLength >> 1);
            const { bytesWritten } = await target.write(half, 0, half.byteLength, position);
            return { bytesWritten, buffers };
          };
        }
        if (prop === 'datasync') {
          fault.datasyncs++;
          if (fault.datasync === 'eio') return () => failure('EIO', 'fdatasync');
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function'
          ? (value as (...a: unknown[]) => unknown).bind(target)
          : value;
      },
    });
  };
  return { ...real, default: { ...real, open }, open };
});

const directIo = await directIoInTmpdir();
if (!directIo.works) console.log(`skipping the direct-I/O tests: ${directIo.why}`);

const temps: string[] = [];
const opened: VolumeChunkStore[] = [];
afterEach(async () => {
  fault.writes = 'ok';
  fault.creates = 'ok';
  fault.fileLimit = undefined;
  fault.partialWritten = false;
  fault.datasync = 'ok';
  fault.direct = 'ok';
  fault.dsyncOpens = [];
  fault.datasyncs = 0;
  await Promise.all(opened.splice(0).map((s) => s.close()));
  await Promise.all(temps.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'memflow-volumes-'));
  temps.push(dir);
  return dir;
}

async function openStore(
  dir: string,
  options: VolumeChunkStoreOptions = {},
): Promise<VolumeChunkStore> {
  const store = await VolumeChunkStore.open(dir, options);
  opened.push(store);
  return store;
}

async function expectCode(promise: Promise<unknown>, code: StoreErrorCode): Promise<StoreError> {
  try {
    await promise;
  } catch (err) {
    expect(isStoreError(err), String(err)).toBe(true);
    expect((err as StoreError).code, (err as Error).message).toBe(code);
    return err as StoreError;
  }
  throw new Error(`expected ${code}, but the call succeeded`);
}

/** Puts `count` random chunks of `size` bytes named `${prefix}${i}`, one after another. */
async function putMany(
  store: VolumeChunkStore,
  count: number,
  size = 4096,
  prefix = 'c',
): Promise<Map<string, Buffer>> {
  const chunks = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    const data = randomBytes(size);
    await store.put(`${prefix}${i}`, data, chunkChecksum(data));
    chunks.set(`${prefix}${i}`, data);
  }
  return chunks;
}

async function expectContents(store: VolumeChunkStore, chunks: Map<string, Buffer>): Promise<void> {
  expect(store.list().map((c) => c.id)).toEqual([...chunks.keys()].sort());
  let used = 0;
  for (const [id, data] of chunks) {
    const got = await store.get(id);
    // Buffer.equals: toEqual compares byte by byte through generic iteration, far too slowly.
    if (!got.equals(data)) expect(got, id).toEqual(data);
    used += data.byteLength;
  }
  expect(store.usedBytes()).toBe(used);
}

async function volumeFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('volume-')).sort();
}

const MiB = 1024 * 1024;

/** Where a buffer's content ends: past its last byte that is not zero. */
function contentEnd(bytes: Uint8Array): number {
  let end = bytes.byteLength;
  while (end > 0 && bytes[end - 1] === 0) end--;
  return end;
}

/** Where a chunk's record ends in its volume. */
function recordEnd(store: VolumeChunkStore, id: string): number {
  const where = store.locate(id);
  return where.dataOffset + where.sizeBytes;
}

/** Stores `text` as chunk `id`, and records it in `chunks`, the model of what the store holds. */
async function putText(
  store: VolumeChunkStore,
  chunks: Map<string, Buffer>,
  id: string,
  text: string,
): Promise<void> {
  const data = Buffer.from(text);
  await store.put(id, data, chunkChecksum(data));
  chunks.set(id, data);
}

/**
 * A fresh folder holding `count` chunks of `size` bytes, the store closed: its chunks, where the
 * last one's record starts and ends, and volume 1's path and size.
 */
async function closedVolume(
  count: number,
  size: number,
): Promise<{
  dir: string;
  chunks: Map<string, Buffer>;
  lastStart: number;
  end: number;
  path: string;
  size: number;
}> {
  const dir = await freshDir();
  const store = await openStore(dir);
  const chunks = await putMany(store, count, size);
  const last = `c${count - 1}`;
  const lastStart = store.locate(last).recordOffset;
  const end = recordEnd(store, last);
  await store.close();
  const path = join(dir, volumeFileName(1));
  return { dir, chunks, lastStart, end, path, size: (await stat(path)).size };
}

/** Flips one byte of a file at `offset`. */
async function flipByte(path: string, offset: number): Promise<void> {
  const bytes = await readFile(path);
  bytes[offset] = (bytes[offset] ?? 0) ^ 0x5a;
  await writeFile(path, bytes);
}

describe('VolumeChunkStore', () => {
  it('writes the documented format: a volume header, then header + id + data per record', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const data = Buffer.from('hello volume');
    await store.put('u1.0', data, chunkChecksum(data));
    expect(await store.delete('u1.0')).toBe(true);
    await store.close();

    expect(await volumeFiles(dir)).toEqual([volumeFileName(1)]);
    expect(volumeFileName(1)).toBe('volume-00000001.dat');
    const file = await readFile(join(dir, volumeFileName(1)));
    expect(file.toString('latin1', 0, 8)).toBe('MFVOLUME');
    expect(file.readUInt32LE(8)).toBe(2); // format
    expect(file.readUInt32LE(12)).toBe(1); // volume number
    const put = VOLUME_FILE_HEADER_BYTES;
    expect(file.readUInt32LE(put)).toBe(0x5243464d);
    expect(file.toString('latin1', put, put + 4)).toBe('MFCR');
    expect(file[put + 4]).toBe(1); // put
    expect(file[put + 5]).toBe(4); // id length
    expect(file.readUInt32LE(put + 8) + file.readUInt32LE(put + 12) * 2 ** 32).toBe(1); // seq
    expect(file.readUInt32LE(put + 16)).toBe(data.byteLength);
    expect(file.toString('hex', put + 20, put + 52)).toBe(chunkChecksum(data));
    const crc = zlib.crc32(
      file.subarray(put + RECORD_HEADER_BYTES, put + RECORD_HEADER_BYTES + 4),
      zlib.crc32(file.subarray(put, put + 52)),
    );
    expect(file.readUInt32LE(put + 52)).toBe(crc);
    expect(file.toString('latin1', put + 56, put + 60)).toBe('u1.0');
    expect(file.subarray(put + 60, put + 60 + data.byteLength)).toEqual(data);
    const del = put + 60 + data.byteLength;
    expect(file[del + 4]).toBe(2); // delete
    expect(file.readUInt32LE(del + 8)).toBe(2); // seq
    expect(file.readUInt32LE(del + 16)).toBe(0);
    // One put and a tombstone: no runway (it comes with small puts one after another).
    expect(file.byteLength).toBe(del + RECORD_HEADER_BYTES + 4);
  });

  it('writes no runway for large puts and the tombstones between them (a large file replaced)', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    for (let i = 0; i < 3; i++) {
      const big = randomBytes(MiB);
      await store.put(`big${i}`, big, chunkChecksum(big));
      if (i > 0) expect(await store.delete(`big${i - 1}`)).toBe(true);
    }
    const path = join(dir, volumeFileName(1));
    const size = (await stat(path)).size;
    expect(contentEnd(await readFile(path))).toBeGreaterThan(size - 2 * DIRECT_IO_ALIGN);
    await store.close();
  });

  it('writes small puts inside a runway of zeros written ahead of them, and keeps it on reopen', async () => {
    const { dir, chunks, end, path, size } = await closedVolume(50, 4096);
    // One runway of 4 MiB, written before the first put, served all 50.
    expect(size - end).toBeGreaterThan(4 * MiB - 256 * 1024);
    expect(size - end).toBeLessThan(4 * MiB);
    expect(contentEnd(await readFile(path))).toBe(end);

    const reopened = await openStore(dir);
    await expectContents(reopened, chunks);
    expect(reopened.stats().recovery).toEqual({ droppedTailBytes: 0, damagedVolumes: [] });
    expect((await stat(path)).size).toBe(size);
    // Appends go on right after the last record, inside the same runway.
    await putText(reopened, chunks, 'more', 'after the runway was found again');
    expect(reopened.locate('more').recordOffset).toBe(end);
    await reopened.close();
    expect((await stat(path)).size).toBe(size);
    await expectContents(await openStore(dir), chunks);
  });

  it('takes small puts without a runway where the disk has no room for one', async () => {
    const dir = await freshDir();
    fault.fileLimit = 256 * 1024;
    const store = await openStore(dir);
    const chunks = await putMany(store, 10, 4096);
    const end = recordEnd(store, 'c9');
    const path = join(dir, volumeFileName(1));
    expect((await stat(path)).size).toBe(end);
    await store.close();
    const reopened = await openStore(dir);
    await expectContents(reopened, chunks);
    expect(reopened.stats().recovery).toEqual({ droppedTailBytes: 0, damagedVolumes: [] });
    // Room again: the next small puts write their runway first.
    fault.fileLimit = undefined;
    for (const id of ['more', 'and-more'])
      await putText(reopened, chunks, id, `${id}, with a runway again`);
    expect((await stat(path)).size).toBeGreaterThan(end + 4 * MiB - 1024);
    await reopened.close();
    await expectContents(await openStore(dir), chunks);
  });

  it('reads a volume that was rolled over with its runway as whole, not damaged', async () => {
    const dir = await freshDir();
    const store = await openStore(dir, { volumeBytes: 64 * 1024 });
    const chunks = await putMany(store, 40, 4000);
    await store.close();
    expect((await volumeFiles(dir)).length).toBeGreaterThan(1);
    const reopened = await openStore(dir, { volumeBytes: 64 * 1024 });
    await expectContents(reopened, chunks);
    expect(reopened.stats().recovery).toEqual({ droppedTailBytes: 0, damagedVolumes: [] });
  });

  it('finds everything again after a reopen, deletions and re-puts included', async () => {
    const dir = await freshDir();
    const first = await openStore(dir);
    const chunks = await putMany(first, 20, 1000);
    for (const id of ['c3', 'c7', 'c11']) {
      expect(await first.delete(id)).toBe(true);
      chunks.delete(id);
    }
    // Deleted, then stored again with other content: the newer record wins on replay.
    const again = Buffer.from('new content of c7');
    await first.put('c7', again, chunkChecksum(again));
    chunks.set('c7', again);
    await first.put('empty', Buffer.alloc(0), chunkChecksum(Buffer.alloc(0)));
    chunks.set('empty', Buffer.alloc(0));

    // Without close(), as after a crash of the process: acknowledged puts and written deletes
    // are all in the file.
    const second = await openStore(dir);
    expect(second.list()).toEqual(first.list());
    await expectContents(second, chunks);
    expect(second.has('c3')).toBe(false);
    await expectCode(second.get('c11'), 'STORE_NOT_FOUND');
    expect(second.stats().recovery).toEqual({ droppedTailBytes: 0, damagedVolumes: [] });

    // Sequence numbers continue after the highest one found: a delete after reopen sticks.
    expect(await second.delete('c7')).toBe(true);
    chunks.delete('c7');
    await second.close();
    await expectContents(await openStore(dir), chunks);
  });

  it('drops a record cut short at the end of the newest volume and truncates the file', async () => {
    const { dir, chunks, lastStart, end, path } = await closedVolume(3, 3000);
    await truncate(path, end - 1000);

    const reopened = await openStore(dir);
    chunks.delete('c2');
    await expectContents(reopened, chunks);
    expect(reopened.stats().recovery.droppedTailBytes).toBe(end - 1000 - lastStart);
    expect((await stat(path)).size).toBe(lastStart);
    // Appends continue right after the last good record and survive the next reopen.
    await putText(reopened, chunks, 'more', 'after the torn tail');
    await reopened.close();
    const third = await openStore(dir);
    await expectContents(third, chunks);
    expect(third.stats().recovery.droppedTailBytes).toBe(0);
  });

  it('drops garbage after the last record (a write torn inside the runway), and nothing else', async () => {
    for (const tail of [randomBytes(1000), Buffer.alloc(5000), Buffer.from('MFCR')]) {
      const { dir, chunks, end, path, size } = await closedVolume(5, 2000);
      await writeAt(path, tail, end);

      const reopened = await openStore(dir);
      await expectContents(reopened, chunks);
      // What held something is dropped (the file cut back to the last record); zeros are the
      // runway and stay.
      const dropped = contentEnd(tail);
      expect(reopened.stats().recovery.droppedTailBytes).toBe(dropped);
      expect((await stat(path)).size).toBe(dropped > 0 ? end : size);
      expect(reopened.stats().recovery.damagedVolumes).toEqual([]);
      // Appends go on after the last record.
      await putText(reopened, chunks, 'more', 'after the tail');
      await reopened.close();
      await expectContents(await openStore(dir), chunks);
    }
  });

  it('drops garbage appended past the runway, and nothing else', async () => {
    const { dir, chunks, end, path, size } = await closedVolume(5, 2000);
    await appendFile(path, Buffer.from('MFCR'));
    const reopened = await openStore(dir);
    await expectContents(reopened, chunks);
    expect(reopened.stats().recovery.droppedTailBytes).toBe(size + 4 - end);
    expect((await stat(path)).size).toBe(end);
    expect(reopened.stats().recovery.damagedVolumes).toEqual([]);
  });

  it('cuts off a last record whose data fails its checksum, as a torn write', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const chunks = await putMany(store, 4, 2000);
    const last = store.locate('c3');
    await store.damage('c3');
    await expectCode(store.get('c3'), 'STORE_CORRUPT');
    await store.close();

    const reopened = await openStore(dir);
    chunks.delete('c3');
    await expectContents(reopened, chunks);
    expect(reopened.stats().recovery.droppedTailBytes).toBe(
      RECORD_HEADER_BYTES + 2 + last.sizeBytes,
    );
  });

  it('throws STORE_CORRUPT for a damaged chunk only, before and after a reopen', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const chunks = await putMany(store, 10, 4096);
    await store.damage('c4', 17);
    const err = await expectCode(store.get('c4'), 'STORE_CORRUPT');
    expect(err.detail).toMatchObject({ id: 'c4', expected: chunkChecksum(chunks.get('c4')!) });
    chunks.delete('c4');
    for (const [id, data] of chunks) expect(await store.get(id)).toEqual(data);
    expect(store.has('c4')).toBe(true);

    await expect(store.damage('c1', 4096)).rejects.toThrow(RangeError);
    await expectCode(store.damage('nope'), 'STORE_NOT_FOUND');
    await store.close();

    // Good records follow it, so it is damage rather than a torn tail: kept, and still corrupt.
    const reopened = await openStore(dir);
    await expectCode(reopened.get('c4'), 'STORE_CORRUPT');
    for (const [id, data] of chunks) expect(await reopened.get(id)).toEqual(data);
    expect(reopened.stats().recovery).toEqual({ droppedTailBytes: 0, damagedVolumes: [] });
  });

  it('skips the rest of a volume damaged in the middle, reports it, and keeps working', async () => {
    const dir = await freshDir();
    const store = await openStore(dir, { volumeBytes: 16 * 1024, autoCompact: false });
    const chunks = await putMany(store, 12, 4000);
    const files = await volumeFiles(dir);
    expect(files.length).toBeGreaterThanOrEqual(3);
    // Break the header CRC of the second record of volume 1.
    const hit = store.locate('c1');
    expect(hit.volume).toBe(1);
    const lost = store.list().filter((c) => store.locate(c.id).volume === 1 && c.id !== 'c0');
    await store.close();
    await flipByte(hit.path, hit.recordOffset + 52);

    const reopened = await openStore(dir, { volumeBytes: 16 * 1024, autoCompact: false });
    const recovery = reopened.stats().recovery;
    expect(recovery.droppedTailBytes).toBe(0);
    expect(recovery.damagedVolumes).toEqual([
      {
        volume: 1,
        file: volumeFileName(1),
        offset: hit.recordOffset,
        skippedBytes: (await stat(hit.path)).size - hit.recordOffset,
        reason: 'the record header fails its CRC',
      },
    ]);
    for (const c of lost) chunks.delete(c.id);
    await expectContents(reopened, chunks);
    for (const c of lost) await expectCode(reopened.get(c.id), 'STORE_NOT_FOUND');
    // The coordinator's repair puts the lost chunks back.
    const repaired = await putMany(reopened, lost.length, 4000, 'again');
    for (const [id, data] of repaired) chunks.set(id, data);
    await expectContents(reopened, chunks);

    // The damaged volume is mostly garbage: compaction rewrites what was readable and drops it.
    const result = await reopened.compact();
    expect(result.volumes).toContain(1);
    expect(await volumeFiles(dir)).not.toContain(volumeFileName(1));
    await expectContents(reopened, chunks);
    await reopened.close();
    const third = await openStore(dir, { volumeBytes: 16 * 1024 });
    await expectContents(third, chunks);
    expect(third.stats().recovery.damagedVolumes).toEqual([]);
  });

  it('damage in the newest volume beyond the re-verified tail: sealed, and a new volume begun', async () => {
    const dir = await freshDir();
    // autoCompact off: the damaged volume is mostly garbage, and compaction would remove it.
    const options = { tailCheckBytes: 0, autoCompact: false };
    const store = await openStore(dir, options);
    const chunks = await putMany(store, 5, 1000);
    const hit = store.locate('c2');
    await store.close();
    await flipByte(hit.path, hit.recordOffset + 1);

    const reopened = await openStore(dir, options);
    expect(reopened.stats().recovery.damagedVolumes).toMatchObject([
      { volume: 1, offset: hit.recordOffset, reason: 'no record starts here' },
    ]);
    expect(reopened.stats().currentVolume).toBe(2);
    for (const id of ['c2', 'c3', 'c4']) chunks.delete(id);
    await expectContents(reopened, chunks);
    const later = await putMany(reopened, 3, 1000, 'later');
    for (const [id, data] of later) chunks.set(id, data);
    await reopened.close();
    // The damaged volume was not appended to, so the new records are not lost behind it.
    const third = await openStore(dir, options);
    await expectContents(third, chunks);
    expect(third.stats().recovery.damagedVolumes).toHaveLength(1);
  });

  it('group commit: 2,000 concurrent 4 KiB puts share a few fdatasyncs and all survive', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const before = store.stats().syncs;
    const chunks = new Map<string, Buffer>();
    for (let i = 0; i < 2000; i++) chunks.set(`g${i}`, randomBytes(4096));
    await Promise.all([...chunks].map(([id, data]) => store.put(id, data, chunkChecksum(data))));
    const syncs = store.stats().syncs - before;
    expect(store.stats().puts).toBe(2000);
    expect(syncs).toBeGreaterThan(0);
    expect(syncs).toBeLessThan(20);
    await store.close();

    const reopened = await openStore(dir);
    await expectContents(reopened, chunks);
  });

  it('small puts are durable when written: the newest volume is O_DSYNC, no fdatasync is called', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    expect(fault.dsyncOpens).toContain(join(dir, volumeFileName(1)));
    const datasyncsBefore = fault.datasyncs;
    const syncsBefore = store.stats().syncs;
    const chunks = new Map<string, Buffer>();
    for (let i = 0; i < 20; i++) {
      const data = randomBytes(4096);
      await store.put(`d${i}`, data, chunkChecksum(data));
      chunks.set(`d${i}`, data);
    }
    // One durable write each (counted as a sync), and not one fdatasync.
    expect(store.stats().syncs - syncsBefore).toBe(20);
    expect(fault.datasyncs - datasyncsBefore).toBe(0);
    // A volume started later is opened the same way.
    const rolled = await openStore(await freshDir(), {
      volumeBytes: 64 * 1024,
      autoCompact: false,
    });
    for (let i = 0; i < 40; i++) {
      const data = randomBytes(4096);
      await rolled.put(`r${i}`, data, chunkChecksum(data));
    }
    expect(rolled.stats().volumes).toBeGreaterThan(1);
    expect(fault.dsyncOpens).toContain(join(rolled.dir, volumeFileName(2)));
    await expectContents(store, chunks);
  });

  it('group commit under a steady load: 16 writers putting one chunk after another', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const before = store.stats().syncs;
    const chunks = new Map<string, Buffer>();
    await Promise.all(
      Array.from({ length: 16 }, async (_, w) => {
        for (let i = 0; i < 50; i++) {
          const data = randomBytes(4096);
          await store.put(`w${w}.${i}`, data, chunkChecksum(data));
          chunks.set(`w${w}.${i}`, data);
        }
      }),
    );
    const syncs = store.stats().syncs - before;
    expect(syncs).toBeLessThan(800 / 4);
    await expectContents(store, chunks);
  });

  it('writes many large chunks at once, more than it lets wait for a sync, and keeps them all', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const contents = Array.from({ length: 4 }, () => randomBytes(4 * 1024 * 1024));
    const chunks = new Map<string, Buffer>();
    for (let i = 0; i < 24; i++) chunks.set(`big${i}`, contents[i % 4]!);
    // 96 MiB in flight: the writer runs ahead of the syncs only so far (48 MiB), then waits.
    await Promise.all([...chunks].map(([id, d]) => store.put(id, d, chunkChecksum(d))));
    expect(store.stats().syncs).toBeGreaterThan(2);
    await store.close();
    await expectContents(await openStore(dir), chunks);
  });

  it('starts the next volume when a batch would take the current one past volumeBytes', async () => {
    const dir = await freshDir();
    const volumeBytes = 64 * 1024;
    const store = await openStore(dir, { volumeBytes, autoCompact: false });
    const chunks = await putMany(store, 40, 4096);
    // Parallel puts too: a batch is split at the volume boundary.
    const parallel = new Map<string, Buffer>();
    for (let i = 0; i < 40; i++) parallel.set(`p${i}`, randomBytes(4096));
    await Promise.all([...parallel].map(([id, d]) => store.put(id, d, chunkChecksum(d))));
    for (const [id, d] of parallel) chunks.set(id, d);
    // A chunk larger than a volume gets a volume of its own.
    const huge = randomBytes(100 * 1024);
    await store.put('huge', huge, chunkChecksum(huge));
    chunks.set('huge', huge);

    const files = await volumeFiles(dir);
    expect(files.length).toBeGreaterThanOrEqual(6);
    expect(files[0]).toBe(volumeFileName(1));
    for (const name of files) {
      const size = (await stat(join(dir, name))).size;
      if (name !== volumeFileName(store.locate('huge').volume)) {
        expect(size, name).toBeLessThanOrEqual(volumeBytes);
      }
    }
    expect(store.stats().volumes).toBe(files.length);
    await expectContents(store, chunks);
    await store.close();
    await expectContents(await openStore(dir, { volumeBytes }), chunks);
  });

  it('compaction reclaims the space of deleted chunks and keeps the data', async () => {
    const dir = await freshDir();
    const options = { volumeBytes: 32 * 1024, autoCompact: false };
    const store = await openStore(dir, options);
    const chunks = await putMany(store, 60, 4096);
    for (let i = 0; i < 60; i++) {
      if (i % 3 !== 0) {
        await store.delete(`c${i}`);
        chunks.delete(`c${i}`);
      }
    }
    const before = store.stats();
    expect(before.garbageBytes).toBeGreaterThan(before.usedBytes);
    const filesBefore = await volumeFiles(dir);

    const result = await store.compact();
    expect(result.stopped).toBe(false);
    expect(result.volumes.length).toBeGreaterThan(3);
    expect(result.reclaimedBytes).toBeGreaterThan(0);
    const after = store.stats();
    expect(after.diskBytes).toBeLessThan(before.diskBytes - result.reclaimedBytes / 2);
    // reclaimedBytes does not count the 16-byte headers of volumes begun while copying.
    expect(after.diskBytes - (before.diskBytes - result.reclaimedBytes)).toBeLessThanOrEqual(
      VOLUME_FILE_HEADER_BYTES * after.volumes,
    );
    expect(after.garbageBytes).toBeLessThan(before.garbageBytes / 2);
    expect(after.compaction).toMatchObject({ volumesCompacted: result.volumes.length });
    const filesAfter = await volumeFiles(dir);
    for (const n of result.volumes) expect(filesAfter).not.toContain(volumeFileName(n));
    expect(filesAfter.length).toBeLessThan(filesBefore.length);
    await expectContents(store, chunks);
    // Nothing more to do.
    expect((await store.compact()).volumes).toEqual([]);
    await store.close();

    const reopened = await openStore(dir, options);
    await expectContents(reopened, chunks);
    for (let i = 1; i < 60; i += 3) expect(reopened.has(`c${i}`)).toBe(false);
  });

  it('seals the newest volume early once most of it is deleted, so its space comes back without writing a volume more', async () => {
    const dir = await freshDir();
    // 1 MiB volumes: sealing early needs 64 KiB of dead puts, and more than 3/4 of the records.
    const options = { volumeBytes: MiB };
    const store = await openStore(dir, options);
    const chunks = await putMany(store, 40, 8192);
    expect(await volumeFiles(dir)).toEqual([volumeFileName(1)]);
    // 36 of 40 deleted (288 KiB dead): volume 1 is sealed before a later tombstone is written.
    for (let i = 0; i < 36; i++) {
      await store.delete(`c${i}`);
      chunks.delete(`c${i}`);
    }
    await store.compact(); // after the background one, which may already have done it
    // Its 4 live chunks were copied on and the file removed (what is on disk now is the next
    // volume, whose size is mostly the zeros of its runway).
    expect(await volumeFiles(dir)).not.toContain(volumeFileName(1));
    expect(store.stats().compaction.volumesCompacted).toBe(1);
    await expectContents(store, chunks);
    await store.close();
    const reopened = await openStore(dir, options);
    await expectContents(reopened, chunks);
    for (let i = 0; i < 36; i++) expect(reopened.has(`c${i}`)).toBe(false);
  });

  it('takes deletions in the newest volume when sealing it early fails on a full disk', async () => {
    const dir = await freshDir();
    const options = { volumeBytes: MiB };
    const store = await openStore(dir, options);
    const chunks = await putMany(store, 40, 8192);
    fault.creates = 'enospc';
    for (let i = 0; i < 36; i++) {
      await store.delete(`c${i}`);
      chunks.delete(`c${i}`);
    }
    expect(await volumeFiles(dir)).toEqual([volumeFileName(1)]);
    fault.creates = 'ok';
    for (const [id, data] of await putMany(store, 2, 100, 'later')) chunks.set(id, data);
    await expectContents(store, chunks);
    await store.close();
    await expectContents(await openStore(dir, options), chunks);
  });

  it.each([
    // 56 KiB of dead puts: under a sixteenth of a volume.
    { stored: 8, deleted: 7, why: 'a few deletions' },
    // 192 KiB of dead puts, but 3/5 of the records: compacting would copy 2 bytes per 3 freed.
    { stored: 40, deleted: 24, why: 'a volume of which a quarter or more lives' },
  ])('does not seal the newest volume early for $why', async ({ stored, deleted }) => {
    const dir = await freshDir();
    const store = await openStore(dir, { volumeBytes: MiB });
    await putMany(store, stored, 8192);
    for (let i = 0; i < deleted; i++) await store.delete(`c${i}`);
    await putMany(store, 1, 100, 'next');
    expect(await volumeFiles(dir)).toEqual([volumeFileName(1)]);
  });

  it('does not seal the newest volume early for tombstones, which compaction may carry on', async () => {
    const dir = await freshDir();
    // No background compaction: it would move volume 1's chunks into volume 2 midway, and their
    // deletions would then be dead puts there.
    const store = await openStore(dir, { volumeBytes: 64 * 1024, autoCompact: false });
    // Small chunks until one lands in volume 2; then every one in volume 1 is deleted, which
    // writes their tombstones into volume 2: most of its records, but no dead puts.
    const inFirst: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const data = randomBytes(100);
      await store.put(`t${i}`, data, chunkChecksum(data));
      if (store.locate(`t${i}`).volume === 2) break;
      inFirst.push(`t${i}`);
    }
    expect(inFirst.length).toBeGreaterThan(200);
    for (const id of inFirst) await store.delete(id);
    await putMany(store, 1, 100, 'next');
    expect(await volumeFiles(dir)).toEqual([volumeFileName(1), volumeFileName(2)]);
    // Volume 1, all dead puts now, goes; volume 2 stays the newest.
    await store.compact();
    expect(await volumeFiles(dir)).toEqual([volumeFileName(2)]);
  });

  it('carries a tombstone over while the put it deleted still lies in an older volume', async () => {
    const dir = await freshDir();
    const options = { volumeBytes: 16 * 1024, autoCompact: false };
    const store = await openStore(dir, options);
    // Volume 1: X and two chunks that stay, so volume 1 stays mostly live.
    const chunks = await putMany(store, 1, 1000, 'x');
    for (const [id, d] of await putMany(store, 2, 6000, 'keep')) chunks.set(id, d);
    expect(store.locate('x0').volume).toBe(1);
    // Volume 2: X's tombstone among chunks deleted again, so volume 2 is mostly garbage.
    const filler = await putMany(store, 3, 5000, 'gone');
    expect(store.locate('gone0').volume).toBe(2);
    expect(await store.delete('x0')).toBe(true);
    chunks.delete('x0');
    for (const id of filler.keys()) await store.delete(id);
    for (const [id, d] of await putMany(store, 3, 5000, 'later')) chunks.set(id, d);

    const result = await store.compact();
    expect(result.volumes).toEqual([2]);
    expect(result.copiedRecords).toBeGreaterThanOrEqual(1); // the tombstone of x0
    expect(await volumeFiles(dir)).toContain(volumeFileName(1));
    await store.close();

    // Without the carried tombstone, x0's put in volume 1 would come back.
    const reopened = await openStore(dir, options);
    expect(reopened.has('x0')).toBe(false);
    await expectContents(reopened, chunks);

    // Once volume 1 is gone as well, nothing is left to resurrect.
    for (const id of ['keep0', 'keep1']) {
      await reopened.delete(id);
      chunks.delete(id);
    }
    await reopened.compact({ minGarbageRatio: 0 });
    await reopened.close();
    const third = await openStore(dir, options);
    expect(third.has('x0')).toBe(false);
    await expectContents(third, chunks);
  });

  it('keeps the newest content of an id deleted and stored again across compaction', async () => {
    const dir = await freshDir();
    const options = { volumeBytes: 8 * 1024, autoCompact: false };
    const store = await openStore(dir, options);
    const chunks = new Map<string, Buffer>();
    for (let round = 0; round < 6; round++) {
      const data = Buffer.from(`round ${round} `.repeat(300));
      if (round > 0) await store.delete('x');
      await store.put('x', data, chunkChecksum(data));
      chunks.set('x', data);
    }
    await store.compact({ minGarbageRatio: 0 });
    await expectContents(store, chunks);
    await store.close();
    const reopened = await openStore(dir, options);
    await expectContents(reopened, chunks);
  });

  it('serves reads and writes before, during and after a compaction', async () => {
    const dir = await freshDir();
    const options = { volumeBytes: 256 * 1024, autoCompact: false };
    const store = await openStore(dir, options);
    const chunks = await putMany(store, 400, 4096);
    for (let i = 0; i < 400; i += 2) {
      await store.delete(`c${i}`);
      chunks.delete(`c${i}`);
    }
    const ids = [...chunks.keys()];
    let done = false;
    const compaction = store.compact().finally(() => (done = true));
    let reads = 0;
    let readsDuring = 0;
    let writes = 0;
    while (!done || reads < 50) {
      if (!done) readsDuring++;
      const id = ids[Math.floor(Math.random() * ids.length)]!;
      expect((await store.get(id)).equals(chunks.get(id)!), id).toBe(true);
      reads++;
      if (reads % 10 === 0) {
        const data = randomBytes(4096);
        await store.put(`during${writes}`, data, chunkChecksum(data));
        chunks.set(`during${writes++}`, data);
      }
    }
    const result = await compaction;
    expect(result.volumes.length).toBeGreaterThan(0);
    expect(readsDuring).toBeGreaterThan(10);
    await expectContents(store, chunks);
    await store.close();
    await expectContents(await openStore(dir, options), chunks);
  });

  it('loses nothing when a compaction stops midway, as in a crash, and finishes it later', async () => {
    const dir = await freshDir();
    const options = { volumeBytes: 64 * 1024, autoCompact: false };
    const store = await openStore(dir, options);
    const chunks = await putMany(store, 40, 4096);
    for (let i = 0; i < 40; i++) {
      if (i % 4 !== 0) {
        await store.delete(`c${i}`);
        chunks.delete(`c${i}`);
      }
    }
    const filesBefore = await volumeFiles(dir);
    const partial = await store.compact({ stopAfterRecords: 2 });
    expect(partial).toMatchObject({ stopped: true, copiedRecords: 2, volumes: [] });
    // No volume removed (the copies may have sealed the newest one early and begun another).
    expect(await volumeFiles(dir)).toEqual(expect.arrayContaining(filesBefore));
    await expectContents(store, chunks);

    // "Crash": open the directory again without closing the first store. Two copies of the moved
    // records exist; each chunk is there once.
    const afterCrash = await openStore(dir, options);
    await expectContents(afterCrash, chunks);
    for (let i = 1; i < 40; i += 4) expect(afterCrash.has(`c${i}`)).toBe(false);
    await store.close();

    const finished = await afterCrash.compact();
    expect(finished.stopped).toBe(false);
    expect(finished.volumes.length).toBeGreaterThan(0);
    await expectContents(afterCrash, chunks);
    await afterCrash.close();
    const third = await openStore(dir, options);
    await expectContents(third, chunks);
    expect(third.stats().recovery).toEqual({ droppedTailBytes: 0, damagedVolumes: [] });
  });

  it('matches a model through random puts, deletes, compactions and reopens, buffered and direct', async () => {
    // A small seeded PRNG (mulberry32), so a failure can be replayed. Each seed runs through the
    // page cache only, and with every batch of 1000 bytes or more written with O_DIRECT (so
    // buffered records, pads and direct records mix in every volume and in compactions).
    const runs = [1, 2, 3].flatMap((n): [number, number][] => [
      [n, Infinity],
      [n, 1000],
    ]);
    for (const [seed, directIoFromBytes] of runs) {
      let state = seed * 0x9e3779b9;
      const random = (): number => {
        state = (state + 0x6d2b79f5) | 0;
        let t = Math.imul(state ^ (state >>> 15), 1 | state);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
      };
      const dir = await freshDir();
      const options = { volumeBytes: 8 * 1024, directIoFromBytes };
      let store = await openStore(dir, options);
      expect(store.stats().directIo).toBe(directIoFromBytes !== Infinity && directIo.works);
      const model = new Map<string, Buffer>();
      for (let step = 0; step < 300; step++) {
        const id = `k${Math.floor(random() * 25)}`;
        const roll = random();
        if (roll < 0.45) {
          const data = randomBytes(Math.floor(random() * 2500));
          const existing = model.get(id);
          if (existing === undefined) {
            await store.put(id, data, chunkChecksum(data));
            model.set(id, data);
          } else {
            await store.put(id, existing, chunkChecksum(existing)); // idempotent
          }
        } else if (roll < 0.8) {
          expect(await store.delete(id), `${seed}/${directIoFromBytes}/${step} delete ${id}`).toBe(
            model.delete(id),
          );
        } else if (roll < 0.88) {
          await store.compact({ minGarbageRatio: random() * 0.6 });
        } else if (roll < 0.94) {
          // Interrupted compaction, then a restart.
          await store.compact({ minGarbageRatio: 0, stopAfterRecords: Math.floor(random() * 4) });
          await store.close();
          store = await openStore(dir, options);
        } else {
          await store.close();
          store = await openStore(dir, options);
        }
        const listed = store.list().map((c) => c.id);
        expect(listed, `${seed}/${directIoFromBytes}/${step}`).toEqual([...model.keys()].sort());
        const stats = store.stats();
        expect(stats.garbageBytes, `${seed}/${directIoFromBytes}/${step}`).toBeGreaterThanOrEqual(
          0,
        );
        expect(stats.recovery, `${seed}/${directIoFromBytes}/${step}`).toEqual({
          droppedTailBytes: 0,
          damagedVolumes: [],
        });
      }
      await expectContents(store, model);
      await store.close();
      await expectContents(await openStore(dir, options), model);
    }
  });

  it('stays consistent when puts, deletes and compactions of overlapping ids run at once', async () => {
    const dir = await freshDir();
    const options = { volumeBytes: 16 * 1024 };
    const store = await openStore(dir, options);
    // Operations on one id run in call order, so the model is updated at call time.
    const model = new Map<string, Buffer>();
    const pending: Promise<void>[] = [];
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 20; i++) {
        const id = `k${(round * 7 + i * 3) % 23}`;
        if ((round + i) % 3 === 0) {
          const expected = model.delete(id);
          pending.push(store.delete(id).then((deleted) => expect(deleted, id).toBe(expected)));
        } else {
          const data = model.get(id) ?? randomBytes(500 + ((round * i) % 1500));
          model.set(id, data);
          pending.push(store.put(id, data, chunkChecksum(data)));
        }
      }
      if (round % 5 === 4) pending.push(store.compact({ minGarbageRatio: 0.2 }).then(() => {}));
      // Let part of the work go to disk before the next round piles on.
      if (round % 2 === 1) await pending[pending.length - 10];
    }
    await Promise.all(pending);
    expect(store.stats().compaction.volumesCompacted).toBeGreaterThan(0);
    await expectContents(store, model);
    await store.compact({ minGarbageRatio: 0 });
    await expectContents(store, model);
    await store.close();
    await expectContents(await openStore(dir, options), model);
  });

  it('compacts in the background after deletes leave a volume mostly garbage', async () => {
    const dir = await freshDir();
    const store = await openStore(dir, { volumeBytes: 32 * 1024 });
    const chunks = await putMany(store, 30, 4096);
    for (let i = 0; i < 30; i++) {
      if (i % 5 !== 0) {
        await store.delete(`c${i}`);
        chunks.delete(`c${i}`);
      }
    }
    const deadline = Date.now() + 10_000;
    while (store.stats().compaction.volumesCompacted === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(store.stats().compaction.volumesCompacted).toBeGreaterThan(0);
    expect(store.stats().compaction.lastError).toBeUndefined();
    await expectContents(store, chunks);
    await store.close();
    await expectContents(await openStore(dir), chunks);
  });

  it('drops a chunk found damaged while compacting instead of copying the damage', async () => {
    const dir = await freshDir();
    const options = { volumeBytes: 32 * 1024, autoCompact: false };
    const store = await openStore(dir, options);
    const chunks = await putMany(store, 20, 4096);
    await store.damage('c1');
    chunks.delete('c1');
    for (const id of ['c0', 'c2', 'c3', 'c4', 'c5']) {
      await store.delete(id);
      chunks.delete(id);
    }
    await store.compact();
    expect(store.stats().compaction.corruptDropped).toBe(1);
    expect(store.has('c1')).toBe(false);
    await expectContents(store, chunks);
    await store.close();
    const reopened = await openStore(dir, options);
    expect(reopened.has('c1')).toBe(false);
    await expectContents(reopened, chunks);
  });

  it('limits chunk bytes (not file overhead) to capacityBytes, also after a reopen', async () => {
    const dir = await freshDir();
    const store = await openStore(dir, { capacityBytes: 10_000 });
    const a = randomBytes(4000);
    const b = randomBytes(4000);
    await store.put('a', a, chunkChecksum(a));
    await store.put('b', b, chunkChecksum(b));
    const c = randomBytes(4000);
    const err = await expectCode(store.put('c', c, chunkChecksum(c)), 'STORE_NO_SPACE');
    expect(err.detail).toMatchObject({ neededBytes: 4000, availableBytes: 2000 });
    await store.close();

    const reopened = await openStore(dir, { capacityBytes: 10_000 });
    expect(reopened.usedBytes()).toBe(8000);
    await expectCode(reopened.put('c', c, chunkChecksum(c)), 'STORE_NO_SPACE');
    await reopened.delete('a');
    await reopened.put('c', c, chunkChecksum(c));
    expect(reopened.usedBytes()).toBe(8000);
  });

  it('maps ENOSPC to STORE_NO_SPACE and cuts the partial record off', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const chunks = await putMany(store, 3, 4096);
    const path = join(dir, volumeFileName(1));
    const end = recordEnd(store, 'c2');
    fault.writes = 'enospc';
    const data = randomBytes(100_000);
    const err = await expectCode(store.put('full', data, chunkChecksum(data)), 'STORE_NO_SPACE');
    expect(fault.partialWritten).toBe(true);
    expect(err.detail).toMatchObject({ id: 'full', errno: 'ENOSPC', neededBytes: 100_000 });
    // Cut back to the last good record (the runway after it too).
    expect((await stat(path)).size).toBe(end);
    expect(store.has('full')).toBe(false);
    fault.writes = 'ok';
    // Room again: the same put succeeds, right after the last good record.
    await store.put('full', data, chunkChecksum(data));
    chunks.set('full', data);
    await expectContents(store, chunks);
    await store.close();
    const reopened = await openStore(dir);
    await expectContents(reopened, chunks);
    expect(reopened.stats().recovery.droppedTailBytes).toBe(0);
  });

  it('stops accepting writes after a failed flush (an O_DSYNC write), keeps serving reads', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const chunks = await putMany(store, 2, 4096);
    fault.datasync = 'eio';
    const data = randomBytes(4096);
    const err = await expectCode(store.put('unsure', data, chunkChecksum(data)), 'STORE_INTERNAL');
    expect(err.detail).toMatchObject({ errno: 'EIO' });
    fault.datasync = 'ok';
    await expectCode(store.put('later', data, chunkChecksum(data)), 'STORE_INTERNAL');
    await expectCode(store.delete('c0'), 'STORE_INTERNAL');
    await expectContents(store, chunks);
    await store.close();
    // A restart rescans the file: what is there and intact is served again.
    const reopened = await openStore(dir);
    for (const [id, d] of chunks) expect(await reopened.get(id)).toEqual(d);
    await reopened.put('later', data, chunkChecksum(data));
  });

  it('refuses everything but has, list and usedBytes after close', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const data = Buffer.from('x');
    await store.put('x', data, chunkChecksum(data));
    await store.close();
    await store.close();
    await expectCode(store.put('y', data, chunkChecksum(data)), 'STORE_UNAVAILABLE');
    await expectCode(store.get('x'), 'STORE_UNAVAILABLE');
    await expectCode(store.delete('x'), 'STORE_UNAVAILABLE');
    await expectCode(store.compact(), 'STORE_UNAVAILABLE');
    expect(store.has('x')).toBe(true);
    expect(store.list()).toHaveLength(1);
    expect(store.usedBytes()).toBe(1);
  });

  it('checks its options and leaves foreign files alone', async () => {
    const dir = await freshDir();
    await expect(VolumeChunkStore.open(dir, { capacityBytes: -1 })).rejects.toThrow(RangeError);
    await expect(VolumeChunkStore.open(dir, { volumeBytes: 100 })).rejects.toThrow(RangeError);
    await writeFile(join(dir, 'README'), 'not a volume');
    await writeFile(join(dir, 'volume-x.dat'), 'not a volume either');
    const store = await openStore(dir);
    expect(store.list()).toEqual([]);
    expect((await readdir(dir)).sort()).toEqual(['README', volumeFileName(1), 'volume-x.dat']);
  });

  it('restarts a newest volume whose header a crash cut short', async () => {
    const dir = await freshDir();
    const store = await openStore(dir, { volumeBytes: 8192 });
    const chunks = await putMany(store, 3, 3000);
    await store.close();
    const files = await volumeFiles(dir);
    const next = volumeFileName(files.length + 1);
    await writeFile(join(dir, next), Buffer.from('MFVOL'));
    const reopened = await openStore(dir, { volumeBytes: 8192 });
    expect(reopened.stats().currentVolume).toBe(files.length + 1);
    expect(reopened.stats().recovery.droppedTailBytes).toBe(5);
    await expectContents(reopened, chunks);
    const more = await putMany(reopened, 1, 100, 'more');
    for (const [id, d] of more) chunks.set(id, d);
    await reopened.close();
    await expectContents(await openStore(dir), chunks);
  });
});

describe.skipIf(!directIo.works)('VolumeChunkStore with direct I/O', () => {
  it('writes large chunks with O_DIRECT at aligned offsets between pads, small ones buffered, and reads all back', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    expect(store.stats().directIo).toBe(true);
    const chunks = new Map<string, Buffer>();
    // Odd sizes, so that neither records nor batches end on an alignment boundary by chance.
    const sizes = [MiB + 7, 4096, 3 * MiB + 1, 10, 600 * 1024, 0, 2 * MiB];
    for (const [i, size] of sizes.entries()) {
      const data = randomBytes(size);
      await store.put(`m${i}`, data, chunkChecksum(data));
      chunks.set(`m${i}`, data);
    }
    const large = sizes.flatMap((size, i) => (size >= 512 * 1024 ? [`m${i}`] : []));
    for (const id of large) expect(store.locate(id).recordOffset % DIRECT_IO_ALIGN, id).toBe(0);
    expect(store.stats().directBatches).toBe(large.length);
    await expectContents(store, chunks);
    // Pads are neither chunks nor live bytes: a few KiB of garbage per large chunk at most.
    expect(store.stats().garbageBytes).toBeLessThan(large.length * 2 * (DIRECT_IO_ALIGN + 57));
    await store.close();

    const reopened = await openStore(dir);
    await expectContents(reopened, chunks);
    expect(reopened.stats().recovery).toEqual({ droppedTailBytes: 0, damagedVolumes: [] });
    // Damage is still found: a direct read sees a byte changed through the page cache.
    await reopened.damage('m2', 12345);
    await expectCode(reopened.get('m2'), 'STORE_CORRUPT');
  });

  it('a large put waits for an fdatasync; after a failed one, no write is accepted until a restart', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const first = randomBytes(MiB);
    await store.put('big0', first, chunkChecksum(first));
    // The volume now ends aligned: the next large batch needs no pad written through O_DSYNC.
    const datasyncs = fault.datasyncs;
    fault.datasync = 'eio';
    const data = randomBytes(MiB);
    const err = await expectCode(store.put('big1', data, chunkChecksum(data)), 'STORE_INTERNAL');
    expect(err.detail).toMatchObject({ errno: 'EIO' });
    expect(fault.datasyncs).toBe(datasyncs + 1);
    fault.datasync = 'ok';
    const small = randomBytes(10);
    await expectCode(store.put('later', small, chunkChecksum(small)), 'STORE_INTERNAL');
    expect((await store.get('big0')).equals(first)).toBe(true);
  });

  it('serves 24 concurrent reads of large chunks, more than it has aligned buffers for', async () => {
    const store = await openStore(await freshDir());
    const chunks = await putMany(store, 6, MiB + 333);
    const ids = [...chunks.keys()];
    const reads = await Promise.all(
      Array.from({ length: 24 }, (_, i) => store.get(ids[i % ids.length]!)),
    );
    reads.forEach((got, i) => expect(got.equals(chunks.get(ids[i % ids.length]!)!)).toBe(true));
  });

  it('cuts off a direct write torn before its data reached the disk, pad and all', async () => {
    const dir = await freshDir();
    const store = await openStore(dir);
    const chunks = await putMany(store, 2, MiB);
    const torn = randomBytes(MiB + 100);
    await store.put('torn', torn, chunkChecksum(torn));
    const where = store.locate('torn');
    await store.close();
    // The record's header and closing pad were written, its data blocks were not (the disk may
    // complete the blocks of one write in any order before a crash).
    const path = join(dir, volumeFileName(1));
    const file = await readFile(path);
    file.fill(0, where.dataOffset, where.dataOffset + where.sizeBytes);
    await writeFile(path, file);

    const reopened = await openStore(dir);
    await expectContents(reopened, chunks);
    // Up to the closing pad's header: its zeros count as nothing.
    expect(reopened.stats().recovery.droppedTailBytes).toBe(contentEnd(file) - where.recordOffset);
    expect(reopened.stats().recovery.damagedVolumes).toEqual([]);
    // Writing goes on after the cut, aligned again.
    const next = randomBytes(MiB);
    await reopened.put('next', next, chunkChecksum(next));
    chunks.set('next', next);
    expect(reopened.locate('next').recordOffset % DIRECT_IO_ALIGN).toBe(0);
    await reopened.close();
    await expectContents(await openStore(dir), chunks);
  });

  it('goes through the page cache where O_DIRECT is refused, with the same results', async () => {
    fault.direct = 'einval';
    const dir = await freshDir();
    const store = await openStore(dir);
    expect(store.stats().directIo).toBe(false);
    const chunks = await putMany(store, 3, 2 * MiB);
    expect(store.stats().directBatches).toBe(0);
    await expectContents(store, chunks);
    await store.close();
    // Written without pads, read later with direct I/O: the same chunks.
    fault.direct = 'ok';
    const reopened = await openStore(dir);
    expect(reopened.stats().directIo).toBe(true);
    await expectContents(reopened, chunks);
  });

  it('compacts volumes of direct records and pads, and keeps every live chunk', async () => {
    const dir = await freshDir();
    const store = await openStore(dir, { volumeBytes: 8 * MiB, autoCompact: false });
    const chunks = await putMany(store, 12, MiB + 1000);
    for (let i = 0; i < 12; i += 3) {
      expect(await store.delete(`c${i}`)).toBe(true);
      chunks.delete(`c${i}`);
    }
    for (let i = 1; i < 12; i += 3) {
      expect(await store.delete(`c${i}`)).toBe(true);
      chunks.delete(`c${i}`);
    }
    const result = await store.compact();
    expect(result.volumes.length).toBeGreaterThan(0);
    await expectContents(store, chunks);
    await store.close();
    const reopened = await openStore(dir);
    await expectContents(reopened, chunks);
    expect(reopened.stats().recovery).toEqual({ droppedTailBytes: 0, damagedVolumes: [] });
  });

  it('reads a volume of format 1 and appends to a new volume instead', async () => {
    const dir = await freshDir();
    const store = await openStore(dir, { directIoFromBytes: Infinity });
    const chunks = await putMany(store, 3, 5000);
    await store.close();
    const path = join(dir, volumeFileName(1));
    const file = await readFile(path);
    file.writeUInt32LE(1, 8); // what the store wrote before pads existed
    await writeFile(path, file);

    const reopened = await openStore(dir);
    await expectContents(reopened, chunks);
    const big = randomBytes(MiB);
    await reopened.put('big', big, chunkChecksum(big));
    chunks.set('big', big);
    expect(reopened.locate('big').volume).toBe(2);
    expect((await readFile(path)).readUInt32LE(8)).toBe(1);
    await reopened.close();
    await expectContents(await openStore(dir), chunks);
  });
});
