/**
 * Batching on the ZeroMQ sockets, seen on the wire. Goal: small messages queued for one
 * destination in the same turn leave as one ZeroMQ message of two frames, a header and one body
 * (the per-message and per-frame costs are what limit small requests), bulk messages still travel alone and in order, a receiver splits batches back
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
  it('sends the messages queued in one turn as one ZeroMQ message: a header of frame counts and lengths, and one body', async () => {
    const sender = await transport(0);
    const peer = await rawPeer();
    sender.addPeer(1, peer.endpoint);
    const sent = Array.from({ length: 50 }, (_, i) =>
      sender.send(1, [Buffer.from(`m${i}`), Buffer.alloc(i % 3, i)]),
    );
    await Promise.all(sent);
    const message = await peer.pull.receive();
    const [header, body] = message;
    expect(header!.readUInt32BE(0)).toBe(0); // the sender's rank
    expect(header!.length).toBe(4 + 4 * (50 + 100)); // each message: its count, 2 lengths
    expect(message.length).toBe(2);
    expect([1, 2, 3].map((w) => header!.readUInt32BE(4 * w))).toEqual([2, 2, 0]); // 'm0', none
    expect(body!.subarray(0, 2).toString()).toBe('m0');
    expect(body!.length).toBe(sent.reduce((n, _, i) => n + `m${i}`.length + (i % 3), 0));
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
    expect(got.map((m) => m[0]!.length)).toEqual([4 + 16, 4, 4]);
    expect(got[0]![1]!.toString()).toBe('ab');
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
    /** A header: the sender's rank, then the words given (frame counts and lengths). */
    const header = (rank: number, ...words: number[]): Buffer => {
      const h = Buffer.alloc(4 + 4 * words.length);
      h.writeUInt32BE(rank, 0);
      words.forEach((w, i) => h.writeUInt32BE(w, 4 + 4 * i));
      return h;
    };
    await push.send([Buffer.from('xyz'), Buffer.from('odd header length')]);
    await push.send([header(3, 1, 50), Buffer.from('lengths beyond the body')]);
    await push.send([header(3, 1, 1), Buffer.from('body left over')]);
    await push.send([header(3, 1, 1), Buffer.from('a'), Buffer.from('a second body')]);
    await push.send([header(2, 2, 1, 1, 0, 1, 1), Buffer.from('xyz')]);
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

/** A batch header: `tag`, then the words given (frame counts and lengths). */
function batchHeader(tag: Uint8Array, ...words: number[]): Buffer {
  const h = Buffer.alloc(4 + 4 * words.length);
  h.set(tag, 0);
  words.forEach((w, i) => h.writeUInt32BE(w, 4 + 4 * i));
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
    const client = new ClientSocket({ host: '127.0.0.1', port });
    open.push(client);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        client.send(i % 2 ? [Buffer.from(`r${i}`)] : [Buffer.from(`r${i}`), Buffer.from('data')]),
      ),
    );
    const [, header, ...frames] = await router.receive();
    expect(header!.subarray(0, 4)).toEqual(Buffer.from(BATCH_MAGIC));
    expect(header!.length).toBe(4 + 4 * (20 + 30)); // each request: its count and lengths
    expect([1, 2, 3, 4, 5].map((w) => header!.readUInt32BE(4 * w))).toEqual([2, 2, 4, 1, 2]);
    expect(frames.length).toBe(1);
    expect(frames[0]!.subarray(0, 8).toString()).toBe('r0datar1');
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
    // 'r0' with 'data'; 'r1'; 'r2'.
    await dealer.send([batchHeader(BATCH_MAGIC, 2, 2, 4, 1, 2, 1, 2), Buffer.from('r0datar1r2')]);
    const [header, ...frames] = await dealer.receive();
    expect(got).toEqual([['r0', 'data'], ['r1'], ['r2']]);
    expect(header!.subarray(0, 4)).toEqual(Buffer.from(BATCH_MAGIC));
    expect([1, 2, 3, 4, 5, 6].map((w) => header!.readUInt32BE(4 * w))).toEqual([1, 2, 1, 2, 1, 2]);
    expect(frames.map(String)).toEqual(['a0a1a2']);
  });

  it('rank 0 takes a batch whose body is larger than its frame limit, made of requests within it', async () => {
    // The limit is per frame in ZeroMQ: 100 requests of 1,000 bytes under a 1 KiB limit travel
    // as one body of 100 KB, which must not drop the client's connection.
    const socket = await ServiceSocket.bind('127.0.0.1', 0, { maxMessageBytes: 1024 });
    open.push(socket);
    const port = Number(/:(\d+)$/.exec(socket.endpoint)?.[1]);
    let count = 0;
    const all = new Promise<void>((resolve) =>
      socket.onMessage((_client, frames) => {
        expect(frames[0]!.length).toBe(1000);
        if (++count === 100) resolve();
      }),
    );
    const client = new ClientSocket({ host: '127.0.0.1', port });
    open.push(client);
    await Promise.all(Array.from({ length: 100 }, () => client.send([Buffer.alloc(1000, 1)])));
    await all;
  });

  it('rank 0 passes a batch whose lengths do not match its body on whole, to be refused', async () => {
    const { socket, port } = await service();
    const got: Buffer[][] = [];
    const both = new Promise<void>((resolve) =>
      socket.onMessage((_client, frames) => {
        if (got.push(frames) === 2) resolve();
      }),
    );
    const dealer = rawDealer(port);
    const header = batchHeader(BATCH_MAGIC, 2, 2, 50);
    await dealer.send([header, Buffer.from('r0r1')]);
    await dealer.send([Buffer.from('after')]);
    await both;
    expect(got.map((frames) => frames.length)).toEqual([2, 1]);
    expect(got[0]![0]!.equals(header)).toBe(true);
  });
});
