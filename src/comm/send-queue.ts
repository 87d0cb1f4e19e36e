/**
 * One socket's sender, shared by every ZeroMQ socket we send on (the ranks' PUSH sockets, rank
 * 0's client-facing ROUTER, a client's DEALER).
 *
 * zeromq.js allows one pending send() per socket (a second one fails with EBUSY), so each socket
 * has exactly one drain loop fed by a bounded queue.
 *
 * Batching: a small message's cost here is mostly per message, not per byte (a wake-up of
 * ZeroMQ's I/O thread on each side, a promise in zeromq.js). So a send goes out on the next turn
 * of the event loop, and the messages queued for the same destination by then, or while the
 * previous send was pending, travel as one ZeroMQ message of two frames: a header listing each
 * message's frame lengths, and a body with all their bytes (see encodeBatch). Measured with 16
 * small uploads in flight: rank 0 sent 24,000 messages for 4,000 uploads one at a time; batched,
 * about 10,000. Bulk messages (BATCH_MAX_BYTES or more) still go alone. The header's first 4
 * bytes are the caller's (the sender's rank between ranks, BATCH_MAGIC on the client socket).
 */
import type { CommError } from './errors.js';
import type { Frames } from './transport.js';

/** At most this many messages travel in one batch. */
export const BATCH_MAX_MESSAGES = 64;
/** A message of this many bytes or more goes alone, and a batch stops short of it. */
export const BATCH_MAX_BYTES = 256 * 1024;
/** Messages of the queue looked at for a batch's destination (bounds the work of one drain). */
const BATCH_SCAN = 256;

/**
 * The first 4 bytes of a batch header on the client socket. 0xc1 is a byte msgpack never uses,
 * so a batch cannot be mistaken for a request or a reply (each a msgpack map).
 */
export const BATCH_MAGIC = Uint8Array.of(0xc1, 0x42, 0x54, 0x32); // 0xc1 'B' 'T' '2'

export interface SendQueueOptions {
  maxQueued: number;
  /** The error of a push when the queue is full. */
  fullError(): CommError;
  /** The error of a message whose send failed (`closed`: the queue was closed meanwhile). */
  sendError(err: unknown, closed: boolean): CommError;
  /**
   * The ZeroMQ message for `messages` (one or more) to `route` (the routing frame of a ROUTER
   * socket; undefined elsewhere). Use encodeBatch for more than one.
   */
  encode(route: Uint8Array | undefined, messages: readonly Frames[]): Uint8Array[];
}

interface Queued {
  frames: Frames;
  /** Destination of a ROUTER message; undefined for PUSH and DEALER. */
  route: Uint8Array | undefined;
  /** The destination as a string ('' without a route): batches never mix destinations. */
  dest: string;
  /** Whether the message may share a batch (small, and its receiver splits batches). */
  batchable: boolean;
  bytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class SendQueue {
  private readonly queue: Queued[] = [];
  private sending = false;
  private closed = false;

  constructor(
    private readonly send: (frames: Uint8Array[]) => Promise<void>,
    private readonly options: SendQueueOptions,
  ) {}

  /**
   * Queues a message; resolves once ZeroMQ took it. `route` addresses a ROUTER's peer;
   * `batchable` says the receiver splits batches (always true between ranks).
   */
  push(frames: Frames, route?: Buffer, batchable = true): Promise<void> {
    if (this.closed) return Promise.reject(this.options.sendError(undefined, true));
    if (this.queue.length >= this.options.maxQueued)
      return Promise.reject(this.options.fullError());
    const bytes = frameBytes(frames);
    const dest = route === undefined ? '' : route.toString('latin1');
    return new Promise<void>((resolve, reject) => {
      this.queue.push({
        frames,
        route,
        dest,
        batchable: batchable && bytes < BATCH_MAX_BYTES,
        bytes,
        resolve,
        reject,
      });
      if (!this.sending) {
        // Sent on the next turn of the event loop, not now: see the file comment.
        this.sending = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  close(): void {
    this.closed = true;
    for (let item = this.queue.shift(); item; item = this.queue.shift())
      item.reject(this.options.sendError(undefined, true));
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.takeBatch();
        const head = batch[0]!;
        try {
          await this.send(
            this.options.encode(
              head.route,
              batch.map((item) => item.frames),
            ),
          );
          for (const item of batch) item.resolve();
        } catch (err) {
          for (const item of batch) item.reject(this.options.sendError(err, this.closed));
        }
      }
    } finally {
      this.sending = false;
    }
  }

  /**
   * The head of the queue and the messages behind it to the same destination, in their order,
   * as many as fit in one batch. Messages to other destinations keep their places.
   */
  private takeBatch(): Queued[] {
    const head = this.queue[0]!;
    if (!head.batchable) return this.queue.splice(0, 1);
    const taken = [0];
    let bytes = head.bytes;
    const scan = Math.min(this.queue.length, BATCH_SCAN);
    for (let i = 1; i < scan && taken.length < BATCH_MAX_MESSAGES; i++) {
      const item = this.queue[i]!;
      if (item.dest !== head.dest) continue;
      // The destination's next message cannot join: the batch ends, keeping its order.
      if (!item.batchable || bytes + item.bytes >= BATCH_MAX_BYTES) break;
      bytes += item.bytes;
      taken.push(i);
    }
    const batch = taken.map((i) => this.queue[i]!);
    for (let j = taken.length - 1; j >= 0; j--) this.queue.splice(taken[j]!, 1);
    return batch;
  }
}

export function frameBytes(frames: Frames): number {
  let n = 0;
  for (const f of frames) n += f.length;
  return n;
}

/**
 * A batch as two frames: a header of `tag` (4 bytes), then for each message its frame count and
 * each frame's length (4 bytes each, big-endian); and a body, the messages' frames one after
 * another in one buffer. Why one body and not the frames themselves: zeromq.js sends each frame
 * over 128 bytes zero-copy, at the price of a reference that ZeroMQ's I/O thread hands back
 * through a wake-up of the sender's event loop, and gives each such frame it receives a
 * finalizer for the garbage collector, while copying a batch (at most BATCH_MAX_BYTES) takes
 * microseconds. Measured with 16 small uploads in flight, 5 alternating pairs: CPU per upload
 * over the five processes 788 -> 714 us (medians).
 */
export function encodeBatch(tag: Uint8Array, messages: readonly Frames[]): Uint8Array[] {
  let words = 1;
  let bytes = 0;
  for (const message of messages) {
    words += 1 + message.length;
    for (const f of message) bytes += f.length;
  }
  const header = Buffer.allocUnsafe(4 * words);
  header.set(tag.subarray(0, 4), 0);
  const body = Buffer.allocUnsafe(bytes);
  let h = 4;
  let at = 0;
  for (const message of messages) {
    header.writeUInt32BE(message.length, h);
    h += 4;
    for (const f of message) {
      header.writeUInt32BE(f.length, h);
      h += 4;
      body.set(f, at);
      at += f.length;
    }
  }
  return [header, body];
}

/**
 * The messages of a batch (`header` as encodeBatch made it, `rest` the frames after it): views
 * of the body, no copies; undefined when the header does not describe exactly the body (not a
 * batch of ours).
 */
export function splitBatch(header: Buffer, rest: Buffer[]): Buffer[][] | undefined {
  if (header.length < 8 || header.length % 4 !== 0 || rest.length !== 1) return undefined;
  const body = rest[0] as Buffer;
  const messages: Buffer[][] = [];
  let at = 0;
  let off = 4;
  while (off < header.length) {
    // No sender puts more in one batch; a receiver that took more would decode and answer
    // thousands of tiny requests for one message.
    if (messages.length === BATCH_MAX_MESSAGES) return undefined;
    const count = header.readUInt32BE(off);
    off += 4;
    if (off + 4 * count > header.length) return undefined;
    const frames: Buffer[] = [];
    for (let i = 0; i < count; i++, off += 4) {
      const length = header.readUInt32BE(off);
      if (at + length > body.length) return undefined;
      frames.push(body.subarray(at, at + length));
      at += length;
    }
    messages.push(frames);
  }
  return at === body.length ? messages : undefined;
}

/**
 * `data` itself, or a copy when it is a view of less than half of its buffer: a receiver that
 * keeps a message's bytes (a cache, a caller's stream) would otherwise keep the whole batch body
 * they were cut from (splitBatch).
 */
export function detached<T extends Uint8Array>(data: T): T | Buffer {
  if (data.byteLength * 2 >= data.buffer.byteLength) return data;
  // Not Buffer.from: it would put a small copy in Node's shared 8 KiB pool.
  const copy = Buffer.allocUnsafeSlow(data.byteLength);
  copy.set(data);
  return copy;
}

/** Whether `frame` begins a batch on the client socket (BATCH_MAGIC). */
export function isClientBatch(frame: Buffer | undefined): frame is Buffer {
  return frame !== undefined && frame.length >= 8 && frame.subarray(0, 4).equals(BATCH_MAGIC);
}
