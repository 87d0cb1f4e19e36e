/**
 * A MemFlow store as real processes, for end-to-end tests: `memflow-run -n 4 --data-dir DIR
 * --port P` with a fresh temporary data dir and a port the kernel chose (bind port 0 on
 * 127.0.0.1), started and awaited on its ready line with a deadline.
 *
 * The store's processes are found by reading /proc: every process of one store has the unique
 * data dir on its command line (the launcher, one rank guard and one memflow-rank per rank), and
 * a memflow-rank's rank number is MEMFLOW_RANK in its environment. Nothing here waits without a
 * deadline, and `cleanupStores()` (call it in afterEach/afterAll) SIGKILLs whatever is left of
 * every store started through this module and removes the temporary directories, even when a
 * test failed half-way.
 *
 * Also here: dfs-client runs with binary stdout and a deadline, a streaming writer of
 * deterministic pseudo-random files (AES-256-CTR keystream: fast, not compressible, never held in
 * memory whole), a streaming sha256, and counters of the chunk files under a data dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { findFreePort } from '../../launcher/free-port.js';
import { DfsClient } from '../../src/client/dfs-client.js';
import type { StatusResult } from '../../src/protocol/client-protocol.js';
import { WatchedProcess, type Exit } from './watched-process.js';

export const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..');
export const MEMFLOW_RUN = path.join(REPO_ROOT, 'bin', 'memflow-run.js');
export const DFS_CLIENT = path.join(REPO_ROOT, 'bin', 'dfs-client.js');
const BUILT = [
  path.join(REPO_ROOT, 'dist', 'launcher', 'cli.js'),
  path.join(REPO_ROOT, 'dist', 'src', 'cli', 'memflow-rank.js'),
  path.join(REPO_ROOT, 'dist', 'src', 'cli', 'dfs-client.js'),
];

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Throws a clear message when `npm run build` has not been run. */
export function requireBuild(): void {
  for (const file of BUILT) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: run npm run build first`);
  }
}

/**
 * A port free on 127.0.0.1 a moment ago, picked as the launcher picks rank 0's rendezvous port:
 * below the kernel's ephemeral range, where no other process's connect() can be handed it before
 * the store binds it (launcher/free-port.ts).
 */
export function freePort(): Promise<number> {
  return findFreePort('127.0.0.1');
}

const tempDirs = new Set<string>();

/** A fresh directory under os.tmpdir(), removed by cleanupStores(). */
export function makeTempDir(label: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `memflow-e2e-${label}-`));
  tempDirs.add(dir);
  return dir;
}

// ---- processes, through /proc ----------------------------------------------------------------

export interface ProcInfo {
  pid: number;
  argv: string[];
}

function readArgv(pid: number): string[] | undefined {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (raw === '') return undefined; // a zombie, or a kernel thread
    return raw.replace(/\0$/, '').split('\0');
  } catch {
    return undefined;
  }
}

/** True while `pid` is running (a zombie has finished running: it counts as gone). */
export function isRunning(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Every live process with `dataDir` as the value of --data-dir on its command line. */
export function processesOfDataDir(dataDir: string): ProcInfo[] {
  const found: ProcInfo[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const argv = readArgv(pid);
    if (argv === undefined) continue;
    const hit = argv.some(
      (word, i) =>
        (word === '--data-dir' && argv[i + 1] === dataDir) || word === `--data-dir=${dataDir}`,
    );
    if (hit && isRunning(pid)) found.push({ pid, argv });
  }
  return found;
}

function environOf(pid: number): Record<string, string> {
  const env: Record<string, string> = {};
  try {
    for (const pair of fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
      const eq = pair.indexOf('=');
      if (eq > 0) env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  } catch {
    // Gone meanwhile.
  }
  return env;
}

const isRankProgram = (p: ProcInfo): boolean =>
  p.argv.some((w) => w.endsWith('memflow-rank.js')) &&
  !p.argv.some((w) => w.endsWith('rank-guard.js'));
const isGuard = (p: ProcInfo): boolean => p.argv.some((w) => w.endsWith('rank-guard.js'));

/** Peak resident set size (VmHWM) and current RSS (VmRSS) of `pid`, in bytes. */
export function memoryOf(pid: number): { peakRssBytes: number; rssBytes: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status);
    if (match === null) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(match[1]) * KiB;
  };
  return { peakRssBytes: field('VmHWM'), rssBytes: field('VmRSS') };
}

/** Polls until none of `pids` runs; throws naming the survivors at the deadline. */
export async function waitAllGone(pids: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter(isRunning);
    if (alive.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`processes still running after ${timeoutMs} ms: ${alive.join(', ')}`);
    }
    await delay(50);
  }
}

/** Polls `predicate` until it is true; throws `what` at the deadline. */
export async function waitUntil(
  what: string,
  predicate: () => boolean | Promise<boolean>,
  timeoutMs: number,
  pollMs = 25,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await delay(pollMs);
  }
}

// ---- the store -------------------------------------------------------------------------------

export interface StoreOptions {
  /** Ranks in all (rank 0 + data ranks). Default 4. */
  ranks?: number;
  /** --chunk-size for the store, e.g. "64K". Default: the store's own (4 MiB). */
  chunkSize?: string;
  /** More store options, e.g. ['--replicas', '2']. */
  extraArgs?: string[];
  /** Deadline for the ready line. Default 30 s. */
  readyTimeoutMs?: number;
}

export type { Exit } from './watched-process.js';

const READY = /^\[0\] MemFlow store ready: clients connect to (\S+):(\d+) /;
const stores = new Set<StoreProcess>();

/** One run of memflow-run in store mode; restart() starts a new run on the same data dir. */
export class StoreProcess extends WatchedProcess {
  /** memflow-rank pid by rank, read once the store is ready. */
  rankPids = new Map<number, number>();

  private constructor(
    readonly dataDir: string,
    readonly port: number,
    readonly options: StoreOptions,
    readonly launcher: ChildProcess,
  ) {
    super(launcher, 'the store');
  }

  /** Starts a store on a fresh temporary data dir and a free port; resolves once it serves. */
  static async start(options: StoreOptions = {}): Promise<StoreProcess> {
    requireBuild();
    const dataDir = makeTempDir('store');
    return StoreProcess.launchOnFreePort(dataDir, undefined, options);
  }

  /**
   * Launches on `port` (or a free one); when the port was taken between the probe and rank 0's
   * bind (another process's connection got it: ports from port 0 come from the ephemeral range),
   * tries again on a fresh port, at most 3 times in all.
   */
  private static async launchOnFreePort(
    dataDir: string,
    port: number | undefined,
    options: StoreOptions,
  ): Promise<StoreProcess> {
    for (let attempt = 1; ; attempt++) {
      const tryPort = attempt === 1 && port !== undefined ? port : await freePort();
      try {
        return await StoreProcess.launch(dataDir, tryPort, options);
      } catch (err) {
        const taken = err instanceof Error && err.message.includes('Address already in use');
        if (!taken || attempt >= 3) throw err;
        const stale = [...stores].filter((s) => s.dataDir === dataDir && s.port === tryPort);
        for (const s of stale) {
          s.killAll();
          await s.waitNoProcessLeft(10_000);
        }
      }
    }
  }

  /**
   * Starts a store on `dataDir`, an existing directory (say one with a mount prepared below it),
   * and a free port; resolves once it serves. The directory is not removed by cleanupStores()
   * unless it came from makeTempDir().
   */
  static async startOn(dataDir: string, options: StoreOptions = {}): Promise<StoreProcess> {
    requireBuild();
    return StoreProcess.launchOnFreePort(dataDir, undefined, options);
  }

  private static async launch(
    dataDir: string,
    port: number,
    options: StoreOptions,
  ): Promise<StoreProcess> {
    const args = [
      MEMFLOW_RUN,
      '-n',
      String(options.ranks ?? 4),
      '--data-dir',
      dataDir,
      '--port',
      String(port),
      ...(options.chunkSize === undefined ? [] : ['--chunk-size', options.chunkSize]),
      ...(options.extraArgs ?? []),
    ];
    const child = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      env: { ...process.env, MEMFLOW_DEBUG: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const store = new StoreProcess(dataDir, port, options, child);
    stores.add(store);
    await store.waitFor(
      'the ready line',
      () => store.stdout.some((l) => READY.test(l)),
      options.readyTimeoutMs ?? 30_000,
    );
    store.rankPids = store.findRankPids();
    const ranks = options.ranks ?? 4;
    if (store.rankPids.size !== ranks) {
      throw new Error(
        `expected ${ranks} memflow-rank processes, found ${store.rankPids.size}\n${store.transcript()}`,
      );
    }
    return store;
  }

  /** "127.0.0.1:PORT", for --server. */
  get server(): string {
    return `127.0.0.1:${this.port}`;
  }

  /**
   * Reads the memflow-rank pids again (after a rank was restarted, or joined on this data dir),
   * updates rankPids and returns it.
   */
  rescanRankPids(): Map<number, number> {
    this.rankPids = this.findRankPids();
    return this.rankPids;
  }

  /** The pid of rank `rank`'s memflow-rank process. */
  rankPid(rank: number): number {
    const pid = this.rankPids.get(rank);
    if (pid === undefined) throw new Error(`no pid known for rank ${rank}`);
    return pid;
  }

  /** Every live process of this store (launcher, guards, ranks; any run on this data dir). */
  processes(): ProcInfo[] {
    return processesOfDataDir(this.dataDir);
  }

  guardPids(): number[] {
    return this.processes()
      .filter(isGuard)
      .map((p) => p.pid);
  }

  /** Peak RSS (VmHWM) of each rank now, by rank. */
  peakRssByRank(): Map<number, number> {
    const peaks = new Map<number, number>();
    for (const [rank, pid] of this.rankPids) peaks.set(rank, memoryOf(pid).peakRssBytes);
    return peaks;
  }

  /** The status page's base URL, from rank 0's stdout line (with --http-port; printed before the ready line). */
  statusUrl(): string {
    for (const line of this.stdout) {
      const m = /^\[0\] status page: (http:\/\/\S+\/)$/.exec(line);
      if (m) return m[1]!;
    }
    throw new Error(`no status page line\n${this.transcript()}`);
  }

  /** SIGKILL of one rank's memflow-rank process (its guard and the launcher see it die). */
  killRank(rank: number): void {
    process.kill(this.rankPid(rank), 'SIGKILL');
  }

  /**
   * SIGTERM to the launcher and wait for it to exit (it stops the ranks); SIGKILL everything at
   * the deadline. Resolves with the launcher's exit once no process of the store is left.
   */
  async stop(timeoutMs = 20_000): Promise<Exit> {
    if (!this.exited) this.launcher.kill('SIGTERM');
    try {
      await this.waitFor('the launcher to exit after SIGTERM', () => this.exited, timeoutMs);
    } catch (err) {
      this.killAll();
      throw err;
    }
    await this.waitNoProcessLeft(10_000);
    return this.exit;
  }

  /** Resolves with the launcher's exit, with a deadline. */
  async ended(timeoutMs = 20_000): Promise<Exit> {
    await this.waitFor('the launcher to exit', () => this.exited, timeoutMs);
    return this.exit;
  }

  /** SIGKILL to the launcher and every process on this data dir, at once. */
  killAll(): void {
    if (!this.exited) this.launcher.kill('SIGKILL');
    for (const p of this.processes()) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  }

  /** Waits until no process of this store runs; throws listing the survivors at the deadline. */
  async waitNoProcessLeft(timeoutMs: number): Promise<void> {
    try {
      await waitUntil(
        'every process of the store gone',
        () => this.processes().length === 0,
        timeoutMs,
      );
    } catch {
      const left = this.processes().map((p) => `${p.pid} ${p.argv.join(' ')}`);
      throw new Error(`store processes still running after ${timeoutMs} ms:\n${left.join('\n')}`);
    }
  }

  /**
   * Starts the store again on the same data dir, port and options (after stop() or a crash:
   * every process of this run must be gone). Resolves with the new run once it serves. Should
   * another process have taken the port meanwhile, the new run gets a fresh one: use its `server`.
   */
  async restart(): Promise<StoreProcess> {
    await this.waitNoProcessLeft(10_000);
    return StoreProcess.launchOnFreePort(this.dataDir, this.port, this.options);
  }

  /**
   * The chunk copies on the data ranks' disks, read from the files themselves (not from the
   * store's word): rank -> chunk ids. Undefined when the on-disk layout is not one this helper
   * knows (see chunkCopiesOnDisk).
   */
  chunkCopiesOnDisk(): Map<number, Set<string>> | undefined {
    return chunkCopiesOnDisk(this.dataDir);
  }

  /** How many chunk copies are on disk (all data ranks, or only `rank`); undefined as above. */
  chunkCopyCount(rank?: number): number | undefined {
    const copies = this.chunkCopiesOnDisk();
    if (copies === undefined) return undefined;
    let n = 0;
    for (const [r, ids] of copies) if (rank === undefined || r === rank) n += ids.size;
    return n;
  }

  /** Bytes of every file under the data ranks' folders (rank-1 and up): grows while chunks land. */
  dataRankBytes(): number {
    return dataRankBytesUnder(this.dataDir);
  }

  /** Bytes of every file under rank-`rank`'s folder. */
  rankBytes(rank: number): number {
    return dataRankBytesUnder(this.dataDir, rank);
  }

  /** The store's own status (the `status` request), through the client library. */
  async status(): Promise<StatusResult> {
    const client = new DfsClient({ server: this.server, timeoutMs: 10_000 });
    try {
      return await client.status();
    } finally {
      client.close();
    }
  }

  /** Chunk copies the data ranks report holding (sum of status().ranks[].chunkCopies). */
  async reportedCopies(): Promise<number> {
    return (await this.status()).ranks.reduce((sum, r) => sum + r.chunkCopies, 0);
  }

  override transcript(): string {
    return `store ${this.dataDir} port ${this.port}\n${super.transcript()}`;
  }

  private findRankPids(): Map<number, number> {
    const pids = new Map<number, number>();
    for (const p of this.processes().filter(isRankProgram)) {
      const rank = environOf(p.pid).MEMFLOW_RANK;
      if (rank !== undefined) pids.set(Number(rank), p.pid);
    }
    return pids;
  }
}

/**
 * SIGKILLs every process left of every store started here (launcher, guards, ranks, and any
 * dfs-client started through runDfs), waits for them to go, and removes the temporary dirs.
 */
export async function cleanupStores(): Promise<void> {
  const pids: number[] = [];
  for (const child of clients) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (child.pid !== undefined) pids.push(child.pid);
  }
  clients.clear();
  const dirs = new Set<string>();
  for (const store of stores) {
    dirs.add(store.dataDir);
    if (!store.exited) store.launcher.kill('SIGKILL');
    if (store.launcher.pid !== undefined) pids.push(store.launcher.pid);
  }
  stores.clear();
  for (const dir of dirs) {
    for (const p of processesOfDataDir(dir)) {
      pids.push(p.pid);
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  }
  await waitAllGone(pids, 10_000);
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

// ---- dfs-client --------------------------------------------------------------------------------

export interface DfsResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  elapsedMs: number;
  timedOut: boolean;
}

const clients = new Set<ChildProcess>();

export interface DfsRun {
  child: ChildProcess;
  result: Promise<DfsResult>;
}

/**
 * Starts `dfs-client ARGS` (optionally under a wrapper such as /usr/bin/time -v), collects its
 * output (stdout as bytes), and SIGKILLs it at the deadline. cleanupStores() kills it too.
 */
export function startDfs(
  args: string[],
  options: { timeoutMs?: number; cwd?: string; wrapper?: string[] } = {},
): DfsRun {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const wrapper = options.wrapper ?? [];
  const command = [...wrapper, process.execPath, DFS_CLIENT, ...args];
  const started = performance.now();
  const child = spawn(command[0]!, command.slice(1), {
    cwd: options.cwd ?? REPO_ROOT,
    env: process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  clients.add(child);
  const result = new Promise<DfsResult>((resolve, reject) => {
    const out: Buffer[] = [];
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clients.delete(child);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out),
        stderr,
        elapsedMs: performance.now() - started,
        timedOut,
      });
    });
  });
  return { child, result };
}

/** Runs `dfs-client ARGS --server SERVER` to completion (deadline `timeoutMs`). */
export function dfs(
  server: string,
  args: string[],
  options: { timeoutMs?: number; cwd?: string; wrapper?: string[] } = {},
): Promise<DfsResult> {
  return startDfs([...args, '--server', server], options).result;
}

/** A failure message for expect(): the command's status and output. */
export function describeRun(args: string[], r: DfsResult): string {
  return `dfs-client ${args.join(' ')} -> code ${r.code} signal ${r.signal}${r.timedOut ? ' (timed out)' : ''}\nstdout: ${r.stdout.toString('utf8').slice(0, 2000)}\nstderr: ${r.stderr}`;
}

/** Max RSS in bytes from `/usr/bin/time -v` output on stderr, if present. */
export function maxRssFromTimeV(stderr: string): number | undefined {
  const match = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
  return match === null ? undefined : Number(match[1]) * KiB;
}

// ---- data -------------------------------------------------------------------------------------

/**
 * Writes `sizeBytes` of deterministic pseudo-random bytes for `seed` (an AES-256-CTR keystream)
 * to `filePath`, streaming 1 MiB at a time; resolves with the sha256 of what was written.
 */
export async function writePseudoRandomFile(
  filePath: string,
  sizeBytes: number,
  seed: string,
): Promise<string> {
  const key = createHash('sha256').update(`key:${seed}`).digest();
  const iv = createHash('sha256').update(`iv:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  const hash = createHash('sha256');
  const zeros = Buffer.alloc(MiB);
  const handle = await fsp.open(filePath, 'w');
  try {
    let written = 0;
    while (written < sizeBytes) {
      const n = Math.min(MiB, sizeBytes - written);
      const block = cipher.update(n === MiB ? zeros : zeros.subarray(0, n));
      hash.update(block);
      let off = 0;
      while (off < block.length) {
        const { bytesWritten } = await handle.write(block, off, block.length - off);
        off += bytesWritten;
      }
      written += n;
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

/** The sha256 (hex) of `bytes`. */
export function sha256Of(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The sha256 (hex) of a file, streamed. */
export async function sha256File(filePath: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(filePath, { highWaterMark: MiB })) {
    hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

// ---- chunk copies on disk ---------------------------------------------------------------------

const CHUNK_FILE = /^(.+)\.([0-9a-f]{64})$/;

/**
 * The chunk ids each data rank holds on disk, read from the files (not from the store's word) in
 * either layout a data rank may use: one file per chunk (DiskChunkStore: rank-N/chunks/xx/
 * ID.CHECKSUM, temp files start with '.'), or append-only volumes (VolumeChunkStore:
 * rank-N/volumes/, read by liveVolumeChunksUnder below). Undefined when a data rank's folder
 * holds neither (a layout this helper does not know).
 */
export function chunkCopiesOnDisk(dataDir: string): Map<number, Set<string>> | undefined {
  const result = new Map<number, Set<string>>();
  for (const dir of dataRankDirs(dataDir)) {
    const rank = Number(path.basename(dir).slice('rank-'.length));
    if (fs.existsSync(path.join(dir, 'volumes'))) {
      result.set(rank, new Set(liveVolumeChunksUnder(dataDir, rank).keys()));
    } else if (fs.existsSync(path.join(dir, 'chunks'))) {
      result.set(rank, fileChunkIds(path.join(dir, 'chunks')));
    } else if (fs.readdirSync(dir).length === 0) {
      result.set(rank, new Set());
    } else {
      return undefined;
    }
  }
  return result;
}

function fileChunkIds(chunksDir: string): Set<string> {
  const ids = new Set<string>();
  for (const { name } of chunkLayoutFiles(chunksDir)) {
    const match = CHUNK_FILE.exec(name);
    if (match !== null && !name.startsWith('.')) ids.add(match[1]!);
  }
  return ids;
}

/** Every file of a one-file-per-chunk folder (rank-N/chunks/xx/NAME), temp files included. */
function* chunkLayoutFiles(chunksDir: string): Generator<{ name: string; file: string }> {
  if (!fs.existsSync(chunksDir)) return;
  for (const sub of fs.readdirSync(chunksDir, { withFileTypes: true })) {
    if (!sub.isDirectory()) continue;
    for (const name of fs.readdirSync(path.join(chunksDir, sub.name)))
      yield { name, file: path.join(chunksDir, sub.name, name) };
  }
}

/** Temp files (".tmp.*") of half-written chunks in the one-file-per-chunk layout. */
export function tempChunkFilesUnder(dataDir: string): string[] {
  return dataRankDirs(dataDir).flatMap((dir) =>
    [...chunkLayoutFiles(path.join(dir, 'chunks'))]
      .filter(({ name }) => name.startsWith('.'))
      .map(({ file }) => file),
  );
}

/** The rank-N folders of data ranks (N >= 1) under a data dir. */
function dataRankDirs(dataDir: string): string[] {
  try {
    return fs
      .readdirSync(dataDir)
      .filter((d) => /^rank-([1-9]\d*)$/.test(d))
      .map((d) => path.join(dataDir, d));
  } catch {
    return [];
  }
}

/** Total size of the files below the data ranks' folders (or only rank-`rank`'s), whatever their layout. */
export function dataRankBytesUnder(dataDir: string, rank?: number): number {
  let total = 0;
  const walk = (dir: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.isFile()) {
        try {
          total += fs.statSync(full).size;
        } catch {
          // Renamed or removed meanwhile.
        }
      }
    }
  };
  const dirs = dataRankDirs(dataDir).filter(
    (dir) => rank === undefined || path.basename(dir) === `rank-${rank}`,
  );
  dirs.forEach(walk);
  return total;
}

// ---- volume files (VolumeChunkStore: rank-N/volumes/volume-NNNNNNNN.dat) -----------------------

/** One record of a data rank's volume files, as read from disk by volumeRecordsUnder(). */
export interface VolumeRecord {
  /** Full path of the volume file. */
  file: string;
  /** Offset of the record header in the file. */
  offset: number;
  type: 'put' | 'delete';
  id: string;
  seq: bigint;
  /** BLAKE3 of the data, as chunk checksums are written (64 hex digits). */
  checksum: string;
  /** Offset and length of the chunk bytes in the file (length 0 for a delete). */
  dataOffset: number;
  dataLength: number;
}

const VOLUME_HEADER_BYTES = 16;
const VOLUME_RECORD_HEADER_BYTES = 56;
const VOLUME_RECORD_MAGIC = 0x5243464d;

/**
 * Every record in rank-`rank`'s volume files under `dataDir`, volume by volume in file order,
 * read header by header (the chunk bytes are skipped, not read), pad records passed over. A
 * volume's scan stops at the first header that is cut off or has no magic: the tail a rank is
 * writing at this moment.
 */
export function volumeRecordsUnder(dataDir: string, rank: number): VolumeRecord[] {
  const dir = path.join(dataDir, `rank-${rank}`, 'volumes');
  let names: string[];
  try {
    names = fs
      .readdirSync(dir)
      .filter((n) => /^volume-\d+\.dat$/.test(n))
      .sort();
  } catch {
    return [];
  }
  const records: VolumeRecord[] = [];
  const head = Buffer.alloc(VOLUME_RECORD_HEADER_BYTES + 256);
  for (const name of names) {
    const file = path.join(dir, name);
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      continue; // removed by a compaction meanwhile
    }
    try {
      const size = fs.fstatSync(fd).size;
      let offset = VOLUME_HEADER_BYTES;
      while (offset + VOLUME_RECORD_HEADER_BYTES <= size) {
        const got = fs.readSync(fd, head, 0, head.length, offset);
        if (got < VOLUME_RECORD_HEADER_BYTES || head.readUInt32LE(0) !== VOLUME_RECORD_MAGIC) break;
        const type = head.readUInt8(4);
        const idLength = head.readUInt8(5);
        const dataLength = head.readUInt32LE(16);
        const dataOffset = offset + VOLUME_RECORD_HEADER_BYTES + idLength;
        if (type < 1 || type > 3 || got < VOLUME_RECORD_HEADER_BYTES + idLength) break;
        if (dataOffset + dataLength > size) break;
        if (type === 3) {
          // A pad: room up to an aligned offset for a direct write, no chunk.
          offset = dataOffset + dataLength;
          continue;
        }
        records.push({
          file,
          offset,
          type: type === 1 ? 'put' : 'delete',
          id: head.toString(
            'ascii',
            VOLUME_RECORD_HEADER_BYTES,
            VOLUME_RECORD_HEADER_BYTES + idLength,
          ),
          seq: head.readBigUInt64LE(8),
          checksum: head.toString('hex', 20, 52),
          dataOffset,
          dataLength,
        });
        offset = dataOffset + dataLength;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return records;
}

/**
 * The chunk copies rank-`rank` holds on disk: for every id, its newest record (highest seq) if
 * that is a put. Keyed by chunk id.
 */
export function liveVolumeChunksUnder(dataDir: string, rank: number): Map<string, VolumeRecord> {
  const newest = new Map<string, VolumeRecord>();
  for (const r of volumeRecordsUnder(dataDir, rank)) {
    const seen = newest.get(r.id);
    if (seen === undefined || r.seq > seen.seq) newest.set(r.id, r);
  }
  for (const [id, r] of newest) if (r.type !== 'put') newest.delete(id);
  return newest;
}
