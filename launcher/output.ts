/**
 * Output forwarding: every rank's stdout goes to the launcher's stdout and its stderr to stderr,
 * one whole line at a time, each line tagged `[rank] ` (unless --no-tag-output). Whole lines keep
 * two ranks from ever interleaving inside a line; a partial line waits for its newline or for the
 * end of the stream. Guard notices (see guard-protocol.ts) are taken out of stderr here.
 */
import type { Readable, Writable } from 'node:stream';
import { parseGuardNotice, type GuardNotice } from './guard-protocol.js';

/**
 * The longest line held back while waiting for its newline. A longer line is cut: each piece is
 * forwarded as soon as it is full (tagged and ended with a newline when tagging, untouched
 * otherwise), so a rank that never writes a newline cannot make the launcher buffer without limit.
 */
export const MAX_LINE_BYTES = 64 * 1024;

const NEWLINE = 0x0a;

/** Splits a byte stream into lines; pure and synchronous. */
export class LineBuffer {
  private partial: Buffer[] = [];
  private partialBytes = 0;

  constructor(private readonly maxLineBytes = MAX_LINE_BYTES) {}

  /**
   * Returns the complete lines this chunk finishes, each with its newline, plus pieces of
   * maxLineBytes (without newline) of a line that grew too long. Keeps the rest.
   */
  push(chunk: Buffer): Buffer[] {
    const lines: Buffer[] = [];
    let start = 0;
    while (start < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start);
      const room = this.maxLineBytes - this.partialBytes;
      const end = newline === -1 ? chunk.length : newline + 1;
      if (end - start > room) {
        // Too long for one line: emit what fills it and keep going with the remainder.
        lines.push(this.take(chunk.subarray(start, start + room)));
        start += room;
      } else if (newline === -1) {
        this.partial.push(chunk.subarray(start));
        this.partialBytes += chunk.length - start;
        start = chunk.length;
      } else {
        lines.push(this.take(chunk.subarray(start, end)));
        start = end;
      }
    }
    return lines;
  }

  /** Returns the partial line left at the end of the stream (no newline), or null. */
  flush(): Buffer | null {
    if (this.partialBytes === 0) return null;
    return this.take(Buffer.alloc(0));
  }

  private take(tail: Buffer): Buffer {
    const line = this.partialBytes === 0 ? tail : Buffer.concat([...this.partial, tail]);
    this.partial = [];
    this.partialBytes = 0;
    return line;
  }
}

/** The tag in front of each line of a rank's output (`[2] `, or `[j0] ` for a joining rank). */
export function rankTag(rank: number | string): Buffer {
  return Buffer.from(`[${rank}] `);
}

/**
 * Formats lines for the destination: with a tag, each line gets the tag in front and is ended with
 * a newline if it had none; without a tag, lines pass unchanged.
 */
export function formatLines(lines: readonly Buffer[], tag: Buffer | null): Buffer {
  if (tag === null) return lines.length === 1 ? (lines[0] as Buffer) : Buffer.concat(lines);
  const parts: Buffer[] = [];
  for (const line of lines) {
    parts.push(tag, line);
    if (line[line.length - 1] !== NEWLINE) parts.push(Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

/** Sources paused on each destination; one 'drain' listener per destination resumes them all. */
const pausedOn = new WeakMap<Writable, Set<Readable>>();

function pauseUntilDrained(source: Readable, dest: Writable): void {
  let paused = pausedOn.get(dest);
  if (paused === undefined) {
    const sources = new Set<Readable>();
    paused = sources;
    pausedOn.set(dest, sources);
    dest.once('drain', () => {
      pausedOn.delete(dest);
      sources.forEach((s) => s.resume());
    });
  }
  paused.add(source);
  source.pause();
}

export interface ForwardOptions {
  /** rankTag(rank), or null for --no-tag-output. */
  tag: Buffer | null;
  /** Called for guard notice lines, which are not forwarded; only given for stderr. */
  onNotice?: (notice: GuardNotice) => void;
}

/**
 * Forwards `source` to `dest` line by line until `source` ends or is destroyed; the promise then
 * resolves (never rejects). When `dest` is full, `source` is paused until it drains, so a slow
 * reader of the launcher's output slows the ranks down instead of growing memory.
 */
export function forwardOutput(
  source: Readable,
  dest: Writable,
  options: ForwardOptions,
): Promise<void> {
  const lines = new LineBuffer();
  const write = (batch: Buffer[]): void => {
    const kept =
      options.onNotice === undefined
        ? batch
        : batch.filter((line) => {
            const notice = parseGuardNotice(line);
            if (notice === null) return true;
            options.onNotice?.(notice);
            return false;
          });
    if (kept.length === 0 || dest.destroyed) return;
    if (!dest.write(formatLines(kept, options.tag))) pauseUntilDrained(source, dest);
  };
  return new Promise((resolve) => {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      const rest = lines.flush();
      if (rest !== null) write([rest]);
      resolve();
    };
    source.on('data', (chunk: Buffer) => write(lines.push(chunk)));
    source.once('end', finish);
    source.once('close', finish);
    source.once('error', finish);
  });
}
