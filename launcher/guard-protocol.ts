/**
 * The pipe from the launcher to each rank guard (the guard's stdin) carries length-prefixed frames,
 * not raw bytes, so one pipe can carry both rank 0's stdin data and control requests, across a
 * fork, an ssh session or an exec template alike:
 *
 *   [type: u8][length: u32 big-endian][payload: length bytes]
 *
 * - DATA: payload bytes for the program's stdin (only rank 0 ever gets any).
 * - STDIN_EOF: close the program's stdin.
 * - TERMINATE: SIGTERM the program's process group, SIGKILL it after the grace period; a second
 *   TERMINATE means SIGKILL now.
 * - KILL: SIGKILL the program's process group now.
 *
 * The pipe closing without a TERMINATE means the launcher is gone (even SIGKILLed), and the guard
 * cleans up as if it had got one: that is what keeps orphans from ever surviving a launcher.
 *
 * In the other direction the guard has only the program's stderr, which it shares; it reports a
 * failure to start the program as one notice line that begins with GUARD_NOTICE_PREFIX (a NUL byte
 * no text output starts a line with), which the launcher removes from the output.
 */

export const FRAME = { data: 1, stdinEof: 2, terminate: 3, kill: 4 } as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];

export interface Frame {
  type: FrameType;
  payload: Buffer;
}

const HEADER_BYTES = 5;

/** The largest payload of one frame; the launcher cuts stdin data into pieces of at most this. */
export const MAX_FRAME_PAYLOAD_BYTES = 64 * 1024;

/** Encodes one frame. Throws RangeError for a payload above MAX_FRAME_PAYLOAD_BYTES (a bug). */
export function encodeFrame(type: FrameType, payload: Uint8Array = new Uint8Array(0)): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD_BYTES) {
    throw new RangeError(`frame payload of ${payload.length} bytes exceeds the maximum`);
  }
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  frame.writeUInt8(type, 0);
  frame.writeUInt32BE(payload.length, 1);
  frame.set(payload, HEADER_BYTES);
  return frame;
}

/** Encodes stdin data as DATA frames of at most MAX_FRAME_PAYLOAD_BYTES each. */
export function encodeData(data: Uint8Array): Buffer[] {
  const frames: Buffer[] = [];
  for (let at = 0; at < data.length; at += MAX_FRAME_PAYLOAD_BYTES) {
    frames.push(encodeFrame(FRAME.data, data.subarray(at, at + MAX_FRAME_PAYLOAD_BYTES)));
  }
  return frames;
}

/**
 * Reassembles frames from arbitrary chunks of the pipe. push() throws an Error for an unknown
 * frame type or an oversized length: the stream is then not ours or corrupt, and the guard treats
 * that like a lost launcher.
 */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: Frame[] = [];
    while (this.pending.length >= HEADER_BYTES) {
      const type = this.pending.readUInt8(0);
      const length = this.pending.readUInt32BE(1);
      if (!isFrameType(type)) throw new Error(`unknown frame type ${type}`);
      if (length > MAX_FRAME_PAYLOAD_BYTES) throw new Error(`frame length ${length} is too large`);
      if (this.pending.length < HEADER_BYTES + length) break;
      frames.push({ type, payload: this.pending.subarray(HEADER_BYTES, HEADER_BYTES + length) });
      this.pending = this.pending.subarray(HEADER_BYTES + length);
    }
    return frames;
  }
}

function isFrameType(type: number): type is FrameType {
  return type >= FRAME.data && type <= FRAME.kill;
}

/** Starts a guard notice line on stderr. */
export const GUARD_NOTICE_PREFIX = '\0memflow-guard ';

/** What the guard reports: it could not start the program (`code` is the errno code). */
export interface GuardNotice {
  event: 'spawn-error';
  program: string;
  code: string;
  message: string;
}

/** Formats a notice as one line, newline included. */
export function formatGuardNotice(notice: GuardNotice): string {
  return `${GUARD_NOTICE_PREFIX}${JSON.stringify(notice)}\n`;
}

/** Reads a notice from one output line (with or without its newline); null if it is not one. */
export function parseGuardNotice(line: Buffer): GuardNotice | null {
  if (line.length < GUARD_NOTICE_PREFIX.length || line[0] !== 0) return null;
  const text = line.toString('utf8').trimEnd();
  if (!text.startsWith(GUARD_NOTICE_PREFIX)) return null;
  try {
    const value = JSON.parse(text.slice(GUARD_NOTICE_PREFIX.length)) as Partial<GuardNotice>;
    if (value.event !== 'spawn-error' || typeof value.program !== 'string') return null;
    return {
      event: 'spawn-error',
      program: value.program,
      code: String(value.code),
      message: String(value.message),
    };
  } catch {
    return null;
  }
}
