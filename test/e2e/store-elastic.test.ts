/**
 * Elasticity of real processes. Goal: the store heals and grows without losing anything. With
 * `memflow-run --restart 1`, a data rank killed with kill -9 is started again by the launcher on
 * its data, registers under its old number and rejoins: every chunk ends with exactly 2 copies on
 * live ranks and no surplus copy is left on disk. With `memflow-run --join HOST:PORT -n 1`, a new
 * data rank joins a running 3-rank store (rank 0 + 2 data ranks), keeps its data in
 * DATA_DIR/rank-<its assigned number>, receives new chunks, and `dfs-client rebalance` brings
 * every data rank's fraction used within REBALANCE_BAND (5 points) of the others, plus at most one
 * chunk's worth for the last move. Every acknowledged file reads back with its sha256 throughout.
 *
 * Method: real stores through test/helpers/store-process.ts (--heartbeat-ms 200
 * --dead-after-ms 1500); the joining launcher is a second memflow-run started here on the same
 * data dir. Outcomes are read from the launcher's and rank 0's log lines (waited for with
 * deadlines), the status request and every file's metadata (polled with deadlines), and the chunk
 * copies in the data ranks' volume files on disk. afterEach stops the joining launcher (SIGTERM, then SIGKILL at a deadline) and
 * every store process, and removes the temp dirs, also when a test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RebalanceResult } from '../../src/protocol/client-protocol.js';
import { REBALANCE_BAND } from '../../src/rank/rebalance.js';
import {
  MEMFLOW_RUN,
  MiB,
  KiB,
  REPO_ROOT,
  StoreProcess,
  cleanupStores,
  describeRun,
  dfs,
  makeTempDir,
  waitUntil,
} from '../helpers/store-process.js';
import {
  copiesOnDisk,
  expectAllReadBack,
  expectDiskMatchesIndex,
  putFiles,
  rank0Lines,
  waitLine,
  waitReplicated,
  withClient,
  type Files,
  FAST,
} from '../helpers/store-checks.js';

const joiners: ChildProcess[] = [];

afterEach(async () => {
  for (const child of joiners.splice(0)) await stopChild(child, 10_000);
  await cleanupStores();
});

/** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves once it has exited. */
async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

// ---- the tests -------------------------------------------------------------------------------

describe('memflow-run --restart', () => {
  it('--restart 1, data rank 2 killed with kill -9 (3 data ranks, 256 KiB chunks): the launcher restarts it, it registers again and rejoins; 2 copies per chunk, no surplus on disk', async () => {
    const store = await StoreProcess.start({
      chunkSize: '256K',
      extraArgs: [...FAST, '--restart', '1'],
    });
    const work = makeTempDir('elastic-work');
    const files: Files = new Map();
    await putFiles(
      store,
      work,
      [...Array(6).keys()].map((i) => [`r-${i}.bin`, 1 * MiB + i * 77 * KiB]),
      files,
    );
    await waitReplicated(store, files, { 1: 'alive', 2: 'alive', 3: 'alive' });
    const oldPid = store.rankPid(2);

    const mark = store.stderr.length;
    store.killRank(2);
    await waitLine(
      store,
      /^memflow-run: rank 2 on localhost (was killed by SIGKILL|exited with status 137 \(SIGKILL\)); restarting it \(1 of 1\)$/,
      mark,
    );
    await waitLine(store, /^rank 2 restarted and registered again$/, mark);
    await waitLine(store, /^rank 2 is alive \((its process was replaced|rejoined)\)$/, mark);
    let newPid: number | undefined;
    await waitUntil(
      'a new memflow-rank process for rank 2',
      () => (newPid = store.rescanRankPids().get(2)) !== undefined && newPid !== oldPid,
      10_000,
    );
    await waitReplicated(store, files, { 1: 'alive', 2: 'alive', 3: 'alive' });
    await expectDiskMatchesIndex(store, files);
    await expectAllReadBack(store, files);
    expect(store.exited).toBe(false);
    console.log(`--restart 1: rank 0 said: ${rank0Lines(store, mark).join(' | ')}`);
  });
});

describe('memflow-run --join', () => {
  it('a 4th rank joins a running 3-rank store (--capacity 64M, 1 MiB chunks, same data dir): it is numbered 3, keeps its data in rank-3, gets new chunks, and rebalance brings fractions used within 5 points', async () => {
    const store = await StoreProcess.start({
      ranks: 3,
      chunkSize: '1M',
      extraArgs: [...FAST, '--capacity', '64M', '--scrub-rate', '0'],
    });
    const ready = store.stdout.map((l) => / memflow-run --join (\S+)$/.exec(l)).find(Boolean);
    expect(ready, `the ready line names the join address\n${store.stdout.join('\n')}`).toBeTruthy();
    const joinAddress = ready![1]!;
    const work = makeTempDir('elastic-work');
    const files: Files = new Map();
    await putFiles(
      store,
      work,
      [...Array(8).keys()].map((i) => [`before-${i}.bin`, 2 * MiB]),
      files,
    );
    await waitReplicated(store, files, { 1: 'alive', 2: 'alive' });

    const mark = store.stderr.length;
    const joinOut: string[] = [];
    const joiner = spawn(
      process.execPath,
      [
        MEMFLOW_RUN,
        '--join',
        joinAddress,
        '-n',
        '1',
        '--data-dir',
        store.dataDir,
        ...FAST,
        '--capacity',
        '64M',
        '--scrub-rate',
        '0',
      ],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    joiners.push(joiner);
    joiner.stdout.setEncoding('utf8').on('data', (d: string) => joinOut.push(d));
    joiner.stderr.setEncoding('utf8').on('data', (d: string) => joinOut.push(d));
    const joinTranscript = (): string => `joining launcher:\n${joinOut.join('')}`;

    await waitLine(store, /^rank 3 joined the world$/, mark).catch((err: Error) => {
      throw new Error(`${err.message}\n${joinTranscript()}`);
    });
    // The joining launcher says where its rank went, tagged as its only rank.
    const joined = `[j0] joined the store at ${joinAddress} as rank 3; its chunks go to ${path.join(store.dataDir, 'rank-3')}`;
    await waitUntil(
      `the joiner's line "${joined}"\n${joinTranscript()}`,
      () => joinOut.join('').split('\n').includes(joined),
      10_000,
    );
    await waitReplicated(store, files, { 1: 'alive', 2: 'alive', 3: 'alive' });
    expect(fs.existsSync(path.join(store.dataDir, 'rank-3')), 'DATA_DIR/rank-3 exists').toBe(true);

    const added: Files = new Map();
    await putFiles(
      store,
      work,
      [...Array(4).keys()].map((i) => [`after-${i}.bin`, 2 * MiB]),
      added,
    );
    for (const [name, sha] of added) files.set(name, sha);
    const onRank3 = await withClient(store, async (client) => {
      const missing: string[] = [];
      for (const name of added.keys())
        for (const chunk of (await client.stat(name)).chunks)
          if (!chunk.copies.some((c) => c.rank === 3)) missing.push(`${name}#${chunk.index}`);
      return missing;
    });
    // The new rank is the emptiest: every new chunk gets one copy there.
    expect(onRank3, 'new chunks without a copy on rank 3').toEqual([]);
    expect(
      copiesOnDisk(store, 3).length,
      'chunk copies in the volume files under DATA_DIR/rank-3',
    ).toBeGreaterThanOrEqual(8);

    const args = ['rebalance', '--json'];
    const rebalanced = await dfs(store.server, args, { timeoutMs: 60_000 });
    expect(rebalanced.code, describeRun(args, rebalanced)).toBe(0);
    const result = JSON.parse(rebalanced.stdout.toString('utf8')) as RebalanceResult;
    const tolerance = REBALANCE_BAND + (1 * MiB) / (64 * MiB);
    expect(result.moves).toBeGreaterThan(0);
    expect(result.spreadBefore).toBeGreaterThan(REBALANCE_BAND);
    expect(result.spreadAfter).toBeLessThanOrEqual(tolerance);

    // The ranks' own reports (heartbeats) agree once the deletes are done.
    let fractions: number[] = [];
    await waitUntil(
      'every data rank within 5 points (+ one chunk) of the others',
      async () => {
        const status = await store.status();
        fractions = status.ranks
          .filter((r) => r.state === 'alive')
          .map((r) => r.usedBytes / r.capacityBytes);
        return (
          fractions.length === 3 && Math.max(...fractions) - Math.min(...fractions) <= tolerance
        );
      },
      15_000,
      100,
    ).catch(() => undefined);
    expect(fractions).toHaveLength(3);
    expect(Math.max(...fractions) - Math.min(...fractions)).toBeLessThanOrEqual(tolerance);

    await waitReplicated(store, files, { 1: 'alive', 2: 'alive', 3: 'alive' });
    await expectDiskMatchesIndex(store, files);
    await expectAllReadBack(store, files);
    console.log(
      `--join: rebalance ${JSON.stringify(result)}; fractions used ${fractions.map((f) => (f * 100).toFixed(1)).join(' / ')} %`,
    );
  });
});
