/**
 * Large files, end to end. Goal: big files round-trip whole, and memory stays bounded whatever the
 * file size — the store streams chunk by chunk, it never holds a file. A 1 GiB file uploads and
 * retrieves with an equal sha256 while the peak resident memory of rank 0, of each data rank and
 * of the dfs-client process stays under 300 MiB. The same for a 4 GiB file, as the issue asks: it
 * needs about 17 GiB of disk (the source, two copies, the retrieved file) and a minute, so it runs
 * whenever the temporary directory's disk has FOUR_GIB_DISK_BYTES free, and otherwise is skipped
 * saying why; MEMFLOW_TEST_4GIB=0 skips it on purpose. CI runs it.
 *
 * Method: one real store (memflow-run -n 4, default 4 MiB chunks, 2 copies) on a temporary data
 * dir and a free port. Test files are written by a streaming generator of deterministic
 * pseudo-random bytes (AES-CTR keystream, never all zeros, never whole in memory), hashed while
 * written; the retrieved file is hashed by streaming too. Peak memory: the ranks' VmHWM from
 * /proc/PID/status, read after the round trip and before the store stops; the client's from
 * `/usr/bin/time -v` ("Maximum resident set size"), or, where that tool is missing, VmHWM of the
 * client process sampled every 50 ms while it runs.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileMetadata } from '../../src/protocol/client-protocol.js';
import {
  GiB,
  MiB,
  StoreProcess,
  cleanupStores,
  describeRun,
  makeTempDir,
  maxRssFromTimeV,
  memoryOf,
  sha256File,
  startDfs,
  writePseudoRandomFile,
  type DfsResult,
} from '../helpers/store-process.js';

const PEAK_RSS_LIMIT = 300 * MiB;
const TIME_V = '/usr/bin/time';
const HAVE_TIME_V = fs.existsSync(TIME_V);
/** Free disk the 4 GiB case needs: 16 GiB it writes, and room for everything else. */
const FOUR_GIB_DISK_BYTES = 20 * GiB;

/** Why the 4 GiB case cannot run here, or undefined when it can. */
function fourGibSkipReason(): string | undefined {
  if (process.env.MEMFLOW_TEST_4GIB === '0') return 'MEMFLOW_TEST_4GIB=0 asks to skip it';
  const disk = fs.statfsSync(os.tmpdir());
  const free = disk.bavail * disk.bsize;
  if (free < FOUR_GIB_DISK_BYTES)
    return `${os.tmpdir()} has ${(free / GiB).toFixed(1)} GiB free; it needs ${FOUR_GIB_DISK_BYTES / GiB} GiB`;
  return undefined;
}

let store: StoreProcess;
let work: string;

beforeAll(async () => {
  store = await StoreProcess.start();
  work = makeTempDir('large-work');
});

afterAll(async () => {
  try {
    if (store !== undefined) expect(await store.stop()).toEqual({ code: 143, signal: null });
  } finally {
    await cleanupStores();
  }
});

const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;

/** Runs dfs-client ARGS against the store; resolves with its result and its peak RSS. */
async function measuredClient(
  args: string[],
  timeoutMs: number,
): Promise<{ result: DfsResult; peakRssBytes: number }> {
  const fullArgs = [...args, '--server', store.server];
  if (HAVE_TIME_V) {
    const result = await startDfs(fullArgs, { timeoutMs, wrapper: [TIME_V, '-v'] }).result;
    const peak = maxRssFromTimeV(result.stderr);
    if (peak === undefined)
      throw new Error(`no maximum RSS in the output of time -v:\n${result.stderr}`);
    return { result, peakRssBytes: peak };
  }
  const run = startDfs(fullArgs, { timeoutMs });
  let peak = 0;
  const sampler = setInterval(() => {
    try {
      if (run.child.pid !== undefined) peak = Math.max(peak, memoryOf(run.child.pid).peakRssBytes);
    } catch {
      // Exited between samples.
    }
  }, 50);
  try {
    return { result: await run.result, peakRssBytes: peak };
  } finally {
    clearInterval(sampler);
  }
}

/** The error lines of a run under time -v: what dfs-client itself wrote. */
const clientLines = (stderr: string): string =>
  stderr
    .split('\n')
    .filter((l) => l.startsWith('dfs-client'))
    .join('\n');

async function roundTrip(sizeBytes: number, name: string, timeoutMs: number): Promise<void> {
  const source = path.join(work, `${name}.src`);
  const target = path.join(work, `${name}.back`);
  try {
    let started = performance.now();
    const sha = await writePseudoRandomFile(source, sizeBytes, name);
    const generateMs = performance.now() - started;

    started = performance.now();
    const upload = await measuredClient([source, '-a', '--as', name], timeoutMs);
    const uploadMs = performance.now() - started;
    expect(upload.result.code, describeRun(['-a', name], upload.result)).toBe(0);

    const stat = await measuredClient([name, '-m', '--json'], 30_000);
    expect(stat.result.code, clientLines(stat.result.stderr)).toBe(0);
    const meta = JSON.parse(stat.result.stdout.toString('utf8')) as FileMetadata;
    expect(meta).toMatchObject({ name, sizeBytes, sha256: sha, version: 1 });
    expect(meta.chunks).toHaveLength(Math.ceil(sizeBytes / meta.chunkSizeBytes));
    expect(meta.chunks.every((c) => c.copies.length === 2)).toBe(true);

    started = performance.now();
    const retrieve = await measuredClient([name, '-r', '-o', target], timeoutMs);
    const retrieveMs = performance.now() - started;
    expect(retrieve.result.code, describeRun(['-r', name], retrieve.result)).toBe(0);
    expect(fs.statSync(target).size).toBe(sizeBytes);
    expect(await sha256File(target)).toBe(sha);

    const ranks = store.peakRssByRank();
    const report = [
      `${name}: ${mib(sizeBytes)} generated in ${(generateMs / 1000).toFixed(1)} s, ` +
        `uploaded in ${(uploadMs / 1000).toFixed(1)} s, retrieved in ${(retrieveMs / 1000).toFixed(1)} s`,
      `peak RSS: client upload ${mib(upload.peakRssBytes)}, client retrieve ${mib(retrieve.peakRssBytes)}, ` +
        [...ranks].map(([rank, bytes]) => `rank ${rank} ${mib(bytes)}`).join(', '),
    ].join('\n');
    console.log(report);
    expect(upload.peakRssBytes, report).toBeLessThan(PEAK_RSS_LIMIT);
    expect(retrieve.peakRssBytes, report).toBeLessThan(PEAK_RSS_LIMIT);
    expect(ranks.size).toBe(4);
    for (const [rank, bytes] of ranks)
      expect(bytes, `rank ${rank}\n${report}`).toBeLessThan(PEAK_RSS_LIMIT);

    // Free the store's disk for the next case.
    const removed = await measuredClient([name, '-d'], 60_000);
    expect(removed.result.code, clientLines(removed.result.stderr)).toBe(0);
  } finally {
    fs.rmSync(source, { force: true });
    fs.rmSync(target, { force: true });
  }
}

describe('large files (4 MiB chunks, 2 copies, 3 data ranks)', () => {
  it(
    'a 1 GiB file round-trips with an equal sha256; peak RSS of rank 0, each data rank and dfs-client < 300 MiB',
    { timeout: 300_000 },
    async () => {
      await roundTrip(GiB, 'one-gib.bin', 240_000);
    },
  );

  it(
    'a 4 GiB file round-trips with an equal sha256; peak RSS < 300 MiB everywhere',
    { timeout: 1_800_000 },
    async (ctx) => {
      const reason = fourGibSkipReason();
      if (reason !== undefined) {
        console.log(`skipped 4 GiB round trip: ${reason}`);
        ctx.skip(reason);
      }
      await roundTrip(4 * GiB, 'four-gib.bin', 1_200_000);
    },
  );
});
