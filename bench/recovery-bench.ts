/**
 * `npm run bench:recovery`: how fast the store brings replication back after losing a data rank.
 *
 * For each fault, RUNS times (default 3, MEMFLOW_BENCH_RUNS), on a fresh store each time: start a
 * local 4-rank store (rank 0 + 3 data ranks, 2 copies, 4 MiB chunks, the default --heartbeat-ms
 * 1000 and --dead-after-ms 5000) on a free port and a fresh data dir, upload one 1 GiB file
 * (MEMFLOW_RECOVERY_MIB to change it), then hit data rank 2 and measure the time from the fault
 * to full replication: the status request (polled every 25 ms) shows rank 2 dead and
 * `underReplicatedChunks` 0, i.e. every chunk on 2 live ranks (checked once more afterwards
 * through every chunk's copies). The faults are kill -9 (a dropped connection: declared dead
 * within the disconnect grace) and SIGSTOP (the process keeps its connections: only the silence
 * of --dead-after-ms declares it dead). Each run also records when status first showed the rank
 * dead and when rank 0 logged "re-replicating", which splits the total into detection and copying.
 *
 * Prints a table with the medians against the targets (kill -9: ≤ 5 s; SIGSTOP: ≤ dead-after +
 * 5 s = 10 s) and reference figures of other systems, and saves it as JSON in
 * bench/results/recovery.json. Every process is stopped at the end, also on failure or Ctrl-C:
 * a stopped rank is continued first, then the launcher gets SIGTERM, and whatever is left of the
 * store (found through /proc by its data dir) gets SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { DfsClient } from '../src/client/dfs-client.js';
import type { StatusResult } from '../src/protocol/client-protocol.js';
import { freePort, ROOT, storeArgs } from './local-store.js';

const RUNS = Number(process.env.MEMFLOW_BENCH_RUNS ?? 3);
const MiB = 1024 * 1024;
const DATA_BYTES = Number(process.env.MEMFLOW_RECOVERY_MIB ?? 1024) * MiB;
const HEARTBEAT_MS = 1000;
const DEAD_AFTER_MS = 5000;
const POLL_MS = 25;
const VICTIM = 2;
/** A recovery slower than this is a failure of the run, not a figure. */
const RECOVERY_DEADLINE_MS = 120_000;

type Fault = 'kill' | 'stop';

interface Run {
  /** Fault to full replication. */
  totalMs: number;
  /** Fault to the first status that showed the rank dead. */
  deadMs: number;
  /** Fault to rank 0's "re-replicating N chunks" line. */
  repairStartMs: number | undefined;
  /** Chunks rank 0 said it re-replicates. */
  chunks: number | undefined;
  uploadMBps: number;
}

// ---- processes -------------------------------------------------------------------------------

interface Store {
  dataDir: string;
  port: number;
  launcher: ChildProcess;
  /** Rank 0's log lines with the time they arrived (performance.now()). */
  log: Array<{ atMs: number; line: string }>;
  /** The launcher's stderr (the last 200 lines), for error messages. */
  stderr: string[];
  exited: Promise<void>;
  stoppedPid: number | undefined;
}

const live = new Set<Store>();

function argvOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0$/, '').split('\0');
  } catch {
    return [];
  }
}

/** Every process with `--data-dir DIR` on its command line (launcher, guards, ranks). */
function processesOf(dataDir: string): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid)
    .map(Number)
    .filter((pid) => {
      const argv = argvOf(pid);
      return argv.some((w, i) => w === '--data-dir' && argv[i + 1] === dataDir);
    });
}

/** The pid of data rank `rank`'s memflow-rank process (not its guard). */
function rankPid(dataDir: string, rank: number): number {
  for (const pid of processesOf(dataDir)) {
    const argv = argvOf(pid);
    if (
      !argv.some((w) => w.endsWith('memflow-rank.js')) ||
      argv.some((w) => w.endsWith('rank-guard.js'))
    )
      continue;
    try {
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      if (env.includes(`MEMFLOW_RANK=${rank}`)) return pid;
    } catch {
      // Gone meanwhile.
    }
  }
  throw new Error(`no memflow-rank process for rank ${rank} under ${dataDir}`);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

/**
 * Starts a store on a fresh data dir and a free port. A port from port 0 can be taken by someone
 * else between the probe and rank 0's bind: then it tries again on another one (3 tries in all).
 */
async function startStore(): Promise<Store> {
  for (let attempt = 1; ; attempt++) {
    const store = launchStore(mkdtempSync(join(tmpdir(), 'memflow-recovery-')), await freePort());
    try {
      await whenReady(store);
      return store;
    } catch (err) {
      await stopStore(store);
      const taken = store.stderr.some((l) => l.includes('Address already in use'));
      if (!taken || attempt >= 3) throw err;
    }
  }
}

function launchStore(dataDir: string, port: number): Store {
  const launcher = spawn(
    process.execPath,
    storeArgs(dataDir, port, [
      '--heartbeat-ms',
      String(HEARTBEAT_MS),
      '--dead-after-ms',
      String(DEAD_AFTER_MS),
    ]),
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => launcher.once('close', () => resolve()));
  const store: Store = {
    dataDir,
    port,
    launcher,
    log: [],
    stderr: [],
    exited,
    stoppedPid: undefined,
  };
  live.add(store);
  let err = '';
  launcher.stderr.setEncoding('utf8').on('data', (d: string) => {
    const parts = (err + d).split('\n');
    err = parts.pop() ?? '';
    const atMs = performance.now();
    for (const line of parts) {
      store.stderr.push(line);
      if (store.stderr.length > 200) store.stderr.shift();
      const m = /^\[0\] memflow-rank 0: (.*)$/.exec(line);
      if (m) store.log.push({ atMs, line: m[1]! });
      else if (process.env.MEMFLOW_BENCH_VERBOSE) process.stderr.write(`${line}\n`);
    }
  });
  return store;
}

/** Resolves on the store's ready line; rejects if it exits first or is not ready within 60 s. */
function whenReady(store: Store): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error('the store was not ready within 60 s')),
      60_000,
    );
    store.launcher.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('MemFlow store ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void store.exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`the store exited before it was ready:\n${store.stderr.join('\n')}`));
    });
  });
}

/** Continues a stopped rank, SIGTERMs the launcher, SIGKILLs what is left; removes the data dir. */
async function stopStore(store: Store): Promise<void> {
  if (store.stoppedPid !== undefined) signal(store.stoppedPid, 'SIGCONT');
  if (store.launcher.exitCode === null && store.launcher.signalCode === null) {
    store.launcher.kill('SIGTERM');
    await Promise.race([store.exited, delay(20_000)]);
  }
  for (let i = 0; i < 100; i++) {
    const left = processesOf(store.dataDir);
    if (left.length === 0) break;
    for (const pid of left) signal(pid, 'SIGKILL');
    await delay(50);
  }
  rmSync(store.dataDir, { recursive: true, force: true });
  live.delete(store);
}

function stopAllNow(): void {
  for (const store of live) {
    if (store.stoppedPid !== undefined) signal(store.stoppedPid, 'SIGCONT');
    store.launcher.kill('SIGKILL');
    for (const pid of processesOf(store.dataDir)) signal(pid, 'SIGKILL');
    rmSync(store.dataDir, { recursive: true, force: true });
  }
  live.clear();
}

// ---- one run -----------------------------------------------------------------------------------

async function writeRandomFile(path: string, bytes: number): Promise<string> {
  const cipher = createCipheriv('aes-256-ctr', randomBytes(32), randomBytes(16));
  const hash = createHash('sha256');
  const zero = Buffer.alloc(4 * MiB);
  const handle = await open(path, 'w');
  try {
    for (let done = 0; done < bytes; done += zero.length) {
      const block = cipher.update(zero.subarray(0, Math.min(zero.length, bytes - done)));
      hash.update(block);
      await handle.write(block);
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

async function measure(fault: Fault, source: string, sha: string): Promise<Run> {
  const store = await startStore();
  const client = new DfsClient({ server: `127.0.0.1:${store.port}`, timeoutMs: 60_000 });
  try {
    let t = performance.now();
    const meta = await client.upload(source, { name: 'data.bin' });
    const uploadMBps = DATA_BYTES / 1e6 / ((performance.now() - t) / 1000);
    if (meta.sha256 !== sha) throw new Error('the store acknowledged another sha256');
    const before = await client.status();
    if (before.underReplicatedChunks !== 0 || before.ranks.some((r) => r.state !== 'alive'))
      throw new Error(`not healthy before the fault: ${JSON.stringify(before)}`);

    const pid = rankPid(store.dataDir, VICTIM);
    const logMark = store.log.length;
    t = performance.now();
    if (fault === 'kill') signal(pid, 'SIGKILL');
    else {
      store.stoppedPid = pid;
      signal(pid, 'SIGSTOP');
    }
    let deadMs: number | undefined;
    let status: StatusResult;
    for (;;) {
      status = await client.status();
      const now = performance.now() - t;
      const victim = status.ranks.find((r) => r.rank === VICTIM);
      if (victim?.state === 'dead') {
        deadMs ??= now;
        if (status.underReplicatedChunks === 0) break;
      }
      if (now > RECOVERY_DEADLINE_MS)
        throw new Error(
          `no full replication within ${RECOVERY_DEADLINE_MS} ms: ${JSON.stringify(status)}`,
        );
      await delay(POLL_MS);
    }
    const totalMs = performance.now() - t;

    // Not timed: every chunk of the file on exactly 2 distinct live ranks, none on the victim.
    const after = await client.stat('data.bin');
    const bad = after.chunks.filter((c) => {
      const alive = c.copies.filter((x) => x.state === 'alive').map((x) => x.rank);
      return alive.length !== 2 || new Set(alive).size !== 2 || alive.includes(VICTIM);
    });
    if (bad.length > 0)
      throw new Error(`${bad.length} chunks not on 2 live ranks: ${JSON.stringify(bad[0])}`);

    const repair = store.log
      .slice(logMark)
      .map((l) => ({ ...l, m: /^re-replicating (\d+) chunks$/.exec(l.line) }))
      .find((l) => l.m !== null);
    return {
      totalMs,
      deadMs: deadMs,
      repairStartMs: repair ? repair.atMs - t : undefined,
      chunks: repair ? Number(repair.m![1]) : undefined,
      uploadMBps,
    };
  } finally {
    client.close();
    await stopStore(store);
  }
}

// ---- the table -------------------------------------------------------------------------------

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const seconds = (ms: number | undefined): string =>
  ms === undefined ? '-' : (ms / 1000).toFixed(2);

const REFERENCES = [
  'MooseFS (measured here): 0.15-0.4 s from kill -9 to re-replication for 256 MiB; ~10 s after SIGSTOP',
  'HDFS: a DataNode is declared dead after 10.5 minutes (2 x 5 min recheck + 10 x 3 s heartbeats) by default',
  'SeaweedFS: does not re-replicate by itself (volume.fix.replication must be run)',
];

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'memflow-recovery-src-'));
  try {
    const source = join(work, 'data.bin');
    const sha = await writeRandomFile(source, DATA_BYTES);
    const results: Record<Fault, Run[]> = { kill: [], stop: [] };
    for (const fault of ['kill', 'stop'] as const) {
      for (let run = 0; run < RUNS; run++) {
        const r = await measure(fault, source, sha);
        results[fault].push(r);
        console.error(
          `${fault === 'kill' ? 'kill -9' : 'SIGSTOP'} run ${run + 1}/${RUNS}: dead after ${seconds(r.deadMs)} s, ` +
            `re-replicating ${r.chunks ?? '?'} chunks from ${seconds(r.repairStartMs)} s, full replication after ${seconds(r.totalMs)} s ` +
            `(upload ${r.uploadMBps.toFixed(0)} MB/s)`,
        );
      }
    }

    const rows = (
      [
        ['kill', 'kill -9 of a data rank → full replication', 5000, '≤ 5 s'],
        [
          'stop',
          'SIGSTOP of a data rank → full replication',
          DEAD_AFTER_MS + 5000,
          '≤ 10 s (dead-after + 5 s)',
        ],
      ] as const
    ).map(([fault, what, limitMs, target]) => {
      const runs = results[fault];
      const value = median(runs.map((r) => r.totalMs));
      return {
        what,
        value: value / 1000,
        unit: 's',
        target,
        met: value <= limitMs,
        runs: runs.map((r) => r.totalMs / 1000),
        declaredDead: median(runs.map((r) => r.deadMs)) / 1000,
        repairStarted: median(runs.map((r) => r.repairStartMs ?? NaN)) / 1000,
        chunksReReplicated: median(runs.map((r) => r.chunks ?? NaN)),
      };
    });

    const header = [
      'what',
      'median',
      'target',
      'met',
      'declared dead',
      'copying from',
      'chunks',
      'runs (s)',
    ];
    const body = rows.map((r) => [
      r.what,
      `${r.value.toFixed(2)} s`,
      r.target,
      r.met ? 'yes' : 'NO',
      `${r.declaredDead.toFixed(2)} s`,
      `${r.repairStarted.toFixed(2)} s`,
      String(r.chunksReReplicated),
      r.runs.map((x) => x.toFixed(2)).join(', '),
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: string[]): string =>
      `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
    console.log(
      `Recovery of a 4-rank store (3 data ranks, 2 copies, 4 MiB chunks) holding ${DATA_BYTES / MiB} MiB; ` +
        `heartbeat ${HEARTBEAT_MS} ms, dead after ${DEAD_AFTER_MS} ms; median of ${RUNS} runs, a fresh store each`,
    );
    console.log(line(header));
    console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
    for (const b of body) console.log(line(b));
    console.log('\nFor reference:');
    for (const r of REFERENCES) console.log(`- ${r}`);

    const resultsDir = join(ROOT, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    const out = join(resultsDir, 'recovery.json');
    writeFileSync(
      out,
      `${JSON.stringify(
        {
          when: new Date().toISOString(),
          machine: `${cpus().length} cores, Node ${process.versions.node.split('.')[0]}`,
          runs: RUNS,
          dataBytes: DATA_BYTES,
          heartbeatMs: HEARTBEAT_MS,
          deadAfterMs: DEAD_AFTER_MS,
          pollMs: POLL_MS,
          rows,
          details: results,
          references: REFERENCES,
        },
        null,
        2,
      )}\n`,
    );
    console.log(`\nsaved ${out}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    stopAllNow();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  });
}

main()
  .catch((err: unknown) => {
    console.error(
      `recovery bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
    );
    process.exitCode = 1;
  })
  .finally(() => stopAllNow());
