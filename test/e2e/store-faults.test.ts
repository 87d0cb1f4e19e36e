/**
 * Faults of real processes. Goal: whatever happens to a data rank or to rank 0, nothing the store
 * acknowledged is lost (every file acknowledged before or during the fault reads back with the
 * right sha256), a transfer cut by the fault either completes right or fails with one clear error
 * line, and replication comes back by itself: `underReplicatedChunks` reaches 0 and every chunk
 * has exactly 2 copies, on live ranks. Faults: kill -9 of a data rank while idle, during a
 * 200 MiB upload and during a 200 MiB retrieve; SIGSTOP past --dead-after-ms (declared dead,
 * copies re-made; after SIGCONT it rejoins and its surplus is trimmed) and shorter than it
 * (suspect, then alive; nothing re-replicated); a flipped byte in a chunk copy (in the data
 * rank's volume file), found by the scrub or by a retrieve; a data rank whose disk (a small
 * tmpfs) fills up; kill -9 of rank 0 during an upload, then a restart on the same data dir.
 *
 * Method: a real store per test (memflow-run, rank 0 + 3 data ranks, test/helpers/store-process.ts)
 * with --heartbeat-ms 200 --dead-after-ms 1500 so that deaths are declared fast. Faults are
 * injected at observed moments, never after a guessed sleep: "during an upload" is when the data
 * ranks' folders have grown by a set amount, "during a retrieve" when the client has written a set
 * amount to its stdout. Outcomes are read from rank 0's log lines (waited for with deadlines), the
 * status request and the metadata of every file (polled with deadlines), and files read back
 * through the client library; what the data ranks really hold is read from their volume files
 * (liveVolumeChunksUnder), so surplus copies are seen on disk. Every process is stopped (a
 * stopped one continued first), every tmpfs unmounted and every temp dir removed in afterEach,
 * also when a test fails.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  KiB,
  MiB,
  StoreProcess,
  cleanupStores,
  describeRun,
  dfs,
  makeTempDir,
  sha256Of,
  liveVolumeChunksUnder,
  startDfs,
  waitUntil,
  writePseudoRandomFile,
  type StoreOptions,
  type VolumeRecord,
} from '../helpers/store-process.js';
import {
  allAlive,
  copiesOnDisk,
  expectAllReadBack,
  expectClearFailure,
  expectDiskMatchesIndex,
  expectRefusedForSpace,
  putFiles,
  rank0Lines,
  uploadUnderWay,
  waitLine,
  waitReplicated,
  withClient,
  type Files,
  FAST,
} from '../helpers/store-checks.js';

const BIG = 200 * MiB;

const started: StoreProcess[] = [];
const stoppedPids = new Set<number>();
const mounts: string[] = [];

afterEach(async () => {
  // A stopped rank cannot act on SIGTERM: continue it first (SIGKILL would work anyway).
  for (const pid of stoppedPids) signal(pid, 'SIGCONT');
  stoppedPids.clear();
  if (mounts.length > 0) {
    // A mount point cannot be removed while mounted, nor unmounted while ranks use it.
    for (const store of started) {
      store.killAll();
      await store.waitNoProcessLeft(10_000).catch(() => undefined);
    }
    for (const mnt of mounts.splice(0)) unmount(mnt);
  }
  started.length = 0;
  await cleanupStores();
});

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

async function startStore(options: StoreOptions, dataDir?: string): Promise<StoreProcess> {
  const store =
    dataDir === undefined
      ? await StoreProcess.start(options)
      : await StoreProcess.startOn(dataDir, options);
  started.push(store);
  return store;
}

/** Chunk 0 of `name`: its first copy's rank and that copy's record in the rank's volume files. */
async function firstCopyRecord(
  store: StoreProcess,
  name: string,
): Promise<{ rank: number; record: VolumeRecord }> {
  const meta = await withClient(store, (c) => c.stat(name));
  const chunk = meta.chunks[0]!;
  const rank = chunk.copies[0]!.rank;
  const hits = [...liveVolumeChunksUnder(store.dataDir, rank).values()].filter(
    (r) => r.checksum === chunk.checksum,
  );
  expect(hits, `records of chunk 0 of ${name} on rank ${rank}`).toHaveLength(1);
  return { rank, record: hits[0]! };
}

function readRange(file: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    fs.readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** Flips one byte in the middle of the record's chunk bytes; returns the original bytes. */
function flipByte(record: VolumeRecord): Buffer {
  const original = readRange(record.file, record.dataOffset, record.dataLength);
  const at = record.dataOffset + Math.floor(record.dataLength / 2);
  const fd = fs.openSync(record.file, 'r+');
  try {
    fs.writeSync(fd, Buffer.from([original[at - record.dataOffset]! ^ 0xff]), 0, 1, at);
  } finally {
    fs.closeSync(fd);
  }
  return original;
}

// ---- tmpfs -----------------------------------------------------------------------------------

function unmount(mnt: string): void {
  try {
    execFileSync('umount', [mnt], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    try {
      execFileSync('umount', ['-l', mnt], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      // Not mounted.
    }
  }
}

/** Why a small tmpfs cannot be mounted here, or undefined when it can (tries one). */
function tmpfsUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return `tmpfs mounts need Linux (${process.platform})`;
  if (process.getuid?.() !== 0) return `not root (uid ${process.getuid?.()}): mount needs it`;
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'memflow-tmpfs-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'memflow-probe', probe], {
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 10_000,
    });
    unmount(probe);
    return undefined;
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    return `mount -t tmpfs failed: ${stderr || (err as Error).message}`;
  } finally {
    fs.rmSync(probe, { recursive: true, force: true });
  }
}

const tmpfsSkip = tmpfsUnavailableReason();
if (tmpfsSkip !== undefined) console.warn(`full-disk test skipped: ${tmpfsSkip}`);

// ---- the tests -------------------------------------------------------------------------------

describe('a data rank killed (kill -9)', () => {
  it('while idle (3 data ranks, 256 KiB chunks, 8 files): declared dead at once, its copies re-made on the 2 others, every file reads back', async () => {
    const store = await startStore({ chunkSize: '256K', extraArgs: FAST });
    const work = makeTempDir('faults-work');
    const files = await putFiles(
      store,
      work,
      [...Array(8).keys()].map((i) => [`idle-${i}.bin`, 700 * KiB + i * 100 * KiB]),
    );
    await waitReplicated(store, files, allAlive());

    const mark = store.stderr.length;
    const killedAt = performance.now();
    store.killRank(2);
    const dead = await waitLine(store, /^rank 2 is dead \((.+)\)$/, mark);
    // A killed process drops its connections: death needs no silence of --dead-after-ms.
    expect(dead[1]).toMatch(/^connection down for \d+ ms$/);
    await waitLine(store, /^re-replicating \d+ chunks$/, mark);
    await waitLine(store, /^replication restored: every chunk has its copies$/, mark);
    await waitReplicated(store, files, { 1: 'alive', 2: 'dead', 3: 'alive' });
    const recoveredMs = performance.now() - killedAt;
    expect(store.exited, 'store mode keeps the job alive when a data rank dies').toBe(false);
    await expectAllReadBack(store, files);
    console.log(`kill -9 while idle: fully replicated ${Math.round(recoveredMs)} ms after kill`);
  });

  it('during a 200 MiB upload (4 MiB chunks, killed once 48 MiB reached the data ranks): the upload succeeds and reads back, or fails with one clear line; earlier files intact', async () => {
    const store = await startStore({ extraArgs: FAST });
    const work = makeTempDir('faults-work');
    const files = await putFiles(store, work, [
      ['before-1.bin', 5 * MiB],
      ['before-2.bin', 9 * MiB + 123],
      ['before-3.bin', 300 * KiB],
    ]);
    const big = path.join(work, 'big.src');
    const bigSha = await writePseudoRandomFile(big, BIG, 'big-upload');

    const mark = store.stderr.length;
    const { args, run: upload } = await uploadUnderWay(store, big, 'big.bin', 48 * MiB, {
      timeoutMs: 120_000,
      waitMs: 60_000,
    });
    store.killRank(2);
    const result = await upload.result;
    if (result.code === 0) {
      files.set('big.bin', bigSha);
      console.log(`upload during kill -9: succeeded in ${Math.round(result.elapsedMs)} ms`);
    } else {
      expectClearFailure(args, result);
      console.log(`upload during kill -9: failed clearly: ${result.stderr.trim()}`);
    }
    await waitLine(store, /^rank 2 is dead \(/, mark);
    // Listed files are exactly the acknowledged ones: a failed upload left no partial version.
    await expectAllReadBack(store, files);
    await waitReplicated(store, files, { 1: 'alive', 2: 'dead', 3: 'alive' });
  }, 120_000);

  it('during a retrieve of a 200 MiB file (killed once 32 MiB were written out): the retrieve completes with the right sha256 or fails with one clear line; a second retrieve succeeds', async () => {
    const store = await startStore({ extraArgs: FAST });
    const work = makeTempDir('faults-work');
    const files = await putFiles(store, work, [
      ['small.bin', 3 * MiB],
      ['big.bin', BIG],
    ]);
    await waitReplicated(store, files, allAlive());

    const mark = store.stderr.length;
    const args = ['big.bin', '-r', '-o', '-', '--server', store.server];
    const retrieve = startDfs(args, { timeoutMs: 120_000 });
    let written = 0;
    retrieve.child.stdout?.on('data', (d: Buffer) => (written += d.length));
    await waitUntil(
      'the retrieve to be under way (32 MiB written out)',
      () => written > 32 * MiB || retrieve.child.exitCode !== null,
      60_000,
    );
    expect(retrieve.child.exitCode, 'the retrieve was still running at the kill').toBeNull();
    store.killRank(2);
    const first = await retrieve.result;
    if (first.code === 0) {
      expect(sha256Of(first.stdout), 'the retrieve cut by the kill').toBe(files.get('big.bin'));
      console.log(`retrieve during kill -9: completed in ${Math.round(first.elapsedMs)} ms`);
    } else {
      expectClearFailure(args, first);
      console.log(`retrieve during kill -9: failed clearly: ${first.stderr.trim()}`);
    }
    const second = await dfs(store.server, ['big.bin', '-r', '-o', '-'], { timeoutMs: 60_000 });
    expect(second.code, describeRun(['big.bin', '-r', '-o', '-'], second)).toBe(0);
    expect(sha256Of(second.stdout), 'the second retrieve').toBe(files.get('big.bin'));

    await waitLine(store, /^rank 2 is dead \(/, mark);
    await expectAllReadBack(store, files, ['big.bin']);
    await waitReplicated(store, files, { 1: 'alive', 2: 'dead', 3: 'alive' });
  }, 120_000);
});

describe('a data rank stopped (SIGSTOP)', () => {
  it('past --dead-after-ms 1500 (heartbeat 200 ms): suspect, then dead after the silence, copies re-made; after SIGCONT it rejoins, its surplus is trimmed and all ranks are alive', async () => {
    const store = await startStore({ chunkSize: '256K', extraArgs: FAST });
    const work = makeTempDir('faults-work');
    const files = await putFiles(
      store,
      work,
      [...Array(6).keys()].map((i) => [`stop-${i}.bin`, 1 * MiB + i * 50 * KiB]),
    );
    await waitReplicated(store, files, allAlive());
    const held = (await store.status()).ranks.find((r) => r.rank === 2)!.chunkCopies;
    expect(held, 'copies on rank 2 before the stop').toBeGreaterThan(0);

    const mark = store.stderr.length;
    const pid = store.rankPid(2);
    stoppedPids.add(pid);
    signal(pid, 'SIGSTOP');
    await waitLine(store, /^rank 2 is suspect \(missed \d+ heartbeats\)$/, mark);
    const dead = await waitLine(store, /^rank 2 is dead \(silent for (\d+) ms\)$/, mark);
    expect(Number(dead[1]), 'silence before rank 2 was declared dead').toBeGreaterThanOrEqual(1500);
    await waitLine(store, /^re-replicating \d+ chunks$/, mark);
    await waitReplicated(store, files, { 1: 'alive', 2: 'dead', 3: 'alive' });

    // Rank 2 is stopped: what its volumes hold now is what it will come back with.
    const onDisk2 = copiesOnDisk(store, 2).length;
    const resumed = store.stderr.length;
    signal(pid, 'SIGCONT');
    stoppedPids.delete(pid);
    await waitLine(store, /^rank 2 is alive \(rejoined\)$/, resumed);
    const rejoin = await waitLine(
      store,
      /^rank 2 rejoined: (\d+) copies taken back, (\d+) surplus or stale copies trimmed$/,
      resumed,
    );
    // Every chunk had its 2 copies elsewhere by then: whatever rank 2 held was surplus.
    expect(Number(rejoin[1]), 'copies taken back').toBe(0);
    expect(
      Number(rejoin[2]),
      `surplus copies trimmed; rank 0 said:\n${rank0Lines(store, mark).join('\n')}`,
    ).toBe(onDisk2);
    await waitReplicated(store, files, allAlive());
    await expectDiskMatchesIndex(store, files);
    await expectAllReadBack(store, files);
  });

  it('shorter than --dead-after-ms 3000 (heartbeat 200 ms, continued once suspect): suspect, then alive again; nothing is re-replicated', async () => {
    const store = await startStore({
      chunkSize: '256K',
      extraArgs: ['--heartbeat-ms', '200', '--dead-after-ms', '3000'],
    });
    const work = makeTempDir('faults-work');
    const files = await putFiles(
      store,
      work,
      [...Array(4).keys()].map((i) => [`pause-${i}.bin`, 1 * MiB + i * 10 * KiB]),
    );
    await waitReplicated(store, files, allAlive());

    const mark = store.stderr.length;
    const pid = store.rankPid(2);
    stoppedPids.add(pid);
    const stoppedAt = performance.now();
    signal(pid, 'SIGSTOP');
    await waitLine(store, /^rank 2 is suspect \(missed \d+ heartbeats\)$/, mark);
    signal(pid, 'SIGCONT');
    const stoppedMs = performance.now() - stoppedAt;
    stoppedPids.delete(pid);
    expect(stoppedMs, 'the stop lasted less than --dead-after-ms').toBeLessThan(3000);
    await waitLine(store, /^rank 2 is alive \(heard from again\)$/, mark);
    await waitReplicated(store, files, allAlive());

    const lines = rank0Lines(store, mark);
    expect(lines.filter((l) => /re-replicating|rank 2 is dead|rejoined/.test(l))).toEqual([]);
    await expectDiskMatchesIndex(store, files);
    await expectAllReadBack(store, files);
    console.log(`short SIGSTOP: stopped ${Math.round(stoppedMs)} ms; ${lines.join(' | ')}`);
  });
});

describe("a corrupt chunk copy (one byte of its bytes flipped in the data rank's volume file)", () => {
  it.each([
    { finder: 'the scrub (--scrub-rate 64MiB)', scrub: '64MiB' },
    { finder: 'a retrieve (scrub off)', scrub: '0' },
  ])(
    'is found by $finder: the file reads back right, the bad copy is replaced, the flipped record is deleted or rewritten',
    async ({ scrub }) => {
      const store = await startStore({
        chunkSize: '256K',
        extraArgs: [...FAST, '--scrub-rate', scrub],
      });
      const work = makeTempDir('faults-work');
      const files = await putFiles(store, work, [
        ['victim.bin', 1 * MiB],
        ['other.bin', 600 * KiB],
      ]);
      await waitReplicated(store, files, allAlive());
      const { rank, record } = await firstCopyRecord(store, 'victim.bin');

      const mark = store.stderr.length;
      const original = flipByte(record);
      if (scrub === '0') {
        // The first copy of chunk 0 is the one a read tries first.
        const args = ['victim.bin', '-r', '-o', '-'];
        const back = await dfs(store.server, args);
        expect(back.code, describeRun(args, back)).toBe(0);
        expect(sha256Of(back.stdout), 'content read past the bad copy').toBe(
          files.get('victim.bin'),
        );
      }
      await waitLine(
        store,
        new RegExp(
          `^copy of chunk 0 of "victim\\.bin" on rank ${rank} is bad \\(.+\\); replacing it$`,
        ),
        mark,
      );
      await waitLine(store, /^replication restored: every chunk has its copies$/, mark);
      await waitReplicated(store, files, allAlive());
      // The flipped record is superseded: by a delete (the copy is gone from rank R) or by a
      // newer put of the same chunk with the good bytes (the new copy landed on rank R again).
      await waitUntil(
        'the flipped copy to be deleted or rewritten with the good bytes',
        () => {
          const now = liveVolumeChunksUnder(store.dataDir, rank).get(record.id);
          return (
            now === undefined ||
            (now.seq > record.seq &&
              readRange(now.file, now.dataOffset, now.dataLength).equals(original))
          );
        },
        10_000,
        100,
      );
      await expectDiskMatchesIndex(store, files);
      await expectAllReadBack(store, files);
    },
  );
});

describe('a full disk', () => {
  it.skipIf(tmpfsSkip !== undefined)(
    'rank 1 on a 6 MiB tmpfs while every rank offers --capacity 24M (1 MiB chunks): rank 1 offers only what its disk holds; when something else fills that disk, uploads go on to ranks 2 and 3; once nothing fits, the upload is refused before anything is written, naming the space needed and available (exit 5)',
    async () => {
      const dataDir = makeTempDir('full-disk');
      const mnt = path.join(dataDir, 'rank-1');
      fs.mkdirSync(mnt);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'memflow-test', mnt], {
        timeout: 10_000,
      });
      mounts.push(mnt);
      const store = await startStore(
        { chunkSize: '1M', extraArgs: [...FAST, '--capacity', '24M', '--scrub-rate', '0'] },
        dataDir,
      );
      const work = makeTempDir('faults-work');
      const capacities = await withClient(store, async (c) => (await c.status()).ranks);
      const capacityOf = (rank: number): number =>
        capacities.find((r) => r.rank === rank)!.capacityBytes;
      expect(capacityOf(1), 'rank 1 offers no more than its 6 MiB disk').toBeLessThanOrEqual(
        6 * MiB,
      );
      expect(capacityOf(2)).toBe(24 * MiB);
      expect(capacityOf(3)).toBe(24 * MiB);

      const files: Files = new Map();
      await putFiles(
        store,
        work,
        [
          ['early-0.bin', 2 * MiB],
          ['early-1.bin', 2 * MiB],
        ],
        files,
      );
      // Something other than MemFlow fills rank 1's disk: its next put fails with ENOSPC or
      // its next heartbeat offers nothing more, and either way the uploads go elsewhere.
      const junk = path.join(mnt, 'junk');
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${junk}`, 'bs=64k'], { stdio: 'ignore' });
      } catch {
        // dd ends with "No space left on device": that is the point.
      }
      // Its next heartbeat offers no room beyond what it holds (a put that raced it would have
      // failed with ENOSPC and been placed elsewhere); wait for that so the rest is determined.
      let usedByRank1 = -1;
      await waitUntil(
        "rank 1's offered capacity to shrink to what its disk holds",
        async () => {
          const r1 = await withClient(store, async (c) =>
            (await c.status()).ranks.find((r) => r.rank === 1)!,
          );
          usedByRank1 = r1.usedBytes;
          return r1.capacityBytes - r1.usedBytes < MiB;
        },
        10_000,
        50,
      );

      let refusal: unknown;
      let afterFill = 0;
      for (let i = 0; i < 40 && refusal === undefined; i++) {
        try {
          await putFiles(store, work, [[`fill-${i}.bin`, 2 * MiB]], files);
          afterFill++;
        } catch (err) {
          refusal = err;
        }
      }
      expect(afterFill, 'uploads acknowledged after rank 1 was full').toBeGreaterThanOrEqual(3);
      expect(refusal, 'uploads stop being accepted once nothing fits').toBeDefined();
      expect((refusal as { code?: unknown }).code, String(refusal)).toBe('STORE_NO_SPACE');

      const refused = await expectRefusedForSpace(
        store,
        work,
        'one-more.bin',
        2 * MiB,
        /not enough space .*\b\d+(\.\d+)? \w+ needed\b.*\b\d+(\.\d+)? \w+ available\b/,
      );

      const status = await waitReplicated(store, files, allAlive());
      const byRank = new Map(status.ranks.map((r) => [r.rank, r]));
      // Ranks 2 and 3 took what rank 1 could not: they hold more than its 6 MiB.
      expect(byRank.get(2)!.usedBytes).toBeGreaterThan(6 * MiB);
      expect(byRank.get(3)!.usedBytes).toBeGreaterThan(6 * MiB);
      expect(byRank.get(1)!.usedBytes, 'rank 1 took nothing after its disk filled').toBe(
        usedByRank1,
      );
      await expectDiskMatchesIndex(store, files);
      await expectAllReadBack(store, files);
      console.log(
        `full disk: ${files.size} files acknowledged, ${afterFill} after rank 1's disk filled; ${refused.stderr.trim()}`,
      );
    },
  );
});

describe('rank 0 killed (kill -9)', () => {
  it('during a 64 MiB upload: the launcher ends the job with no process left; restarted on the same data dir, every acknowledged file is back and the upload in flight is whole or absent', async () => {
    const store = await startStore({ chunkSize: '1M', extraArgs: FAST });
    const work = makeTempDir('faults-work');
    const files = await putFiles(store, work, [
      ['kept-1.bin', 3 * MiB],
      ['kept-2.bin', 1 * MiB + 7],
      ['kept-3.bin', 200 * KiB],
    ]);
    const inflight = path.join(work, 'inflight.src');
    const inflightSha = await writePseudoRandomFile(inflight, 64 * MiB, 'inflight');
    const baseline = store.dataRankBytes();

    // The default 30 s reply deadline: the client must learn of the crash from the dropped
    // connection, not by waiting that long.
    const args = [inflight, '-a', '--as', 'inflight.bin'];
    const upload = startDfs([...args, '--server', store.server], { timeoutMs: 60_000 });
    const clientEnded = upload.result.then(() => performance.now());
    await waitUntil(
      'the upload to be under way (16 MiB more on the data ranks)',
      () => store.dataRankBytes() > baseline + 16 * MiB || upload.child.exitCode !== null,
      60_000,
    );
    expect(upload.child.exitCode, 'the upload was still running at the kill').toBeNull();
    const killedAt = performance.now();
    store.killRank(0);
    const exit = await store.ended(20_000);
    expect(exit.code, 'the launcher reports the end of rank 0').not.toBe(0);
    await store.waitNoProcessLeft(10_000);
    const result = await upload.result;
    if (result.code !== 0) {
      expectClearFailure(args, result);
      expect(result.code, describeRun(args, result)).toBe(4);
      expect(result.stderr).toMatch(
        /closed the connection during put-\w+ \(rank 0 stopped or restarted\)/,
      );
      expect(
        (await clientEnded) - killedAt,
        'the client ends within seconds of the crash',
      ).toBeLessThan(10_000);
    }

    const again = await store.restart();
    started.push(again);
    const listed = await withClient(again, (c) => c.list());
    const entry = listed.find((f) => f.name === 'inflight.bin');
    if (entry !== undefined) {
      // Committed just before the kill: then it must be whole.
      expect(entry.sizeBytes).toBe(64 * MiB);
      files.set('inflight.bin', inflightSha);
    }
    console.log(
      `rank 0 crash: upload ${result.code === 0 ? 'acknowledged' : `failed (${result.stderr.trim()})`}; after restart inflight.bin is ${entry ? 'whole' : 'absent'}`,
    );
    if (result.code === 0) expect(entry, 'an acknowledged upload survives').toBeDefined();
    await waitReplicated(again, files, allAlive());
    // An upload cut off by the crash leaves nothing: its copies are collected at start-up.
    await expectDiskMatchesIndex(again, files);
    await expectAllReadBack(again, files);
  }, 90_000);
});
