/**
 * `dfs-client metrics` and `dfs-client shell` on a real store. Goal: what a user sees — a row per
 * data rank with its host and state, totals whose used bytes are the sum `status --json` gives,
 * the JSON document with its derived fields; `--watch` printing table after table to a pipe and
 * redrawing in place on a terminal, stopped by Ctrl-C with status 130 and no process left; a
 * data rank killed with kill -9 shown as suspect or dead; the shell running piped commands (one
 * error line for a bad one, the documented exit status), records through distribute and query,
 * and on a real terminal: the prompt, Ctrl-C clearing the line, Ctrl-D leaving with 0, and the
 * history file written and recalled with the up arrow in the next session.
 *
 * Method: one store (memflow-run -n 4, 64 KiB chunks, 256 MiB per data rank, fast failure
 * detection) shared by the tests of this file, which run in order; the rank kill comes last.
 * dfs-client runs as a user runs it (bin/dfs-client.js; `npm run build` first). The terminal is
 * a pty from util-linux `script`; the tests that need it are skipped, saying so, without it.
 * Nothing sleeps: every step waits (with a deadline) for the output it needs, and every process
 * started here is SIGKILLed in afterAll if it is still running.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { MetricsDocument } from '../../src/cli/metrics-table.js';
import type { StatusResult } from '../../src/protocol/client-protocol.js';
import { formatSize } from '../../src/store/sizes.js';
import {
  DFS_CLIENT,
  KiB,
  StoreProcess,
  cleanupStores,
  describeRun,
  dfs,
  isRunning,
  makeTempDir,
  startDfs,
  waitUntil,
  writePseudoRandomFile,
  type DfsResult,
} from '../helpers/store-process.js';
import { FAST } from '../helpers/store-checks.js';

const HAVE_SCRIPT = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;
const ESC = '\x1b[';

let store: StoreProcess;
let work: string;

beforeAll(async () => {
  store = await StoreProcess.start({
    chunkSize: '64K',
    extraArgs: ['--capacity', '256M', ...FAST],
  });
  work = makeTempDir('metrics-shell');
  for (const [name, size] of [
    ['one.bin', 300 * KiB],
    ['two.bin', 1000 * KiB],
  ] as const) {
    const file = path.join(work, name);
    await writePseudoRandomFile(file, size, name);
    await client([file, '-a'], 0);
  }
}, 60_000);

afterEach(() => {
  // Whatever a failed test left running is killed before the next one starts.
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

afterAll(async () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await cleanupStores();
});

/** dfs-client ARGS against the store, expecting `code`. */
async function client(args: string[], code: number): Promise<DfsResult> {
  const result = await dfs(store.server, args, { timeoutMs: 30_000 });
  expect(result.code, describeRun(args, result)).toBe(code);
  return result;
}

async function statusJson(): Promise<StatusResult> {
  return JSON.parse(
    (await client(['status', '--json'], 0)).stdout.toString('utf8'),
  ) as StatusResult;
}

const usedOf = (status: StatusResult): number =>
  status.ranks.reduce((sum, r) => sum + r.usedBytes, 0);

/**
 * Runs dfs-client ARGS between two `status --json` whose used bytes agree (rank 0 refreshes them
 * from the data ranks' heartbeats, so they can move right after an upload); returns the run's
 * stdout and that status. At most 20 attempts.
 */
async function withSteadyStatus(args: string[]): Promise<{ out: string; status: StatusResult }> {
  for (let attempt = 1; ; attempt++) {
    const before = await statusJson();
    const out = (await client(args, 0)).stdout.toString('utf8');
    const after = await statusJson();
    if (usedOf(before) === usedOf(after)) return { out, status: after };
    if (attempt >= 20) throw new Error('the used bytes never held still across 20 attempts');
  }
}

/** Every dfs-client process talking to this store (by its --server on the command line). */
function clientPids(): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    // dfs-client itself, or `script` running it in a pty.
    const isClient = argv.some((w) => w.includes(DFS_CLIENT));
    if (isClient && argv.some((w) => w.includes(store.server)) && isRunning(Number(entry)))
      pids.push(Number(entry));
  }
  return pids;
}

// ---- processes with stdin, for the shell and the pty ---------------------------------------

const children = new Set<ChildProcess>();

interface Interactive {
  child: ChildProcess;
  /** stdout and stderr as text so far. */
  output: () => string;
  /** Waits (deadline) until the output from `from` on matches; returns the output's length then. */
  waitFor: (what: string, test: (text: string) => boolean, from?: number) => Promise<number>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startInteractive(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Interactive {
  const child = spawn(command, args, {
    cwd: work,
    env: { ...process.env, TERM: 'xterm', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  let text = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d: string) => (text += d));
  child.stderr.on('data', (d: string) => (text += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    output: () => text,
    waitFor: async (what, test, from = 0) => {
      await waitUntil(what, () => test(text.slice(from)), 20_000).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}\noutput so far:\n${JSON.stringify(text)}`);
      });
      return text.length;
    },
    exit,
  };
}

/** dfs-client ARGS under a pty (script -qfec), so its stdin and stdout are a terminal. */
function startInPty(args: string[], env: NodeJS.ProcessEnv = {}): Interactive {
  const quoted = [process.execPath, DFS_CLIENT, ...args, '--server', store.server]
    .map((w) => `'${w.replace(/'/g, `'\\''`)}'`)
    .join(' ');
  return startInteractive('script', ['-qfec', quoted, '/dev/null'], env);
}

async function exited(
  run: Interactive,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let result: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  void run.exit.then((r) => (result = r));
  await waitUntil('the process to exit', () => result !== undefined, 20_000).catch(
    (err: unknown) => {
      throw new Error(`${(err as Error).message}\noutput:\n${JSON.stringify(run.output())}`);
    },
  );
  return result!;
}

const countOf = (text: string, re: RegExp): number => (text.match(re) ?? []).length;

// ---- metrics -------------------------------------------------------------------------------

describe('dfs-client metrics', () => {
  it('prints a row for every data rank with host and state, totals matching status --json, and the summary', async () => {
    const { out: table, status } = await withSteadyStatus(['metrics']);
    const lines = table.trimEnd().split('\n');
    expect(lines[0]).toMatch(
      /^ RANK +HOST +STATE +HEARTBEAT +CAPACITY +USED +FREE +% USED +COPIES +PRIMARY +REPLICA$/,
    );
    expect(status.ranks.map((r) => r.rank).sort()).toEqual([1, 2, 3]);
    for (const r of status.ranks) {
      const row = lines.find((l) => new RegExp(`^ +${r.rank}  `).test(l));
      expect(row, `row of rank ${r.rank} in\n${table}`).toBeDefined();
      expect(row).toMatch(new RegExp(`^ +${r.rank} +${r.host} +alive +\\d+\\.\\d s +256\\.0 MiB `));
    }
    const used = usedOf(status);
    expect(used).toBeGreaterThanOrEqual(2 * 1300 * KiB);
    const totals = lines.find((l) => l.startsWith('total'));
    expect(totals).toMatch(/^total +3 ranks +3\/3 alive +768\.0 MiB +/);
    expect(totals!.split(/ {2,}/)[4]).toBe(formatSize(used));
    expect(lines.at(-1)).toMatch(
      /^2 files, 21 chunks \(2 copies each\), 0 under-replicated; coordinator \(rank 0\) up \d/,
    );
    console.log(`dfs-client metrics on a 4-rank store:\n${table}`);
  });

  it('--json: the status plus freeBytes and fractionUsed per rank and totals', async () => {
    const { out, status } = await withSteadyStatus(['metrics', '--json']);
    const doc = JSON.parse(out) as MetricsDocument;
    expect(Number.isNaN(Date.parse(doc.sampledAt))).toBe(false);
    expect(doc).toMatchObject({ files: 2, chunks: 21, replicas: 2, underReplicatedChunks: 0 });
    expect(doc.ranks.map((r) => r.rank)).toEqual([1, 2, 3]);
    for (const r of doc.ranks) {
      expect(r.state).toBe('alive');
      expect(r.freeBytes).toBe(Math.max(0, r.capacityBytes - r.usedBytes));
      expect(r.fractionUsed).toBeCloseTo(r.usedBytes / r.capacityBytes, 12);
      expect(r.primaryCopies + r.replicaCopies).toBe(r.chunkCopies);
    }
    expect(doc.totals).toMatchObject({
      ranks: 3,
      alive: 3,
      suspect: 0,
      dead: 0,
      usedBytes: usedOf(status),
      chunkCopies: 42,
      primaryCopies: 21,
      replicaCopies: 21,
    });
  });

  it('--watch to a pipe: a new table every interval after a blank line; Ctrl-C (SIGINT) exits 130 leaving nothing', async () => {
    const run = startDfs(['metrics', '--watch', '0.2', '--server', store.server], {
      timeoutMs: 30_000,
    });
    let text = '';
    run.child.stdout!.on('data', (d: Buffer) => (text += d.toString('utf8')));
    await waitUntil('two tables', () => countOf(text, /^ RANK /gm) >= 2, 20_000);
    run.child.kill('SIGINT');
    const result = await run.result;
    expect(result.code, describeRun(['metrics', '--watch', '0.2'], result)).toBe(130);
    expect(result.stderr).toBe('');
    const out = result.stdout.toString('utf8');
    expect(out).not.toContain('\x1b');
    const frames = out.trimEnd().split(/\n\n(?=127\.0\.0\.1:)/);
    expect(frames.length).toBeGreaterThanOrEqual(2);
    for (const frame of frames) {
      expect(frame).toMatch(
        /^127\.0\.0\.1:\d+ {2}every 0\.2 s {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n\n RANK /,
      );
      expect(countOf(frame, /^ +[123] {2}\S+ +alive /gm)).toBe(3);
    }
    expect(isRunning(run.child.pid!)).toBe(false);
    expect(clientPids()).toEqual([]);
  });

  it('--watch --json: one JSON document per line', async () => {
    const run = startDfs(['metrics', '--watch', '0.2', '--json', '--server', store.server], {
      timeoutMs: 30_000,
    });
    let text = '';
    run.child.stdout!.on('data', (d: Buffer) => (text += d.toString('utf8')));
    await waitUntil('two JSON lines', () => countOf(text, /\n/g) >= 2, 20_000);
    run.child.kill('SIGINT');
    const result = await run.result;
    expect(result.code).toBe(130);
    const lines = result.stdout.toString('utf8').trimEnd().split('\n');
    for (const line of lines) {
      expect(JSON.parse(line)).toMatchObject({ files: 2, totals: { ranks: 3, alive: 3 } });
    }
  });

  it.skipIf(!HAVE_SCRIPT)(
    '--watch on a terminal: clears once, redraws from the home position, Ctrl-C shows the cursor again and exits 130',
    async () => {
      const run = startInPty(['metrics', '--watch', '0.2']);
      await run.waitFor('three frames', (t) => t.split(`${ESC}H`).length > 3);
      run.child.stdin!.write('\x03');
      expect(await exited(run)).toEqual({ code: 130, signal: null });
      const out = run.output();
      expect(out.startsWith(`${ESC}?25l${ESC}2J${ESC}H`)).toBe(true);
      expect(out.split(`${ESC}2J`)).toHaveLength(2);
      expect(out).toContain('(Ctrl-C stops)');
      expect(out.trimEnd().endsWith(`${ESC}?25h`)).toBe(true);
      expect(clientPids()).toEqual([]);
    },
  );

  it('refuses --watch without metrics and a bad interval (exit 2)', async () => {
    const list = await client(['list', '--watch'], 2);
    expect(list.stderr).toContain('--watch can only be used with metrics');
    const bad = await client(['metrics', '--watch', 'soon'], 2);
    expect(bad.stderr).toContain(
      '--watch takes the SECONDS between refreshes (0.1 to 86400), got "soon"',
    );
  });
});

// ---- shell ----------------------------------------------------------------------------------

describe('dfs-client shell', () => {
  async function piped(
    lines: string,
    env: NodeJS.ProcessEnv = {},
  ): Promise<{ code: number | null; out: string; stderr: string }> {
    const run = startInteractive(
      process.execPath,
      [DFS_CLIENT, 'shell', '--server', store.server],
      env,
    );
    let stderr = '';
    run.child.stderr!.on('data', (d: string) => (stderr += d));
    run.child.stdin!.end(lines);
    const { code } = await exited(run);
    return { code, out: run.output(), stderr };
  }

  it('piped: list, metrics and EOF exit 0 with no prompt; a bad command is one line on stderr and the status is 2', async () => {
    const history = path.join(work, 'piped-history');
    const good = await piped('list\nmetrics\n', { MEMFLOW_HISTORY: history });
    expect(good.code, good.out).toBe(0);
    expect(good.stderr).toBe('');
    expect(good.out).not.toContain('memflow>');
    expect(good.out).toMatch(/^one\.bin +300\.0 KiB +\S+ \S+ +healthy$/m);
    expect(good.out).toMatch(/^two\.bin +1000\.0 KiB /m);
    expect(good.out).toContain('2 files, 1.3 MiB');
    expect(countOf(good.out, /^ +[123] {2}\S+ +alive /gm)).toBe(3);
    // A piped session leaves the history alone.
    expect(fs.existsSync(history)).toBe(false);

    const bad = await piped('list\nmetrics\nfrobnicate now\n');
    expect(bad.stderr).toBe('unknown command "frobnicate" (try help)\n');
    expect(bad.out).toContain('2 files, 1.3 MiB');
    expect(bad.code).toBe(2);

    const missing = await piped('get nothing.bin\nlist\n');
    expect(missing.stderr).toBe('get: no file named "nothing.bin" in the store\n');
    expect(missing.code).toBe(3);
  });

  it('piped: distribute a JSON dataset, then query a number ID and a quoted string ID', async () => {
    const people = path.join(work, 'people.json');
    fs.writeFileSync(
      people,
      JSON.stringify([
        { id: 1, name: 'Ada' },
        { id: 42, name: 'Grace' },
        { id: '42', name: 'a string ID' },
      ]),
    );
    const r = await piped(
      `distribute '${people}' as people\nquery people 42\nquery people "42"\nquery people 7\n`,
    );
    expect(r.out).toMatch(/^distributed people: 3 records /m);
    expect(r.out).toContain(JSON.stringify({ id: 42, name: 'Grace' }, null, 2));
    expect(r.out).toContain(JSON.stringify({ id: '42', name: 'a string ID' }, null, 2));
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^query: .*7/);
    expect(r.code).toBe(3);
    await client(['people', '-d'], 0);
  });

  it.skipIf(!HAVE_SCRIPT)(
    'on a terminal: prompt, Ctrl-C clears the line, Ctrl-D leaves with 0; the history is written and recalled next time',
    async () => {
      const history = path.join(work, 'tty-history');
      const env = { MEMFLOW_HISTORY: history };
      const first = startInPty(['shell'], env);
      let seen = await first.waitFor('the prompt', (t) => t.includes('memflow> '));
      first.child.stdin!.write('list\r');
      seen = await first.waitFor(
        'the listing and a new prompt',
        (t) => /2 files, 1\.3 MiB[\s\S]*memflow> /.test(t),
        seen,
      );
      first.child.stdin!.write('half typed');
      seen = await first.waitFor('the echo', (t) => t.includes('half typed'), seen);
      first.child.stdin!.write('\x03');
      seen = await first.waitFor(
        '^C and a new prompt',
        (t) => /\^C\r?\n[\s\S]*memflow> /.test(t),
        seen,
      );
      first.child.stdin!.write('\x04');
      expect(await exited(first)).toEqual({ code: 0, signal: null });
      expect(first.output()).toContain('MemFlow shell on');
      // The cut line was never run, and never entered the history.
      expect(fs.readFileSync(history, 'utf8')).toBe('list\n');

      const second = startInPty(['shell'], env);
      seen = await second.waitFor('the prompt', (t) => t.includes('memflow> '));
      second.child.stdin!.write(`${ESC}A`); // up arrow: the last command
      seen = await second.waitFor('the recalled command', (t) => t.includes('list'), seen);
      second.child.stdin!.write('\r');
      await second.waitFor('the listing', (t) => t.includes('2 files, 1.3 MiB'), seen);
      second.child.stdin!.write('exit\r');
      expect(await exited(second)).toEqual({ code: 0, signal: null });
      // "list" again is a repeat of the last entry: kept once.
      expect(fs.readFileSync(history, 'utf8')).toBe('list\nexit\n');
      expect(clientPids()).toEqual([]);
    },
  );
});

// ---- a data rank killed (last: it changes the store) ----------------------------------------

describe('a data rank killed with kill -9', () => {
  it('shows as suspect or dead in metrics, with "—" for a dead rank\'s heartbeat, and 2/3 alive', async () => {
    store.killRank(3);
    let doc: MetricsDocument | undefined;
    await waitUntil(
      'rank 3 no longer alive',
      async () => {
        const r = await dfs(store.server, ['metrics', '--json'], { timeoutMs: 30_000 });
        if (r.code !== 0) return false;
        doc = JSON.parse(r.stdout.toString('utf8')) as MetricsDocument;
        return doc.ranks.find((x) => x.rank === 3)?.state !== 'alive';
      },
      20_000,
      100,
    );
    expect(doc!.totals.alive).toBe(2);
    const table = (await client(['metrics'], 0)).stdout.toString('utf8');
    const row = table.split('\n').find((l) => /^ +3 {2}/.test(l));
    expect(row, table).toMatch(/^ +3 +\S+ +(suspect +\d+\.\d s|dead +—) /);
    expect(table).toMatch(/^total +3 ranks +2\/3 alive /m);
    console.log(`dfs-client metrics after kill -9 of rank 3:\n${table}`);
  });
});
