/**
 * Wraps a ChildProcess into the LaunchedRank the supervisor uses. Shared by the three spawners.
 */
import type { ChildProcess } from 'node:child_process';
import type { LaunchedRank, RankEnd } from '../rank-process.js';

/**
 * How long after a rank's process exits the launcher still waits for the end of its output. The
 * guard kills its whole process group when the program exits, so only a descendant that moved to
 * another session can hold the pipes; we do not wait for it forever.
 */
export const END_OF_OUTPUT_WAIT_MS = 2000;

/** Turns a child started with stdio 'pipe' into a LaunchedRank; `command` names it in errors. */
export function launchedRank(child: ChildProcess, command: string): LaunchedRank {
  const { stdin, stdout, stderr } = child;
  if (stdin === null || stdout === null || stderr === null) {
    throw new Error('launchedRank needs a child started with stdio "pipe"');
  }
  // A guard that died leaves a broken pipe; later control frames are simply lost.
  stdin.on('error', () => undefined);

  const ended = new Promise<RankEnd>((resolve) => {
    let spawned = false;
    let endTimer: NodeJS.Timeout | undefined;
    child.once('spawn', () => {
      spawned = true;
    });
    child.once('error', (error: NodeJS.ErrnoException) => {
      if (spawned) return; // a failed kill(): the exit still comes
      resolve({
        kind: 'not-started',
        command,
        errorCode: error.code ?? 'UNKNOWN',
        message: error.message,
      });
    });
    const settle = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(endTimer);
      resolve(signal !== null ? { kind: 'signaled', signal } : { kind: 'exited', code: code ?? 0 });
    };
    child.once('exit', (code, signal) => {
      endTimer = setTimeout(() => {
        stdout.destroy();
        stderr.destroy();
        settle(code, signal);
      }, END_OF_OUTPUT_WAIT_MS);
    });
    child.once('close', settle);
  });

  return {
    pid: child.pid,
    control: stdin,
    stdout,
    stderr,
    ended,
    signal(signal) {
      try {
        child.kill(signal);
      } catch {
        // Already gone.
      }
    },
  };
}
