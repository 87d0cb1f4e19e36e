/**
 * The store's logic in simulation. Goal: what users rely on — round trips of every awkward size,
 * the seed's placement rule, atomic replacement, clean failure and clean-up of partial uploads,
 * integrity (a bad copy is never returned), refusal of bad input — holds with the coordinator and
 * data ranks running on the in-memory transport. Method: a StoreWorld (test/sim/store-world.ts)
 * per test, driven through the client protocol; faults come from the memory network (crash) and
 * from tampering with a data rank's memory chunk store; idle timeouts run on the manual clock.
 */
import { createHash } from 'node:crypto';
import { pack } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import type { FileMetadata, ListEntry, StatusResult } from '../../src/protocol/client-protocol.js';
import { content, ProtocolError, StoreWorld } from './store-world.js';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
let world: StoreWorld | undefined;

async function startWorld(
  options: ConstructorParameters<typeof StoreWorld>[0],
): Promise<StoreWorld> {
  world = new StoreWorld(options);
  await world.start();
  return world;
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<ProtocolError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProtocolError);
  expect((err as ProtocolError).wire.code).toBe(code);
  return err as ProtocolError;
}

afterEach(async () => {
  await world?.stop();
  world = undefined;
});

describe('round trips', () => {
  it.each([0, 1, 1023, 1024, 1025, 10 * 1024 + 7])(
    'a %i-byte file comes back byte for byte with 1 KiB chunks',
    async (length) => {
      const w = await startWorld({ dataRanks: 3 });
      const c = w.client();
      const data = content(length, length + 1);
      const meta = (await c.upload('f.bin', data)) as FileMetadata;
      expect(meta.sizeBytes).toBe(length);
      expect(meta.sha256).toBe(sha256(data));
      expect(meta.chunks).toHaveLength(Math.ceil(length / 1024));
      for (const chunk of meta.chunks)
        expect(new Set(chunk.copies.map((x) => x.rank)).size).toBe(2);
      expect(sha256(await c.download('f.bin'))).toBe(sha256(data));
    },
  );

  it('places primary and replica on the data ranks with the least stored data, ties to the lower rank', async () => {
    const w = await startWorld({ dataRanks: 3 });
    const c = w.client();
    const meta = (await c.upload('a', content(1024))) as FileMetadata;
    expect(meta.chunks[0]!.copies.map((x) => x.rank)).toEqual([1, 2]);
    const next = (await c.upload('b', content(1024, 2))) as FileMetadata;
    // Rank 3 is now the emptiest, then rank 1 (tie with 2, lower rank wins).
    expect(next.chunks[0]!.copies.map((x) => x.rank).sort()).toEqual([1, 3]);
  });

  it('with one data rank and 2 replicas stores one copy and still serves the file', async () => {
    const w = await startWorld({ dataRanks: 1, replicas: 2 });
    const c = w.client();
    const meta = (await c.upload('solo', content(3000))) as FileMetadata;
    expect(meta.chunks.every((x) => x.copies.length === 1)).toBe(true);
    expect(sha256(await c.download('solo'))).toBe(sha256(content(3000)));
  });
});

describe('one-round-trip requests for small files', () => {
  it('put-whole stores a one-chunk file with both copies, and get-whole returns it with its metadata', async () => {
    const w = await startWorld({ dataRanks: 3 });
    const c = w.client();
    const data = content(700, 3);
    const { chunkChecksum } = await import('../../src/store/checksum.js');
    const { reply } = await c.call<{ metadata: FileMetadata }>(
      { op: 'put-whole', name: 'tiny', checksum: chunkChecksum(data), sha256: sha256(data) },
      data,
    );
    expect(reply.metadata.chunks[0]!.copies.map((x) => x.rank)).toEqual([1, 2]);
    const got = await c.call<{ metadata: FileMetadata; whole: boolean }>({
      op: 'get-whole',
      name: 'tiny',
    });
    expect(got.reply.whole).toBe(true);
    expect(sha256(got.payload!)).toBe(sha256(data));
  });

  it('put-whole of more than a chunk is refused with the chunk size, and get-whole of a larger file starts a read', async () => {
    const w = await startWorld({ dataRanks: 2 });
    const c = w.client();
    const err = await expectCode(
      c.call(
        { op: 'put-whole', name: 'big', checksum: 'x', sha256: '0'.repeat(64) },
        content(2000),
      ),
      'STORE_BAD_REQUEST',
    );
    expect(err.wire.detail).toEqual({ chunkSizeBytes: 1024 });
    await c.upload('big', content(3000));
    const got = await c.call<{ readId: string; whole?: boolean }>({ op: 'get-whole', name: 'big' });
    expect(got.reply.whole).toBeUndefined();
    expect(got.reply.readId).toMatch(/^r/);
    await c.call({ op: 'get-end', readId: got.reply.readId });
  });
});

describe("rank 0's small-chunk cache", () => {
  it('answers a small read without a data rank, and never returns bytes that fail their checksum', async () => {
    const w = await startWorld({ dataRanks: 2, readCacheBytes: 1 << 20 });
    const c = w.client();
    const data = content(900, 4);
    await c.upload('cached', data);
    // Both copies rot on disk: the cache still holds the verified bytes written a moment ago.
    w.corruptCopies(1);
    w.corruptCopies(2);
    expect(sha256(await c.download('cached'))).toBe(sha256(data));
  });
});

describe('names, listing, metadata and deletion', () => {
  it('lists files in name order with size and health, and stat gives the same metadata as the upload', async () => {
    const w = await startWorld({ dataRanks: 3 });
    const c = w.client();
    await c.upload('zeta', content(10));
    const meta = (await c.upload('alpha ünïcode', content(2048))) as FileMetadata;
    const { reply } = await c.call<{ files: ListEntry[] }>({ op: 'list' });
    expect(reply.files.map((f) => [f.name, f.sizeBytes, f.health])).toEqual([
      ['alpha ünïcode', 2048, 'healthy'],
      ['zeta', 10, 'healthy'],
    ]);
    const stat = await c.call<{ metadata: FileMetadata }>({ op: 'stat', name: 'alpha ünïcode' });
    expect(stat.reply.metadata).toEqual(meta);
  });

  it.each(['', '.', '..', 'a/b', 'nul\u0000byte', 'x'.repeat(256)])(
    'refuses the name %j with STORE_BAD_NAME',
    async (name) => {
      const w = await startWorld({ dataRanks: 2 });
      await expectCode(w.client().call({ op: 'put-begin', name, sizeBytes: 1 }), 'STORE_BAD_NAME');
    },
  );

  it('an unknown name is STORE_NOT_FOUND for stat, get and delete', async () => {
    const w = await startWorld({ dataRanks: 2 });
    const c = w.client();
    await expectCode(c.call({ op: 'stat', name: 'nope' }), 'STORE_NOT_FOUND');
    await expectCode(c.call({ op: 'get-begin', name: 'nope' }), 'STORE_NOT_FOUND');
    await expectCode(c.call({ op: 'delete', name: 'nope' }), 'STORE_NOT_FOUND');
  });

  it('delete removes the file and, once no reader holds it, its chunk copies', async () => {
    const w = await startWorld({ dataRanks: 3 });
    const c = w.client();
    await c.upload('gone', content(5000));
    await c.call({ op: 'delete', name: 'gone' });
    await expectCode(c.call({ op: 'stat', name: 'gone' }), 'STORE_NOT_FOUND');
    await c.call({ op: 'list' }); // lets the deletes reach the data ranks
    await new Promise((resolve) => setImmediate(resolve));
    expect(w.stores.slice(1).reduce((n, s) => n + s.list().length, 0)).toBe(0);
  });
});

describe('atomic replacement', () => {
  it('a reader that began before a replace reads the old version whole; later readers get the new one', async () => {
    const w = await startWorld({ dataRanks: 3 });
    const c = w.client();
    const v1 = content(4096, 1);
    const v2 = content(6000, 2);
    await c.upload('doc', v1);
    const { reply } = await c.call<{ readId: string; metadata: FileMetadata }>({
      op: 'get-begin',
      name: 'doc',
    });
    const meta2 = (await c.upload('doc', v2)) as FileMetadata;
    expect(meta2.version).toBe(reply.metadata.version + 1);
    const parts = [];
    for (const ch of reply.metadata.chunks)
      parts.push(
        (await c.call({ op: 'get-chunk', readId: reply.readId, index: ch.index })).payload!,
      );
    await c.call({ op: 'get-end', readId: reply.readId });
    expect(sha256(Buffer.concat(parts))).toBe(sha256(v1));
    expect(sha256(await c.download('doc'))).toBe(sha256(v2));
  });

  it('an upload that is never committed leaves the old version visible and its chunks are removed when it goes idle', async () => {
    const w = await startWorld({ dataRanks: 3 });
    const c = w.client();
    await c.upload('keep', content(2048, 1));
    const before = w.stores.slice(1).reduce((n, s) => n + s.list().length, 0);
    await c.upload('keep', content(8192, 9), { commit: false });
    expect(sha256(await c.download('keep'))).toBe(sha256(content(2048, 1)));
    w.clock.advance(20_000);
    await c.call({ op: 'list' });
    await new Promise((resolve) => setImmediate(resolve));
    expect(w.stores.slice(1).reduce((n, s) => n + s.list().length, 0)).toBe(before);
  });

  it('put-abort removes the partial upload at once', async () => {
    const w = await startWorld({ dataRanks: 2 });
    const c = w.client();
    const uploadId = (await c.upload('half', content(4096), { commit: false })) as string;
    await c.call({ op: 'put-abort', uploadId });
    await expectCode(
      c.call({ op: 'put-commit', uploadId, sha256: '0'.repeat(64) }),
      'STORE_CONFLICT',
    );
    await new Promise((resolve) => setImmediate(resolve));
    expect(w.stores.slice(1).reduce((n, s) => n + s.list().length, 0)).toBe(0);
  });

  it('a commit with missing chunks is refused and names them', async () => {
    const w = await startWorld({ dataRanks: 2 });
    const c = w.client();
    const { reply } = await c.call<{ uploadId: string }>({
      op: 'put-begin',
      name: 'gap',
      sizeBytes: 3000,
    });
    const err = await expectCode(
      c.call({ op: 'put-commit', uploadId: reply.uploadId, sha256: '0'.repeat(64) }),
      'STORE_BAD_REQUEST',
    );
    expect(err.message).toContain('0, 1, 2');
  });
});

describe('integrity and failures', () => {
  it('a corrupt copy is skipped and the good copy returned', async () => {
    const w = await startWorld({ dataRanks: 2 });
    const c = w.client();
    const data = content(3000, 5);
    const meta = (await c.upload('c', data)) as FileMetadata;
    const primary = meta.chunks[0]!.copies[0]!.rank;
    w.corruptCopies(primary);
    expect(sha256(await c.download('c'))).toBe(sha256(data));
  });

  it('a read with many chunks in flight spreads over both holders instead of queueing on the primaries', async () => {
    // Two data ranks hold every chunk, and the tie rule makes rank 1 every chunk's primary.
    const w = await startWorld({ dataRanks: 2 });
    const c = w.client();
    const data = content(16 * 1024, 9); // 16 chunks: the most one client may have in flight
    const meta = (await c.upload('wide', data)) as FileMetadata;
    expect(meta.chunks.every((x) => x.copies[0]!.rank === 1)).toBe(true);
    const served = [0, 0, 0];
    for (const r of [1, 2]) {
      const store = w.stores[r]!;
      const get = store.get.bind(store);
      store.get = (id: string) => {
        served[r]!++;
        return get(id);
      };
    }
    expect(sha256(await c.download('wide'))).toBe(sha256(data));
    expect(served[1]! + served[2]!).toBe(16);
    expect(Math.min(served[1]!, served[2]!)).toBeGreaterThanOrEqual(6);
  });

  it('grants uploads and reads a window of 8 chunks; past twice that, a client gets STORE_BUSY', async () => {
    const w = await startWorld({ dataRanks: 2 });
    const c = w.client();
    await c.upload('wide', content(16 * 1024, 4)); // 16 chunks, sent at once: the limit
    const { reply: put } = await c.call<{ uploadId: string; maxChunksInFlight: number }>({
      op: 'put-begin',
      name: 'other',
      sizeBytes: 1024,
    });
    expect(put.maxChunksInFlight).toBe(8);
    await c.call({ op: 'put-abort', uploadId: put.uploadId });
    const { reply: read } = await c.call<{ readId: string; maxChunksInFlight: number }>({
      op: 'get-begin',
      name: 'wide',
    });
    expect(read.maxChunksInFlight).toBe(8);
    // 20 chunk requests at once: 16 are served, the 4 past the limit are refused.
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        c.call({ op: 'get-chunk', readId: read.readId, index: i % 16 }),
      ),
    );
    const busy = results.filter(
      (r) => r.status === 'rejected' && (r.reason as ProtocolError).wire.code === 'STORE_BUSY',
    );
    expect(busy).toHaveLength(4);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(16);
    expect(((busy[0] as PromiseRejectedResult).reason as ProtocolError).message).toContain(
      'limit 16',
    );
  });

  it('a data rank that crashed is passed over for reads and writes', async () => {
    const w = await startWorld({ dataRanks: 3 });
    const c = w.client();
    const data = content(5000, 3);
    await c.upload('before', data);
    w.network.crash(2);
    w.coordinator.cluster.setState(2, 'dead');
    expect(sha256(await c.download('before'))).toBe(sha256(data));
    const meta = (await c.upload('after', data)) as FileMetadata;
    expect(meta.chunks.flatMap((x) => x.copies.map((y) => y.rank))).not.toContain(2);
  });

  it('an upload that does not fit with all its copies is refused before anything is written, with sizes', async () => {
    const w = await startWorld({ dataRanks: 2, capacityBytes: 10_000 });
    const c = w.client();
    const err = await expectCode(
      c.call({ op: 'put-begin', name: 'big', sizeBytes: 12_000 }),
      'STORE_NO_SPACE',
    );
    expect(err.wire.detail).toMatchObject({ neededBytes: 24_000 });
    expect(w.stores.slice(1).reduce((n, s) => n + s.list().length, 0)).toBe(0);
  });

  it('malformed messages get STORE_BAD_REQUEST and the store keeps serving', async () => {
    const w = await startWorld({ dataRanks: 2 });
    const c = w.client();
    expect((await c.raw([Buffer.from([0xc1, 0xff, 0x00])], -1)).error?.code).toBe(
      'STORE_BAD_REQUEST',
    );
    expect(
      (await c.raw([pack({ id: 7, op: 'put-begin', name: 5, sizeBytes: 'x' })], 7)).error?.code,
    ).toBe('STORE_BAD_REQUEST');
    expect((await c.raw([pack({ id: 8, op: 'launch-missiles' })], 8)).error?.code).toBe(
      'STORE_BAD_REQUEST',
    );
    expect((await c.raw([pack([1, 2, 3])], -1)).error?.code).toBe('STORE_BAD_REQUEST');
    const { reply } = await c.call<StatusResult>({ op: 'status' });
    expect(reply.ranks.map((r) => r.rank)).toEqual([1, 2]);
  });

  it('a chunk of the wrong size or an unknown upload is refused', async () => {
    const w = await startWorld({ dataRanks: 2 });
    const c = w.client();
    const { reply } = await c.call<{ uploadId: string }>({
      op: 'put-begin',
      name: 'x',
      sizeBytes: 2000,
    });
    await expectCode(
      c.call(
        { op: 'put-chunk', uploadId: reply.uploadId, index: 0, checksum: 'aa' },
        Buffer.alloc(10),
      ),
      'STORE_BAD_REQUEST',
    );
    await expectCode(
      c.call({ op: 'put-chunk', uploadId: 'u-nope', index: 0, checksum: 'aa' }, Buffer.alloc(1024)),
      'STORE_CONFLICT',
    );
  });

  it('32 clients uploading and reading the same and different names all get whole, correct files', async () => {
    const w = await startWorld({ dataRanks: 3 });
    const versions = [content(3000, 100), content(5000, 200)];
    const valid = new Set(versions.map(sha256));
    await w.client().upload('shared', versions[0]!);
    await Promise.all(
      [...Array(32).keys()].map(async (i) => {
        const c = w.client();
        const own = content(1000 + i * 37, i + 1);
        await c.upload(`own-${i}`, own);
        expect(sha256(await c.download(`own-${i}`))).toBe(sha256(own));
        if (i % 2 === 0) await c.upload('shared', versions[i % 4 === 0 ? 0 : 1]!);
        expect(valid.has(sha256(await c.download('shared')))).toBe(true);
      }),
    );
  });
});
