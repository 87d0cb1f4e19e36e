/**
 * What the store's real-process fault and elasticity tests check, shared: rank 0's log lines, the
 * acknowledged files (uploaded, read back by sha256), full replication as status and every file's
 * metadata show it, and the chunk copies on the data ranks' disks against the index. Every wait
 * polls a condition with a deadline and fails with what was still wrong.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { expect } from 'vitest';
import { DfsClient } from '../../src/client/dfs-client.js';
import type { RankState, StatusResult } from '../../src/protocol/client-protocol.js';
import {
  describeRun,
  dfs,
  liveVolumeChunksUnder,
  startDfs,
  waitUntil,
  writePseudoRandomFile,
  type DfsResult,
  type DfsRun,
  type StoreProcess,
} from './store-process.js';

/** Store options for fast failure detection: suspect after 600 ms of silence, dead after 1.5 s. */
export const FAST = ['--heartbeat-ms', '200', '--dead-after-ms', '1500'];

// ---- rank 0's log --------------------------------------------------------------------------

const RANK0 = '[0] memflow-rank 0: ';

/** Rank 0's log lines (without the tag) from stderr line `from` on. */
export function rank0Lines(store: StoreProcess, from = 0): string[] {
  return store.stderr
    .slice(from)
    .filter((l) => l.startsWith(RANK0))
    .map((l) => l.slice(RANK0.length));
}

/**
 * Waits for a stderr line matching `re` at line `from` or later — rank 0's lines without their
 * tag, any other line (the launcher's) as it is — and returns the match.
 */
export async function waitLine(
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

// ---- files ---------------------------------------------------------------------------------

/** sha256 of every acknowledged file, by name. */
export type Files = Map<string, string>;

export async function withClient<T>(
  store: StoreProcess,
  fn: (c: DfsClient) => Promise<T>,
): Promise<T> {
  const client = new DfsClient({ server: store.server, timeoutMs: 30_000 });
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** Uploads pseudo-random files of the given sizes through the library; records what was acked. */
export async function putFiles(
  store: StoreProcess,
  work: string,
  specs: Array<[name: string, sizeBytes: number]>,
  files: Files = new Map(),
): Promise<Files> {
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
  return files;
}

export class HashSink extends Writable {
  private readonly hash = createHash('sha256');
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.hash.update(chunk);
    done();
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

/**
 * Every acknowledged file is listed and reads back with its sha256 (but those in `checked`, read
 * back already by the test itself).
 */
export async function expectAllReadBack(
  store: StoreProcess,
  files: Files,
  checked: string[] = [],
): Promise<void> {
  await withClient(store, async (client) => {
    const listed = (await client.list()).map((f) => f.name).sort();
    expect(listed).toEqual([...files.keys()].sort());
    for (const [name, sha] of files) {
      if (checked.includes(name)) continue;
      const sink = new HashSink();
      await client.download(name, sink);
      expect(sink.digest(), `content of ${name}`).toBe(sha);
    }
  });
}

/**
 * What still keeps the store from "fully replicated": status underReplicatedChunks > 0, a chunk
 * of a file without exactly 2 copies on distinct live ranks, a rank state other than expected.
 */
export async function replicationProblems(
  store: StoreProcess,
  files: Files,
  states: Record<number, RankState>,
): Promise<{ problems: string[]; status: StatusResult }> {
  return withClient(store, async (client) => {
    const status = await client.status();
    const problems: string[] = [];
    if (status.underReplicatedChunks !== 0)
      problems.push(`status: ${status.underReplicatedChunks} under-replicated chunks`);
    for (const [rank, state] of Object.entries(states)) {
      const seen = status.ranks.find((r) => r.rank === Number(rank))?.state;
      if (seen !== state) problems.push(`rank ${rank} is ${seen}, expected ${state}`);
    }
    for (const name of files.keys()) {
      const meta = await client.stat(name);
      if (meta.underReplicatedChunks !== 0)
        problems.push(`${name}: ${meta.underReplicatedChunks} under-replicated chunks`);
      for (const chunk of meta.chunks) {
        const live = chunk.copies.filter((c) => c.state === 'alive').map((c) => c.rank);
        if (chunk.copies.length !== 2 || live.length !== 2 || new Set(live).size !== 2)
          problems.push(`${name} chunk ${chunk.index}: copies ${JSON.stringify(chunk.copies)}`);
      }
    }
    return { problems, status };
  });
}

/** Polls until replicationProblems() is empty; fails listing them at the deadline. */
export async function waitReplicated(
  store: StoreProcess,
  files: Files,
  states: Record<number, RankState>,
  timeoutMs = 30_000,
): Promise<StatusResult> {
  let last: { problems: string[]; status: StatusResult } | undefined;
  try {
    await waitUntil(
      'full replication',
      async () => (last = await replicationProblems(store, files, states)).problems.length === 0,
      timeoutMs,
      100,
    );
  } catch {
    throw new Error(
      `not fully replicated within ${timeoutMs} ms:\n${last?.problems.slice(0, 20).join('\n')}\n` +
        `status: ${JSON.stringify(last?.status)}\n${store.transcript()}`,
    );
  }
  return last!.status;
}

export const allAlive = (ranks = [1, 2, 3]): Record<number, RankState> =>
  Object.fromEntries(ranks.map((r) => [r, 'alive']));

/** The chunk checksums each data rank should hold by the index (every file's copies), sorted. */
export async function copiesByRank(
  store: StoreProcess,
  files: Files,
): Promise<Map<number, string[]>> {
  return withClient(store, async (client) => {
    const byRank = new Map<number, string[]>();
    for (const r of (await client.status()).ranks) byRank.set(r.rank, []);
    for (const name of files.keys())
      for (const chunk of (await client.stat(name)).chunks)
        for (const copy of chunk.copies) byRank.get(copy.rank)?.push(chunk.checksum);
    for (const list of byRank.values()) list.sort();
    return byRank;
  });
}

/** The chunk checksums data rank `rank` holds in its volume files, sorted. */
export function copiesOnDisk(store: StoreProcess, rank: number): string[] {
  return [...liveVolumeChunksUnder(store.dataDir, rank).values()].map((r) => r.checksum).sort();
}

/**
 * No surplus and nothing missing: every data rank's volume files hold exactly the copies the
 * index lists on it. Both sides are read again at each poll: deletes are asynchronous, and the
 * index itself may still move after every chunk has its copies (a repair copy that finishes
 * after its rank came back replaces that rank's copy, which is then trimmed).
 */
export async function expectDiskMatchesIndex(store: StoreProcess, files: Files): Promise<void> {
  let expected = await copiesByRank(store, files);
  const actual = (): Map<number, string[]> =>
    new Map([...expected.keys()].map((rank) => [rank, copiesOnDisk(store, rank)]));
  await waitUntil(
    'the copies on disk to match the index',
    async () => {
      expected = await copiesByRank(store, files);
      return JSON.stringify([...actual()]) === JSON.stringify([...expected]);
    },
    10_000,
    100,
  ).catch(() => undefined);
  const count = (m: Map<number, string[]>): Record<number, number> =>
    Object.fromEntries([...m].map(([rank, list]) => [rank, list.length]));
  expect(count(actual()), 'copies on disk per rank').toEqual(count(expected));
  expect(actual(), 'checksums on disk per rank').toEqual(expected);
}

/**
 * Starts `dfs-client SRC -a --as NAME` and resolves once `minBytes` more are on the data ranks'
 * disks, with the upload still running (asserted): "in the middle of an upload" observed, not
 * guessed after a sleep. Returns the run and its arguments.
 */
export async function uploadUnderWay(
  store: StoreProcess,
  src: string,
  name: string,
  minBytes: number,
  options: { timeoutMs: number; waitMs: number },
): Promise<{ args: string[]; run: DfsRun }> {
  const baseline = store.dataRankBytes();
  const args = [src, '-a', '--as', name, '--server', store.server];
  const run = startDfs(args, { timeoutMs: options.timeoutMs });
  await waitUntil(
    `the upload to be under way (${minBytes / (1024 * 1024)} MiB more on the data ranks)`,
    () => store.dataRankBytes() > baseline + minBytes || run.child.exitCode !== null,
    options.waitMs,
    5,
  );
  expect(run.child.exitCode, 'the upload was still running').toBeNull();
  return { args, run };
}

// ---- the command line ------------------------------------------------------------------------

/** A dfs-client run that failed the way the README promises: one line on stderr, no stack. */
export function expectClearFailure(args: string[], r: DfsResult): void {
  const why = describeRun(args, r);
  expect(r.timedOut, why).toBe(false);
  expect(r.code, why).not.toBe(0);
  expect(r.code, why).not.toBeNull();
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, why).toHaveLength(1);
  expect(lines[0], why).toMatch(/^dfs-client: \S/);
  expect(r.stderr, why).not.toMatch(/\n\s+at /);
}

/**
 * Uploads a new `bytes`-byte file `name` (its source in `work`) to a store without room for it:
 * dfs-client must exit 5 with one clear line matching `reason`, and the refusal must come before
 * anything is written (no "could not store" line in rank 0's log). Returns the refused run.
 */
export async function expectRefusedForSpace(
  store: StoreProcess,
  work: string,
  name: string,
  bytes: number,
  reason: RegExp,
): Promise<DfsResult> {
  const mark = store.stderr.length;
  const src = path.join(work, `${name}.src`);
  await writePseudoRandomFile(src, bytes, name);
  const args = [src, '-a', '--as', name];
  const refused = await dfs(store.server, args);
  expect(refused.code, describeRun(args, refused)).toBe(5);
  expect(refused.stderr).toMatch(reason);
  expectClearFailure(args, refused);
  expect(
    rank0Lines(store, mark).filter((l) => /could not store/.test(l) || l.includes(name)),
    'a refused upload writes nothing',
  ).toEqual([]);
  return refused;
}
