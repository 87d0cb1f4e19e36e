/**
 * `dfs-client metrics --watch` (src/cli/metrics-watch.ts). Goal: on a terminal every refresh
 * redraws in place (hide cursor and clear once, then home + clear-to-end-of-line per line + clear
 * below, cursor shown again at the end); elsewhere frames follow each other after a blank line;
 * with --json one document per line; a failed read shows "store unreachable: ..." and the watch
 * goes on (with reset() called so the next read starts afresh); the abort signal stops the watch
 * at once, in the wait or during a read that never answers.
 *
 * Method: watchMetrics with a fake read() and an output that records writes; maxFrames bounds
 * the runs that are not stopped by the signal; interval 1 ms so nothing waits.
 */
import { describe, expect, it } from 'vitest';
import { DfsError } from '../../src/client/errors.js';
import {
  ANSI,
  describeFailure,
  textFrame,
  watchMetrics,
  type WatchOptions,
} from '../../src/cli/metrics-watch.js';
import type { StatusResult } from '../../src/protocol/client-protocol.js';

const STATUS: StatusResult = {
  ranks: [
    {
      rank: 1,
      host: 'h1',
      state: 'alive',
      heartbeatAgeMs: 100,
      usedBytes: 1024,
      capacityBytes: 4096,
      chunkCopies: 1,
      primaryCopies: 1,
      replicaCopies: 0,
    },
  ],
  replicas: 2,
  chunkSizeBytes: 4096,
  files: 1,
  chunks: 1,
  underReplicatedChunks: 0,
  uptimeMs: 1000,
};

const AT = new Date(2026, 0, 2, 3, 4, 5);
const exitListenersBefore = process.listenerCount('exit');

function recorder(isTTY: boolean): {
  out: { write(t: string): void; isTTY: boolean };
  text: () => string;
} {
  const writes: string[] = [];
  return { out: { write: (t: string) => void writes.push(t), isTTY }, text: () => writes.join('') };
}

const unreachable = new DfsError(
  'CLIENT_UNREACHABLE',
  'cannot reach the store at h:1: connection refused',
);

/** watchMetrics with the usual test options (the status, 1 ms, server h:1, a fixed clock). */
function watch(options: Partial<WatchOptions> & Pick<WatchOptions, 'out' | 'json'>): Promise<void> {
  return watchMetrics({
    read: async () => STATUS,
    intervalMs: 1,
    server: 'h:1',
    signal: new AbortController().signal,
    now: () => AT,
    ...options,
  });
}

describe('watchMetrics', () => {
  it('not a terminal: frames one after another, a blank line between, header with server, interval and time', async () => {
    const { out, text } = recorder(false);
    await watch({
      out,
      json: false,
      maxFrames: 2,
    });
    const frame = textFrame({ status: STATUS }, AT, 'h:1', 1);
    expect(text()).toBe(`${frame}\n\n${frame}\n`);
    expect(frame.split('\n')[0]).toBe('h:1  every 0.001 s  2026-01-02 03:04:05');
    expect(frame.split('\n')[2]).toMatch(/^ RANK +HOST +STATE +HEARTBEAT/);
    expect(text()).not.toContain('\x1b');
  });

  it('a terminal: clears once, then redraws every frame from the home position; shows the cursor at the end', async () => {
    const { out, text } = recorder(true);
    await watch({
      out,
      json: false,
      maxFrames: 3,
    });
    const written = text();
    expect(written.startsWith(ANSI.hideCursor + ANSI.clearScreen + ANSI.home)).toBe(true);
    expect(written.endsWith(ANSI.clearBelow + ANSI.showCursor)).toBe(true);
    expect(written.split(ANSI.clearScreen)).toHaveLength(2);
    expect(written.split(ANSI.home)).toHaveLength(4);
    const firstFrame = written.split(ANSI.home)[1]!;
    const lines = firstFrame.split('\n');
    expect(lines[0]).toBe(
      `h:1  every 0.001 s  2026-01-02 03:04:05  (Ctrl-C stops)${ANSI.clearLineEnd}`,
    );
    // Every line of the frame clears what an earlier, longer frame left on it.
    for (const line of lines.slice(0, -1)) expect(line.endsWith(ANSI.clearLineEnd)).toBe(true);
    // The exit hook that shows the cursor if the process ends mid-watch is gone again.
    expect(process.listenerCount('exit')).toBe(exitListenersBefore);
  });

  it('--json: one JSON document per line (NDJSON), no escapes even on a terminal', async () => {
    const { out, text } = recorder(true);
    await watch({
      out,
      json: true,
      maxFrames: 2,
    });
    const lines = text().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toBe('');
    for (const line of lines.slice(0, 2)) {
      const doc = JSON.parse(line) as Record<string, unknown>;
      expect(doc).toMatchObject({
        sampledAt: AT.toISOString(),
        files: 1,
        totals: { usedBytes: 1024 },
      });
    }
    expect(text()).not.toContain('\x1b');
  });

  it('an unreachable store: shown in the frame, reset() called, and the next refresh shows the store again', async () => {
    const { out, text } = recorder(false);
    const results: Array<StatusResult | Error> = [STATUS, unreachable, STATUS];
    let resets = 0;
    await watch({
      read: async () => {
        const next = results.shift()!;
        if (next instanceof Error) throw next;
        return next;
      },
      reset: () => resets++,
      out,
      json: false,
      maxFrames: 3,
    });
    const frames = text().split('\n\nh:1  every 0.001 s');
    expect(frames).toHaveLength(3);
    expect(frames[1]).toContain(
      'store unreachable: cannot reach the store at h:1: connection refused (retrying every 0.001 s)',
    );
    expect(frames[2]).toContain(' RANK ');
    expect(resets).toBe(1);
  });

  it('--json and a failure: {"sampledAt", "error": {code, message, unreachable}}', async () => {
    const { out, text } = recorder(false);
    await watch({
      read: () => Promise.reject(unreachable),
      out,
      json: true,
      maxFrames: 1,
    });
    expect(JSON.parse(text())).toEqual({
      sampledAt: AT.toISOString(),
      error: {
        code: 'CLIENT_UNREACHABLE',
        message: 'cannot reach the store at h:1: connection refused',
        unreachable: true,
      },
    });
  });

  it('stops at once when aborted during the wait between refreshes', async () => {
    const { out, text } = recorder(true);
    const controller = new AbortController();
    let reads = 0;
    const watching = watchMetrics({
      read: async () => {
        reads++;
        // Abort once the first frame is out and the loop is waiting its hour.
        setImmediate(() => controller.abort());
        return STATUS;
      },
      out,
      intervalMs: 3_600_000,
      json: false,
      server: 'h:1',
      signal: controller.signal,
    });
    await watching;
    expect(reads).toBe(1);
    expect(text().endsWith(ANSI.showCursor)).toBe(true);
  });

  it('stops at once when aborted during a read that never answers', async () => {
    const { out, text } = recorder(false);
    const controller = new AbortController();
    const watching = watchMetrics({
      read: () => {
        setImmediate(() => controller.abort());
        return new Promise<StatusResult>(() => undefined);
      },
      out,
      intervalMs: 1,
      json: false,
      server: 'h:1',
      signal: controller.signal,
    });
    await watching;
    expect(text()).toBe('');
  });

  it('does nothing with a signal already aborted', async () => {
    const { out, text } = recorder(true);
    let reads = 0;
    await watch({
      read: async () => (reads++, STATUS),
      out,
      json: false,
      signal: AbortSignal.abort(),
    });
    expect(reads).toBe(0);
    expect(text()).toBe('');
  });
});

describe('describeFailure', () => {
  it('marks the codes of exit status 4 as unreachable, others not', () => {
    expect(describeFailure(new DfsError('STORE_TIMEOUT', 'slow'))).toEqual({
      code: 'STORE_TIMEOUT',
      message: 'slow',
      unreachable: true,
    });
    expect(describeFailure(new DfsError('CLIENT_BAD_REPLY', 'odd'))).toMatchObject({
      unreachable: false,
    });
    expect(
      textFrame(
        { failure: describeFailure(new DfsError('CLIENT_BAD_REPLY', 'odd')) },
        AT,
        'h:1',
        2000,
      ),
    ).toBe(
      'h:1  every 2 s  2026-01-02 03:04:05\n\ncannot read the status: odd (retrying every 2 s)',
    );
  });
});
