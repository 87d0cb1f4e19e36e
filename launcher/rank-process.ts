/**
 * A started rank as the supervisor sees it, whatever started it (fork, ssh or an exec template):
 * the guard's control pipe, the rank's output, and how it ended. The spawners produce these; the
 * supervisor and the output forwarding use them without touching child_process.
 */
import type { Readable, Writable } from 'node:stream';

export type RankEnd =
  /** The process exited with this status (the guard turns a program's signal death into 128+n). */
  | { kind: 'exited'; code: number }
  /** The process started by the launcher (guard, ssh or template command) died of a signal. */
  | { kind: 'signaled'; signal: NodeJS.Signals }
  /** The launcher could not start the process at all (`errorCode` is the errno code, e.g. ENOENT). */
  | { kind: 'not-started'; command: string; errorCode: string; message: string };

export interface LaunchedRank {
  /** The pid of the process the launcher started (guard, ssh or template command). */
  readonly pid: number | undefined;
  /** The guard's stdin: frames of guard-protocol.ts go here. */
  readonly control: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /**
   * Settles once the process has ended and its output has been read to the end; a descendant
   * that escaped the guard's process group and keeps the pipes open delays this at most
   * END_OF_OUTPUT_WAIT_MS.
   */
  readonly ended: Promise<RankEnd>;
  /** Sends a signal to the started process itself (not the program); never throws. */
  signal(signal: NodeJS.Signals): void;
}
