/**
 * How fast a data rank's background scrub re-reads its copies. The scrub is a chore, not a
 * service: it must not take the CPU and disk that clients are waiting for.
 *
 * - Each chunk is charged at least SCRUB_MIN_CHARGE_BYTES against the rate. Without that floor a
 *   store of 4 KiB chunks was scrubbed at 1,000 reads a second per rank (the timer's 1 ms floor),
 *   about 15% of a data rank's CPU under a small-file load.
 * - While the rank is serving requests (one in the last SCRUB_BUSY_WINDOW_MS), the scrub slows to
 *   1/SCRUB_BUSY_SLOWDOWN of its rate rather than stopping, so a store that is never idle is
 *   still scrubbed (Ceph defers scrubs under load in the same spirit; HDFS scans at 1 MiB/s).
 */
export const SCRUB_MIN_CHARGE_BYTES = 256 * 1024;
export const SCRUB_BUSY_WINDOW_MS = 1000;
export const SCRUB_BUSY_SLOWDOWN = 8;

/** Milliseconds to wait after scrubbing a chunk of `sizeBytes` at `bytesPerSecond`. */
export function scrubPauseMs(sizeBytes: number, bytesPerSecond: number, busy: boolean): number {
  const charged = Math.max(sizeBytes, SCRUB_MIN_CHARGE_BYTES);
  const pause = (charged / bytesPerSecond) * 1000;
  return busy ? pause * SCRUB_BUSY_SLOWDOWN : pause;
}
