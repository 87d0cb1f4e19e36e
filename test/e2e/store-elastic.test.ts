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
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { DfsClient } from '../../src/client/dfs-client.js';
import type {
  RankState,
  RebalanceResult,
  StatusResult,
} from '../../src/protocol/client-protocol.js';
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
  liveVolumeChunksUnder,
  makeTempDir,
  waitUntil,
  writePseudoRandomFile,
} from '../helpers/store-process.js';

const FAST = ['--heartbeat-ms', '200', '--dead-after-ms', '1500'];

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

// ---- logs ------------------------------------------------------------------------------------

const RANK0 = '[0] memflow-rank 0: ';

function rank0Lines(store: StoreProcess, from = 0): string[] {
  return store.stderr
    .slice(from)
    .filter((l) => l.startsWith(RANK0))
    .map((l) => l.slice(RANK0.length));
}

/** Waits for a stderr line matching `re` (rank 0's without its tag, or any other line). */
async function waitLine(
  store: StoreProcess,
  re: RegExp,
  from = 0,
  timeoutMs = 20_000,
): Promise<RegExpExecArray> {
  let match: RegExpExecArray | null = null;
  const lines = (): string[] =>
    store.stderr.slice(from).map((l) => (l.startsWith(RANK0) ? l.slice(RANK0.length) : l));
  await store.waitFor(
    `a line matching ${String(re)}`,
    () => lines().some((l) => (match = re.exec(l)) !== null),
    timeoutMs,
  );
  return match!;
}

// ---- files and replication ---------------------------------------------------------------------

type Files = Map<string, string>;

async function withClient<T>(store: StoreProcess, fn: (c: DfsClient) => Promise<T>): Promise<T> {
  const client = new DfsClient({ server: store.server, timeoutMs: 30_000 });
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

async function putFiles(
  store: StoreProcess,
  work: string,
  specs: Array<[name: string, sizeBytes: number]>,
  files: Files,
): Promise<void> {
  await withClient(store, async (client) => {
    for (const [name, size] of specs) {
      const local = path.join(work, `${name}.src`);
      const sha = await writePseudoRandomFile(local, size, name);
      const meta = await client.upload(local, { name });
      expect(meta.sha256, `sha256 the store acknowledged for ${name}`).toBe(sha);
      files.set(name, sha);
      fs.rmSync(local);
    }
  });
}

class HashSink extends Writable {
  private readonly hash = createHash('sha256');
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.hash.update(chunk);
    done();
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

async function expectAllReadBack(store: StoreProcess, files: Files): Promise<void> {
  await withClient(store, async (client) => {
    const listed = (await client.list()).map((f) => f.name).sort();
    expect(listed).toEqual([...files.keys()].sort());
    for (const [name, sha] of files) {
      const sink = new HashSink();
      await client.download(name, sink);
      expect(sink.digest(), `content of ${name}`).toBe(sha);
    }
  });
}

/** Polls until status and every file's metadata show full replication and the given states. */
async function waitReplicated(
  store: StoreProcess,
  files: Files,
  states: Record<number, RankState>,
  timeoutMs = 30_000,
): Promise<StatusResult> {
  let problems: string[] = [];
  let status: StatusResult | undefined;
  const check = async (): Promise<boolean> =>
    withClient(store, async (client) => {
      status = await client.status();
      problems = [];
      if (status.underReplicatedChunks !== 0)
        problems.push(`status: ${status.underReplicatedChunks} under-replicated chunks`);
      for (const [rank, state] of Object.entries(states)) {
        const seen = status.ranks.find((r) => r.rank === Number(rank))?.state;
        if (seen !== state) problems.push(`rank ${rank} is ${seen}, expected ${state}`);
      }
      for (const name of files.keys()) {
        for (const chunk of (await client.stat(name)).chunks) {
          const live = chunk.copies.filter((c) => c.state === 'alive').map((c) => c.rank);
          if (chunk.copies.length !== 2 || live.length !== 2 || new Set(live).size !== 2)
            problems.push(`${name} chunk ${chunk.index}: copies ${JSON.stringify(chunk.copies)}`);
        }
      }
      return problems.length === 0;
    });
  try {
    await waitUntil('full replication', check, timeoutMs, 100);
  } catch {
    throw new Error(
      `not fully replicated within ${timeoutMs} ms:\n${problems.slice(0, 20).join('\n')}\n` +
        `status: ${JSON.stringify(status)}\n${store.transcript()}`,
    );
  }
  return status!;
}

/** The chunk checksums data rank `rank` holds in its volume files, sorted. */
function copiesOnDisk(store: StoreProcess, rank: number): string[] {
  return [...liveVolumeChunksUnder(store.dataDir, rank).values()].map((r) => r.checksum).sort();
}

/**
 * No surplus and nothing missing: every data rank's volume files hold exactly the copies the
 * index lists on it (polled: deletes are asynchronous).
 */
async function expectDiskMatchesIndex(store: StoreProcess, files: Files): Promise<void> {
  const expected = await withClient(store, async (client) => {
    const byRank = new Map<number, string[]>();
    for (const r of (await client.status()).ranks) byRank.set(r.rank, []);
    for (const name of files.keys())
      for (const chunk of (await client.stat(name)).chunks)
        for (const copy of chunk.copies) byRank.get(copy.rank)?.push(chunk.checksum);
    for (const list of byRank.values()) list.sort();
    return byRank;
  });
  const actual = (): Map<number, string[]> =>
    new Map([...expected.keys()].map((rank) => [rank, copiesOnDisk(store, rank)]));
  await waitUntil(
    'the copies on disk to match the index',
    () => JSON.stringify([...actual()]) === JSON.stringify([...expected]),
    10_000,
    100,
  ).catch(() => undefined);
  const count = (m: Map<number, string[]>): Record<number, number> =>
    Object.fromEntries([...m].map(([rank, list]) => [rank, list.length]));
  expect(count(actual()), 'copies on disk per rank').toEqual(count(expected));
  expect(actual(), 'checksums on disk per rank').toEqual(expected);
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
