/**
 * The failure detector: pure, driven by the times it is given (the coordinator feeds it the
 * injected clock), so simulations assert exact outcomes.
 *
 * A data rank is
 * - alive while it was heard from within `suspectAfterBeats` heartbeat periods;
 * - suspect after that many missed beats (reads go to other copies at once, no new chunks go to
 *   it, nothing is moved yet);
 * - dead once silent for `deadAfterMs`, and then its copies are re-created elsewhere.
 *
 * A dropped connection is evidence, not proof: the rank becomes suspect at once, and dead if it
 * has not reconnected or been heard from within `disconnectGraceMs`. A killed process drops its
 * connections and never comes back, so it is declared dead in well under a second; a merely slow
 * rank (stopped, swapping, a long GC) keeps its connections and only the silence rule applies to
 * it, so it is never declared dead before `deadAfterMs`. A rank heard from again before it is
 * dead is alive again, and nothing was moved. A dead rank stays dead until it rejoins
 * (`rejoined`).
 */
import type { RankState } from '../protocol/client-protocol.js';

export interface FailureDetectorOptions {
  heartbeatIntervalMs: number;
  /** Missed beats before a rank is suspect (default 3). */
  suspectAfterBeats?: number;
  deadAfterMs: number;
  /**
   * How long a dropped connection may stay down before the rank is dead. Default: half a beat,
   * at least 250 ms, at most deadAfterMs — ZeroMQ reconnects a live peer within ~100 ms, while a
   * killed one refuses every attempt.
   */
  disconnectGraceMs?: number;
}

export interface Transition {
  rank: number;
  from: RankState;
  to: RankState;
  /** Why, in words, for the log and the status page. */
  reason: string;
  /** Set when the rank's process was replaced: whatever it did before is void, even if from === to. */
  restarted?: true;
}

interface Tracked {
  state: RankState;
  lastHeardMs: number;
  /** When the connection dropped, if it is down now. */
  disconnectedAtMs: number | undefined;
}

export class FailureDetector {
  private readonly ranks = new Map<number, Tracked>();
  private readonly suspectAfterMs: number;
  private readonly disconnectGraceMs: number;

  constructor(private readonly options: FailureDetectorOptions) {
    if (!(options.heartbeatIntervalMs > 0) || !(options.deadAfterMs > 0)) {
      throw new RangeError('heartbeatIntervalMs and deadAfterMs must be positive');
    }
    this.suspectAfterMs = (options.suspectAfterBeats ?? 3) * options.heartbeatIntervalMs;
    this.disconnectGraceMs = Math.min(
      options.deadAfterMs,
      options.disconnectGraceMs ?? Math.max(250, options.heartbeatIntervalMs / 2),
    );
  }

  /** Starts watching `rank` as alive, heard from at `nowMs`. */
  watch(rank: number, nowMs: number): void {
    this.ranks.set(rank, { state: 'alive', lastHeardMs: nowMs, disconnectedAtMs: undefined });
  }

  forget(rank: number): void {
    this.ranks.delete(rank);
  }

  state(rank: number): RankState | undefined {
    return this.ranks.get(rank)?.state;
  }

  lastHeardMs(rank: number): number | undefined {
    return this.ranks.get(rank)?.lastHeardMs;
  }

  /** A heartbeat (or any message) from `rank`. Revives a suspect rank; a dead one must rejoin. */
  heard(rank: number, nowMs: number): Transition[] {
    const t = this.ranks.get(rank);
    if (!t || t.state === 'dead') return [];
    t.lastHeardMs = Math.max(t.lastHeardMs, nowMs);
    t.disconnectedAtMs = undefined;
    return this.move(rank, t, 'alive', 'heard from again');
  }

  /** The transport saw the connection to `rank` drop. */
  disconnected(rank: number, nowMs: number): Transition[] {
    const t = this.ranks.get(rank);
    if (!t || t.state === 'dead') return [];
    t.disconnectedAtMs ??= nowMs;
    return this.move(rank, t, 'suspect', 'its connection dropped');
  }

  /** The transport reconnected to `rank` (it is reachable again; a heartbeat will revive it). */
  reconnected(rank: number): void {
    const t = this.ranks.get(rank);
    if (t) t.disconnectedAtMs = undefined;
  }

  /**
   * The rank's process was replaced (it registered again on a new port): whatever its old
   * incarnation was doing is void. Returns the transitions that takes, ending alive.
   */
  restarted(rank: number, nowMs: number): Transition[] {
    const t = this.ranks.get(rank);
    if (!t) {
      this.watch(rank, nowMs);
      return [];
    }
    const from = t.state;
    t.state = 'alive';
    t.lastHeardMs = nowMs;
    t.disconnectedAtMs = undefined;
    return [{ rank, from, to: 'alive', reason: 'its process was replaced', restarted: true }];
  }

  /** A dead rank came back (restarted on its data, or re-registered): alive again. */
  rejoined(rank: number, nowMs: number): Transition[] {
    const t = this.ranks.get(rank);
    if (!t) {
      this.watch(rank, nowMs);
      return [];
    }
    t.lastHeardMs = nowMs;
    t.disconnectedAtMs = undefined;
    return this.move(rank, t, 'alive', 'rejoined');
  }

  /** Applies the silence and disconnect rules at `nowMs`; returns what changed. */
  tick(nowMs: number): Transition[] {
    const out: Transition[] = [];
    for (const [rank, t] of this.ranks) {
      if (t.state === 'dead') continue;
      const silentMs = nowMs - t.lastHeardMs;
      if (silentMs >= this.options.deadAfterMs) {
        out.push(...this.move(rank, t, 'dead', `silent for ${Math.round(silentMs)} ms`));
      } else if (
        t.disconnectedAtMs !== undefined &&
        nowMs - t.disconnectedAtMs >= this.disconnectGraceMs
      ) {
        out.push(
          ...this.move(
            rank,
            t,
            'dead',
            `connection down for ${Math.round(nowMs - t.disconnectedAtMs)} ms`,
          ),
        );
      } else if (silentMs >= this.suspectAfterMs && t.state === 'alive') {
        out.push(
          ...this.move(
            rank,
            t,
            'suspect',
            `missed ${Math.floor(silentMs / this.options.heartbeatIntervalMs)} heartbeats`,
          ),
        );
      }
    }
    return out;
  }

  private move(rank: number, t: Tracked, to: RankState, reason: string): Transition[] {
    if (t.state === to) return [];
    const from = t.state;
    t.state = to;
    return [{ rank, from, to, reason }];
  }
}
