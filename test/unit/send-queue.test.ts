/**
 * The batching send queue. Goal: one pending send per socket, as zeromq.js requires; messages
 * queued in one turn for one destination leave as one batch in their order, within the count and
 * byte limits; bulk messages and messages for other destinations are never mixed in, and no
 * destination's order changes; a failed send fails every message of its batch. Method: a
 * SendQueue over a recording send function that the test can hold open or fail.
 */
import { describe, expect, it } from 'vitest';
import { CommError } from '../../src/comm/errors.js';
import {
  BATCH_MAX_BYTES,
  BATCH_MAX_MESSAGES,
  detached,
  encodeBatch,
  SendQueue,
  splitBatch,
} from '../../src/comm/send-queue.js';
import type { Frames } from '../../src/comm/transport.js';

/** Each ZeroMQ message sent: its route and its messages. */
type Sent = { route: string | undefined; messages: string[][] };

function recorder(options: { fail?: boolean; maxQueued?: number } = {}): {
  queue: SendQueue;
  sent: Sent[];
  maxPending: () => number;
} {
  const sent: Sent[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const queue = new SendQueue(
    async (frames) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setImmediate(r));
      inFlight--;
      if (options.fail) throw new Error('no peer');
      const [route, ...body] = frames as Buffer[];
      sent.push({
        route: route!.toString(),
        messages: JSON.parse(Buffer.concat(body).toString()) as string[][],
      });
    },
    {
      maxQueued: options.maxQueued ?? 1000,
      fullError: () => new CommError('COMM_QUEUE_FULL', 'full'),
      sendError: (_err, closed) => new CommError(closed ? 'COMM_CLOSED' : 'COMM_TIMEOUT', 'failed'),
      // A readable stand-in for encodeBatch: the route, then the messages as JSON.
      encode: (route, messages: readonly Frames[]) => [
        Buffer.from(route ?? '-'),
        Buffer.from(JSON.stringify(messages.map((m) => m.map((f) => Buffer.from(f).toString())))),
      ],
    },
  );
  return { queue, sent, maxPending: () => maxInFlight };
}

const msg = (s: string): Frames => [Buffer.from(s)];

describe('SendQueue', () => {
  it('sends what was queued in one turn as one batch, in order, with one send pending at a time', async () => {
    const { queue, sent, maxPending } = recorder();
    await Promise.all(['a', 'b', 'c'].map((s) => queue.push(msg(s))));
    await Promise.all(['d', 'e'].map((s) => queue.push(msg(s))));
    expect(sent).toEqual([
      { route: '-', messages: [['a'], ['b'], ['c']] },
      { route: '-', messages: [['d'], ['e']] },
    ]);
    expect(maxPending()).toBe(1);
  });

  it('never mixes destinations, and keeps each destination in order', async () => {
    const { queue, sent } = recorder();
    const x = Buffer.from('x');
    const y = Buffer.from('y');
    await Promise.all([
      queue.push(msg('x1'), x),
      queue.push(msg('y1'), y),
      queue.push(msg('x2'), x),
      queue.push(msg('y2'), y),
    ]);
    expect(sent).toEqual([
      { route: 'x', messages: [['x1'], ['x2']] },
      { route: 'y', messages: [['y1'], ['y2']] },
    ]);
  });

  it('sends a bulk message alone and ends the batch before it, so order holds', async () => {
    const { queue, sent } = recorder();
    const bulk = 'z'.repeat(BATCH_MAX_BYTES);
    await Promise.all([
      queue.push(msg('a')),
      queue.push(msg(bulk)),
      queue.push(msg('b')),
      queue.push(msg('c')),
    ]);
    expect(sent.map((s) => s.messages.map((m) => m[0]!.slice(0, 3)))).toEqual([
      ['a'],
      ['zzz'],
      ['b', 'c'],
    ]);
  });

  it(`takes at most ${BATCH_MAX_MESSAGES} messages in a batch`, async () => {
    const { queue, sent } = recorder();
    await Promise.all(Array.from({ length: 150 }, (_, i) => queue.push(msg(String(i)))));
    expect(sent.map((s) => s.messages.length)).toEqual([64, 64, 22]);
    expect(sent.flatMap((s) => s.messages.map((m) => Number(m[0])))).toEqual(
      Array.from({ length: 150 }, (_, i) => i),
    );
  });

  it('does not batch messages for a receiver that does not split batches', async () => {
    const { queue, sent } = recorder();
    const r = Buffer.from('r');
    await Promise.all(['a', 'b'].map((s) => queue.push(msg(s), r, false)));
    expect(sent.map((s) => s.messages)).toEqual([[['a']], [['b']]]);
  });

  it('fails every message of a failed batch, refuses past maxQueued, and fails what is queued on close', async () => {
    const failing = recorder({ fail: true });
    const results = await Promise.allSettled(['a', 'b'].map((s) => failing.queue.push(msg(s))));
    expect(results.map((r) => r.status === 'rejected' && (r.reason as CommError).code)).toEqual([
      'COMM_TIMEOUT',
      'COMM_TIMEOUT',
    ]);

    const small = recorder({ maxQueued: 2 });
    const first = [small.queue.push(msg('a')), small.queue.push(msg('b'))];
    await expect(small.queue.push(msg('c'))).rejects.toMatchObject({ code: 'COMM_QUEUE_FULL' });
    small.queue.close();
    for (const p of first) await expect(p).rejects.toMatchObject({ code: 'COMM_CLOSED' });
    await expect(small.queue.push(msg('d'))).rejects.toMatchObject({ code: 'COMM_CLOSED' });
  });
});

describe('encodeBatch and splitBatch', () => {
  it('round-trip messages of 0, 1 and 3 frames', () => {
    const messages = [
      [],
      [Buffer.from('a')],
      [Buffer.from('b'), Buffer.alloc(0), Buffer.from('c')],
    ];
    const [header, ...rest] = encodeBatch(Buffer.from('TAG!'), messages) as Buffer[];
    expect(header!.subarray(0, 4).toString()).toBe('TAG!');
    expect(splitBatch(header!, rest)).toEqual(messages);
  });

  it('send a batch as two frames, a header of counts and lengths and one body, and split it into views of the body', () => {
    const messages = [[Buffer.from('head'), Buffer.alloc(300, 1)], [Buffer.from('x')]];
    const frames = encodeBatch(Buffer.from('TAG!'), messages) as Buffer[];
    expect(frames.length).toBe(2);
    const [header, body] = frames as [Buffer, Buffer];
    // tag, then: 2 frames of 4 and 300 bytes; 1 frame of 1 byte.
    expect([1, 2, 3, 4, 5].map((w) => header.readUInt32BE(4 * w))).toEqual([2, 4, 300, 1, 1]);
    expect(body.equals(Buffer.concat(messages.flat()))).toBe(true);
    const split = splitBatch(header, [body])!;
    expect(split).toEqual(messages);
    // No copies: every message is cut from the body received.
    for (const f of split.flat()) expect(f.buffer).toBe(body.buffer);
  });

  it('refuse headers that do not describe exactly one body', () => {
    /** A header: 'TAG!' then the words given (frame counts and lengths). */
    const header = (...words: number[]): Buffer => {
      const h = Buffer.alloc(4 + 4 * words.length);
      h.write('TAG!');
      words.forEach((w, i) => h.writeUInt32BE(w, 4 + 4 * i));
      return h;
    };
    const body = Buffer.from('abc');
    expect(splitBatch(header(1, 2, 1, 1), [body])).toEqual([
      [body.subarray(0, 2)],
      [body.subarray(2)],
    ]);
    expect(splitBatch(header(1, 4), [body])).toBeUndefined(); // a frame beyond the body
    expect(splitBatch(header(1, 2), [body])).toBeUndefined(); // body left over
    expect(splitBatch(header(3, 1, 1), [body])).toBeUndefined(); // more lengths than the header has
    expect(splitBatch(header(1, 3), [body, body])).toBeUndefined(); // a second body
    expect(splitBatch(header(1, 0), [])).toBeUndefined(); // no body
    expect(splitBatch(Buffer.alloc(6), [body])).toBeUndefined(); // not whole words
    expect(splitBatch(Buffer.alloc(4), [body])).toBeUndefined(); // no counts: not a batch
    expect(splitBatch(header(0, 0), [Buffer.alloc(0)])).toEqual([[], []]);
  });

  it(`refuse a batch of more than ${BATCH_MAX_MESSAGES} messages, which no sender makes (a receiver would answer each)`, () => {
    const one = (n: number): Buffer[][] => Array.from({ length: n }, () => [Buffer.from('r')]);
    const [h64, ...b64] = encodeBatch(Buffer.from('TAG!'), one(BATCH_MAX_MESSAGES)) as Buffer[];
    expect(splitBatch(h64!, b64)).toHaveLength(BATCH_MAX_MESSAGES);
    const [h65, ...b65] = encodeBatch(Buffer.from('TAG!'), one(BATCH_MAX_MESSAGES + 1)) as Buffer[];
    expect(splitBatch(h65!, b65)).toBeUndefined();
  });
});

describe('detached', () => {
  it('copies a view of less than half of its buffer and keeps anything else as it is', () => {
    const body = Buffer.alloc(64 * 1024, 5);
    const small = body.subarray(100, 4196);
    const copy = detached(small);
    expect(copy.buffer).not.toBe(body.buffer);
    expect(copy.byteLength).toBe(copy.buffer.byteLength);
    expect(copy.equals(small)).toBe(true);
    const large = body.subarray(0, 40 * 1024);
    expect(detached(large)).toBe(large);
    const whole = Buffer.from(new ArrayBuffer(4096));
    expect(detached(whole)).toBe(whole);
  });
});
