/**
 * The rank guard's one use of child_process: start the program as the leader of a new process
 * group, so that one signal to the group reaches the program and everything it started, and so
 * that the terminal's Ctrl-C reaches only the launcher, which then stops the ranks in order.
 */
import { spawn } from 'node:child_process';
import type { Writable } from 'node:stream';

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
  const child = spawn(program, args, { stdio: ['pipe', 'inherit', 'inherit'], detached: true });
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
