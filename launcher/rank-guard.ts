/**
 * The rank guard: a small Node process that runs one rank's program and guarantees it never
 * outlives the launcher. The launcher starts it as
 *
 *   node <dist>/launcher/rank-guard.js --grace-ms=3000 -- PROGRAM ARGS...
 *
 * by fork, over ssh or through an exec template. The guard starts PROGRAM in its own process
 * group, feeds it the stdin data that arrives as frames on the guard's own stdin (see
 * guard-protocol.ts), and:
 *
 * - on a TERMINATE frame, or SIGTERM/SIGINT/SIGHUP to the guard: SIGTERM the group, then SIGKILL it
 *   after the grace period (a second request kills at once);
 * - when its stdin closes without a TERMINATE frame, the launcher is gone: the same, so no rank
 *   survives a launcher that was SIGKILLed;
 * - when the program exits: SIGKILL whatever is left in its group, and exit with the program's
 *   status (a death by signal as 128 + signal number, like a shell).
 *
 * If the program cannot be started it writes one notice line on stderr (which the launcher turns
 * into "cannot start rank R: PROGRAM not found") and exits 127 (not found) or 126, like a shell.
 *
 * The guard imports only Node built-ins and two small modules, so it adds one Node start-up
 * (~50 ms) and a few MB per rank; the program's output does not pass through it.
 */
import os from 'node:os';
import process from 'node:process';
import { FRAME, FrameDecoder, formatGuardNotice, type Frame } from './guard-protocol.js';
import { signalGroup, startProgramGroup } from './spawners/program-group.js';

/** The status of a guard that was started wrongly (a launcher bug, never a user error). */
const USAGE_STATUS = 2;

/** How often the guard checks, while its stdin is paused, whether its parent is still there. */
const PARENT_CHECK_MS = 1000;

function main(argv: readonly string[]): void {
  const parsed = parseArgs(argv);
  if (parsed === null) {
    process.stderr.write('rank-guard: usage: rank-guard.js --grace-ms=N -- PROGRAM [ARGS...]\n');
    process.exit(USAGE_STATUS);
  }
  const { graceMs, program, args } = parsed;

  const group = startProgramGroup(program, args, {
    onSpawnError(error) {
      const code = error.code ?? 'UNKNOWN';
      process.stderr.write(
        formatGuardNotice({ event: 'spawn-error', program, code, message: error.message }),
      );
      process.exit(code === 'ENOENT' ? 127 : 126);
    },
    onExit(code, signal) {
      // Children the program left behind in its group go with it: no orphan stays.
      if (group.pid !== undefined) signalGroup(group.pid, 'SIGKILL');
      process.exit(code ?? 128 + (signal === null ? 0 : (os.constants.signals[signal] ?? 0)));
    },
  });

  let terminateRequests = 0;
  let killTimer: NodeJS.Timeout | undefined;
  const terminate = (): void => {
    terminateRequests++;
    if (group.pid === undefined) return;
    if (terminateRequests > 1) {
      kill();
      return;
    }
    signalGroup(group.pid, 'SIGTERM');
    killTimer = setTimeout(kill, graceMs);
  };
  const kill = (): void => {
    clearTimeout(killTimer);
    if (group.pid !== undefined) signalGroup(group.pid, 'SIGKILL');
  };

  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, terminate);

  let launcherGone = false;
  const onLauncherGone = (): void => {
    if (launcherGone) return;
    launcherGone = true;
    clearInterval(parentWatch);
    group.stdin.destroy();
    // After an orderly TERMINATE the grace timer already runs; otherwise this is the request.
    if (terminateRequests === 0) terminate();
  };

  // Backpressure: a program that does not read its stdin must not make the guard buffer without
  // limit, so the guard stops reading frames until the program catches up (or closes its stdin).
  // While paused the guard cannot see its pipe close, so it watches its parent instead: a changed
  // parent pid means the launcher (or the ssh session) is gone.
  const parentPid = process.ppid;
  let parentWatch: NodeJS.Timeout | undefined;
  let paused = false;
  const pause = (): void => {
    if (paused) return;
    paused = true;
    process.stdin.pause();
    parentWatch = setInterval(() => {
      if (process.ppid !== parentPid) onLauncherGone();
    }, PARENT_CHECK_MS);
    parentWatch.unref();
  };
  const resume = (): void => {
    if (!paused) return;
    paused = false;
    clearInterval(parentWatch);
    if (!launcherGone) process.stdin.resume();
  };
  group.stdin.on('drain', resume);
  group.stdin.on('close', resume);

  const decoder = new FrameDecoder();
  const handle = (frame: Frame): void => {
    switch (frame.type) {
      case FRAME.data:
        // Data after the program closed its stdin (or after STDIN_EOF) is dropped, as a pipe would.
        if (group.stdin.writable && !group.stdin.write(frame.payload)) pause();
        break;
      case FRAME.stdinEof:
        group.stdin.end();
        break;
      case FRAME.terminate:
        terminate();
        break;
      case FRAME.kill:
        terminateRequests++;
        kill();
        break;
    }
  };

  process.stdin.on('data', (chunk: Buffer) => {
    let frames: Frame[];
    try {
      frames = decoder.push(chunk);
    } catch {
      // Not our protocol: nobody we can trust is steering this rank any more.
      onLauncherGone();
      return;
    }
    frames.forEach(handle);
  });
  process.stdin.on('end', onLauncherGone);
  process.stdin.on('close', onLauncherGone);
  process.stdin.on('error', onLauncherGone);
}

function parseArgs(
  argv: readonly string[],
): { graceMs: number; program: string; args: string[] } | null {
  const match = /^--grace-ms=(\d+)$/.exec(argv[0] ?? '');
  if (match === null || argv[1] !== '--' || argv[2] === undefined) return null;
  return { graceMs: Number(match[1]), program: argv[2], args: argv.slice(3) };
}

main(process.argv.slice(2));
