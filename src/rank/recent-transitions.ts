/**
 * The last few rank state changes, with when and why, for the status page. A suspect state can
 * last well under a second (a killed rank's connection drops, and it is dead after the disconnect
 * grace), so the page cannot rely on catching it in a snapshot: it shows this list as well, and is
 * told of each change as it happens.
 */
import type { RankState } from '../protocol/client-protocol.js';
import type { Transition } from './failure-detector.js';

export interface TransitionEntry {
  /** Wall-clock time of the change, ms since the epoch. */
  atMs: number;
  rank: number;
  from: RankState;
  to: RankState;
  reason: string;
}

export interface RecentTransitionsView {
  /** Oldest first. */
  entries(): TransitionEntry[];
  /** Calls `listener` after each change is recorded; returns the unsubscribe function. */
  subscribe(listener: (entry: TransitionEntry) => void): () => void;
}

export class RecentTransitions implements RecentTransitionsView {
  private readonly list: TransitionEntry[] = [];
  private readonly listeners = new Set<(entry: TransitionEntry) => void>();

  constructor(private readonly limit = 50) {}

  add(t: Transition, atMs: number): void {
    const entry: TransitionEntry = { atMs, rank: t.rank, from: t.from, to: t.to, reason: t.reason };
    this.list.push(entry);
    if (this.list.length > this.limit) this.list.splice(0, this.list.length - this.limit);
    for (const listener of [...this.listeners]) {
      try {
        listener(entry);
      } catch {
        // An observer's bug must not break the coordinator's handling of the transition.
      }
    }
  }

  entries(): TransitionEntry[] {
    return this.list.map((e) => ({ ...e }));
  }

  subscribe(listener: (entry: TransitionEntry) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
