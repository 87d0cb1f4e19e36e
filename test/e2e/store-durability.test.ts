/**
 * Durability, end to end. Goal: a file the store acknowledged survives whatever happens to the
 * processes, and what was never acknowledged never shows. Stopping the whole job (SIGTERM) and
 * starting it again on the same data dir brings back every acknowledged file byte for byte; so
 * does a crash (SIGKILL of every rank process at once) and a SIGKILL of the launcher alone, which
 * must leave no store process behind. A client killed while it uploads a replacement of an
 * existing name leaves the old version readable and whole, no partial version in list, and no
 * leftover chunks once the store restarts. A data rank killed mid-upload makes the upload succeed
 * (then the file reads back whole) or fail with one clear error line; files acknowledged before
 * stay readable from their other copies.
 *
 * Method: a real store per test (memflow-run -n 4 on a temporary data dir and a free port), driven
 * with dfs-client as a user would; processes found and killed through /proc (helpers/
 * store-process.ts). "Mid-upload" is observed, not guessed: the test polls the data dirs until
 * bytes of the new upload (or two of its chunks, on the rank about to die) are on disk, then kills.
 * Leftovers are counted exactly: after a restart the chunk copies on the data ranks' disks (read
 * from their files, one per chunk or append-only volumes) and those the ranks report must be the
 * copies the committed files list in their metadata, nothing more.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { FileMetadata, ListEntry } from '../../src/protocol/client-protocol.js';
import {
  KiB,
  MEMFLOW_RUN,
  MiB,
  StoreProcess,
  cleanupStores,
  describeRun,
  dfs,
  isRunning,
  freePort,
  makeTempDir,
  sha256Of,
  startDfs,
  tempChunkFilesUnder,
  waitUntil,
  writePseudoRandomFile,
  type DfsResult,
} from '../helpers/store-process.js';

afterEach(async () => {
  await cleanupStores();
});

async function client(
  store: StoreProcess,
  args: string[],
  code: number,
  timeoutMs = 30_000,
): Promise<DfsResult> {
  const result = await dfs(store.server, args, { timeoutMs });
  expect(result.code, `${describeRun(args, result)}\n${store.transcript()}`).toBe(code);
  return result;
}

async function listJson(store: StoreProcess): Promise<ListEntry[]> {
  const result = await client(store, ['list', '--json'], 0);
  return JSON.parse(result.stdout.toString('utf8')) as ListEntry[];
}

async function metadataOf(store: StoreProcess, name: string): Promise<FileMetadata> {
  const result = await client(store, [name, '-m', '--json'], 0);
  return JSON.parse(result.stdout.toString('utf8')) as FileMetadata;
}

/** Chunk copies the committed files need: the sum over every file's chunks of its copies. */
async function copiesNeeded(store: StoreProcess): Promise<number> {
  let total = 0;
  for (const entry of await listJson(store)) {
    const meta = await metadataOf(store, entry.name);
    for (const chunk of meta.chunks) total += chunk.copies.length;
  }
  return total;
}

/**
 * The chunk copies the data ranks hold are exactly those the committed files need: as the ranks
 * report them (status), and as files on disk when the ranks keep one file per chunk.
 */
async function expectNoLeftoverCopies(store: StoreProcess): Promise<void> {
  const needed = await copiesNeeded(store);
  // The ranks' counts reach rank 0 with their heartbeats (every second): allow a few.
  let reported = -1;
  await waitUntil(
    'the reported chunk copies to match',
    async () => (reported = await store.reportedCopies()) === needed,
    5000,
    200,
  ).catch(() => undefined);
  expect(
    reported,
    `chunk copies the data ranks report (status: ${JSON.stringify((await store.status()).ranks)})`,
  ).toBe(needed);
  // And on disk, read from the data ranks' own files (one file per chunk, or volumes).
  const onDisk = store.chunkCopyCount();
  if (onDisk === undefined) {
    throw new Error(`unknown on-disk layout under ${store.dataDir}: teach chunkCopiesOnDisk() it`);
  }
  expect(onDisk, "chunk copies on the data ranks' disks").toBe(needed);
  expect(tempChunkFilesUnder(store.dataDir)).toEqual([]);
}

interface Acknowledged {
  /** sha256 of the current content by name (deleted names are absent). */
  files: Map<string, string>;
  version: Map<string, number>;
  deleted: string[];
}

/**
 * Uploads a mixed set through dfs-client and returns what the store acknowledged: sizes around
 * the chunk edges (64 KiB chunks), a replaced name (version 2) and a deleted one.
 */
async function uploadMixedSet(store: StoreProcess, work: string): Promise<Acknowledged> {
  const acked: Acknowledged = { files: new Map(), version: new Map(), deleted: [] };
  const put = async (name: string, size: number, seed = name): Promise<void> => {
    const file = path.join(work, `${seed}.src`);
    const sha = await writePseudoRandomFile(file, size, seed);
    await client(store, [file, '-a', '--as', name], 0);
    acked.files.set(name, sha);
    acked.version.set(name, (acked.version.get(name) ?? 0) + 1);
  };
  await put('empty.bin', 0);
  await put('one-byte.bin', 1);
  await put('one-chunk.bin', 64 * KiB);
  await put('chunk-plus-one.bin', 64 * KiB + 1);
  await put('two-mib.bin', 2 * MiB);
  await put('résumé 2024.pdf', 100_000);
  await put('replaced.bin', 300_000, 'replaced-v1');
  await put('replaced.bin', 200_000, 'replaced-v2');
  await put('deleted.bin', 150_000);
  await client(store, ['deleted.bin', '-d'], 0);
  acked.files.delete('deleted.bin');
  acked.deleted.push('deleted.bin');
  return acked;
}

/** Every acknowledged file is listed, at its version, and reads back byte for byte. */
async function expectAllBack(store: StoreProcess, acked: Acknowledged): Promise<void> {
  const listed = (await listJson(store)).map((f) => f.name).sort();
  expect(listed).toEqual([...acked.files.keys()].sort());
  for (const [name, sha] of acked.files) {
    const back = await client(store, [name, '-r', '-o', '-'], 0);
    expect(sha256Of(back.stdout), `content of ${name}`).toBe(sha);
    const meta = await metadataOf(store, name);
    expect(meta.sha256).toBe(sha);
    expect(meta.version, `version of ${name}`).toBe(acked.version.get(name));
  }
  for (const name of acked.deleted) await client(store, [name, '-m'], 3);
}

describe('restart on the same data dir (64 KiB chunks)', () => {
  it('SIGTERM of the whole job (exit 143, no process left), then restart: every acknowledged file is back byte for byte, no chunk left over', async () => {
    const work = makeTempDir('durability-work');
    const store = await StoreProcess.start({ chunkSize: '64K' });
    const acked = await uploadMixedSet(store, work);

    expect(await store.stop()).toEqual({ code: 143, signal: null });
    expect(store.processes()).toEqual([]);

    const again = await store.restart();
    expect(again.stdout.join('\n')).toContain(`${acked.files.size} files)`);
    await expectAllBack(again, acked);
    await expectNoLeftoverCopies(again);
  });

  it('a second store on a data dir in use is refused, rank 0 naming the folder and its holder, and the first keeps serving', async () => {
    const work = makeTempDir('durability-work');
    const store = await StoreProcess.start({ chunkSize: '64K', ranks: 3 });
    const file = path.join(work, 'kept.bin');
    const sha = await writePseudoRandomFile(file, 300 * KiB, 'kept');
    await client(store, [file, '-a'], 0);

    // Bounded: a launcher that outlived the timeout would be stopped, and its ranks with it.
    const second = spawnSync(
      process.execPath,
      [MEMFLOW_RUN, '-n', '3', '--data-dir', store.dataDir, '--port', String(await freePort())],
      { encoding: 'utf8', timeout: 60_000 },
    );
    const transcript = `second store:\n${second.stdout}${second.stderr}`;
    expect(second.status, transcript).toBe(1);
    const rank0Dir = path.join(fs.realpathSync(store.dataDir), 'rank-0');
    expect(second.stderr, transcript).toContain(
      `[0] memflow-rank 0: ${rank0Dir} is in use by another MemFlow rank (pid ${store.rankPids.get(0)} on `,
    );
    expect(second.stdout, transcript).not.toContain('MemFlow store ready');

    const back = await client(store, ['kept.bin', '-r', '-o', '-'], 0);
    expect(sha256Of(back.stdout)).toBe(sha);
  });

  it('SIGKILL of every rank process at once (a crash), then restart: every acknowledged file is back byte for byte', async () => {
    const work = makeTempDir('durability-work');
    const store = await StoreProcess.start({ chunkSize: '64K' });
    const acked = await uploadMixedSet(store, work);

    const rankPids = [...store.rankPids.values()];
    expect(rankPids).toHaveLength(4);
    for (const pid of rankPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (err) {
        // The launcher may already be stopping the others: rank 0 dying ends the job.
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
    }
    await store.ended(20_000);
    await store.waitNoProcessLeft(10_000);
    const again = await store.restart();
    await expectAllBack(again, acked);
    await expectNoLeftoverCopies(again);
  });

  it('SIGKILL of the launcher alone leaves no store process within 10 s; restart: every acknowledged file is back', async () => {
    const work = makeTempDir('durability-work');
    const store = await StoreProcess.start({ chunkSize: '64K' });
    const acked = await uploadMixedSet(store, work);
    const pids = store.processes().map((p) => p.pid);
    expect(pids.length).toBeGreaterThanOrEqual(9); // launcher + 4 guards + 4 ranks

    store.launcher.kill('SIGKILL');
    expect((await store.ended(10_000)).signal).toBe('SIGKILL');
    await store.waitNoProcessLeft(10_000);
    expect(pids.filter(isRunning)).toEqual([]);

    const again = await store.restart();
    await expectAllBack(again, acked);
  });
});

/**
 * Two files acknowledged, then a 200 MiB upload during which data rank 2 is SIGKILLed: once rank
 * 2 holds at least two complete chunks of the upload (so the upload has copies on the rank that
 * dies, and most of it is still to come); resolves when the upload has ended.
 */
async function uploadWhileRankDies(): Promise<{
  store: StoreProcess;
  work: string;
  before: Map<string, string>;
  result: DfsResult;
  newSha: string;
}> {
  const work = makeTempDir('durability-work');
  const store = await StoreProcess.start();
  const before = new Map<string, string>();
  for (const [name, size] of [
    ['before-a.bin', 20 * MiB + 5],
    ['before-b.bin', 9 * MiB],
  ] as const) {
    const file = path.join(work, `${name}.src`);
    before.set(name, await writePseudoRandomFile(file, size, name));
    await client(store, [file, '-a', '--as', name], 0);
  }
  // Precondition: the rank about to die holds copies of acknowledged chunks.
  const onRank2 = (await metadataOf(store, 'before-a.bin')).chunks.filter((c) =>
    c.copies.some((copy) => copy.rank === 2),
  );
  expect(onRank2.length).toBeGreaterThan(0);
  const rank2Copies = store.chunkCopyCount(2);
  expect(rank2Copies, `a known on-disk layout under ${store.dataDir}`).toBeDefined();

  const newFile = path.join(work, 'during.src');
  const newSha = await writePseudoRandomFile(newFile, 200 * MiB, 'during');
  const upload = startDfs([newFile, '-a', '--as', 'during.bin', '--server', store.server], {
    timeoutMs: 120_000,
  });
  // Two complete chunks of the upload on rank 2's disk, read from its files.
  await waitUntil(
    'two chunks of the upload on rank 2',
    () => (store.chunkCopyCount(2) ?? 0) >= rank2Copies! + 2,
    20_000,
    5,
  );
  store.killRank(2);
  const result = await upload.result;
  expect(result.timedOut, describeRun(['-a', 'during.bin'], result)).toBe(false);
  expect(result.signal).toBe(null);
  return { store, work, before, result, newSha };
}

describe('interrupted uploads', () => {
  it('SIGKILL of a client uploading a 200 MiB replacement of an existing name: the old version stays whole, list shows no partial version, no chunk left after restart', async () => {
    const work = makeTempDir('durability-work');
    const store = await StoreProcess.start();
    const oldFile = path.join(work, 'old.src');
    const oldSha = await writePseudoRandomFile(oldFile, 5 * MiB + 123, 'old version');
    await client(store, [oldFile, '-a', '--as', 'big.bin'], 0);
    const otherFile = path.join(work, 'other.src');
    const otherSha = await writePseudoRandomFile(otherFile, 3 * MiB, 'bystander');
    await client(store, [otherFile, '-a', '--as', 'other.bin'], 0);
    await expectNoLeftoverCopies(store);
    const committedBytes = store.dataRankBytes();

    const newFile = path.join(work, 'new.src');
    await writePseudoRandomFile(newFile, 200 * MiB, 'new version');
    const upload = startDfs([newFile, '-a', '--as', 'big.bin', '--server', store.server], {
      timeoutMs: 60_000,
    });
    // Mid-upload for certain: chunks of the new version are on disk.
    await waitUntil(
      'chunks of the new upload on disk',
      () => store.dataRankBytes() > committedBytes,
      20_000,
      5,
    );
    upload.child.kill('SIGKILL');
    const killed = await upload.result;
    expect(killed.signal, describeRun(['-a', 'big.bin'], killed)).toBe('SIGKILL');

    const listed = await listJson(store);
    expect(listed.map((f) => [f.name, f.sizeBytes]).sort()).toEqual([
      ['big.bin', 5 * MiB + 123],
      ['other.bin', 3 * MiB],
    ]);
    const meta = await metadataOf(store, 'big.bin');
    expect(meta).toMatchObject({ version: 1, sha256: oldSha, sizeBytes: 5 * MiB + 123 });
    expect(sha256Of((await client(store, ['big.bin', '-r', '-o', '-'], 0)).stdout)).toBe(oldSha);

    // The store may keep the cut-off upload's chunks while it waits for the client; a restart
    // must leave exactly the committed files' copies.
    expect(await store.stop()).toEqual({ code: 143, signal: null });
    const again = await store.restart();
    await expectNoLeftoverCopies(again);
    expect(sha256Of((await client(again, ['big.bin', '-r', '-o', '-'], 0)).stdout)).toBe(oldSha);
    expect(sha256Of((await client(again, ['other.bin', '-r', '-o', '-'], 0)).stdout)).toBe(
      otherSha,
    );
    expect((await metadataOf(again, 'big.bin')).version).toBe(1);
  });

  it(
    'SIGKILL of data rank 2 during a 200 MiB upload (once it holds 2 of its chunks): the upload succeeds and reads back, or fails with one clear line; files acknowledged before read back whole',
    { timeout: 180_000 },
    async () => {
      const { store, work, before, result, newSha } = await uploadWhileRankDies();
      if (result.code === 0) {
        const back = await client(store, ['during.bin', '-r', '-o', '-'], 0, 60_000);
        expect(sha256Of(back.stdout)).toBe(newSha);
      } else {
        // One line naming the file and a reason; not an internal error, not a stack trace.
        expect(result.stderr, describeRun(['-a', 'during.bin'], result)).toMatch(
          /^dfs-client: cannot upload "[^"\n]+during\.src": [^\n]+\n$/,
        );
        expect(result.stderr).not.toContain('internal error');
        expect((await listJson(store)).map((f) => f.name)).not.toContain('during.bin');
      }

      for (const [name, sha] of before) {
        const back = await dfs(store.server, [name, '-r', '-o', '-'], { timeoutMs: 60_000 });
        expect(back.code, `${describeRun([name, '-r'], back)}\n${store.transcript()}`).toBe(0);
        expect(sha256Of(back.stdout), `content of ${name}`).toBe(sha);
      }
      // The store still takes new files with one data rank gone.
      const small = path.join(work, 'after.src');
      const smallSha = await writePseudoRandomFile(small, 3 * MiB, 'after');
      await client(store, [small, '-a', '--as', 'after.bin'], 0, 60_000);
      const back = await client(store, ['after.bin', '-r', '-o', '-'], 0, 60_000);
      expect(sha256Of(back.stdout)).toBe(smallSha);
    },
  );

  it(
    'SIGKILL of data rank 2 during a 200 MiB upload (once it holds 2 of its chunks): within 20 s every file, the one being uploaded included, is back to 2 live copies (list health "healthy")',
    { timeout: 180_000 },
    async () => {
      const { store, result } = await uploadWhileRankDies();
      let status = await store.status();
      await waitUntil(
        'every chunk back to 2 live copies',
        async () => (status = await store.status()).underReplicatedChunks === 0,
        20_000,
        250,
      ).catch(() => undefined);
      const listed = await listJson(store);
      const detail = [
        `upload: ${describeRun(['-a', 'during.bin'], result)}`,
        `status: ${JSON.stringify(status)}`,
        `list: ${JSON.stringify(listed.map((f) => [f.name, f.health]))}`,
        store.transcript(),
      ].join('\n');
      expect(status.underReplicatedChunks, detail).toBe(0);
      expect(listed.map((f) => [f.name, f.health]).sort(), detail).toEqual(
        listed.map((f) => [f.name, 'healthy']).sort(),
      );
      for (const entry of listed) {
        for (const chunk of (await metadataOf(store, entry.name)).chunks) {
          const live = chunk.copies.filter((c) => c.rank !== 2 && c.state === 'alive');
          expect(live, `${entry.name} chunk ${chunk.index}\n${detail}`).toHaveLength(2);
        }
      }
    },
  );
});
