/**
 * The ZeroMQ transport's batching, seen on the wire. Goal: messages queued for one peer in the
 * same turn leave as one ZeroMQ message (the per-message cost is what limits small requests),
 * bulk messages still travel alone, and a receiver splits batches back into the messages sent,
 * ignoring ZeroMQ messages that are not well-formed. Method: a transport bound on loopback
 * talks to a raw zeromq PULL or PUSH socket that the test reads or writes frame by frame.
 */
import * as zmq from 'zeromq';
import { afterEach, describe, expect, it } from 'vitest';
import { ZmqTransport } from '../../src/comm/zmq-transport.js';
import type { Frames } from '../../src/comm/transport.js';

const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

/** A raw PULL socket standing in for a peer's endpoint. */
async function rawPeer(): Promise<{ pull: zmq.Pull; endpoint: string }> {
  const pull = new zmq.Pull({ linger: 0 });
  open.push(pull);
  await pull.bind('tcp://127.0.0.1:0');
  return { pull, endpoint: pull.lastEndpoint! };
}

async function transport(rank: number): Promise<ZmqTransport> {
  const t = await ZmqTransport.bind(rank, '127.0.0.1', { lingerMs: 0 });
  open.push(t);
  return t;
}

describe('ZeroMQ transport batching', () => {
  it('sends the messages queued in one turn as one ZeroMQ message, with each frame count in the header', async () => {
    const sender = await transport(0);
    const peer = await rawPeer();
    sender.addPeer(1, peer.endpoint);
    const sent = Array.from({ length: 50 }, (_, i) =>
      sender.send(1, [Buffer.from(`m${i}`), Buffer.alloc(i % 3, i)]),
    );
    await Promise.all(sent);
    const message = await peer.pull.receive();
    const header = message[0]!;
    expect(header.readUInt32BE(0)).toBe(0); // the sender's rank
    expect(header.length).toBe(4 + 4 * 50);
    expect(message.length).toBe(1 + 100);
    expect(message[1]!.toString()).toBe('m0');
    expect(message[99]!.toString()).toBe('m49');
  });

  it('sends a bulk message (256 KiB or more) on its own, in order with the small ones around it', async () => {
    const sender = await transport(0);
    const peer = await rawPeer();
    sender.addPeer(1, peer.endpoint);
    const bulk = Buffer.alloc(1024 * 1024, 7);
    await Promise.all([
      sender.send(1, [Buffer.from('a')]),
      sender.send(1, [Buffer.from('b')]),
      sender.send(1, [bulk]),
      sender.send(1, [Buffer.from('c')]),
    ]);
    const got: Buffer[][] = [];
    for (let i = 0; i < 3; i++) got.push(await peer.pull.receive());
    expect(got.map((m) => m[0]!.length)).toEqual([4 + 8, 4, 4]);
    expect(got[0]!.slice(1).map(String)).toEqual(['a', 'b']);
    expect(got[1]![1]!.equals(bulk)).toBe(true);
    expect(got[2]![1]!.toString()).toBe('c');
  });

  it('splits a batch into its messages, in order, and ignores ZeroMQ messages that are not ours', async () => {
    const receiver = await transport(1);
    const got: Array<[number, string[]]> = [];
    let done: () => void = () => {};
    const all = new Promise<void>((resolve) => (done = resolve));
    receiver.onMessage((source, frames: Frames) => {
      got.push([source, frames.map((f) => Buffer.from(f).toString())]);
      if (got.length === 4) done();
    });
    const push = new zmq.Push({ linger: 0 });
    open.push(push);
    push.connect(receiver.endpoint);
    const header = (rank: number, ...counts: number[]): Buffer => {
      const h = Buffer.alloc(4 + 4 * counts.length);
      h.writeUInt32BE(rank, 0);
      counts.forEach((c, i) => h.writeUInt32BE(c, 4 + 4 * i));
      return h;
    };
    await push.send([Buffer.from('xyz'), Buffer.from('odd header length')]);
    await push.send([header(3, 2, 5), Buffer.from('counts'), Buffer.from('beyond the frames')]);
    await push.send([header(3, 1, 0), Buffer.from('a'), Buffer.from('frames left over')]);
    await push.send([header(2, 2, 0, 1), Buffer.from('x'), Buffer.from('y'), Buffer.from('z')]);
    await push.send([header(2), Buffer.from('single')]);
    await all;
    expect(got).toEqual([
      [2, ['x', 'y']],
      [2, []],
      [2, ['z']],
      [2, ['single']],
    ]);
  });
});
