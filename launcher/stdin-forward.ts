/**
 * stdin goes to rank 0 only, like mpirun's default: the launcher's stdin is cut into DATA frames
 * on rank 0's control pipe and ends with a STDIN_EOF frame. Every other rank gets STDIN_EOF at
 * once, so its program reads an empty stdin instead of waiting.
 */
import type { Readable, Writable } from 'node:stream';
import { encodeData, encodeFrame, FRAME } from './guard-protocol.js';

/**
 * Forwards `source` to the guard behind `control` until `source` ends (then STDIN_EOF is sent) or
 * the returned stop function is called. Pauses `source` while `control` is full.
 */
export function forwardStdin(source: Readable, control: Writable): () => void {
  let stopped = false;
  const onData = (chunk: Buffer): void => {
    let ok = true;
    for (const frame of encodeData(chunk)) ok = control.write(frame) && ok;
    if (!ok) {
      source.pause();
      control.once('drain', () => {
        if (!stopped) source.resume();
      });
    }
  };
  const onEnd = (): void => {
    if (stopped) return;
    stopped = true;
    control.write(encodeFrame(FRAME.stdinEof));
  };
  source.on('data', onData);
  source.once('end', onEnd);
  source.once('error', onEnd);
  return () => {
    stopped = true;
    source.off('data', onData);
    source.pause();
  };
}

/** Tells a rank it gets no stdin. */
export function sendStdinEof(control: Writable): void {
  control.write(encodeFrame(FRAME.stdinEof));
}
