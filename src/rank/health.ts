/**
 * Rank 0's view of the data ranks' health: takes their heartbeats (each carries the rank's usage
 * report), feeds the pure FailureDetector with heartbeats, dropped connections and clock ticks,
 * and hands every state change to the coordinator.
 */
import { ANY_SOURCE, type Communicator } from '../comm/communicator.js';
import { isCommError } from '../comm/errors.js';
import {
  FailureDetector,
  type FailureDetectorOptions,
  type Transition,
} from './failure-detector.js';
import { TAG_HEARTBEAT, type RankReport } from './messages.js';

export interface HealthEvents {
  /** A heartbeat arrived (also from a rank the detector holds dead: that is how a rank rejoins). */
  onReport(report: RankReport, fromDeadRank: boolean): void;
  onTransition(transition: Transition): void;
}

export class HealthMonitor {
  readonly detector: FailureDetector;
  private readonly stop = new AbortController();
  private stopTick: () => void = () => {};
  private readonly tickMs: number;

  constructor(
    private readonly comm: Communicator,
    options: FailureDetectorOptions,
    private readonly events: HealthEvents,
  ) {
    this.detector = new FailureDetector(options);
    // Often enough to honour the disconnect grace closely, rarely enough to cost nothing.
    this.tickMs = Math.max(25, Math.min(options.heartbeatIntervalMs / 4, 100));
  }

  start(dataRanks: readonly number[]): void {
    const now = this.comm.clock.now();
    for (const r of dataRanks) this.detector.watch(r, now);
    this.comm.onPeerEvent((event) => {
      if (event.rank === 0 || this.stop.signal.aborted) return;
      if (event.kind === 'disconnected')
        this.apply(this.detector.disconnected(event.rank, this.comm.clock.now()));
      else this.detector.reconnected(event.rank);
    });
    void this.heartbeatLoop();
    this.tick();
  }

  /** Watches a rank that joined or rejoined (a rank held dead becomes alive: a transition). */
  admit(rank: number): void {
    if (this.detector.state(rank) === undefined) this.detector.watch(rank, this.comm.clock.now());
    else this.apply(this.detector.rejoined(rank, this.comm.clock.now()));
  }

  /** The rank's process was replaced: it goes through dead to alive, so it is taken back whole. */
  restarted(rank: number): void {
    this.apply(this.detector.restarted(rank, this.comm.clock.now()));
  }

  close(): void {
    this.stop.abort();
    this.stopTick();
  }

  private tick(): void {
    this.apply(this.detector.tick(this.comm.clock.now()));
    if (!this.stop.signal.aborted)
      this.stopTick = this.comm.clock.setTimer(this.tickMs, () => this.tick());
  }

  private apply(transitions: Transition[]): void {
    for (const t of transitions) this.events.onTransition(t);
  }

  private async heartbeatLoop(): Promise<void> {
    for (;;) {
      let msg;
      try {
        msg = await this.comm.recv<RankReport>(ANY_SOURCE, TAG_HEARTBEAT, {
          timeoutMs: Infinity,
          signal: this.stop.signal,
        });
      } catch (err) {
        if (this.stop.signal.aborted || isCommError(err, 'COMM_CLOSED')) return;
        throw err;
      }
      const rank = this.comm.worldRankOf(msg.source);
      const wasDead = this.detector.state(rank) === 'dead';
      if (!wasDead) this.apply(this.detector.heard(rank, this.comm.clock.now()));
      this.events.onReport({ ...msg.data, rank }, wasDead);
    }
  }
}
