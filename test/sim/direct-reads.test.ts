/**
 * Direct reads in simulation. Goal: what a client relies on when it reads large chunks straight
 * from the data ranks (docs/PROTOCOL.md, "Direct reads") — rank 0 offers them only for files of
 * at least 2 chunks of at least 512 KiB; the offer names each chunk's id and the chunk ports of
 * exactly the live ranks holding copies, with a restarted rank's new port; a chunk port returns the
 * copy's bytes, refuses bad input and a client's requests past its limit, and a copy it finds
 * corrupt is replaced. Method: a StoreWorld whose data ranks each have a chunk port (a
 * MemoryChannel with a `tcp://sim-rank-…` endpoint), driven through the client protocol on the
 * manual clock; faults from crashing ranks and tampering with their memory chunk stores.
 */
import { createHash } from 'node:crypto';
import { pack } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  DIRECT_READ_MIN_CHUNK_BYTES,
  DIRECT_READS_PER_CLIENT,
  type DirectSources,
  type FileMetadata,
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

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const CHUNK = DIRECT_READ_MIN_CHUNK_BYTES;

const start = worldPerTest();

type Begin = { readId: string; metadata: FileMetadata; direct?: DirectSources };

/** get-begin's reply, with the read ended again. */
async function offer(w: StoreWorld, c: SimClient, name: string): Promise<Begin> {
  const { reply } = await settle(w, c.call<Begin>({ op: 'get-begin', name }));
  await settle(w, c.call({ op: 'get-end', readId: reply.readId }));
  return reply;
}

async function status(w: StoreWorld, c: SimClient): Promise<StatusResult> {
  return (await settle(w, c.call<StatusResult>({ op: 'status' }))).reply;
}

async function stat(w: StoreWorld, c: SimClient, name: string): Promise<FileMetadata> {
  return (await settle(w, c.call<{ metadata: FileMetadata }>({ op: 'stat', name }))).reply.metadata;
}

/** Reads a copy from a chunk port (data rank r's current one, or the one at an endpoint). */
async function readCopy(w: StoreWorld, at: number | string, chunkId: string): Promise<Buffer> {
  const { payload } = await settle(w, w.chunkPortClient(at).call({ op: 'chunk-read', chunkId }));
  expect(payload, `bytes of ${chunkId} from ${at}`).toBeDefined();
  return payload!;
}

/** The error a request to a chunk port is answered with. */
async function refusal(promise: Promise<unknown>): Promise<ProtocolError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProtocolError);
  return err as ProtocolError;
}

/** Polls (every 250 ms of simulated time, at most `maxMs` of it) until `check` holds. */
async function eventually(
  w: StoreWorld,
  maxMs: number,
  check: () => Promise<boolean>,
): Promise<boolean> {
  for (let waited = 0; waited <= maxMs; waited += 250) {
    if (await check()) return true;
    await w.elapse(250);
  }
  return false;
}

const holdersOf = (meta: FileMetadata): number[] =>
  [...new Set(meta.chunks.flatMap((ch) => ch.copies.map((x) => x.rank)))].sort((a, b) => a - b);

describe('the offer of direct reads', () => {
  it('for a file of large chunks names one id per chunk and the chunk ports of exactly the ranks holding copies; each copy read there is the chunk', async () => {
    // Rank 4 has room for nothing: it is alive with a chunk port but holds no copy of the file.
    const w = await start({
      dataRanks: 4,
      chunkSizeBytes: CHUNK,
      capacityBytes: [1 << 30, 1 << 30, 1 << 30, 100],
    });
    const c = w.client();
    const data = content(3 * CHUNK + 1000, 7);
    const meta = (await settle(w, c.upload('big.bin', data))) as FileMetadata;
    expect(meta.chunks).toHaveLength(4);
    const holders = holdersOf(meta);
    expect(holders).toEqual([1, 2, 3]);

    const begin = await offer(w, c, 'big.bin');
    expect(begin.direct).toBeDefined();
    const direct = begin.direct!;
    expect(direct.chunkIds).toHaveLength(meta.chunks.length);
    expect(new Set(direct.chunkIds).size).toBe(meta.chunks.length);
    // This world's rank 0 ends reads idle for 10 s: renew at least every 2.5 s (5 s by default).
    expect(direct.renewMs).toBe(2_500);
    expect(direct.endpoints).toEqual(
      holders.map((rank) => ({ rank, endpoint: w.portEndpoints[rank] })),
    );

    // get-whole of a file of more than one chunk starts a read with the same offer.
    const { reply: whole } = await settle(w, c.call<Begin>({ op: 'get-whole', name: 'big.bin' }));
    expect(whole.direct).toEqual(direct);
    await settle(w, c.call({ op: 'get-end', readId: whole.readId }));

    // Every copy, read from its holder's offered endpoint, is the chunk; together they are the file.
    const endpointOf = new Map(direct.endpoints.map((e) => [e.rank, e.endpoint]));
    const parts: Buffer[] = [];
    for (const [i, chunk] of meta.chunks.entries()) {
      for (const copy of chunk.copies) {
        const bytes = await readCopy(w, endpointOf.get(copy.rank)!, direct.chunkIds[i]!);
        expect(bytes.length, `chunk ${i} from rank ${copy.rank}`).toBe(chunk.sizeBytes);
        expect(chunkChecksum(bytes), `chunk ${i} from rank ${copy.rank}`).toBe(chunk.checksum);
      }
      parts.push(await readCopy(w, endpointOf.get(chunk.copies[0]!.rank)!, direct.chunkIds[i]!));
    }
    expect(sha256(Buffer.concat(parts))).toBe(sha256(data));

    // What each port served reaches rank 0's status with the next heartbeat.
    const expected = new Map<number, { count: number; bytes: number }>();
    for (const chunk of meta.chunks) {
      chunk.copies.forEach((copy, k) => {
        const e = expected.get(copy.rank) ?? { count: 0, bytes: 0 };
        const times = k === 0 ? 2 : 1; // the first holder's copy was read twice
        expected.set(copy.rank, {
          count: e.count + times,
          bytes: e.bytes + times * chunk.sizeBytes,
        });
      });
    }
    await w.elapse(1500);
    const ranks = (await status(w, c)).ranks;
    for (const rank of holders)
      expect(ranks.find((r) => r.rank === rank)?.directReads, `rank ${rank}`).toEqual(
        expected.get(rank),
      );
    expect(ranks.find((r) => r.rank === 4)?.directReads).toEqual({ count: 0, bytes: 0 });
  });

  it.each([
    { what: '5 chunks of 1 KiB', chunkSizeBytes: 1024, size: 5 * 1024, offered: false },
    {
      what: '2 chunks of 512 KiB less a byte',
      chunkSizeBytes: CHUNK - 1,
      size: 2 * (CHUNK - 1),
      offered: false,
    },
    { what: 'one chunk of 512 KiB', chunkSizeBytes: CHUNK, size: CHUNK, offered: false },
    {
      what: '2 chunks of 512 KiB, the second 1 byte',
      chunkSizeBytes: CHUNK,
      size: CHUNK + 1,
      offered: true,
    },
  ])(
    'a file of $what is offered for direct reads: $offered',
    async ({ chunkSizeBytes, size, offered }) => {
      const w = await start({ dataRanks: 2, chunkSizeBytes });
      const c = w.client();
      const data = content(size, size);
      await settle(w, c.upload('f', data));
      expect((await offer(w, c, 'f')).direct !== undefined).toBe(offered);
      const { reply } = await settle(
        w,
        c.call<Begin & { whole?: boolean }>({ op: 'get-whole', name: 'f' }),
      );
      expect(reply.direct !== undefined).toBe(offered);
      if (!reply.whole) await settle(w, c.call({ op: 'get-end', readId: reply.readId }));
      // Through rank 0 the file reads whole either way.
      expect(sha256(await settle(w, c.download('f')))).toBe(sha256(data));
    },
  );

  it("leaves out a crashed rank's chunk port once rank 0 has declared it dead, and names its new port once it is back", async () => {
    // Two data ranks, two copies: nowhere to re-create rank 2's copies, so the index keeps
    // naming rank 2 as a holder while it is dead.
    const w = await start({ dataRanks: 2, chunkSizeBytes: CHUNK });
    const c = w.client();
    const data = content(3 * CHUNK, 3);
    await settle(w, c.upload('f', data));
    const oldEndpoint = w.portEndpoints[2]!;
    expect((await offer(w, c, 'f')).direct?.endpoints).toEqual([
      { rank: 1, endpoint: w.portEndpoints[1] },
      { rank: 2, endpoint: oldEndpoint },
    ]);

    w.crash(2);
    const rankState = async (r: number): Promise<string | undefined> =>
      (await status(w, c)).ranks.find((x) => x.rank === r)?.state;
    expect(await eventually(w, 10_000, async () => (await rankState(2)) === 'dead')).toBe(true);
    const meta = await stat(w, c, 'f');
    expect(meta.chunks.every((ch) => ch.copies.some((x) => x.rank === 2))).toBe(true);
    const whileDead = await offer(w, c, 'f');
    expect(whileDead.direct?.endpoints).toEqual([{ rank: 1, endpoint: w.portEndpoints[1] }]);
    expect(sha256(await settle(w, c.download('f')))).toBe(sha256(data));

    w.restart(2);
    const newEndpoint = w.portEndpoints[2]!;
    expect(newEndpoint).not.toBe(oldEndpoint);
    expect(await eventually(w, 10_000, async () => (await rankState(2)) === 'alive')).toBe(true);
    const back = await offer(w, c, 'f');
    expect(back.direct?.endpoints).toEqual([
      { rank: 1, endpoint: w.portEndpoints[1] },
      { rank: 2, endpoint: newEndpoint },
    ]);
    const first = await readCopy(w, newEndpoint, back.direct!.chunkIds[0]!);
    expect(chunkChecksum(first)).toBe(back.metadata.chunks[0]!.checksum);
  });
});

describe("a data rank's chunk port", () => {
  it('answers a corrupt copy with STORE_CORRUPT, and rank 0 then replaces it: the file has 2 good copies of every chunk again', async () => {
    const w = await start({ dataRanks: 3, chunkSizeBytes: CHUNK });
    const c = w.client();
    const data = content(3 * CHUNK, 11);
    await settle(w, c.upload('f', data));
    const { direct, metadata } = await offer(w, c, 'f');
    const bad = metadata.chunks[0]!.copies[0]!.rank;
    const held = metadata.chunks.filter((ch) => ch.copies.some((x) => x.rank === bad));
    w.corruptCopies(bad);

    for (const chunk of held) {
      const err = await refusal(
        settle(
          w,
          w
            .chunkPortClient(bad)
            .call({ op: 'chunk-read', chunkId: direct!.chunkIds[chunk.index]! }),
        ),
      );
      expect(err.wire.code).toBe('STORE_CORRUPT');
    }

    // No scrub runs and rank 0 reads nothing meanwhile: only the chunk port's notices can get
    // the bad copies replaced. Each chunk must get back to 2 live copies that verify.
    const whole = async (): Promise<boolean> => {
      const now = await stat(w, c, 'f');
      for (const chunk of now.chunks) {
        const live = chunk.copies.filter((x) => x.state === 'alive');
        if (live.length !== 2) return false;
        for (const copy of live) {
          const good = await w.stores[copy.rank]!.get(direct!.chunkIds[chunk.index]!).then(
            (bytes) => chunkChecksum(bytes) === chunk.checksum,
            () => false,
          );
          if (!good) return false;
        }
      }
      return true;
    };
    expect(await eventually(w, 10_000, whole)).toBe(true);

    // What the chunk ports now serve is good, wherever the copies are.
    const now = await stat(w, c, 'f');
    for (const chunk of now.chunks) {
      for (const copy of chunk.copies) {
        const bytes = await readCopy(w, copy.rank, direct!.chunkIds[chunk.index]!);
        expect(chunkChecksum(bytes), `chunk ${chunk.index} on rank ${copy.rank}`).toBe(
          chunk.checksum,
        );
      }
    }
    expect(sha256(await settle(w, c.download('f')))).toBe(sha256(data));
  });

  it('refuses malformed requests with STORE_BAD_REQUEST and an unknown chunk with STORE_NOT_FOUND, and the rank keeps serving', async () => {
    const w = await start({ dataRanks: 2, chunkSizeBytes: CHUNK });
    const c = w.client();
    const data = content(CHUNK + 1, 5);
    await settle(w, c.upload('f', data));
    const { direct, metadata } = await offer(w, c, 'f');
    const chunkId = direct!.chunkIds[0]!;
    const port = w.chunkPortClient(1);
    const cases: Array<{ what: string; frame: Uint8Array; id: number; mentions?: string }> = [
      { what: 'random bytes', frame: Buffer.from([0xc1, 0xff, 0x00, 0x13]), id: -1 },
      { what: 'a msgpack array', frame: pack([1, 2, 3]), id: -1 },
      { what: 'a msgpack string', frame: pack('chunk-read'), id: -1 },
      { what: 'a map without id', frame: pack({ op: 'chunk-read', chunkId }), id: -1 },
      {
        what: "rank 0's op get-begin",
        frame: pack({ id: 5, op: 'get-begin', name: 'f' }),
        id: 5,
        mentions: 'get-begin',
      },
      {
        what: 'a numeric chunkId',
        frame: pack({ id: 6, op: 'chunk-read', chunkId: 42 }),
        id: 6,
        mentions: 'chunkId',
      },
      {
        what: 'a chunkId that is a path',
        frame: pack({ id: 7, op: 'chunk-read', chunkId: '../../etc/passwd' }),
        id: 7,
      },
    ];
    for (const { what, frame, id, mentions } of cases) {
      const reply = await settle(w, port.raw([frame], id));
      expect(reply.ok, what).toBe(false);
      expect(reply.id, what).toBe(id);
      expect(reply.error?.code, what).toBe('STORE_BAD_REQUEST');
      if (mentions) expect(reply.error?.message, what).toContain(mentions);
    }
    const missing = await refusal(
      settle(w, port.call({ op: 'chunk-read', chunkId: `${chunkId}7` })),
    );
    expect(missing.wire.code).toBe('STORE_NOT_FOUND');

    // The port still serves copies, and the rank still serves rank 0.
    expect(chunkChecksum(await readCopy(w, 1, chunkId))).toBe(metadata.chunks[0]!.checksum);
    const next = content(2 * CHUNK + 3, 6);
    await settle(w, c.upload('g', next));
    expect(sha256(await settle(w, c.download('g')))).toBe(sha256(next));
    expect(sha256(await settle(w, c.download('f')))).toBe(sha256(data));
  });

  it(`serves at most ${DIRECT_READS_PER_CLIENT} reads outstanding from one client and refuses the next with STORE_BUSY; another client is served meanwhile`, async () => {
    const w = await start({ dataRanks: 2, chunkSizeBytes: CHUNK });
    const c = w.client();
    await settle(w, c.upload('f', content(2 * CHUNK, 9)));
    const { direct, metadata } = await offer(w, c, 'f');
    const chunkId = direct!.chunkIds[0]!;
    const greedy = w.chunkPortClient(1);
    const other = w.chunkPortClient(1);
    // All sent before any is answered: each arrives (a microtask each) before the first read
    // gets past its first await, so the port counts all of them outstanding at once.
    const burst = Array.from({ length: DIRECT_READS_PER_CLIENT + 1 }, () =>
      greedy.call({ op: 'chunk-read', chunkId }),
    );
    const alongside = other.call({ op: 'chunk-read', chunkId });
    const results = await settle(w, Promise.allSettled(burst));
    const served = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r) => r.status === 'rejected');
    expect(served).toHaveLength(DIRECT_READS_PER_CLIENT);
    expect(refused).toHaveLength(1);
    expect(results[DIRECT_READS_PER_CLIENT]!.status, 'the last one sent').toBe('rejected');
    const busy = (refused[0] as PromiseRejectedResult).reason as ProtocolError;
    expect(busy.wire.code).toBe('STORE_BUSY');
    expect(busy.wire.detail).toEqual({ limit: DIRECT_READS_PER_CLIENT });
    for (const r of served) {
      const { payload } = (r as PromiseFulfilledResult<{ payload: Buffer | undefined }>).value;
      expect(chunkChecksum(payload!)).toBe(metadata.chunks[0]!.checksum);
    }
    const { payload } = await settle(w, alongside);
    expect(chunkChecksum(payload!)).toBe(metadata.chunks[0]!.checksum);
    // Once answered, the reads no longer count: the same client is served again.
    expect(
      chunkChecksum(
        await settle(w, greedy.call({ op: 'chunk-read', chunkId })).then((r) => r.payload!),
      ),
    ).toBe(metadata.chunks[0]!.checksum);
  });
});
