/**
 * Clocks. Goal: ManualClock behaves as simulations assume (time moves only on advance(), timers
 * fire in due order, same-instant timers in the order they were set, cancellation is idempotent,
 * timers set by timers fire if they fall inside the window), and SystemClock fires and cancels
 * real timers. Method: record the firing order and clock.now() at each firing.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock, SystemClock } from '../../src/runtime/clock.js';

describe('ManualClock', () => {
  it('starts at the given time and moves only on advance()', () => {
    const clock = new ManualClock(1_000);
    expect(clock.now()).toBe(1_000);
    expect(clock.now()).toBe(1_000);
    clock.advance(250);
    expect(clock.now()).toBe(1_250);
  });

  it('fires timers in due order, with now() reading each due time, regardless of the order they were set', () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    for (const [name, delayMs] of [
      ['c', 30],
      ['a', 10],
      ['b', 20],
    ] as const) {
      clock.setTimer(delayMs, () => fired.push(`${name}@${clock.now()}`));
    }
    clock.advance(25);
    expect(fired).toEqual(['a@10', 'b@20']);
    expect(clock.now()).toBe(25);
    expect(clock.pendingTimers()).toBe(1);
    clock.advance(5);
    expect(fired).toEqual(['a@10', 'b@20', 'c@30']);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('fires timers due at the same instant in the order they were set', () => {
    const clock = new ManualClock();
    const fired: number[] = [];
    for (let i = 0; i < 10; i++) clock.setTimer(5, () => fired.push(i));
    clock.advance(5);
    expect(fired).toEqual([...Array(10).keys()]);
  });

  it('fires a zero or negative delay on the next advance(), even advance(0), but never inside setTimer', () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    clock.setTimer(0, () => fired.push('zero'));
    clock.setTimer(-5, () => fired.push('negative'));
    expect(fired).toEqual([]);
    clock.advance(0);
    expect(fired).toEqual(['zero', 'negative']);
  });

  it('does not fire a cancelled timer; cancelling twice or after firing is harmless', () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    const cancelA = clock.setTimer(10, () => fired.push('a'));
    const cancelB = clock.setTimer(10, () => fired.push('b'));
    cancelA();
    cancelA();
    expect(clock.pendingTimers()).toBe(1);
    clock.advance(10);
    cancelB();
    expect(fired).toEqual(['b']);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('lets a timer cancel a later timer', () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    const cancelLater = clock.setTimer(20, () => fired.push('later'));
    clock.setTimer(10, () => {
      fired.push('first');
      cancelLater();
    });
    clock.advance(30);
    expect(fired).toEqual(['first']);
  });

  it('fires timers set by timers when they fall inside the window, and keeps the rest for later', () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    // A periodic timer every 10 ms, like a heartbeat.
    const tick = (): void => {
      fired.push(`tick@${clock.now()}`);
      clock.setTimer(10, tick);
    };
    clock.setTimer(10, tick);
    clock.advance(35);
    expect(fired).toEqual(['tick@10', 'tick@20', 'tick@30']);
    expect(clock.pendingTimers()).toBe(1);
    clock.advance(5);
    expect(fired).toEqual(['tick@10', 'tick@20', 'tick@30', 'tick@40']);
  });

  it('fires a zero-delay timer set by a timer at the same instant, after timers already due then', () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    clock.setTimer(10, () => {
      fired.push(`a@${clock.now()}`);
      clock.setTimer(0, () => fired.push(`c@${clock.now()}`));
    });
    clock.setTimer(10, () => fired.push(`b@${clock.now()}`));
    clock.advance(10);
    expect(fired).toEqual(['a@10', 'b@10', 'c@10']);
  });
});

describe('SystemClock', () => {
  it('reads a time that never goes backwards', () => {
    const clock = new SystemClock();
    let last = clock.now();
    for (let i = 0; i < 1_000; i++) {
      const now = clock.now();
      expect(now).toBeGreaterThanOrEqual(last);
      last = now;
    }
  });

  it('fires a timer after its delay and never fires a cancelled one', async () => {
    const clock = new SystemClock();
    const fired: string[] = [];
    const start = clock.now();
    const cancel = clock.setTimer(5, () => fired.push('cancelled'));
    cancel();
    // The later timer firing shows that the cancelled one, due earlier, had its chance.
    await new Promise<void>((resolve) =>
      clock.setTimer(20, () => {
        fired.push('kept');
        resolve();
      }),
    );
    expect(fired).toEqual(['kept']);
    // Never early: SystemClock re-arms when Node's timer fires before the due time.
    expect(clock.now() - start).toBeGreaterThanOrEqual(20);
  });
});
