/**
 * Chunk stores. Goal: MemoryChunkStore and DiskChunkStore keep the one ChunkStore contract
 * (src/store/chunk-store.ts), so simulations on the memory store predict the disk store; the disk
 * store also survives restarts, detects damaged files and cleans up after interrupted puts.
 * Method: one contract suite run against each store (disk stores in a fresh temp directory,
 * removed after each test), then disk-only tests that reach into the directory: reopen, flip a
 * byte, plant temp files, and fail writes with ENOSPC through a mocked node:fs/promises.
 * The file also pins the checksums (known BLAKE3 and sha256 vectors) and StoreError's wire form.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { directIoInTmpdir } from '../helpers/direct-io.js';
import {
  CHUNK_CHECKSUM_HEX_LENGTH,
  chunkChecksum,
  createFileHasher,
  isChunkChecksum,
} from '../../src/store/checksum.js';
import {
  MAX_CHUNK_ID_LENGTH,
  MemoryChunkStore,
  validateChunkId,
  type ChunkStore,
} from '../../src/store/chunk-store.js';
import { DiskChunkStore, chunkSubdir } from '../../src/store/disk-chunk-store.js';
import { VolumeChunkStore } from '../../src/store/volume-chunk-store.js';
import {
  StoreError,
  fromWireError,
  isStoreError,
  toWireError,
  type StoreErrorCode,
} from '../../src/store/errors.js';

// Writes through node:fs/promises fail with ENOSPC while `fault.enospc` is set; otherwise the
// real module is used untouched.
const fault = vi.hoisted(() => ({ enospc: false }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const enospc = (): Promise<never> =>
    Promise.reject(
      Object.assign(new Error('ENOSPC: no space left on device, write'), {
        code: 'ENOSPC',
        syscall: 'write',
      }),
    );
  const open: typeof real.open = async (...args) => {
    const handle = await real.open(...args);
    if (!fault.enospc) return handle;
    return new Proxy(handle, {
      get(target, prop) {
        if (prop === 'write' || prop === 'writeFile' || prop === 'writev') return enospc;
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function'
          ? (value as (...a: unknown[]) => unknown).bind(target)
          : value;
      },
    });
  };
  return { ...real, default: { ...real, open }, open };
});

const temps: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'memflow-chunks-'));
  temps.push(dir);
  return dir;
}
afterEach(async () => {
  fault.enospc = false;
  await Promise.all(temps.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

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

function expectThrowCode(fn: () => unknown, code: StoreErrorCode): void {
  try {
    fn();
  } catch (err) {
    expect(isStoreError(err, code), String(err)).toBe(true);
    return;
  }
  throw new Error(`expected ${code}, but the call succeeded`);
}

function bytes(text: string): Buffer {
  return Buffer.from(text);
}

type StoreFactory = (capacityBytes?: number) => Promise<ChunkStore>;

const BAD_IDS: unknown[] = [
  '',
  '.',
  '..',
  '.hidden',
  'a/b',
  '../escape',
  '/abs',
  'a\\b',
  'a b',
  'a\u0000b',
  'é',
  'x'.repeat(MAX_CHUNK_ID_LENGTH + 1),
  42,
  undefined,
];

function describeChunkStoreContract(kind: string, make: StoreFactory): void {
  describe(`ChunkStore contract: ${kind}`, () => {
    let store: ChunkStore;
    beforeEach(async () => {
      store = await make();
    });

    it('gets back what it put, and lists and counts it', async () => {
      const data = bytes('hello chunk');
      await store.put('u1.0', data, chunkChecksum(data));
      expect(store.has('u1.0')).toBe(true);
      expect(await store.get('u1.0')).toEqual(data);
      expect(store.list()).toEqual([
        { id: 'u1.0', sizeBytes: data.byteLength, checksum: chunkChecksum(data) },
      ]);
      expect(store.usedBytes()).toBe(data.byteLength);
    });

    it('stores an empty chunk and a 1 MiB chunk of random bytes', async () => {
      const empty = Buffer.alloc(0);
      const big = randomBytes(1 << 20);
      await store.put('empty', empty, chunkChecksum(empty));
      await store.put('big', big, chunkChecksum(big));
      expect((await store.get('empty')).byteLength).toBe(0);
      expect((await store.get('big')).equals(big)).toBe(true);
      expect(store.usedBytes()).toBe(1 << 20);
      expect(store.chunkCount()).toBe(2);
    });

    it('accepts a plain Uint8Array as data', async () => {
      const data = new Uint8Array([1, 2, 3]);
      await store.put('plain', data, chunkChecksum(data));
      expect([...(await store.get('plain'))]).toEqual([1, 2, 3]);
    });

    it('refuses data that does not match the checksum with STORE_CORRUPT and stores nothing', async () => {
      const err = await expectCode(
        store.put('c', bytes('real'), chunkChecksum(bytes('other'))),
        'STORE_CORRUPT',
      );
      expect(err.detail).toMatchObject({ id: 'c', actual: chunkChecksum(bytes('real')) });
      expect(store.has('c')).toBe(false);
      expect(store.list()).toEqual([]);
      expect(store.usedBytes()).toBe(0);
      expect(store.chunkCount()).toBe(0);
      await expectCode(store.put('c', bytes('x'), 'not a checksum'), 'STORE_CORRUPT');
    });

    it('is idempotent for the same id and checksum, even when the puts race', async () => {
      const data = bytes('same');
      const sum = chunkChecksum(data);
      await Promise.all([store.put('s', data, sum), store.put('s', data, sum)]);
      await store.put('s', data, sum);
      expect(store.list()).toHaveLength(1);
      expect(store.usedBytes()).toBe(data.byteLength);
    });

    it('refuses other content under a stored id with STORE_CONFLICT and keeps the original', async () => {
      await store.put('k', bytes('first'), chunkChecksum(bytes('first')));
      const err = await expectCode(
        store.put('k', bytes('second'), chunkChecksum(bytes('second'))),
        'STORE_CONFLICT',
      );
      expect(err.detail).toMatchObject({ id: 'k', storedChecksum: chunkChecksum(bytes('first')) });
      expect((await store.get('k')).toString()).toBe('first');
      // Delete first, then the new content is accepted.
      expect(await store.delete('k')).toBe(true);
      await store.put('k', bytes('second'), chunkChecksum(bytes('second')));
      expect((await store.get('k')).toString()).toBe('second');
    });

    it('throws STORE_NOT_FOUND for an id it does not hold', async () => {
      const err = await expectCode(store.get('missing'), 'STORE_NOT_FOUND');
      expect(err.detail).toEqual({ id: 'missing' });
      expect(store.has('missing')).toBe(false);
    });

    it('deletes: true once, false after, and the bytes are no longer counted', async () => {
      await store.put('a', bytes('aaaa'), chunkChecksum(bytes('aaaa')));
      await store.put('b', bytes('bb'), chunkChecksum(bytes('bb')));
      expect(await store.delete('a')).toBe(true);
      expect(await store.delete('a')).toBe(false);
      expect(await store.delete('never')).toBe(false);
      expect(store.has('a')).toBe(false);
      await expectCode(store.get('a'), 'STORE_NOT_FOUND');
      expect(store.usedBytes()).toBe(2);
      expect(store.list().map((c) => c.id)).toEqual(['b']);
    });

    it('lists chunks sorted by id', async () => {
      for (const id of ['z', 'B', 'a.1', 'a.10', 'a.2', '0']) {
        await store.put(id, bytes(id), chunkChecksum(bytes(id)));
      }
      expect(store.list().map((c) => c.id)).toEqual(['0', 'B', 'a.1', 'a.10', 'a.2', 'z']);
    });

    it('keeps its own copy: changing the buffer put or the buffer got changes nothing stored', async () => {
      const data = bytes('original');
      await store.put('copy', data, chunkChecksum(data));
      data.fill(0);
      const got = await store.get('copy');
      expect(got.toString()).toBe('original');
      got.fill(0);
      expect((await store.get('copy')).toString()).toBe('original');
    });

    it('ends consistent when puts and deletes of one id race', async () => {
      const data = bytes('racing');
      const sum = chunkChecksum(data);
      await Promise.all([
        store.put('r', data, sum),
        store.delete('r'),
        store.put('r', data, sum),
        store.delete('r'),
        store.put('r', data, sum),
      ]);
      // Operations on one id run in call order, so the last put wins.
      expect(store.has('r')).toBe(true);
      expect(store.usedBytes()).toBe(data.byteLength);
      expect((await store.get('r')).toString()).toBe('racing');
    });

    it('refuses bad ids with STORE_BAD_REQUEST on every method', async () => {
      const data = bytes('x');
      for (const id of BAD_IDS) {
        const bad = id as string;
        await expectCode(store.put(bad, data, chunkChecksum(data)), 'STORE_BAD_REQUEST');
        await expectCode(store.get(bad), 'STORE_BAD_REQUEST');
        await expectCode(store.delete(bad), 'STORE_BAD_REQUEST');
        expectThrowCode(() => store.has(bad), 'STORE_BAD_REQUEST');
      }
      expect(store.list()).toEqual([]);
      const longest = 'x'.repeat(MAX_CHUNK_ID_LENGTH);
      await store.put(longest, data, chunkChecksum(data));
      expect(store.has(longest)).toBe(true);
    });

    it('refuses data that is not bytes and checksums that are not strings', async () => {
      await expectCode(
        store.put('t', 'text' as unknown as Uint8Array, chunkChecksum(bytes('text'))),
        'STORE_BAD_REQUEST',
      );
      await expectCode(store.put('t', bytes('t'), 7 as unknown as string), 'STORE_BAD_REQUEST');
    });

    describe('with a capacity of 100 bytes', () => {
      beforeEach(async () => {
        store = await make(100);
      });

      it('accepts puts up to exactly the capacity, then throws STORE_NO_SPACE', async () => {
        const sixty = Buffer.alloc(60, 1);
        const forty = Buffer.alloc(40, 2);
        await store.put('sixty', sixty, chunkChecksum(sixty));
        await store.put('forty', forty, chunkChecksum(forty));
        const one = Buffer.alloc(1, 3);
        const err = await expectCode(store.put('one', one, chunkChecksum(one)), 'STORE_NO_SPACE');
        expect(err.detail).toMatchObject({ neededBytes: 1, availableBytes: 0 });
        expect(store.has('one')).toBe(false);
        await store.delete('forty');
        await store.put('one', one, chunkChecksum(one));
        expect(store.usedBytes()).toBe(61);
      });

      it('lets only as many parallel puts through as fit', async () => {
        const chunks = Array.from({ length: 5 }, (_, i) => Buffer.alloc(30, i));
        const results = await Promise.allSettled(
          chunks.map((c, i) => store.put(`p${i}`, c, chunkChecksum(c))),
        );
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(3);
        for (const r of results) {
          if (r.status === 'rejected') expect(isStoreError(r.reason, 'STORE_NO_SPACE')).toBe(true);
        }
        expect(store.usedBytes()).toBe(90);
      });
    });
  });
}

const directIo = await directIoInTmpdir();

describeChunkStoreContract('MemoryChunkStore', (capacityBytes) =>
  Promise.resolve(new MemoryChunkStore(capacityBytes)),
);
describeChunkStoreContract('DiskChunkStore', async (capacityBytes) =>
  DiskChunkStore.open(await freshDir(), { capacityBytes }),
);
describe('VolumeChunkStore (contract)', () => {
  // Volume stores hold open files: close them before the temp directories go.
  const opened: VolumeChunkStore[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
  });
  describeChunkStoreContract('VolumeChunkStore', async (capacityBytes) => {
    const store = await VolumeChunkStore.open(await freshDir(), { capacityBytes });
    opened.push(store);
    return store;
  });
  // Every batch with O_DIRECT, tombstones included: pads around every write.
  if (!directIo.works) console.log(`skipping the direct-I/O contract run: ${directIo.why}`);
  else
    describeChunkStoreContract('VolumeChunkStore, every write direct', async (capacityBytes) => {
      const store = await VolumeChunkStore.open(await freshDir(), {
        capacityBytes,
        directIoFromBytes: 0,
      });
      opened.push(store);
      expect(store.stats().directIo).toBe(true);
      return store;
    });
});

describe('MemoryChunkStore only', () => {
  it('damage() makes the next get throw STORE_CORRUPT (bit rot for simulations)', async () => {
    const store = new MemoryChunkStore();
    await store.put('d', bytes('data'), chunkChecksum(bytes('data')));
    store.damage('d');
    await expectCode(store.get('d'), 'STORE_CORRUPT');
    expect(() => store.damage('d', 99)).toThrow(RangeError);
    expectThrowCode(() => store.damage('nope'), 'STORE_NOT_FOUND');
  });
});

describe('DiskChunkStore only', () => {
  async function filesUnder(dir: string): Promise<string[]> {
    const out: string[] = [];
    for (const sub of await readdir(dir)) {
      for (const name of await readdir(join(dir, sub))) out.push(`${sub}/${name}`);
    }
    return out.sort();
  }

  it('lays a chunk out as <hash byte>/<id>.<checksum> holding exactly its bytes', async () => {
    const dir = await freshDir();
    const store = await DiskChunkStore.open(dir);
    const data = bytes('layout');
    await store.put('u7.3', data, chunkChecksum(data));
    const sub = chunkSubdir('u7.3');
    expect(sub).toMatch(/^[0-9a-f]{2}$/);
    expect(await filesUnder(dir)).toEqual([`${sub}/u7.3.${chunkChecksum(data)}`]);
    expect(await readFile(join(dir, sub, `u7.3.${chunkChecksum(data)}`))).toEqual(data);
  });

  it('spreads many chunks over many of the 256 subdirectories', async () => {
    const subs = new Set(Array.from({ length: 2000 }, (_, i) => chunkSubdir(`u${i}.0`)));
    expect(subs.size).toBeGreaterThan(240);
  });

  it('finds its chunks and used bytes again after a reopen', async () => {
    const dir = await freshDir();
    const first = await DiskChunkStore.open(dir);
    const contents = ['one', 'two.2', 'three-3_'].map((id) => ({
      id,
      data: bytes(`data of ${id}`),
    }));
    for (const { id, data } of contents) await first.put(id, data, chunkChecksum(data));
    await first.delete('one');

    const second = await DiskChunkStore.open(dir);
    expect(second.list()).toEqual(first.list());
    expect(second.usedBytes()).toBe(first.usedBytes());
    expect((await second.get('two.2')).toString()).toBe('data of two.2');
    expect(second.has('one')).toBe(false);
  });

  it('throws STORE_CORRUPT when a byte of the chunk file flips', async () => {
    const dir = await freshDir();
    const store = await DiskChunkStore.open(dir);
    const data = bytes('precious bytes');
    await store.put('flip', data, chunkChecksum(data));
    const path = join(dir, chunkSubdir('flip'), `flip.${chunkChecksum(data)}`);
    const onDisk = await readFile(path);
    onDisk[3] = (onDisk[3] ?? 0) ^ 0x01;
    await writeFile(path, onDisk);
    const err = await expectCode(store.get('flip'), 'STORE_CORRUPT');
    expect(err.detail).toMatchObject({ id: 'flip', expected: chunkChecksum(data) });
    // A restart does not launder the damage: the checksum lives in the file name.
    await expectCode((await DiskChunkStore.open(dir)).get('flip'), 'STORE_CORRUPT');
  });

  it('throws STORE_CORRUPT when the chunk file was truncated', async () => {
    const dir = await freshDir();
    const store = await DiskChunkStore.open(dir);
    const data = bytes('will be cut short');
    await store.put('cut', data, chunkChecksum(data));
    await writeFile(
      join(dir, chunkSubdir('cut'), `cut.${chunkChecksum(data)}`),
      data.subarray(0, 4),
    );
    await expectCode(store.get('cut'), 'STORE_CORRUPT');
  });

  it('throws STORE_NOT_FOUND (and forgets the chunk) when its file vanished behind its back', async () => {
    const dir = await freshDir();
    const store = await DiskChunkStore.open(dir);
    const data = bytes('gone');
    await store.put('gone', data, chunkChecksum(data));
    await rm(join(dir, chunkSubdir('gone'), `gone.${chunkChecksum(data)}`));
    await expectCode(store.get('gone'), 'STORE_NOT_FOUND');
    expect(store.has('gone')).toBe(false);
    expect(store.usedBytes()).toBe(0);
  });

  it('removes temp files of interrupted puts on open, and does not count them', async () => {
    const dir = await freshDir();
    const store = await DiskChunkStore.open(dir);
    const data = bytes('kept');
    await store.put('kept', data, chunkChecksum(data));
    const sub = chunkSubdir('kept');
    await writeFile(join(dir, sub, '.tmp.kept.0123456789abcdef'), 'half a chunk');
    await writeFile(join(dir, sub, '.tmp.other.fedcba9876543210'), 'another half');
    const reopened = await DiskChunkStore.open(dir);
    expect(await filesUnder(dir)).toEqual([`${sub}/kept.${chunkChecksum(data)}`]);
    expect(reopened.usedBytes()).toBe(data.byteLength);
  });

  it('leaves foreign and misplaced files alone and does not list them', async () => {
    const dir = await freshDir();
    await DiskChunkStore.open(dir);
    const data = bytes('misplaced');
    const right = chunkSubdir('m');
    const wrong = right === '00' ? '01' : '00';
    await rm(join(dir, wrong), { recursive: true, force: true });
    await mkdir(join(dir, wrong), { recursive: true });
    await writeFile(join(dir, wrong, `m.${chunkChecksum(data)}`), data);
    await writeFile(join(dir, 'README'), 'not a chunk');
    const store = await DiskChunkStore.open(dir);
    expect(store.list()).toEqual([]);
    expect((await stat(join(dir, 'README'))).isFile()).toBe(true);
  });

  it('maps ENOSPC from the disk to STORE_NO_SPACE and leaves no temp file behind', async () => {
    const dir = await freshDir();
    const store = await DiskChunkStore.open(dir);
    const data = bytes('does not fit on the disk');
    await store.put('warmup', data, chunkChecksum(data)); // creates a subdirectory or two
    fault.enospc = true;
    const err = await expectCode(store.put('full', data, chunkChecksum(data)), 'STORE_NO_SPACE');
    expect(err.detail).toMatchObject({ id: 'full', errno: 'ENOSPC', neededBytes: data.byteLength });
    expect(err.cause).toBeInstanceOf(Error);
    fault.enospc = false;
    expect(store.has('full')).toBe(false);
    expect(store.usedBytes()).toBe(data.byteLength);
    expect((await filesUnder(dir)).filter((f) => f.includes('.tmp.'))).toEqual([]);
    // The disk has room again: the same put now succeeds.
    await store.put('full', data, chunkChecksum(data));
    expect(store.has('full')).toBe(true);
  });

  it('cannot be made to write outside its directory by any id', async () => {
    const dir = await freshDir();
    const store = await DiskChunkStore.open(join(dir, 'store'));
    for (const id of ['../x', '..', 'a/../../x', '/etc/passwd']) {
      await expectCode(store.put(id, bytes('x'), chunkChecksum(bytes('x'))), 'STORE_BAD_REQUEST');
    }
    expect(await readdir(dir)).toEqual(['store']);
  });
});

describe('checksums', () => {
  it('chunkChecksum is BLAKE3-256 in lower-case hex (official test vector of the empty input)', () => {
    expect(chunkChecksum(new Uint8Array(0))).toBe(
      'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262',
    );
    expect(chunkChecksum(bytes('abc'))).toHaveLength(CHUNK_CHECKSUM_HEX_LENGTH);
    expect(isChunkChecksum(chunkChecksum(bytes('abc')))).toBe(true);
    expect(isChunkChecksum('AF13')).toBe(false);
  });

  it('createFileHasher is an incremental sha256, as sha256sum prints it', () => {
    const hasher = createFileHasher();
    hasher.update(bytes('a'));
    hasher.update(bytes('bc'));
    expect(hasher.digestHex()).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
    expect(() => hasher.update(bytes('late'))).toThrow(/after digestHex/);
    expect(() => hasher.digestHex()).toThrow(/twice/);
  });

  it('validateChunkId returns a good id unchanged', () => {
    expect(validateChunkId('u1a2b.17')).toBe('u1a2b.17');
  });
});

describe('StoreError on the wire', () => {
  it('keeps code, message and detail through toWireError and fromWireError', () => {
    const err = new StoreError('STORE_NO_SPACE', 'full', { neededBytes: 10, availableBytes: 3 });
    const wire = toWireError(err);
    expect(wire).toEqual({
      code: 'STORE_NO_SPACE',
      message: 'full',
      detail: { neededBytes: 10, availableBytes: 3 },
    });
    const back = fromWireError(structuredClone(wire));
    expect(back).toBeInstanceOf(StoreError);
    expect(back).toMatchObject({ code: 'STORE_NO_SPACE', message: 'full', detail: wire.detail });
    expect(toWireError(new StoreError('STORE_BUSY', 'busy'))).toEqual({
      code: 'STORE_BUSY',
      message: 'busy',
    });
  });

  it('turns anything else into STORE_INTERNAL carrying the message', () => {
    expect(toWireError(new TypeError('x is not a function'))).toEqual({
      code: 'STORE_INTERNAL',
      message: 'x is not a function',
      detail: { errorName: 'TypeError' },
    });
    expect(toWireError('a string')).toEqual({ code: 'STORE_INTERNAL', message: 'a string' });
  });

  it('reads an unknown code from a newer peer as STORE_INTERNAL, keeping the code in detail', () => {
    const back = fromWireError({ code: 'STORE_FUTURE' as StoreErrorCode, message: 'new' });
    expect(back).toMatchObject({ code: 'STORE_INTERNAL', detail: { wireCode: 'STORE_FUTURE' } });
  });

  it('carries the lower error as cause', () => {
    const cause = new Error('EIO');
    expect(new StoreError('STORE_INTERNAL', 'disk', {}, { cause }).cause).toBe(cause);
  });
});
