/**
 * Goal: memflow-run behaves like mpiexec from the outside: N tagged ranks, stdin to rank 0 only,
 * mpirun's exit policy, signals passed on as SIGTERM then SIGKILL, and no rank process left behind
 * even when the launcher itself, or a rank's guard, is SIGKILLed.
 * Method: start `node bin/memflow-run.js ...` (needs `npm run build`: the launcher, its rank guard
 * and the probe program test/fixtures/rank-probe.ts run from dist/). Tests wait for the lines the
 * ranks print once ready (`ready rank=R size=S pid=P`, printed after their signal handlers are
 * installed), never for a fixed time; every wait has a deadline; afterEach SIGKILLs every launcher
 * and rank pid a test started, whatever happened.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SETPRIV } from '../../launcher/spawners/program-group.js';
import { WatchedProcess, type Exit } from '../helpers/watched-process.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'memflow-run.js');
const PROBE = path.join(ROOT, 'dist', 'test', 'fixtures', 'rank-probe.js');
const WAIT_MS = 15_000;

if (SETPRIV === undefined)
  console.warn(
    'skipped: the guard-kill test needs Linux and setpriv (util-linux), which is not installed here',
  );

/** One launcher process, its output split into lines as it arrives. */
class LauncherRun extends WatchedProcess {
  constructor(child: ChildProcess) {
    super(child, 'launcher');
  }

  override waitFor(what: string, predicate: () => boolean, timeoutMs = WAIT_MS): Promise<void> {
    return super.waitFor(what, predicate, timeoutMs);
  }

  /** Waits for `count` readiness lines and returns the rank pids by rank. */
  async ready(count: number): Promise<number[]> {
    await this.waitFor(`${count} ready ranks`, () => this.readyPids().size === count);
    const pids = this.readyPids();
    return [...Array(count).keys()].map((rank) => pids.get(rank) as number);
  }

  /** The launcher's exit, with a deadline. */
  async ended(timeoutMs = WAIT_MS): Promise<Exit> {
    await this.waitFor('exit', () => this.exited, timeoutMs);
    return this.exit;
  }

  readyPids(): Map<number, number> {
    const pids = new Map<number, number>();
    for (const line of this.stdout) {
      const match = /ready rank=(\d+) size=\d+ pid=(\d+)$/.exec(line);
      if (match !== null) pids.set(Number(match[1]), Number(match[2]));
    }
    return pids;
  }
}

const runs: LauncherRun[] = [];
const tempDirs: string[] = [];

/**
 * The test process's environment without MEMFLOW_* variables: the launcher passes them on to
 * every rank, and tests that print a rank's MEMFLOW_* environment must not see the caller's
 * (MEMFLOW_TEST_4GIB=0 from docs/TESTING.md, a MEMFLOW_SERVER for dfs-client).
 */
const BASE_ENV: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([key]) => !key.startsWith('MEMFLOW_')),
);

function launch(
  args: string[],
  options: { stdin?: 'pipe' | 'ignore'; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): LauncherRun {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: options.cwd ?? ROOT,
    env: options.env ?? BASE_ENV,
    stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
  });
  const run = new LauncherRun(child);
  runs.push(run);
  return run;
}

function tempDir(name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `memflow-launcher ${name}-`));
  tempDirs.push(dir);
  return dir;
}

/** True while `pid` names a running process (a zombie has finished running: it counts as gone). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The parent of `pid`, from /proc (the field after the state). */
function parentOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** Polls until none of `pids` runs; throws naming the survivors at the deadline. */
async function expectAllGone(pids: number[], timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter(isRunning);
    if (alive.length === 0) return;
    if (Date.now() > deadline) throw new Error(`processes still running: ${alive.join(', ')}`);
    await delay(50);
  }
}

beforeAll(() => {
  for (const file of [path.join(ROOT, 'dist', 'launcher', 'cli.js'), PROBE]) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: run npm run build first`);
  }
});

afterEach(async () => {
  const pids: number[] = [];
  for (const run of runs.splice(0)) {
    if (!run.exited) run.child.kill('SIGKILL');
    for (const pid of run.readyPids().values()) {
      pids.push(pid);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone, as it should be.
      }
    }
    await Promise.race([run.exit, delay(5000)]);
  }
  await expectAllGone(pids, 5000);
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

const sortedLines = (lines: string[]): string[] => [...lines].sort();

describe('memflow-run starts N ranks', () => {
  it('-n 4 prints each rank and size tagged, partial last lines included, and exits 0', async () => {
    const run = launch([
      '-n',
      '4',
      '--',
      'node',
      '-e',
      "const e = process.env; console.log(`rank ${e.MEMFLOW_RANK} of ${e.MEMFLOW_SIZE}`); process.stdout.write('no newline at exit')",
    ]);
    expect(await run.ended()).toEqual({ code: 0, signal: null });
    expect(sortedLines(run.stdout)).toEqual([
      '[0] no newline at exit',
      '[0] rank 0 of 4',
      '[1] no newline at exit',
      '[1] rank 1 of 4',
      '[2] no newline at exit',
      '[2] rank 2 of 4',
      '[3] no newline at exit',
      '[3] rank 3 of 4',
    ]);
    expect(run.stderr).toEqual([]);
  });

  it('--no-tag-output prints the lines untagged, stdout to stdout and stderr to stderr', async () => {
    const run = launch([
      '-n',
      '2',
      '--no-tag-output',
      '--',
      'node',
      '-e',
      'console.log(`out ${process.env.MEMFLOW_RANK}`); console.error(`err ${process.env.MEMFLOW_RANK}`)',
    ]);
    expect(await run.ended()).toEqual({ code: 0, signal: null });
    expect(sortedLines(run.stdout)).toEqual(['out 0', 'out 1']);
    expect(sortedLines(run.stderr)).toEqual(['err 0', 'err 1']);
  });

  it('sends stdin to rank 0 only; the other ranks read an empty stdin', async () => {
    const run = launch(['-n', '3', '--', 'node', PROBE, '--stdin'], { stdin: 'pipe' });
    run.child.stdin?.end('hello\nworld\n');
    expect(await run.ended()).toEqual({ code: 0, signal: null });
    expect(sortedLines(run.stdout)).toEqual([
      '[0] stdin="hello\\nworld\\n"',
      '[1] stdin=""',
      '[2] stdin=""',
    ]);
  });

  it('--launcher-exec runs every rank through the template with {host} substituted', async () => {
    const run = launch([
      '-n',
      '2',
      '--launcher-exec',
      'env MEMFLOW_TEMPLATE_HOST={host}',
      '--',
      'node',
      '-e',
      'console.log(`${process.env.MEMFLOW_TEMPLATE_HOST} ${process.env.MEMFLOW_RANK}`)',
    ]);
    expect(await run.ended()).toEqual({ code: 0, signal: null });
    expect(sortedLines(run.stdout)).toEqual(['[0] localhost 0', '[1] localhost 1']);
  });

  it('starts remote hosts through ssh with the working directory and MEMFLOW_* carried', async () => {
    // A stand-in for ssh checks the options, then runs the remote command with an empty
    // environment, as a fresh remote login would: whatever the rank sees came on the command line.
    const bin = tempDir('bin');
    fs.writeFileSync(
      path.join(bin, 'ssh'),
      [
        '#!/bin/sh',
        '[ "$1" = -o ] && [ "$2" = BatchMode=yes ] || { echo "fake ssh: bad options $*" >&2; exit 255; }',
        `exec env -i PATH='${path.dirname(process.execPath)}:/usr/bin:/bin' sh -c "$4"`,
      ].join('\n'),
      { mode: 0o755 },
    );
    const cwd = tempDir("it's a dir");
    const run = launch(
      [
        '--host',
        'fakehost:2 capacity=1G',
        '--',
        'node',
        '-e',
        "const e = process.env; console.log([e.MEMFLOW_RANK, e.MEMFLOW_HOST, e.MEMFLOW_ROOT.split(':')[0], e.MEMFLOW_HOST_CAPACITY, e.MEMFLOW_NOTE, process.cwd()].join('|'))",
      ],
      {
        cwd,
        env: { ...BASE_ENV, PATH: `${bin}:${process.env.PATH ?? ''}`, MEMFLOW_NOTE: "a 'b' $c" },
      },
    );
    expect(await run.ended()).toEqual({ code: 0, signal: null });
    expect(sortedLines(run.stdout)).toEqual([
      `[0] 0|fakehost|fakehost|1G|a 'b' $c|${cwd}`,
      `[1] 1|fakehost|fakehost|1G|a 'b' $c|${cwd}`,
    ]);
  });
});

describe('exit policy', () => {
  it('a rank exiting 3 stops the others and the launcher exits 3 naming the rank', async () => {
    const run = launch([
      '-n',
      '4',
      '--',
      'node',
      PROBE,
      '--trap-term',
      '--fail-rank',
      '2',
      '--fail-code',
      '3',
    ]);
    const pids = await run.ready(4);
    process.kill(pids[2]!, 'SIGUSR1');
    expect(await run.ended()).toEqual({ code: 3, signal: null });
    expect(run.stderr).toEqual([
      'memflow-run: rank 2 on localhost exited with status 3; stopped the other ranks',
    ]);
    expect(run.stdout).toContain('[2] exiting with 3');
    for (const rank of [0, 1, 3]) expect(run.stdout).toContain(`[${rank}] got SIGTERM`);
    await expectAllGone(pids);
  });

  it('--on-rank-failure continue keeps the others running and exits with rank 0 status', async () => {
    const run = launch([
      '-n',
      '3',
      '--on-rank-failure',
      'continue',
      '--',
      'node',
      PROBE,
      '--fail-rank',
      '2',
      '--fail-code',
      '3',
    ]);
    const pids = await run.ready(3);
    process.kill(pids[2]!, 'SIGUSR1');
    const line =
      'memflow-run: rank 2 on localhost exited with status 3; the other ranks keep running';
    await run.waitFor('the failure line', () => run.stderr.includes(line));
    expect(run.exited).toBe(false);
    expect(isRunning(pids[0]!) && isRunning(pids[1]!)).toBe(true);
    process.kill(pids[0]!, 'SIGUSR1');
    process.kill(pids[1]!, 'SIGUSR1');
    expect(await run.ended()).toEqual({ code: 0, signal: null });
  });

  it('--on-rank-failure continue: the end of rank 0 ends the job, with rank 0 status', async () => {
    const args = ['--fail-rank', '0', '--fail-code', '5'];
    const run = launch(['-n', '2', '--on-rank-failure', 'continue', '--', 'node', PROBE, ...args]);
    const pids = await run.ready(2);
    process.kill(pids[0]!, 'SIGUSR1');
    // Rank 1 is not told to exit: the launcher stops it because rank 0, the root, is gone.
    expect(await run.ended()).toEqual({ code: 5, signal: null });
    expect(run.stderr.some((l) => /rank 0 on .* status 5; stopped the other ranks/.test(l))).toBe(
      true,
    );
  });

  it('a program that does not exist exits 127 with one line naming it', async () => {
    const run = launch(['-n', '2', '--', 'no-such-program-xyz', 'arg']);
    expect(await run.ended()).toEqual({ code: 127, signal: null });
    expect(run.stderr).toHaveLength(1);
    expect(run.stderr[0]).toMatch(
      /^memflow-run: cannot start rank [01]: no-such-program-xyz not found$/,
    );
  });
});

describe('--restart', () => {
  /** The `[R] start MEMFLOW_...` lines the probe prints each time rank R starts. */
  const startLines = (run: LauncherRun, rank: number): string[] =>
    run.stdout.filter((line) => line.startsWith(`[${rank}] start `));

  it('restarts a failed rank once with the same environment, and the job then ends 0', async () => {
    const dir = tempDir('restart');
    const probe = ['node', PROBE, '--exit-early', '1', '--exit-code', '3', '--once-dir', dir];
    const run = launch(['-n', '3', '--restart', '3', '--', ...probe]);
    const pids = await run.ready(3);
    const restartLine =
      'memflow-run: rank 1 on localhost exited with status 3; restarting it (1 of 3)';
    await run.waitFor('the restart line', () => run.stderr.includes(restartLine));
    expect(run.stderr).toEqual([restartLine]);
    const [first, second, ...more] = startLines(run, 1);
    expect(more).toEqual([]);
    expect(first).toMatch(
      /^\[1\] start MEMFLOW_HOST=127\.0\.0\.1 MEMFLOW_JOB_ID=[0-9a-f]{8} MEMFLOW_LOCAL_RANK=1 MEMFLOW_RANK=1 MEMFLOW_ROOT=127\.0\.0\.1:\d+ MEMFLOW_SIZE=3$/,
    );
    expect(second).toBe(first);
    expect(startLines(run, 0)).toHaveLength(1);
    expect(startLines(run, 2)).toHaveLength(1);
    expect(run.stdout).toContain(`[1] ready rank=1 size=3 pid=${pids[1]}`);
    for (const pid of pids) process.kill(pid, 'SIGUSR1');
    expect(await run.ended()).toEqual({ code: 0, signal: null });
    expect(run.stderr).toHaveLength(1);
  });

  it('applies the abort policy once the restarts are used up', async () => {
    const probe = ['node', PROBE, '--exit-early', '1', '--exit-code', '3'];
    const run = launch(['-n', '3', '--restart', '1', '--', ...probe]);
    expect(await run.ended()).toEqual({ code: 3, signal: null });
    expect(run.stderr).toEqual([
      'memflow-run: rank 1 on localhost exited with status 3; restarting it (1 of 1)',
      'memflow-run: rank 1 on localhost exited with status 3; stopped the other ranks',
    ]);
    expect(startLines(run, 1)).toHaveLength(2);
    await expectAllGone([...run.readyPids().values()]);
  });

  it('restarts a rank killed by a signal, but neither rank 0 nor ranks the launcher stops', async () => {
    const run = launch(['-n', '3', '--restart', '2', '--', 'node', PROBE, '--trap-term']);
    const pids = await run.ready(3);
    process.kill(pids[2]!, 'SIGKILL');
    const restartLine =
      'memflow-run: rank 2 on localhost exited with status 137 (SIGKILL); restarting it (1 of 2)';
    await run.waitFor('rank 2 restarted', () => run.readyPids().get(2) !== pids[2]);
    await run.waitFor('the restart line', () => run.stderr.includes(restartLine));
    expect(run.stderr).toEqual([restartLine]);
    const restarted = run.readyPids().get(2)!;
    run.child.kill('SIGTERM');
    expect(await run.ended()).toEqual({ code: 143, signal: null });
    expect(run.stderr).toHaveLength(2);
    await expectAllGone([...pids, restarted]);

    const rank0 = launch(['-n', '2', '--restart', '2', '--', 'node', PROBE, '--fail-rank', '0']);
    const rank0Pids = await rank0.ready(2);
    process.kill(rank0Pids[0]!, 'SIGUSR1');
    expect(await rank0.ended()).toEqual({ code: 1, signal: null });
    expect(rank0.stderr).toEqual([
      'memflow-run: rank 0 on localhost exited with status 1; stopped the other ranks',
    ]);
  });
});

describe('--join', () => {
  it('starts -n ranks tagged [jI] with the joiner environment and waits for all of them', async () => {
    const run = launch(
      [
        '--join',
        '127.0.0.1:40123',
        '-n',
        '2',
        '--',
        'node',
        '-e',
        "console.log(Object.keys(process.env).filter((k) => k.startsWith('MEMFLOW_')).sort().map((k) => `${k}=${process.env[k]}`).join(' '))",
      ],
      // An inherited MEMFLOW_JOIN is overridden; the launcher's other MEMFLOW_* pass as usual.
      { env: { ...BASE_ENV, MEMFLOW_JOIN: 'x', MEMFLOW_NOTE: 'hi' } },
    );
    expect(await run.ended()).toEqual({ code: 0, signal: null });
    const env = (local: number): string =>
      'MEMFLOW_HOST=127.0.0.1 MEMFLOW_JOB_ID=join MEMFLOW_JOIN=1 ' +
      `MEMFLOW_LOCAL_RANK=${local} MEMFLOW_NOTE=hi MEMFLOW_RANK=0 MEMFLOW_ROOT=127.0.0.1:40123 ` +
      'MEMFLOW_SIZE=1';
    expect(sortedLines(run.stdout)).toEqual([`[j0] ${env(0)}`, `[j1] ${env(1)}`]);
    expect(run.stderr).toEqual([]);
  });

  it('keeps the other joiners running when one fails, names it jI, and exits with its status', async () => {
    const run = launch(['--join', 'localhost:7000', '-n', '2', '--', 'node', PROBE]);
    // Every joiner has MEMFLOW_RANK=0 until rank 0 numbers it: the tags tell them apart.
    const pidOf = (tag: string): number | undefined => {
      const line = run.stdout.find((l) => l.startsWith(`[${tag}] ready rank=0 size=1 `));
      return line === undefined ? undefined : Number(/pid=(\d+)$/.exec(line)?.[1]);
    };
    await run.waitFor(
      '2 ready joiners',
      () => pidOf('j0') !== undefined && pidOf('j1') !== undefined,
    );
    const [j0, j1] = [pidOf('j0')!, pidOf('j1')!];
    process.kill(j1, 'SIGKILL');
    const line =
      'memflow-run: rank j1 on localhost exited with status 137 (SIGKILL); the other ranks keep running';
    await run.waitFor('the failure line', () => run.stderr.includes(line));
    expect(run.exited).toBe(false);
    expect(isRunning(j0)).toBe(true);
    process.kill(j0, 'SIGUSR1');
    expect(await run.ended()).toEqual({ code: 137, signal: null });
    expect(run.stderr).toEqual([line]);
    await expectAllGone([j0, j1]);
  });
});

describe('signals', () => {
  it('SIGTERM to the launcher reaches every rank as SIGTERM', async () => {
    const run = launch(['-n', '3', '--', 'node', PROBE, '--trap-term']);
    const pids = await run.ready(3);
    run.child.kill('SIGTERM');
    expect(await run.ended()).toEqual({ code: 143, signal: null });
    expect(sortedLines(run.stdout.filter((l) => l.endsWith('got SIGTERM')))).toEqual([
      '[0] got SIGTERM',
      '[1] got SIGTERM',
      '[2] got SIGTERM',
    ]);
    expect(run.stderr).toEqual([
      'memflow-run: got SIGTERM; stopping all ranks (SIGKILL after 3000 ms)',
    ]);
    await expectAllGone(pids);
  });

  it('a rank ignoring SIGTERM is SIGKILLed after --grace-ms', async () => {
    const graceMs = 800;
    const run = launch([
      '-n',
      '2',
      '--grace-ms',
      String(graceMs),
      '--',
      'node',
      PROBE,
      '--ignore-term',
    ]);
    const pids = await run.ready(2);
    const sentAt = performance.now();
    run.child.kill('SIGINT');
    await run.waitFor('both ranks ignoring SIGTERM', () =>
      ['[0] ignoring SIGTERM', '[1] ignoring SIGTERM'].every((l) => run.stdout.includes(l)),
    );
    expect(run.exited).toBe(false);
    expect(await run.ended()).toEqual({ code: 130, signal: null });
    // The guard's kill timer starts after our signal, so the launcher cannot end sooner than the
    // grace period (10 ms allow for timer granularity).
    expect(performance.now() - sentAt).toBeGreaterThanOrEqual(graceMs - 10);
    await expectAllGone(pids);
  });

  it.skipIf(SETPRIV === undefined)(
    "SIGKILL of a rank's guard takes the rank with it, and the job ends as for a killed rank",
    async () => {
      const run = launch(['-n', '2', '--', 'node', PROBE]);
      const pids = await run.ready(2);
      // The guard sits between the launcher and the rank; `ps` shows it with the rank's command.
      const guard = parentOf(pids[1]!);
      expect(guard).not.toBe(run.child.pid);
      process.kill(guard, 'SIGKILL');
      await expectAllGone([pids[1]!]);
      expect(await run.ended()).toEqual({ code: 137, signal: null });
      expect(run.stderr).toEqual([
        'memflow-run: rank 1 on localhost was killed by SIGKILL; stopped the other ranks',
      ]);
      await expectAllGone(pids);
    },
  );

  it('SIGKILL of the launcher leaves no rank process behind', async () => {
    const run = launch(['-n', '3', '--grace-ms', '500', '--', 'node', PROBE, '--ignore-term']);
    const pids = await run.ready(3);
    run.child.kill('SIGKILL');
    expect((await run.ended()).signal).toBe('SIGKILL');
    await expectAllGone(pids);
  });
});

describe('usage and configuration errors', () => {
  it('a malformed hostfile exits 2 with file:line and the reason', async () => {
    const dir = tempDir('hosts');
    const hostfile = path.join(dir, 'hosts.txt');
    fs.writeFileSync(hostfile, '# two hosts\nlocalhost slots=2\nnode2 slots=x\n');
    const run = launch(['--hostfile', hostfile, '--', 'node', '-e', '0']);
    expect(await run.ended()).toEqual({ code: 2, signal: null });
    expect(run.stderr).toEqual([
      `memflow-run: ${hostfile}:3: the slot count in "slots=x" must be an integer from 1 to 4096`,
    ]);
  });

  it.each([
    [
      ['--hostfile', '/nonexistent/hosts', 'node'],
      'memflow-run: cannot read hostfile /nonexistent/hosts: no such file',
    ],
    [['-n', '0', 'node'], 'memflow-run: -n must be an integer from 1 to 4096, got "0"'],
    [
      ['--bogus', '--', 'node'],
      'memflow-run: unknown option --bogus (launcher options go before PROGRAM; memflow-run --help lists them)',
    ],
    [['--launcher', 'rsh', 'node'], 'memflow-run: --launcher must be fork or ssh, got "rsh"'],
    [
      ['--join', '127.0.0.1', 'node'],
      `memflow-run: --join must be HOST:PORT of the running world's rank 0 (IPv6 as [addr]:PORT, port 1-65535), got "127.0.0.1"`,
    ],
    [
      ['--restart', '-1', 'node'],
      'memflow-run: --restart must be an integer from 0 to 1000, got "-1"',
    ],
  ])('%j exits 2 with one line', async (args, line) => {
    const run = launch(args);
    expect(await run.ended()).toEqual({ code: 2, signal: null });
    expect(run.stderr).toEqual([line]);
  });
});
