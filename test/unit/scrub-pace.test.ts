/**
 * The scrub's pace. Goal: the background scrub stays a chore: a store of small chunks is not
 * re-read a thousand times a second, and a rank serving requests scrubs slower. Method: the pure
 * pacing function at known sizes and rates.
 */
import { describe, expect, it } from 'vitest';
import {
  SCRUB_BUSY_SLOWDOWN,
  SCRUB_MIN_CHARGE_BYTES,
  scrubPauseMs,
} from '../../src/rank/scrub-pace.js';

const MiB = 1024 * 1024;

describe('scrubPauseMs', () => {
  it('paces large chunks by their size: 4 MiB at 32 MiB/s is one each 125 ms', () => {
    expect(scrubPauseMs(4 * MiB, 32 * MiB, false)).toBe(125);
  });

  it('charges a small chunk as 256 KiB: at most 128 chunks a second at 32 MiB/s', () => {
    expect(SCRUB_MIN_CHARGE_BYTES).toBe(256 * 1024);
    expect(scrubPauseMs(4096, 32 * MiB, false)).toBe(7.8125);
    expect(scrubPauseMs(0, 32 * MiB, false)).toBe(7.8125);
  });

  it('waits eight times longer while the rank is busy', () => {
    expect(SCRUB_BUSY_SLOWDOWN).toBe(8);
    expect(scrubPauseMs(4 * MiB, 32 * MiB, true)).toBe(1000);
    expect(scrubPauseMs(4096, 32 * MiB, true)).toBe(62.5);
  });
});
