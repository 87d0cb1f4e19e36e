/**
 * Bad input, end to end. Goal: every mistake a user or a broken client can make gets a clear,
 * one-line refusal with the right exit status, and nothing anyone sends to rank 0's port takes the
 * store down. Local mistakes: a missing path, a directory, an unreadable file (exit 1, naming the
 * path and the reason); an unknown name (exit 3, naming it); a store that is not running (exit 4,
 * within seconds). Hostile input on the client port: random bytes over plain TCP, random frames
 * from a ZeroMQ DEALER, well-formed msgpack with wrong types, and a frame larger than the
 * message limit (chunk size + 64 KiB) — after each, the store still serves a normal dfs-client
 * upload and retrieve.
 *
 * Method: one real store (memflow-run -n 4 --chunk-size 64K, so the message limit is 128 KiB) on a
 * temporary data dir and a free port, shared by the tests of this file; dfs-client as a user runs
 * it; node:net and a zeromq Dealer in this process for the raw input. Random input comes from a
 * seeded generator, so a failure is reproducible.
 */
import { createCipheriv, createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pack, unpack } from 'msgpackr';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import {
  KiB,
  MiB,
  StoreProcess,
  cleanupStores,
  describeRun,
  dfs,
  freePort,
  makeTempDir,
  sha256Of,
  writePseudoRandomFile,
  type DfsResult,
} from '../helpers/store-process.js';

let store: StoreProcess;
let work: string;
let servedCount = 0;

beforeAll(async () => {
  store = await StoreProcess.start({ chunkSize: '64K' });
  work = makeTempDir('bad-input-work');
});

afterAll(async () => {
  try {
    if (store !== undefined) expect(await store.stop()).toEqual({ code: 143, signal: null });
  } finally {
    await cleanupStores();
  }
});

async function client(args: string[], code: number, timeoutMs = 30_000): Promise<DfsResult> {
  const result = await dfs(store.server, args, { timeoutMs });
  expect(result.code, describeRun(args, result)).toBe(code);
  return result;
}

/** Deterministic pseudo-random bytes for `seed`. */
function randomBytesFor(seed: string, length: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return cipher.update(Buffer.alloc(length));
}

/** The store answers a normal dfs-client upload and retrieve (a 3-chunk file) correctly. */
async function expectStoreServes(): Promise<void> {
  const name = `probe-${servedCount++}.bin`;
  const file = path.join(work, name);
  const sha = await writePseudoRandomFile(file, 150_000, name);
  await client([file, '-a'], 0);
  const back = await client([name, '-r', '-o', '-'], 0);
  expect(sha256Of(back.stdout)).toBe(sha);
  expect(store.exited).toBe(false);
}

/** A DEALER connected to rank 0's client port; receive() fails after 5 s instead of waiting. */
function dealer(): zmq.Dealer {
  const socket = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  socket.connect(`tcp://${store.server}`);
  return socket;
}

async function replyOf(socket: zmq.Dealer): Promise<Record<string, unknown>> {
  const [frame0] = await socket.receive();
  return unpack(frame0!) as Record<string, unknown>;
}

describe('local mistakes', () => {
  it('uploading a path that does not exist exits 1 naming the path and "no such file"', async () => {
    const missing = path.join(work, 'no-such-file.bin');
    const result = await client([missing, '-a'], 1);
    expect(result.stderr).toContain(missing);
    expect(result.stderr.toLowerCase()).toContain('no such file');
    expect(result.stderr.split('\n').filter(Boolean)).toHaveLength(1);
  });

  it('uploading a directory exits 1 naming it and "is a directory"', async () => {
    const dir = makeTempDir('a-directory');
    const result = await client([dir, '-a', '--as', 'dir.bin'], 1);
    expect(result.stderr).toContain(dir);
    expect(result.stderr).toContain('is a directory');
    expect(result.stderr.split('\n').filter(Boolean)).toHaveLength(1);
  });

  it('uploading an unreadable file (chmod 000) exits 1 naming it and "permission denied"', async (ctx) => {
    if (process.getuid?.() === 0) {
      const reason =
        'running as root: root reads a chmod 000 file, so there is no unreadable file to test with';
      console.log(`skipped: ${reason}`);
      ctx.skip(reason);
    }
    const file = path.join(work, 'unreadable.bin');
    await writePseudoRandomFile(file, 1000, 'unreadable');
    fs.chmodSync(file, 0o000);
    const result = await client([file, '-a'], 1);
    expect(result.stderr).toContain(file);
    expect(result.stderr.toLowerCase()).toContain('permission denied');
  });

  it.each([
    ['-r', ['-o', '-']],
    ['-m', []],
    ['-d', []],
  ])('%s of an unknown name exits 3 with the name in the message', async (flag, more) => {
    const name = `never-stored ${flag}.bin`;
    const result = await client([name, flag, ...more], 3);
    expect(result.stderr).toContain(`"${name}"`);
    expect(result.stderr).toContain('no such file');
    expect(result.stdout.length).toBe(0);
  });

  it.each([
    ['list', ['list']],
    ['upload', ['-a']],
  ])(
    '%s against a store that is not running exits 4 within 5 s, naming the address',
    async (_label, args) => {
      const port = await freePort(); // free a moment ago: nothing listens there
      const file = path.join(work, 'for-nowhere.bin');
      await writePseudoRandomFile(file, 1000, 'nowhere');
      const fullArgs = args[0] === '-a' ? [file, ...args] : args;
      const result = await dfs(`127.0.0.1:${port}`, [...fullArgs, '--timeout', '3'], {
        timeoutMs: 20_000,
      });
      expect(result.code, describeRun(fullArgs, result)).toBe(4);
      expect(result.elapsedMs).toBeLessThan(5000);
      expect(result.stderr).toContain(`127.0.0.1:${port}`);
    },
  );
});

describe('hostile input on the client port leaves the store serving', () => {
  it.each([
    ['16 bytes', 16],
    ['64 KiB', 64 * KiB],
    ['1 MiB', MiB],
  ])('random bytes over plain TCP (%s), then dfs-client works', async (_label, size) => {
    const bytes = randomBytesFor(`tcp-${size}`, size);
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: store.port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('the TCP exchange did not finish within 10 s'));
      }, 10_000);
      socket.on('error', () => undefined); // a reset by the peer is an acceptable answer
      socket.on('data', () => undefined);
      socket.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.on('connect', () => socket.end(bytes));
    });
    await expectStoreServes();
  });

  it('100 DEALER messages of 1 to 3 random frames each get STORE_BAD_REQUEST replies, then dfs-client works', async () => {
    const socket = dealer();
    try {
      const count = 100;
      for (let i = 0; i < count; i++) {
        const frames = [...Array((i % 3) + 1).keys()].map((f) =>
          randomBytesFor(`dealer-${i}-${f}`, 1 + ((i * 37 + f * 101) % 2000)),
        );
        await socket.send(frames);
      }
      for (let i = 0; i < count; i++) {
        const reply = await replyOf(socket);
        expect(reply.ok).toBe(false);
        expect((reply.error as { code: string }).code).toBe('STORE_BAD_REQUEST');
      }
    } finally {
      socket.close();
    }
    await expectStoreServes();
  });

  interface WrongMessage {
    label: string;
    message: Record<string, unknown>;
    code: string;
    mention: string;
  }
  it.each<WrongMessage>([
    {
      label: 'put-begin with name: 5',
      message: { op: 'put-begin', id: 11, name: 5, sizeBytes: 10 },
      code: 'STORE_BAD_REQUEST',
      mention: 'name',
    },
    {
      label: 'put-begin with sizeBytes: -1',
      message: { op: 'put-begin', id: 12, name: 'x', sizeBytes: -1 },
      code: 'STORE_BAD_REQUEST',
      mention: 'sizeBytes',
    },
    {
      label: 'put-begin with sizeBytes: "big"',
      message: { op: 'put-begin', id: 13, name: 'x', sizeBytes: 'big' },
      code: 'STORE_BAD_REQUEST',
      mention: 'sizeBytes',
    },
    {
      label: 'put-begin with name: "a/b"',
      message: { op: 'put-begin', id: 15, name: 'a/b', sizeBytes: 1 },
      code: 'STORE_BAD_NAME',
      mention: '/',
    },
    {
      label: 'get-chunk with readId: [1, 2]',
      message: { op: 'get-chunk', id: 16, readId: [1, 2], index: 0 },
      code: 'STORE_BAD_REQUEST',
      mention: 'readId',
    },
    {
      label: 'put-chunk for an upload that does not exist',
      message: { op: 'put-chunk', id: 17, uploadId: 'u-nope', index: 0, checksum: 'x' },
      code: 'STORE_CONFLICT',
      mention: 'u-nope',
    },
    {
      label: 'unknown op "format-disk"',
      message: { op: 'format-disk', id: 18 },
      code: 'STORE_BAD_REQUEST',
      mention: 'format-disk',
    },
    {
      label: 'stat with name: null',
      message: { op: 'stat', id: 19, name: null },
      code: 'STORE_BAD_REQUEST',
      mention: 'name',
    },
  ])(
    'msgpack $label is answered with $code naming the problem, then dfs-client works',
    async ({ message, code, mention }) => {
      const socket = dealer();
      try {
        await socket.send([pack(message)]);
        const reply = await replyOf(socket);
        expect(reply).toMatchObject({ id: message.id, ok: false, error: { code } });
        expect((reply.error as { message: string }).message).toContain(mention);
      } finally {
        socket.close();
      }
      await expectStoreServes();
    },
  );

  it('a 1 MiB frame (limit: 64 KiB chunk + 64 KiB) drops that connection only; other clients and a new socket are served', async () => {
    const socket = dealer();
    try {
      const frame = pack({ op: 'put-chunk', id: 21, uploadId: 'u-x', index: 0, checksum: 'x' });
      await socket.send([frame, randomBytesFor('oversized', MiB)]);
    } finally {
      socket.close();
    }
    await expectStoreServes();
    const fresh = dealer();
    try {
      await fresh.send([pack({ op: 'list', id: 22 })]);
      expect(await replyOf(fresh)).toMatchObject({ id: 22, ok: true });
    } finally {
      fresh.close();
    }
  });
});

describe('sizes beyond any capacity (a fresh store per case)', () => {
  let big: StoreProcess;

  // A store per case: a failure here may take the store down, and the cases stay independent.
  beforeEach(async () => {
    big = await StoreProcess.start({ chunkSize: '64K' });
  });

  afterEach(async () => {
    if (!big.exited) await big.stop();
    else await big.waitNoProcessLeft(10_000);
  });

  it.each([
    ['32 TiB', 2 ** 45],
    ['4 PiB (2^52)', 2 ** 52],
  ])(
    'put-begin of %s is refused STORE_NO_SPACE within 5 s and the store keeps serving',
    async (_label, sizeBytes) => {
      const socket = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
      socket.connect(`tcp://${big.server}`);
      try {
        const started = performance.now();
        await socket.send([pack({ op: 'put-begin', id: 31, name: 'huge.bin', sizeBytes })]);
        const reply = await replyOf(socket).catch((err: unknown) => {
          throw new Error(
            `no reply to put-begin of ${sizeBytes} bytes: ${String(err)}\n${big.transcript()}`,
          );
        });
        expect(reply, big.transcript()).toMatchObject({
          id: 31,
          ok: false,
          error: { code: 'STORE_NO_SPACE' },
        });
        expect(performance.now() - started).toBeLessThan(5000);
      } finally {
        socket.close();
      }
      const list = await dfs(big.server, ['list'], { timeoutMs: 10_000 });
      expect(list.code, describeRun(['list'], list)).toBe(0);
    },
  );

  it('dfs-client -a of a sparse 1 TiB local file exits 5 ("not enough space") within 3 s', async () => {
    const file = path.join(work, 'sparse-1TiB.bin');
    const handle = fs.openSync(file, 'w');
    fs.ftruncateSync(handle, 2 ** 40);
    fs.closeSync(handle);
    try {
      const result = await dfs(big.server, [file, '-a'], { timeoutMs: 30_000 });
      expect(result.code, `${describeRun([file, '-a'], result)}\n${big.transcript()}`).toBe(5);
      expect(result.stderr).toContain('not enough space');
      expect(result.elapsedMs).toBeLessThan(3000);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});
