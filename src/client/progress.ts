/**
 * A one-line progress bar for transfers, drawn on a terminal only. Short transfers show nothing
 * (the bar appears after `showAfterMs`), redraws are throttled so a fast transfer does not spend
 * its time writing to the terminal, and `finish()` erases the line so the summary that follows
 * starts on a clean line. On a stream that is not a TTY (a pipe, a log file) it writes nothing at
 * all: progress noise in captured output is a bug, not a feature.
 */

/** What DfsClient reports after each chunk is confirmed (upload) or written (download). */
export interface TransferProgress {
  doneBytes: number;
  totalBytes: number;
}

export interface ProgressBarOptions {
  /** Where to draw; usually process.stderr. Nothing is drawn unless `stream.isTTY`. */
  stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Shown before the bar, e.g. the file name. */
  label: string;
  showAfterMs?: number;
  redrawIntervalMs?: number;
  /** Injected for tests; milliseconds. */
  now?: () => number;
}

const MIB = 1024 * 1024;

/**
 * The text of one progress line (pure, for tests): label, bar, percent, MiB done/total, speed,
 * fitted to `columns` by shortening the label and then the bar.
 */
export function renderProgressLine(
  label: string,
  progress: TransferProgress,
  elapsedMs: number,
  columns: number,
): string {
  const { doneBytes, totalBytes } = progress;
  const fraction = totalBytes > 0 ? Math.min(1, doneBytes / totalBytes) : 1;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const amounts = `${(doneBytes / MIB).toFixed(1)}/${(totalBytes / MIB).toFixed(1)} MiB`;
  const speed = elapsedMs > 0 ? `${(doneBytes / MIB / (elapsedMs / 1000)).toFixed(1)} MiB/s` : '';
  const tail = ` ${percent} ${amounts} ${speed}`;
  // Keep one column spare: writing into the last column makes some terminals wrap.
  const room = Math.max(20, columns - 1) - tail.length;
  const labelWidth = Math.min(label.length, Math.max(8, Math.floor(room / 3)));
  const shownLabel =
    label.length <= labelWidth ? label : `${label.slice(0, Math.max(1, labelWidth - 1))}…`;
  const barWidth = Math.max(10, Math.min(40, room - shownLabel.length - 3));
  const filled = Math.round(fraction * barWidth);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}]`;
  return `${shownLabel} ${bar}${tail}`;
}

export class ProgressBar {
  private readonly enabled: boolean;
  private readonly now: () => number;
  private readonly startMs: number;
  private readonly showAfterMs: number;
  private readonly redrawIntervalMs: number;
  private lastDrawMs = -Infinity;
  private drawn = false;
  private finished = false;
  private latest: TransferProgress = { doneBytes: 0, totalBytes: 0 };
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ProgressBarOptions) {
    this.enabled = options.stream.isTTY === true;
    this.now = options.now ?? (() => performance.now());
    this.startMs = this.now();
    this.showAfterMs = options.showAfterMs ?? 300;
    this.redrawIntervalMs = options.redrawIntervalMs ?? 100;
    if (this.enabled) {
      // A timer as well as updates: a stalled transfer should still show up (with a falling
      // speed) instead of looking like a hang. unref: the bar never keeps the process alive.
      this.timer = setInterval(() => this.draw(), this.redrawIntervalMs);
      this.timer.unref();
    }
  }

  /** Records progress; draws at most once per redraw interval. Callable as onProgress directly. */
  update = (progress: TransferProgress): void => {
    this.latest = progress;
    this.draw();
  };

  /** Erases the bar (if it was ever drawn) and stops redrawing. Idempotent. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.drawn) this.options.stream.write('\r\x1b[K');
  }

  private draw(): void {
    if (!this.enabled || this.finished) return;
    const now = this.now();
    if (now - this.startMs < this.showAfterMs) return;
    if (now - this.lastDrawMs < this.redrawIntervalMs) return;
    this.lastDrawMs = now;
    this.drawn = true;
    // columns is 0 or missing when the size is unknown (e.g. under script(1)).
    const columns = this.options.stream.columns || 80;
    const line = renderProgressLine(this.options.label, this.latest, now - this.startMs, columns);
    this.options.stream.write(`\r${line}\x1b[K`);
  }
}
