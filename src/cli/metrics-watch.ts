/**
 * `dfs-client metrics --watch [SECONDS]`: the metrics table (or one JSON document per line with
 * --json) again every SECONDS until Ctrl-C.
 *
 * - On a terminal each refresh redraws in place: the screen is cleared once, then every frame
 *   starts at the cursor's home position, clears the rest of each line it writes and everything
 *   below it; the cursor is hidden while watching and shown again on the way out (also when the
 *   process exits some other way).
 * - Elsewhere (a pipe, a file) every frame is printed after a blank line, so a log keeps them all.
 * - The store going away does not end the watch: a watch is what people keep open while things
 *   break. The frame says "store unreachable: REASON (retrying every N s)" (with --json a line
 *   {"sampledAt", "error": {code, message, unreachable}}) and the next refresh tries again on a
 *   fresh connection, so a store that comes back on the same address shows up again by itself.
 * - Refreshes start every SECONDS (fixed rate, not SECONDS after the previous one ended); a read
 *   slower than that is not overlapped: the next one starts at once after it.
 *
 * Stopping is the caller's AbortSignal (Ctrl-C in the CLI): the wait and an outstanding read are
 * both cut short and watchMetrics resolves; the CLI then exits 130.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DfsClient } from '../client/dfs-client.js';
import { isDfsError } from '../client/errors.js';
import type { StatusResult } from '../protocol/client-protocol.js';
import { EXIT, exitStatusOf } from './exit-codes.js';
import { formatMetricsTable, metricsDocument } from './metrics-table.js';

const ESC = '\x1b[';
export const ANSI = {
  hideCursor: `${ESC}?25l`,
  showCursor: `${ESC}?25h`,
  clearScreen: `${ESC}2J`,
  home: `${ESC}H`,
  clearLineEnd: `${ESC}K`,
  clearBelow: `${ESC}J`,
} as const;

export interface WatchOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

export interface WatchOptions {
  /** Reads the status once; throws a DfsError when the store cannot be read. */
  read: () => Promise<StatusResult>;
  /** Called after a failed read, before the next (say, to open a fresh connection). */
  reset?: () => void;
  out: WatchOutput;
  intervalMs: number;
  json: boolean;
  /** "host:port", for the frame's header line. */
  server: string;
  signal: AbortSignal;
  /** The clock for timestamps (default: the system's). */
  now?: () => Date;
  /** Stop after this many frames (tests); default: only the signal stops the watch. */
  maxFrames?: number;
}

/** A read that failed: shown in the frame instead of the table. */
export interface WatchFailure {
  code: string;
  message: string;
  /** Whether it means "the store is unreachable or timed out" (exit status 4). */
  unreachable: boolean;
}

export function describeFailure(err: unknown): WatchFailure {
  const code = isDfsError(err) ? err.code : 'INTERNAL';
  const message = err instanceof Error ? err.message : String(err);
  return { code, message, unreachable: exitStatusOf(err) === EXIT.UNREACHABLE };
}

/** "every 1 s", "every 0.5 s". */
function every(intervalMs: number): string {
  return `every ${+(intervalMs / 1000).toFixed(3)} s`;
}

/** Local time as "YYYY-MM-DD HH:MM:SS". */
function clockTime(date: Date): string {
  const two = (n: number): string => String(n).padStart(2, '0');
  return (
    `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} ` +
    `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`
  );
}

/**
 * One text frame: a header line (server, interval, time), a blank line, then the table or the
 * failure line. Pure.
 */
export function textFrame(
  result: { status: StatusResult } | { failure: WatchFailure },
  at: Date,
  server: string,
  intervalMs: number,
  hint = '',
): string {
  const header = `${server}  ${every(intervalMs)}  ${clockTime(at)}${hint}`;
  if ('status' in result) return `${header}\n\n${formatMetricsTable(result.status)}`;
  const { failure } = result;
  const what = failure.unreachable ? 'store unreachable' : 'cannot read the status';
  return `${header}\n\n${what}: ${failure.message} (retrying ${every(intervalMs)})`;
}

/** One NDJSON line (no newline): the metrics document, or {sampledAt, error}. Pure. */
export function jsonFrame(
  result: { status: StatusResult } | { failure: WatchFailure },
  at: Date,
): string {
  return 'status' in result
    ? JSON.stringify(metricsDocument(result.status, at))
    : JSON.stringify({ sampledAt: at.toISOString(), error: result.failure });
}

/** Writes frames to `out` as a terminal (in place) or a log (blank line between frames). */
class FrameWriter {
  private frames = 0;
  private readonly restore = (): void => {
    this.out.write(ANSI.showCursor);
  };

  constructor(
    private readonly out: WatchOutput,
    private readonly inPlace: boolean,
  ) {}

  write(frame: string, json: boolean): void {
    if (json) {
      this.out.write(`${frame}\n`);
    } else if (this.inPlace) {
      if (this.frames === 0) {
        process.once('exit', this.restore);
        this.out.write(ANSI.hideCursor + ANSI.clearScreen);
      }
      const lines = frame.split('\n').map((line) => line + ANSI.clearLineEnd);
      this.out.write(`${ANSI.home}${lines.join('\n')}\n${ANSI.clearBelow}`);
    } else {
      this.out.write(`${this.frames === 0 ? '' : '\n'}${frame}\n`);
    }
    this.frames++;
  }

  close(): void {
    if (this.inPlace && this.frames > 0) {
      process.off('exit', this.restore);
      this.restore();
    }
  }
}

/** Runs the watch until `signal` aborts (or maxFrames frames); never rejects for a failed read. */
export async function watchMetrics(options: WatchOptions): Promise<void> {
  const { signal, intervalMs, json } = options;
  const now = options.now ?? ((): Date => new Date());
  const inPlace = options.out.isTTY === true && !json;
  const writer = new FrameWriter(options.out, inPlace);
  const stopped = new Promise<'stopped'>((resolve) => {
    if (signal.aborted) resolve('stopped');
    signal.addEventListener('abort', () => resolve('stopped'), { once: true });
  });
  const maxFrames = options.maxFrames ?? Infinity;
  try {
    for (let frame = 0; frame < maxFrames && !signal.aborted; frame++) {
      const startedMs = performance.now();
      const outcome = await Promise.race([
        options.read().then(
          (status) => ({ status }),
          (err: unknown) => ({ failure: describeFailure(err) }),
        ),
        stopped,
      ]);
      if (outcome === 'stopped') return;
      const at = now();
      writer.write(
        json
          ? jsonFrame(outcome, at)
          : textFrame(outcome, at, options.server, intervalMs, inPlace ? '  (Ctrl-C stops)' : ''),
        json,
      );
      if ('failure' in outcome) options.reset?.();
      if (frame + 1 >= maxFrames) return;
      const waitMs = Math.max(0, startedMs + intervalMs - performance.now());
      try {
        await sleep(waitMs, undefined, { signal });
      } catch {
        return; // Aborted while waiting.
      }
    }
  } finally {
    writer.close();
  }
}

/**
 * read/reset for watchMetrics over DfsClient: reads with `first` until a read fails, then with a
 * fresh client to the same server (a connected socket to a store that went away would only time
 * out; a new one is refused at once, and reaches the store again once it is back). close() closes
 * the client in use (DfsClient.close is idempotent, so `first`'s owner may close it too).
 */
export function reconnectingReader(first: DfsClient): {
  read: () => Promise<StatusResult>;
  reset: () => void;
  close: () => void;
} {
  let current = first;
  return {
    read: () => current.status(),
    reset: () => {
      current.close();
      current = new DfsClient({ server: first.server, timeoutMs: first.timeoutMs });
    },
    close: () => current.close(),
  };
}
