/**
 * Time is an input. Every timeout, heartbeat and failure-detector decision reads an injected Clock,
 * so a whole world of ranks can run in one process under a ManualClock and produce exact,
 * repeatable outcomes.
 */
export interface Clock {
  /** Milliseconds since an arbitrary origin; never goes backwards. */
  now(): number;
  /** Calls `fn` once after `delayMs`; the returned function cancels it (idempotent). */
  setTimer(delayMs: number, fn: () => void): () => void;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/** The real clock: monotonic time and Node timers. Timers are unref'd so they never keep a process alive. */
export class SystemClock implements Clock {
  now(): number {
    return performance.now();
  }

  setTimer(delayMs: number, fn: () => void): () => void {
    // Two things Node's timers do that a deadline must not: fire delays above 2^31-1 ms after
    // 1 ms, and fire up to a millisecond early as performance.now() sees it (they count whole
    // milliseconds of loop time). So the timer re-arms itself until the due time has really come.
    const dueMs = this.now() + Math.max(0, delayMs);
    let handle: NodeJS.Timeout;
    const arm = (): void => {
      const leftMs = dueMs - this.now();
      if (leftMs <= 0) {
        fn();
        return;
      }
      handle = setTimeout(arm, Math.min(Math.ceil(leftMs), MAX_TIMER_MS));
      handle.unref();
    };
    handle = setTimeout(arm, Math.min(Math.ceil(Math.max(0, delayMs)), MAX_TIMER_MS));
    handle.unref();
    return () => clearTimeout(handle);
  }
}

interface PendingTimer {
  readonly dueMs: number;
  readonly seq: number;
  readonly fn: () => void;
}

/**
 * A clock that moves only when a test says so. Timers due at the same instant fire in the order
 * they were set, which keeps simulations deterministic.
 */
export class ManualClock implements Clock {
  private nowMs: number;
  private seq = 0;
  private timers: PendingTimer[] = [];

  constructor(startMs = 0) {
    this.nowMs = startMs;
  }

  now(): number {
    return this.nowMs;
  }

  setTimer(delayMs: number, fn: () => void): () => void {
    const timer: PendingTimer = { dueMs: this.nowMs + Math.max(0, delayMs), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  /** Number of timers not yet fired. */
  pendingTimers(): number {
    return this.timers.length;
  }

  /**
   * Advances time by `deltaMs`, firing every timer that falls due on the way in time order
   * (timers set by a firing timer fire too, if they fall inside the window).
   */
  advance(deltaMs: number): void {
    const targetMs = this.nowMs + deltaMs;
    for (let fired = 0; fired < 1_000_000; fired++) {
      const next = this.nextDue();
      if (next === undefined || next.dueMs > targetMs) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.nowMs = next.dueMs;
      next.fn();
    }
    this.nowMs = targetMs;
  }

  private nextDue(): PendingTimer | undefined {
    let best: PendingTimer | undefined;
    for (const t of this.timers) {
      if (!best || t.dueMs < best.dueMs || (t.dueMs === best.dueMs && t.seq < best.seq)) best = t;
    }
    return best;
  }
}
