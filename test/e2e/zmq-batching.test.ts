/**
 * Batching on the ZeroMQ sockets, seen on the wire. Goal: small messages queued for one
 * destination in the same turn leave as one ZeroMQ message (the per-message cost is what limits
 * small requests), bulk messages still travel alone and in order, a receiver splits batches back
 * into the messages sent and ignores (between ranks) or refuses whole (from clients) ones that are
 * not well-formed, and rank 0 batches replies only to a client that batches itself, so a plain
 * DEALER speaking the protocol as first written gets one message per reply. Method: our sockets
 * (ZmqTransport, ServiceSocket, ClientSocket) bound on loopback against raw zeromq sockets that
 * the test reads or writes frame by frame.
 */
import * as zmq from 'zeromq';
import { afterEach, describe, expect, it } from 'vitest';
import { BATCH_MAGIC } from '../../src/comm/send-queue.js';
import { ClientSocket, ServiceSocket } from '../../src/comm/zmq-service.js';
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

/** A batch header: `tag` then each frame count. */
function batchHeader(tag: Uint8Array, ...counts: number[]): Buffer {
  const h = Buffer.alloc(4 + 4 * counts.length);
  h.set(tag, 0);
  counts.forEach((c, i) => h.writeUInt32BE(c, 4 + 4 * i));
  return h;
}

async function service(): Promise<{ socket: ServiceSocket; port: number }> {
  const socket = await ServiceSocket.bind('127.0.0.1', 0, { maxMessageBytes: 1 << 20 });
  open.push(socket);
  return { socket, port: Number(/:(\d+)$/.exec(socket.endpoint)?.[1]) };
}

function rawDealer(port: number): zmq.Dealer {
  const dealer = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  open.push(dealer);
  dealer.connect(`tcp://127.0.0.1:${port}`);
  return dealer;
}

describe('client socket batching', () => {
  it('a client sends the requests queued in one turn as one batch behind the batch magic', async () => {
    const router = new zmq.Router({ linger: 0 });
    open.push(router);
    await router.bind('tcp://127.0.0.1:0');
    const port = Number(/:(\d+)$/.exec(router.lastEndpoint!)?.[1]);
    const client = new ClientSocket('127.0.0.1', port);
    open.push(client);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        client.send(i % 2 ? [Buffer.from(`r${i}`)] : [Buffer.from(`r${i}`), Buffer.from('data')]),
      ),
    );
    const [, header, ...frames] = await router.receive();
    expect(header!.subarray(0, 4)).toEqual(Buffer.from(BATCH_MAGIC));
    expect(header!.length).toBe(4 + 4 * 20);
    expect(header!.readUInt32BE(4)).toBe(2);
    expect(header!.readUInt32BE(8)).toBe(1);
    expect(frames.length).toBe(30);
    expect(frames[0]!.toString()).toBe('r0');
  });

  it('rank 0 answers a client that sends plain messages with one message per reply', async () => {
    const { socket, port } = await service();
    socket.onMessage((client, frames) => {
      // Every reply is sent in the same turn, once all 20 requests are in.
      if (frames[0]!.toString() === 'r19')
        for (let i = 0; i < 20; i++) void socket.send(client, [Buffer.from(`a${i}`)]);
    });
    const dealer = rawDealer(port);
    for (let i = 0; i < 20; i++) await dealer.send(Buffer.from(`r${i}`));
    for (let i = 0; i < 20; i++) {
      const reply = await dealer.receive();
      expect(reply.map(String)).toEqual([`a${i}`]);
    }
  });

  it('rank 0 splits a batch into its requests and answers a batching client in batches', async () => {
    const { socket, port } = await service();
    const got: string[][] = [];
    socket.onMessage((client, frames) => {
      got.push(frames.map(String));
      if (got.length === 3)
        for (let i = 0; i < 3; i++) void socket.send(client, [Buffer.from(`a${i}`)]);
    });
    const dealer = rawDealer(port);
    await dealer.send([
      batchHeader(BATCH_MAGIC, 2, 1, 1),
      Buffer.from('r0'),
      Buffer.from('data'),
      Buffer.from('r1'),
      Buffer.from('r2'),
    ]);
    const [header, ...frames] = await dealer.receive();
    expect(got).toEqual([['r0', 'data'], ['r1'], ['r2']]);
    expect(header!.subarray(0, 4)).toEqual(Buffer.from(BATCH_MAGIC));
    expect(frames.map(String)).toEqual(['a0', 'a1', 'a2']);
  });

  it('rank 0 passes a batch whose counts do not match its frames on whole, to be refused', async () => {
    const { socket, port } = await service();
    const got: Buffer[][] = [];
    const both = new Promise<void>((resolve) =>
      socket.onMessage((_client, frames) => {
        if (got.push(frames) === 2) resolve();
      }),
    );
    const dealer = rawDealer(port);
    const header = batchHeader(BATCH_MAGIC, 2, 5);
    await dealer.send([header, Buffer.from('r0'), Buffer.from('r1')]);
    await dealer.send([Buffer.from('after')]);
    await both;
    expect(got.map((frames) => frames.length)).toEqual([3, 1]);
    expect(got[0]![0]!.equals(header)).toBe(true);
  });
});
