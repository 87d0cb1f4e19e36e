/**
 * The rank guard's one use of child_process: start the program as the leader of a new process
 * group, so that one signal to the group reaches the program and everything it started, and so
 * that the terminal's Ctrl-C reaches only the launcher, which then stops the ranks in order.
 *
 * On Linux the program starts through util-linux's setpriv with a parent-death signal: if the
 * guard itself is SIGKILLed (`ps` shows it with the rank's whole command line, so it is the
 * process a user is likely to kill), the kernel kills the program too. Without it the rank ran
 * on, reparented to init, out of the launcher's reach (which had already reported it dead), and
 * outlived the job. Where setpriv is missing the program starts directly, as before.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';

/** setpriv's path when this is Linux and it is installed (util-linux is essential on Debian). */
export const SETPRIV: string | undefined =
  process.platform === 'linux' ? findExecutable('setpriv') : undefined;

export interface ProgramHandlers {
  /** The program could not be started (ENOENT: not found, EACCES: not executable, ...). */
  onSpawnError(error: NodeJS.ErrnoException): void;
  /** The program ended: exactly one of code and signal is non-null. */
  onExit(code: number | null, signal: NodeJS.Signals | null): void;
}

export interface ProgramGroup {
  /** The program's pid, which is also its process group id; undefined if it did not start. */
  readonly pid: number | undefined;
  /** The program's stdin. */
  readonly stdin: Writable;
}

/**
 * Starts `program args` in its own process group (and session), stdout and stderr inherited from
 * the guard (the program writes straight into the launcher's pipes: no copy), stdin a pipe the
 * guard feeds. The environment is the guard's, which the launcher set up.
 */
export function startProgramGroup(
  program: string,
  args: readonly string[],
  handlers: ProgramHandlers,
): ProgramGroup {
  // setpriv execs the program in its own place (same pid, same group). A program that is not
  // found or not executable starts directly, so that spawn reports ENOENT or EACCES as before.
  const resolved = SETPRIV === undefined ? undefined : findExecutable(program);
  const start = (file: string, argv: readonly string[]) =>
    spawn(file, argv, { stdio: ['pipe', 'inherit', 'inherit'], detached: true });
  const child =
    SETPRIV !== undefined && resolved !== undefined
      ? start(SETPRIV, ['--pdeathsig', 'KILL', '--', resolved, ...args])
      : start(program, args);
  let spawned = false;
  child.once('spawn', () => {
    spawned = true;
  });
  child.once('error', (error: NodeJS.ErrnoException) => {
    // After a successful spawn, 'error' only reports a failed kill(), which signalGroup covers.
    if (!spawned) handlers.onSpawnError(error);
  });
  child.once('exit', (code, signal) => handlers.onExit(code, signal));
  // Writing to a program that closed its stdin must not crash the guard: the data is dropped.
  child.stdin.on('error', () => undefined);
  return { pid: child.pid, stdin: child.stdin };
}

/**
 * The path of `program` as execvp would find it: as given when it names a path, else the first
 * executable regular file of that name in PATH; undefined when there is none.
 */
function findExecutable(program: string): string | undefined {
  const candidates = program.includes('/')
    ? [program]
    : (process.env.PATH ?? '')
        .split(path.delimiter)
        .filter((dir) => dir !== '')
        .map((dir) => path.join(dir, program));
  return candidates.find((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return fs.statSync(file).isFile();
    } catch {
      return false;
    }
  });
}

/**
 * Sends `signal` to the whole process group led by `pid`. A group that no longer exists is not an
 * error: the goal, no process left, is already reached.
 */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is gone. EPERM cannot happen for our own children.
  }
}
