/**
 * Direct writes in simulation. Goal: what a user relies on when an upload's copies go straight to
 * the data ranks (docs/PROTOCOL.md, "Direct writes"): the file is stored with every copy where
 * rank 0 placed it and reads back whole; rank 0 counts a copy only when its data rank confirms it,
 * so a client that writes fewer copies than placed cannot commit a chunk short of copies; a data
 * rank takes no copy rank 0 did not place there; whatever fails on the short path (a copy not
 * written, a rank that dies, a client that goes away) ends with the chunk stored through rank 0
 * or its copies removed, never with a leftover or a chunk short of copies. Method: a StoreWorld
 * whose data ranks have chunk ports, driven through the client protocol on the manual clock;
 * copies are looked up in the data ranks' memory stores.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  DIRECT_WRITE_MIN_CHUNK_BYTES,
  type FileMetadata,
  type PutBeginResult,
  type StatusResult,
} from '../../src/protocol/client-protocol.js';
import { chunkChecksum } from '../../src/store/checksum.js';
import {
  content,
  ProtocolError,
  settle,
  type SimClient,
  StoreWorld,
  worldPerTest,
} from './store-world.js';

const CHUNK = DIRECT_WRITE_MIN_CHUNK_BYTES;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const start = worldPerTest();

/** The error code a request is answered with (it must fail). */
async function refusal(w: StoreWorld, promise: Promise<unknown>): Promise<ProtocolError> {
  const err = await settle(
    w,
    promise.then(
      () => undefined,
      (e: unknown) => e,
    ),
  );
  expect(err).toBeInstanceOf(ProtocolError);
  return err as ProtocolError;
}

type Placed = { chunkId: string; copies: Array<{ rank: number; endpoint: string }> };

interface Upload {
  uploadId: string;
  chunks: Buffer[];
  place(index: number): Promise<Placed>;
  write(index: number, copy: { endpoint: string }, chunkId: string): Promise<unknown>;
  confirm(index: number, withBytes?: boolean): Promise<unknown>;
  commit(): Promise<FileMetadata>;
}

async function begin(w: StoreWorld, c: SimClient, name: string, data: Buffer): Promise<Upload> {
  const { reply } = await settle(
    w,
    c.call<PutBeginResult>({ op: 'put-begin', name, sizeBytes: data.length }),
  );
  expect(reply.direct, 'put-begin offers direct writes').toBe(true);
  const chunks: Buffer[] = [];
  for (let off = 0; off < data.length; off += reply.chunkSizeBytes)
    chunks.push(data.subarray(off, off + reply.chunkSizeBytes));
  const { uploadId } = reply;
  const checksum = (i: number): string => chunkChecksum(chunks[i]!);
  return {
    uploadId,
    chunks,
    place: async (index) =>
      (
        await settle(
          w,
          c.call<Placed>({ op: 'put-place', uploadId, index, checksum: checksum(index) }),
        )
      ).reply,
    write: (index, copy, chunkId) =>
      settle(
        w,
        w
          .chunkPortClient(copy.endpoint)
          .call({ op: 'chunk-write', chunkId, checksum: checksum(index) }, chunks[index]),
      ),
    confirm: (index, withBytes = false) =>
      settle(
        w,
        c.call(
          { op: 'put-chunk', uploadId, index, checksum: checksum(index) },
          withBytes ? chunks[index] : undefined,
        ),
      ),
    commit: async () =>
      (
        await settle(
          w,
          c.call<{ metadata: FileMetadata }>({
            op: 'put-commit',
            uploadId,
            sha256: sha256(Buffer.concat(chunks)),
          }),
        )
      ).reply.metadata,
  };
}

/** Places and writes every copy of every chunk directly, confirms each, and commits. */
async function uploadDirect(
  w: StoreWorld,
  c: SimClient,
  name: string,
  data: Buffer,
): Promise<{ meta: FileMetadata; placed: Placed[] }> {
  const up = await begin(w, c, name, data);
  const placed: Placed[] = [];
  for (let i = 0; i < up.chunks.length; i++) {
    const p = await up.place(i);
    placed.push(p);
    await Promise.all(p.copies.map((copy) => up.write(i, copy, p.chunkId)));
    await up.confirm(i);
  }
  return { meta: await up.commit(), placed };
}

/** The data ranks that hold a copy of `chunkId`, by their own stores. */
function holders(w: StoreWorld, chunkId: string): number[] {
  const out: number[] = [];
  for (let r = 1; r < w.stores.length; r++)
    if (w.stores[r]!.list().some((c) => c.id === chunkId)) out.push(r);
  return out;
}

/** Every chunk copy the data ranks hold, as "rank:id". */
function allCopies(w: StoreWorld): string[] {
  return w.stores.flatMap((s, r) => (s ? s.list().map((c) => `${r}:${c.id}`) : [])).sort();
}

async function status(w: StoreWorld, c: SimClient): Promise<StatusResult> {
  return (await settle(w, c.call<StatusResult>({ op: 'status' }))).reply;
}

describe('direct writes', () => {
  it('a file of large chunks written straight to the data ranks: every copy is where rank 0 placed it, the file reads back whole, and the ranks count the writes', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const data = content(5 * CHUNK + 777, 3);
    const { meta, placed } = await uploadDirect(w, c, 'big.bin', data);

    expect(meta.chunks).toHaveLength(6);
    expect(meta.sha256).toBe(sha256(data));
    for (const [i, p] of placed.entries()) {
      const ranks = p.copies.map((x) => x.rank).sort();
      expect(ranks, `chunk ${i}: two different ranks`).toHaveLength(2);
      expect(new Set(ranks).size).toBe(2);
      for (const x of p.copies) expect(x.endpoint).toBe(w.portEndpoints[x.rank]);
      expect(holders(w, p.chunkId), `chunk ${i}: the copies are where they were placed`).toEqual(
        ranks,
      );
      expect(meta.chunks[i]!.copies.map((x) => x.rank).sort()).toEqual(ranks);
    }
    // The seed's rule still spreads the copies: 12 copies over 3 equal ranks, 4 each.
    const perRank = [1, 2, 3].map(
      (r) => placed.filter((p) => p.copies.some((x) => x.rank === r)).length,
    );
    expect(perRank).toEqual([4, 4, 4]);

    expect((await settle(w, c.download('big.bin'))).equals(data)).toBe(true);
    await w.elapse(1500); // a heartbeat carries each rank's counters to rank 0
    const ranks = (await status(w, c)).ranks;
    expect(ranks.reduce((n, r) => n + (r.directWrites?.count ?? 0), 0)).toBe(12);
    expect(ranks.reduce((n, r) => n + (r.directWrites?.bytes ?? 0), 0)).toBe(2 * data.length);
    expect(ranks.reduce((n, r) => n + r.usedBytes, 0)).toBe(2 * data.length);
  });

  it('is offered only for uploads of at least 2 chunks of at least 512 KiB that are not records; put-place is refused otherwise', async () => {
    const small = await start({ dataRanks: 3, chunkSizeBytes: CHUNK / 2 });
    const c = small.client();
    const { reply } = await settle(
      small,
      c.call<PutBeginResult>({ op: 'put-begin', name: 'a', sizeBytes: 4 * CHUNK }),
    );
    expect(reply.direct).toBeUndefined();
    expect(reply.maxChunksInFlight).toBe(8);
    const err = await refusal(
      small,
      c.call({ op: 'put-place', uploadId: reply.uploadId, index: 0, checksum: 'x' }),
    );
    expect(err.wire.code).toBe('STORE_BAD_REQUEST');
    await small.stop();

    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c2 = w.client();
    const one = await settle(
      w,
      c2.call<PutBeginResult>({ op: 'put-begin', name: 'one', sizeBytes: CHUNK }),
    );
    expect(one.reply.direct).toBeUndefined();
    const onePlace = await refusal(
      w,
      c2.call({ op: 'put-place', uploadId: one.reply.uploadId, index: 0, checksum: 'x' }),
    );
    expect(onePlace.wire.code).toBe('STORE_BAD_REQUEST');
    const two = await settle(
      w,
      c2.call<PutBeginResult>({ op: 'put-begin', name: 'two', sizeBytes: CHUNK + 1 }),
    );
    expect(two.reply).toMatchObject({ direct: true, maxChunksInFlight: 16 });
    const records = await settle(
      w,
      c2.call<PutBeginResult>({
        op: 'put-begin',
        name: 'r',
        sizeBytes: 4 * CHUNK,
        records: { idField: 'id' },
      }),
    );
    expect(records.reply.direct).toBeUndefined();
  });

  it('a data rank refuses a copy rank 0 did not place there, and stores nothing of it', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const up = await begin(w, c, 'f', content(2 * CHUNK, 5));
    const p = await up.place(0);
    const elsewhere = [1, 2, 3].find((r) => !p.copies.some((x) => x.rank === r))!;
    const write = (rank: number, chunkId: string, bytes: Buffer): Promise<unknown> =>
      w
        .chunkPortClient(rank)
        .call({ op: 'chunk-write', chunkId, checksum: chunkChecksum(up.chunks[0]!) }, bytes)
        .then(
          () => undefined,
          (e: unknown) => e,
        );
    // At once, within the grant's 2.5 s ttl: the chunk on a rank it was not placed on, the
    // right rank with another chunk's bytes, and a made-up id.
    const [notHere, wrong, madeUp] = (await settle(
      w,
      Promise.all([
        write(elsewhere, p.chunkId, up.chunks[0]!),
        write(p.copies[0]!.rank, p.chunkId, up.chunks[1]!),
        write(p.copies[0]!.rank, 'u0.0', up.chunks[0]!),
      ]),
    )) as ProtocolError[];
    expect(notHere!.wire.code).toBe('STORE_CONFLICT');
    expect(notHere!.wire.message).toMatch(/not placed here/);
    expect(wrong!.wire.code).toBe('STORE_CORRUPT');
    expect(madeUp!.wire.code).toBe('STORE_CONFLICT');
    expect(allCopies(w)).toEqual([]);
  });

  it('a client that writes one of two copies cannot commit the chunk short of a copy: its bytes then complete it through rank 0, keeping the copy written', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const data = content(2 * CHUNK, 9);
    const up = await begin(w, c, 'half.bin', data);
    const p = await up.place(0);
    await up.write(0, p.copies[0]!, p.chunkId);
    // The other copy never comes: once its grant runs out, the confirmation is refused.
    const err = await refusal(w, up.confirm(0));
    expect(err.wire.code).toBe('STORE_UNAVAILABLE');
    expect(err.wire.message).toMatch(/send its bytes/);
    // Committing now would store a chunk with no copies: refused.
    const early = await refusal(w, up.commit());
    expect(early.wire.message).toMatch(/chunks 0, 1 were not stored/);

    await up.confirm(0, true);
    const q = await up.place(1);
    await Promise.all(q.copies.map((x) => up.write(1, x, q.chunkId)));
    await up.confirm(1);
    const meta = await up.commit();
    const ranks = meta.chunks[0]!.copies.map((x) => x.rank);
    expect(ranks).toHaveLength(2);
    expect(ranks, 'the copy written directly is kept').toContain(p.copies[0]!.rank);
    expect(holders(w, p.chunkId)).toEqual([...ranks].sort());
    expect((await settle(w, c.download('half.bin'))).equals(data)).toBe(true);
    await w.elapse(1500);
    expect((await status(w, c)).ranks.reduce((n, r) => n + r.usedBytes, 0)).toBe(2 * data.length);
  });

  it('bytes sent through rank 0 while a placement waits: rank 0 takes the placement back at once (no wait for its ttl) and stores the chunk', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const data = content(2 * CHUNK, 11);
    const up = await begin(w, c, 'fallback.bin', data);
    const p = await up.place(0);
    const startedMs = w.clock.now();
    await up.confirm(0, true);
    expect(w.clock.now() - startedMs, 'stored well before the 2.5 s ttl').toBeLessThan(1000);
    // The revoked grants are gone: a late direct write is refused.
    const late = await refusal(w, up.write(0, p.copies[0]!, p.chunkId));
    expect(late.wire.code).toBe('STORE_CONFLICT');
    await up.confirm(1, true);
    const meta = await up.commit();
    expect(holders(w, p.chunkId)).toEqual(meta.chunks[0]!.copies.map((x) => x.rank).sort());
    expect((await settle(w, c.download('fallback.bin'))).equals(data)).toBe(true);
  });

  it('a confirmation sent with the writes, then the bytes (one write failed): the bytes store the chunk, the confirmation is refused, and no copy is left over', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const data = content(2 * CHUNK, 21);
    const up = await begin(w, c, 'both.bin', data);
    const p = await up.place(0);
    await up.write(0, p.copies[0]!, p.chunkId);
    // The confirmation waits for the second copy; the client gives up on it and sends the bytes.
    const confirmation = up.confirm(0).then(
      () => undefined,
      (e: unknown) => e,
    );
    await up.confirm(0, true);
    const refused = (await settle(w, confirmation)) as ProtocolError;
    expect(refused).toBeInstanceOf(ProtocolError);
    expect(refused.wire.code).toBe('STORE_CONFLICT');
    expect(refused.wire.message).toMatch(/sent through rank 0 instead/);
    await up.confirm(1, true);
    const meta = await up.commit();
    const ranks = meta.chunks[0]!.copies.map((x) => x.rank).sort();
    expect(ranks).toContain(p.copies[0]!.rank);
    // Exactly the committed copies exist, nothing more.
    expect(allCopies(w)).toEqual(
      meta.chunks
        .flatMap((ch) =>
          ch.copies.map((x) => `${x.rank}:${p.chunkId.replace(/\.0$/, `.${ch.index}`)}`),
        )
        .sort(),
    );
    expect((await settle(w, c.download('both.bin'))).equals(data)).toBe(true);
  });

  it('an upload aborted after some copies were written directly and others only placed leaves no copy anywhere', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const up = await begin(w, c, 'gone.bin', content(3 * CHUNK, 13));
    const p0 = await up.place(0);
    await Promise.all(p0.copies.map((x) => up.write(0, x, p0.chunkId)));
    await up.confirm(0);
    const p1 = await up.place(1);
    await up.write(1, p1.copies[0]!, p1.chunkId);
    await up.place(2);
    expect(allCopies(w)).toHaveLength(3);
    await settle(w, c.call({ op: 'put-abort', uploadId: up.uploadId }));
    await w.elapse(500);
    expect(allCopies(w)).toEqual([]);
    await w.elapse(1500);
    expect((await status(w, c)).ranks.reduce((n, r) => n + r.usedBytes, 0)).toBe(0);
    const stat = await refusal(w, c.call({ op: 'stat', name: 'gone.bin' }));
    expect(stat.wire.code).toBe('STORE_NOT_FOUND');
  });

  it('a client that places chunks and goes away: the upload expires and the copies it wrote are removed', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const up = await begin(w, c, 'idle.bin', content(2 * CHUNK, 15));
    const p = await up.place(0);
    await up.write(0, p.copies[0]!, p.chunkId);
    await up.place(1);
    expect(allCopies(w)).toHaveLength(1);
    await w.elapse(25_000); // past the 10 s session idle time and every grant's ttl
    expect(allCopies(w)).toEqual([]);
    expect(w.rank0Log.some((l) => /upload of "idle.bin" went idle/.test(l))).toBe(true);
  });

  it('a placed data rank that dies before its copy is written: the bytes through rank 0 put that copy on a live rank', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const data = content(2 * CHUNK, 17);
    const up = await begin(w, c, 'crash.bin', data);
    const p = await up.place(0);
    const [live, doomed] = p.copies;
    await up.write(0, live!, p.chunkId);
    w.crash(doomed!.rank);
    const err = await refusal(w, up.confirm(0));
    expect(err.wire.code).toBe('STORE_UNAVAILABLE');
    await up.confirm(0, true);
    await up.confirm(1, true);
    const meta = await up.commit();
    const ranks = meta.chunks[0]!.copies.map((x) => x.rank).sort();
    expect(ranks).not.toContain(doomed!.rank);
    expect(ranks).toContain(live!.rank);
    expect(ranks).toHaveLength(2);
    expect((await settle(w, c.download('crash.bin'))).equals(data)).toBe(true);
  });

  it('put-place again for a stored chunk says so; for a chunk placed and not confirmed it is refused', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const up = await begin(w, c, 'again.bin', content(2 * CHUNK, 19));
    const p = await up.place(0);
    const twice = await refusal(
      w,
      c.call({
        op: 'put-place',
        uploadId: up.uploadId,
        index: 0,
        checksum: chunkChecksum(up.chunks[0]!),
      }),
    );
    expect(twice.wire.code).toBe('STORE_CONFLICT');
    await Promise.all(p.copies.map((x) => up.write(0, x, p.chunkId)));
    await up.confirm(0);
    expect(await up.place(0)).toMatchObject({ stored: true });
    const beyond = await refusal(
      w,
      c.call({ op: 'put-place', uploadId: up.uploadId, index: 2, checksum: 'x' }),
    );
    expect(beyond.wire.code).toBe('STORE_BAD_REQUEST');
  });
});
