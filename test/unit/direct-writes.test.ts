/**
 * The client's side of direct writes (src/client/direct-writes.ts). Goal: an upload never fails
 * because the short path did: whatever goes wrong there (put-place refused or malformed, a chunk
 * port that errs or cannot be reached, a confirmation rank 0 refuses) sends that chunk's bytes
 * through rank 0, and a placement on ports this client cannot reach (loopback ports seen from
 * another machine) stops direct tries for the rest of the upload; an interrupted upload is not
 * retried. Method: DirectUpload over a fake rank 0 and fake chunk ports that record every call.
 */
import { describe, expect, it } from 'vitest';
import { ChunkPortError, type ChunkPorts } from '../../src/client/chunk-ports.js';
import { DirectUpload } from '../../src/client/direct-writes.js';
import { DfsError } from '../../src/client/errors.js';

type Call = { op: string; index?: number; bytes: boolean };

/**
 * DirectUpload over a fake rank 0 and fake chunk ports. The fake rank 0 answers a confirmation as
 * the real one does: once every write of that chunk has landed, or with STORE_UNAVAILABLE as soon
 * as one has failed. `bytes` answers the put-chunks that carry bytes (default: ok).
 */
function fakes(options: {
  place?: (index: number) => Record<string, unknown> | Error;
  /** A write's outcome: an error, 'silent' (never answered: a stopped rank), or ok. */
  write?: (endpoint: string) => Error | 'silent' | undefined;
  confirm?: (index: number) => Error | undefined;
  bytes?: (index: number) => Promise<Record<string, unknown>>;
  serverHost?: string;
}): { upload: DirectUpload; calls: Call[]; writes: string[] } {
  const calls: Call[] = [];
  const writes: string[] = [];
  const landed = new Map<string, Array<Promise<void>>>();
  const ports = {
    write: (endpoint: string, chunkId: string) => {
      writes.push(`${endpoint} ${chunkId}`);
      const err = options.write?.(endpoint);
      if (err === 'silent') return new Promise<void>(() => undefined);
      const outcome = err ? Promise.reject(err) : Promise.resolve();
      landed.set(chunkId, [...(landed.get(chunkId) ?? []), outcome]);
      return outcome;
    },
  } as unknown as ChunkPorts;
  const upload = new DirectUpload(
    ports,
    async (body, payload) => {
      calls.push({ op: body.op, index: body.index, bytes: payload !== undefined });
      if (body.op === 'put-place') {
        const answer = options.place?.(body.index) ?? {
          chunkId: `u1.${body.index}`,
          copies: [
            { rank: 1, endpoint: 'tcp://127.0.0.1:5001' },
            { rank: 2, endpoint: 'tcp://127.0.0.1:5002' },
          ],
        };
        if (answer instanceof Error) throw answer;
        return answer;
      }
      if (payload) return options.bytes ? options.bytes(body.index) : {};
      const err = options.confirm?.(body.index);
      if (err) throw err;
      const outcomes = await Promise.allSettled(landed.get(`u1.${body.index}`) ?? []);
      if (outcomes.some((o) => o.status === 'rejected'))
        throw new DfsError('STORE_UNAVAILABLE', 'a copy did not arrive; send its bytes');
      return {};
    },
    'u1',
    options.serverHost ?? '127.0.0.1',
    2,
  );
  return { upload, calls, writes };
}

const data = new Uint8Array(16);

describe("a direct upload's chunk", () => {
  it('is placed, written to every placed port, and confirmed without its bytes', async () => {
    const { upload, calls, writes } = fakes({});
    await upload.send(0, 'sum', data);
    expect(calls).toEqual([
      { op: 'put-place', index: 0, bytes: false },
      { op: 'put-chunk', index: 0, bytes: false },
    ]);
    expect(writes).toEqual(['tcp://127.0.0.1:5001 u1.0', 'tcp://127.0.0.1:5002 u1.0']);
  });

  it('a copy whose rank never answers (stopped): its bytes go through rank 0 as soon as rank 0 refuses the confirmation, not after the write’s own deadline', async () => {
    const { upload, calls } = fakes({
      write: (endpoint) => (endpoint.endsWith(':5002') ? 'silent' : undefined),
      confirm: () => new DfsError('STORE_UNAVAILABLE', 'rank 2 was declared dead'),
    });
    await upload.send(0, 'sum', data);
    expect(calls).toEqual([
      { op: 'put-place', index: 0, bytes: false },
      { op: 'put-chunk', index: 0, bytes: false },
      { op: 'put-chunk', index: 0, bytes: true },
    ]);
  });

  it('already stored (a retried put-place): nothing is written or sent', async () => {
    const { upload, calls, writes } = fakes({ place: () => ({ stored: true }) });
    await upload.send(3, 'sum', data);
    expect(calls.map((c) => c.op)).toEqual(['put-place']);
    expect(writes).toEqual([]);
  });

  it.each([
    ['put-place is refused', { place: () => new DfsError('STORE_UNAVAILABLE', 'no ports') }],
    ['put-place answers nonsense', { place: () => ({ chunkId: 7, copies: 'x' }) }],
    ['a port answers with an error', { write: () => new ChunkPortError(false, 'refused') }],
    [
      'rank 0 refuses the confirmation',
      { confirm: () => new DfsError('STORE_UNAVAILABLE', 'send its bytes') },
    ],
  ] as const)('%s: its bytes go through rank 0', async (_, options) => {
    const { upload, calls } = fakes(options);
    await upload.send(0, 'sum', data);
    expect(calls.at(-1)).toEqual({ op: 'put-chunk', index: 0, bytes: true });
    // The next chunk tries the short path again.
    await upload.send(1, 'sum', data);
    expect(calls.some((c) => c.op === 'put-place' && c.index === 1)).toBe(true);
  });

  it('placed on ports this client cannot reach (loopback ports, rank 0 reached from another machine): through rank 0, and no more direct tries', async () => {
    const { upload, calls, writes } = fakes({ serverHost: '10.1.2.3' });
    await upload.send(0, 'sum', data);
    await upload.send(1, 'sum', data);
    expect(calls).toEqual([
      { op: 'put-place', index: 0, bytes: false },
      { op: 'put-chunk', index: 0, bytes: true },
      { op: 'put-chunk', index: 1, bytes: true },
    ]);
    expect(writes).toEqual([]);
  });

  it('a failure of the bytes through rank 0 is the upload’s error; an interrupted upload tries nothing', async () => {
    const { upload: failing } = fakes({
      write: () => new ChunkPortError(true, 'gone'),
      bytes: () => Promise.reject(new DfsError('STORE_CONFLICT', 'upload aborted')),
    });
    await expect(failing.send(0, 'sum', data)).rejects.toMatchObject({ code: 'STORE_CONFLICT' });
    const { upload } = fakes({ write: () => new ChunkPortError(true, 'gone') });
    await expect(upload.send(0, 'sum', data)).resolves.toBeUndefined();

    const aborted = new AbortController();
    aborted.abort();
    const { upload: stopped, calls } = fakes({});
    await stopped.send(0, 'sum', data, aborted.signal).catch(() => undefined);
    expect(calls.filter((c) => c.op === 'put-place')).toEqual([]);
  });

  it('chunks that fall back go through rank 0 at most maxViaRank0 at a time, so they stay within its budget for this client', async () => {
    const release: Array<() => void> = [];
    let inFlight = 0;
    let most = 0;
    const { upload } = fakes({
      write: () => new ChunkPortError(true, 'gone'),
      bytes: () => {
        inFlight++;
        most = Math.max(most, inFlight);
        return new Promise((resolve) =>
          release.push(() => {
            inFlight--;
            resolve({});
          }),
        );
      },
    });
    const sends = [0, 1, 2, 3, 4, 5].map((i) => upload.send(i, 'sum', data));
    // Each round lets the waiting sends start, then answers those in flight.
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
      release.splice(0).forEach((go) => go());
    }
    await Promise.all(sends);
    expect(most).toBe(2);
  });
});
