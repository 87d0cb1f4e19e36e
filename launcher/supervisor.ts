/**
 * The supervisor watches the ranks of one launch and decides how the launch ends, like mpirun:
 *
 * - When a rank fails (exits non-zero, dies of a signal, or cannot start), it prints one line
 *   naming the rank, its host and its status; by default (--on-rank-failure abort) it stops the
 *   other ranks and the launcher exits with that rank's status. With `continue` (the default in
 *   store mode, which survives data-rank deaths) the others keep running and the launcher exits
 *   when all have ended, with rank 0's status — except that rank 0 ending stops the others.
 * - With --restart N, a rank other than rank 0 that fails is first started again (same environment,
 *   same host), up to N times per rank, one line each; only when its restarts are used up does the
 *   policy above apply. Ranks the launcher is stopping itself are never restarted.
 * - A --join launch has no rank 0: nothing ends the job but the end of all its ranks, and under
 *   `continue` the launcher exits with the status of the first rank that failed for good (else 0).
 * - SIGINT/SIGTERM/SIGHUP to the launcher stop every rank; the launcher exits 128 + signal number.
 * - Stopping a rank means a TERMINATE frame to its guard, which SIGTERMs the program's process
 *   group and SIGKILLs it after the grace period. Should a guard not end within the grace period
 *   plus ESCALATION_MS, the launcher signals the process it started (guard, ssh or template)
 *   itself: SIGTERM, then SIGKILL after another ESCALATION_MS. Nothing waits forever.
 */
import os from 'node:os';
import { encodeFrame, FRAME, type GuardNotice } from './guard-protocol.js';
import type { SpawnMode } from './plan.js';
import type { LaunchedRank, RankEnd } from './rank-process.js';

/** Extra time a guard gets beyond the grace period before the launcher signals it directly. */
export const ESCALATION_MS = 2000;

export interface SupervisedRank {
  /** The rank number; in a --join launch the index within the join. */
  rank: number;
  /** How reports name it when not `rank <rank>` (`j1` for the ranks of a --join launch). */
  name?: string;
  host: string;
  mode: SpawnMode;
  process: LaunchedRank;
  /** Resolves when the rank's stdout and stderr have been forwarded to the end. */
  outputDone: Promise<void>;
  /** Set when the guard reported that it could not start the program. */
  notice?: GuardNotice;
}

export interface SupervisorOptions {
  graceMs: number;
  onRankFailure: 'abort' | 'continue';
  /** Writes one line (without newline) to the launcher's stderr. */
  report(line: string): void;
  /** Called once when rank 0 has ended (the launcher stops forwarding stdin to it). */
  onRank0Ended?(): void;
  /**
   * False for a --join launch: its ranks are not rank 0 of any world (rank 0 runs elsewhere), so
   * none of the rank-0 rules apply to `rank: 0`. Default true.
   */
  hasRank0?: boolean;
  /** How many times each rank but rank 0 may be restarted after a failure (default 0). */
  maxRestarts?: number;
  /**
   * Starts `rank` again exactly as it was started, replacing its process, outputDone and notice.
   * Required when maxRestarts > 0.
   */
  restart?(rank: SupervisedRank): void;
}

export class Supervisor {
  private readonly live = new Set<number>();
  private stopRequested = false;
  private signalled = 0;
  private stopStatus: number | null = null;
  private failureStatus: number | null = null;
  private rank0Status: number | null = null;
  /** The first status of a rank that failed for good (the exit status of a --join launch). */
  private firstFailureStatus: number | null = null;
  private readonly restartsUsed = new Map<number, number>();
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly ranks: readonly SupervisedRank[],
    private readonly options: SupervisorOptions,
  ) {
    for (const rank of ranks) this.live.add(rank.rank);
  }

  /** Waits until every rank has ended; resolves to the launcher's exit status. Never rejects. */
  async run(): Promise<number> {
    await Promise.all(this.ranks.map((rank) => this.watch(rank)));
    this.timers.forEach(clearTimeout);
    if (this.stopStatus !== null) return this.stopStatus;
    if (this.options.onRankFailure === 'continue') {
      return this.hasRank0 ? (this.rank0Status ?? 0) : (this.firstFailureStatus ?? 0);
    }
    return this.failureStatus ?? 0;
  }

  /**
   * The launcher got `signal`: the first one stops every rank (SIGTERM, SIGKILL after the grace
   * period), a second one kills them at once.
   */
  onSignal(signal: NodeJS.Signals): void {
    this.signalled++;
    this.stopStatus ??= 128 + (os.constants.signals[signal] ?? 0);
    if (this.signalled === 1) {
      this.options.report(
        `memflow-run: got ${signal}; stopping all ranks (SIGKILL after ${this.options.graceMs} ms)`,
      );
      this.stopAll();
    } else {
      this.options.report(`memflow-run: got ${signal} again; killing all ranks now`);
      this.sendToLive(FRAME.kill);
    }
  }

  /** Stops every rank still running and ends the launch with `status` (e.g. output closed). */
  abort(line: string, status: number): void {
    if (this.stopRequested) return;
    this.stopStatus ??= status;
    this.options.report(line);
    this.stopAll();
  }

  private get hasRank0(): boolean {
    return this.options.hasRank0 !== false;
  }

  private isRank0(rank: SupervisedRank): boolean {
    return this.hasRank0 && rank.rank === 0;
  }

  private async watch(rank: SupervisedRank): Promise<void> {
    let end: RankEnd;
    let status: number;
    for (;;) {
      end = await rank.process.ended;
      await rank.outputDone;
      status = exitStatus(end, rank.notice);
      if (!this.restartIfAllowed(rank, end, status)) break;
    }
    this.live.delete(rank.rank);
    const isRank0 = this.isRank0(rank);
    if (isRank0) {
      this.rank0Status = status;
      this.options.onRank0Ended?.();
    }
    // Ranks we stopped ourselves end with SIGTERM's status: that is the stop, not a new failure.
    if (this.stopRequested) return;
    // Rank 0 is the root every SPMD job (and the store's coordinator) hangs on: under `continue`
    // the job outlives any other rank, but when rank 0 ends, the job is over.
    if (isRank0 && this.options.onRankFailure === 'continue' && this.live.size > 0) {
      if (status !== 0)
        this.options.report(
          `memflow-run: ${describeFailure(rank, end).text}; stopped the other ranks`,
        );
      this.stopAll();
      return;
    }
    if (status === 0) return;
    this.firstFailureStatus ??= status;

    const abort = this.options.onRankFailure === 'abort';
    const othersLive = this.live.size > 0;
    const failure = describeFailure(rank, end);
    if (failure.startError) {
      this.options.report(`memflow-run: ${failure.text}`);
    } else {
      const consequence = !othersLive
        ? ''
        : abort
          ? '; stopped the other ranks'
          : '; the other ranks keep running';
      this.options.report(`memflow-run: ${failure.text}${consequence}`);
    }
    if (abort) {
      this.failureStatus = status;
      this.stopAll();
    }
  }

  /**
   * Restarts `rank` after an end with `status` if --restart allows it: a failure (not a start
   * error, which would only repeat), not rank 0, not a rank the launcher is stopping, and restarts
   * left for this rank. Reports the restart in one line; returns whether it restarted.
   */
  private restartIfAllowed(rank: SupervisedRank, end: RankEnd, status: number): boolean {
    const max = this.options.maxRestarts ?? 0;
    if (status === 0 || this.stopRequested || this.isRank0(rank)) return false;
    if (this.options.restart === undefined) return false;
    const used = this.restartsUsed.get(rank.rank) ?? 0;
    if (used >= max) return false;
    const failure = describeFailure(rank, end);
    if (failure.startError) return false;
    this.restartsUsed.set(rank.rank, used + 1);
    this.options.report(`memflow-run: ${failure.text}; restarting it (${used + 1} of ${max})`);
    this.options.restart(rank);
    return true;
  }

  private stopAll(): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    this.sendToLive(FRAME.terminate);
    this.later(this.options.graceMs + ESCALATION_MS, () => {
      this.sendToLive(FRAME.kill);
      this.forEachLive((rank) => rank.process.signal('SIGTERM'));
      this.later(ESCALATION_MS, () => this.forEachLive((rank) => rank.process.signal('SIGKILL')));
    });
  }

  private sendToLive(type: typeof FRAME.terminate | typeof FRAME.kill): void {
    this.forEachLive((rank) => {
      if (!rank.process.control.destroyed) rank.process.control.write(encodeFrame(type));
    });
  }

  private forEachLive(fn: (rank: SupervisedRank) => void): void {
    for (const rank of this.ranks) if (this.live.has(rank.rank)) fn(rank);
  }

  private later(delayMs: number, fn: () => void): void {
    this.timers.push(setTimeout(fn, delayMs));
  }
}

/**
 * The status a rank's end stands for, shell style: the exit code; 128 + signal number for a
 * signal; 127 when the program (or the ssh/template command) was not found, 126 when it could not
 * be run.
 */
export function exitStatus(end: RankEnd, notice?: GuardNotice): number {
  if (notice !== undefined) return notice.code === 'ENOENT' ? 127 : 126;
  switch (end.kind) {
    case 'exited':
      return end.code;
    case 'signaled':
      return 128 + (os.constants.signals[end.signal] ?? 0);
    case 'not-started':
      return end.errorCode === 'ENOENT' ? 127 : 126;
  }
}

/** The sentence that explains a failed rank (without the `memflow-run: ` prefix). */
export function describeFailure(
  rank: Pick<SupervisedRank, 'rank' | 'name' | 'host' | 'mode' | 'notice'>,
  end: RankEnd,
): { text: string; startError: boolean } {
  const name = rank.name ?? String(rank.rank);
  const startError = (command: string, code: string, message: string): string =>
    code === 'ENOENT'
      ? `cannot start rank ${name}: ${command} not found`
      : code === 'EACCES'
        ? `cannot start rank ${name}: ${command} is not executable (permission denied)`
        : `cannot start rank ${name}: ${command}: ${message}`;
  if (rank.notice !== undefined) {
    const { program, code, message } = rank.notice;
    return { text: startError(program, code, message), startError: true };
  }
  const where = `rank ${name} on ${rank.host}`;
  switch (end.kind) {
    case 'not-started':
      return { text: startError(end.command, end.errorCode, end.message), startError: true };
    case 'signaled':
      return { text: `${where} was killed by ${end.signal}`, startError: false };
    case 'exited': {
      let text = `${where} exited with status ${end.code}`;
      const signal = signalName(end.code - 128);
      if (signal !== undefined) text += ` (${signal})`;
      if (rank.mode === 'ssh' && end.code === 255) text += ' (ssh could not run it?)';
      return { text, startError: false };
    }
  }
}

function signalName(signo: number): string | undefined {
  if (signo <= 0) return undefined;
  return Object.entries(os.constants.signals).find(([, n]) => n === signo)?.[0];
}
