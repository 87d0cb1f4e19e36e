/**
 * Healing and elasticity in simulation. Goal: the behaviours of issue 4 that are about decisions
 * rather than timing — a slow rank is suspect but nothing moves; a dead rank's copies are made
 * again; a rank that comes back has its surplus and stale copies trimmed; a new rank joins and
 * `rebalance` brings every rank within the band without ever dropping a chunk below its copies;
 * a full rank is passed over; the scrub replaces a corrupt copy. Method: a StoreWorld on the
 * memory network; simulated time advanced with elapse(); outcomes read through the protocol.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import type {
  FileMetadata,
  RebalanceResult,
  StatusResult,
} from '../../src/protocol/client-protocol.js';
import { REBALANCE_BAND } from '../../src/rank/rebalance.js';
import { content, type SimClient, StoreWorld, worldPerTest } from './store-world.js';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const start = worldPerTest();

async function call<T>(
  w: StoreWorld,
  c: SimClient,
  req: Parameters<SimClient['call']>[0],
): Promise<T> {
  const p = c.call<T>(req);
  expect(await w.runUntil(p, 120_000)).toBe(true);
  return (await p).reply;
}

async function status(w: StoreWorld, c: SimClient): Promise<StatusResult> {
  return call<StatusResult>(w, c, { op: 'status' });
}

async function uploadMany(
  w: StoreWorld,
  c: SimClient,
  count: number,
  bytes: number,
): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const data = content(bytes, i + 1);
    const p = c.upload(`file-${i}`, data);
    expect(await w.runUntil(p, 60_000)).toBe(true);
    await p;
    files.set(`file-${i}`, sha256(data));
  }
  return files;
}

async function expectAllReadable(
  w: StoreWorld,
  c: SimClient,
  files: Map<string, string>,
): Promise<void> {
  for (const [name, digest] of files) {
    const p = c.download(name);
    expect(await w.runUntil(p, 60_000)).toBe(true);
    expect(sha256(await p), name).toBe(digest);
  }
}

describe('failure detection and healing', () => {
  it('a rank stopped for less than dead-after (SIGSTOP, connections up) is suspect, then alive again, and nothing is moved', async () => {
    const w = await start({ dataRanks: 3 });
    const c = w.client();
    await uploadMany(w, c, 5, 3000);
    w.network.stall(2);
    await w.elapse(3500);
    expect((await status(w, c)).ranks.find((r) => r.rank === 2)?.state).toBe('suspect');
    w.network.resume(2);
    await w.elapse(1500);
    const s = await status(w, c);
    expect(s.ranks.every((r) => r.state === 'alive')).toBe(true);
    expect(w.coordinator.repairer.stats.copiesMade).toBe(0);
  });

  it('a rank stopped past dead-after is declared dead and its copies re-created; when it resumes it rejoins and its surplus is trimmed', async () => {
    const w = await start({ dataRanks: 3 });
    const c = w.client();
    const files = await uploadMany(w, c, 6, 4000);
    w.network.stall(1);
    await w.elapse(5500);
    expect((await status(w, c)).ranks.find((r) => r.rank === 1)?.state).toBe('dead');
    await w.elapse(3000);
    expect((await status(w, c)).underReplicatedChunks).toBe(0);
    w.network.resume(1);
    await w.elapse(3000);
    const s = await status(w, c);
    expect(s.ranks.find((r) => r.rank === 1)?.state).toBe('alive');
    expect(s.underReplicatedChunks).toBe(0);
    expect(w.stores[1]!.list()).toEqual([]);
    await expectAllReadable(w, c, files);
  });

  it('a crashed rank is dead within the disconnect grace and every chunk gets its 2 copies back on the others', async () => {
    const w = await start({ dataRanks: 4 });
    const c = w.client();
    const files = await uploadMany(w, c, 8, 5000);
    w.crash(3);
    await w.elapse(600);
    expect((await status(w, c)).ranks.find((r) => r.rank === 3)?.state).toBe('dead');
    await w.elapse(3000);
    expect((await status(w, c)).underReplicatedChunks).toBe(0);
    for (const name of files.keys()) {
      const { metadata } = await call<{ metadata: FileMetadata }>(w, c, { op: 'stat', name });
      for (const chunk of metadata.chunks) expect(chunk.copies.map((x) => x.rank)).not.toContain(3);
    }
    await expectAllReadable(w, c, files);
  });

  it('a rank restarted on its old data after being declared dead rejoins and its surplus copies are trimmed', async () => {
    const w = await start({ dataRanks: 3 });
    const c = w.client();
    const files = await uploadMany(w, c, 6, 4000);
    w.crash(2);
    await w.elapse(4000);
    expect((await status(w, c)).underReplicatedChunks).toBe(0);
    const held = w.stores[2]!.list().length;
    expect(held).toBeGreaterThan(0);
    const deletes = vi.spyOn(w.stores[2]!, 'delete');
    w.restart(2);
    await w.elapse(3000);
    const s = await status(w, c);
    expect(s.ranks.find((r) => r.rank === 2)?.state).toBe('alive');
    // Everything rank 2 kept was re-created elsewhere meanwhile: all of it is surplus now, trimmed
    // once (the second look after repairs must not find the same copies still there).
    expect(w.stores[2]!.list()).toEqual([]);
    expect(deletes).toHaveBeenCalledTimes(held);
    expect(w.rank0Log.filter((line) => line.startsWith('rank 2 rejoined:'))).toEqual([
      `rank 2 rejoined: 0 copies taken back, ${held} surplus or stale copies trimmed`,
    ]);
    await expectAllReadable(w, c, files);
  });

  it('the scrub finds a corrupt copy and replaces it from the good one', async () => {
    const w = await start({ dataRanks: 3, scrubBytesPerSecond: 1024 * 1024 });
    const c = w.client();
    const files = await uploadMany(w, c, 2, 3000);
    w.corruptCopies(1);
    const bad = w.stores[1]!.list().map((x) => x.id);
    expect(bad.length).toBeGreaterThan(0);
    await w.elapse(5000);
    // Every copy rank 1 held was dropped or rewritten good; each chunk has 2 good copies again.
    expect((await status(w, c)).underReplicatedChunks).toBe(0);
    for (const id of w.stores[1]!.list().map((x) => x.id))
      await expect(w.stores[1]!.get(id)).resolves.toBeDefined();
    await expectAllReadable(w, c, files);
  });

  it('the scrub slows to an eighth of its pace while the rank serves requests, and still goes on', async () => {
    // 1 MiB/s with small chunks: one chunk each 250 ms when idle (the 256 KiB floor per chunk).
    const w = await start({ dataRanks: 3, scrubBytesPerSecond: 1024 * 1024 });
    const c = w.client();
    await uploadMany(w, c, 30, 1000);
    const reads = vi.spyOn(w.stores[1]!, 'get');
    await w.elapse(2500); // past the busy window of the uploads and the slow pause begun in it
    reads.mockClear();
    await w.elapse(4000);
    const idleReads = reads.mock.calls.length;
    reads.mockClear();
    // 4 s of traffic: an upload every 100 ms, each reaching every data rank (2 of 3 copies, and
    // rank 1 gets at least one request in each second).
    for (let i = 0; i < 40; i++) {
      const p = c.upload(`busy-${i}`, content(1000, 100 + i));
      expect(await w.runUntil(p, 60_000)).toBe(true);
      await w.elapse(100);
    }
    const busyReads = reads.mock.calls.length;
    expect(idleReads).toBeGreaterThanOrEqual(15);
    expect(idleReads).toBeLessThanOrEqual(17);
    expect(busyReads).toBeGreaterThanOrEqual(1);
    expect(busyReads).toBeLessThanOrEqual(3);
  });

  it('a full rank is passed over: uploads go on to the ranks with room', async () => {
    const w = await start({ dataRanks: 3, capacityBytes: [4096, 1 << 20, 1 << 20] });
    const c = w.client();
    const files = await uploadMany(w, c, 10, 2048);
    expect(w.stores[1]!.usedBytes()).toBeLessThanOrEqual(4096);
    await expectAllReadable(w, c, files);
  });
});

describe('scale-out', () => {
  it('a new empty rank joins, takes new chunks by the placement rule, and rebalance brings every rank within the band', async () => {
    const w = await start({ dataRanks: 3, capacityBytes: 1 << 20 });
    const c = w.client();
    const files = await uploadMany(w, c, 30, 6000);
    const joined = w.join(1 << 20);
    await w.elapse(2000);
    expect((await status(w, c)).ranks.map((r) => r.rank)).toEqual([1, 2, 3, joined]);
    // The new rank is the emptiest: the next chunk's primary goes there.
    const next = (await c.upload('after-join', content(1000, 99))) as FileMetadata;
    expect(next.chunks[0]!.copies[0]!.rank).toBe(joined);

    const result = await call<RebalanceResult>(w, c, { op: 'rebalance' });
    expect(result.moves).toBeGreaterThan(0);
    expect(result.spreadAfter).toBeLessThanOrEqual(REBALANCE_BAND);
    await w.elapse(500);
    const s = await status(w, c);
    const fractions = s.ranks.map((r) => r.usedBytes / r.capacityBytes);
    expect(Math.max(...fractions) - Math.min(...fractions)).toBeLessThanOrEqual(
      REBALANCE_BAND + 0.01,
    );
    expect(s.underReplicatedChunks).toBe(0);
    for (const name of files.keys()) {
      const { metadata } = await call<{ metadata: FileMetadata }>(w, c, { op: 'stat', name });
      for (const chunk of metadata.chunks)
        expect(new Set(chunk.copies.map((x) => x.rank)).size).toBe(2);
    }
    await expectAllReadable(w, c, files);
  });
});
