/**
 * DfsClient and the dfs-client CLI. Goal: the client keeps its side of the client protocol —
 * uploads stream chunk by chunk with the right checksums and sha256 and never more than the
 * granted window outstanding; downloads write exactly the stored bytes in order whatever order
 * the replies come in, refuse a chunk that fails its checksum (leaving nothing behind) and refuse
 * to overwrite without force; nothing waits past its deadline; the store's errors surface with
 * their codes; the CLI maps all of it to one line and an exit status.
 *
 * Method: a fake coordinator in this process (rank 0's own client socket, ServiceSocket, on
 * 127.0.0.1, port 0, msgpackr frames) that implements just enough of the protocol, records every
 * request, counts chunk requests outstanding, and can hold chunk replies until the client has
 * filled its window (then release them in order or reversed), corrupt one chunk, fail chosen
 * requests, or stay silent.
 * Holding replies until the window is full makes "the client pipelines up to, and not past, the
 * window" an exact assertion instead of a timing accident. CLI tests spawn `node
 * bin/dfs-client.js` (needs `npm run build`) against the same fake.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, truncate, writeFile, mkdir } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pack, unpack } from 'msgpackr';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DfsClient, parseServerAddress } from '../../src/client/dfs-client.js';
import { ServiceSocket } from '../../src/comm/zmq-service.js';
import { DfsError } from '../../src/client/errors.js';
import { ProgressBar, renderProgressLine } from '../../src/client/progress.js';
import type {
  FileMetadata,
  ListEntry,
  StoreErrorCode,
  WireError,
} from '../../src/protocol/client-protocol.js';
import { chunkChecksum } from '../../src/store/checksum.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const KIB = 1024;

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** Deterministic bytes (a simple LCG), so a failure reproduces exactly. */
function content(length: number, seed = 1): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Polls `condition` every 5 ms; fails after `timeoutMs` so no test waits forever. */
async function waitFor(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function rejection(promise: Promise<unknown>): Promise<DfsError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DfsError);
  return err as DfsError;
}

/** A port nothing listens on: bound by the kernel, then released. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// ---- the fake coordinator ---------------------------------------------------------------------

type ChunkPolicy = 'immediate' | 'fill-window' | 'fill-window-reverse' | 'manual';

interface FakeOptions {
  chunkSizeBytes?: number;
  maxChunksInFlight?: number;
  chunkPolicy?: ChunkPolicy;
  /** get-chunk of this index returns bytes with one bit flipped. */
  corruptIndex?: number;
  /** Metadata carries a sha256 that is not the content's (its chunk checksums are right). */
  wrongSha256?: boolean;
  /** An error reply instead of the normal one, for requests it matches. */
  failWith?: (msg: Record<string, unknown>) => WireError | undefined;
  /** Never reply to anything. */
  silent?: boolean;
  /** Handle (and so answer) a request this many ms late, to put replies out of order. */
  delayMs?: (msg: Record<string, unknown>) => number;
}

interface Received {
  op: string;
  msg: Record<string, unknown>;
  data: Buffer | undefined;
}

interface StoredFile {
  data: Buffer;
  metadata: FileMetadata;
}

class FakeCoordinator {
  readonly received: Received[] = [];
  readonly files = new Map<string, StoredFile>();
  outstanding = 0;
  maxOutstanding = 0;
  private readonly held: Array<{ client: Buffer; index: number; frames: Buffer[] }> = [];
  private expectedChunks = 0;
  private repliedChunks = 0;
  private readonly uploads = new Map<string, { name: string; chunks: Map<number, Buffer> }>();
  private readonly reads = new Map<string, StoredFile>();
  private nextId = 1;
  private closed = false;
  readonly chunkSizeBytes: number;
  readonly window: number;

  private constructor(
    private readonly socket: ServiceSocket,
    readonly port: number,
    private readonly options: FakeOptions,
  ) {
    this.chunkSizeBytes = options.chunkSizeBytes ?? 64 * KIB;
    this.window = options.maxChunksInFlight ?? 3;
  }

  static async start(options: FakeOptions = {}): Promise<FakeCoordinator> {
    const socket = await ServiceSocket.bind('127.0.0.1', 0, { maxMessageBytes: 64 * 1024 * 1024 });
    const port = Number(/:(\d+)$/.exec(socket.endpoint)?.[1]);
    const fake = new FakeCoordinator(socket, port, options);
    socket.onMessage((client, frames) => fake.receive(client, frames));
    return fake;
  }

  get server(): string {
    return `127.0.0.1:${this.port}`;
  }

  ops(): string[] {
    return this.received.map((r) => r.op);
  }

  /** Stores a file as if it had been uploaded. */
  put(name: string, data: Buffer): void {
    this.files.set(name, { data, metadata: this.metadataFor(name, data) });
  }

  /** Sends every held chunk reply (for the 'manual' policy). */
  releaseHeld(): void {
    this.release(false);
  }

  close(): void {
    this.closed = true;
    this.socket.close();
  }

  private receive(client: Buffer, [head, data]: Buffer[]): void {
    if (this.closed || head === undefined) return;
    const msg = unpack(head) as Record<string, unknown>;
    this.received.push({ op: String(msg.op), msg, data });
    if (this.options.silent) return;
    const delayMs = this.options.delayMs?.(msg) ?? 0;
    if (delayMs > 0) setTimeout(() => this.handle(client, msg, data), delayMs);
    else this.handle(client, msg, data);
  }

  private send([client, ...frames]: Buffer[]): void {
    if (this.closed) return;
    this.socket.send(client!, frames).catch(() => undefined);
  }

  private reply(client: Buffer, id: unknown, fields: object, payload?: Buffer): void {
    const head = pack({ id, ok: true, ...fields });
    this.send(payload === undefined ? [client, head] : [client, head, payload]);
  }

  private replyError(client: Buffer, id: unknown, error: WireError): void {
    this.send([client, pack({ id, ok: false, error })]);
  }

  private handle(client: Buffer, msg: Record<string, unknown>, data: Buffer | undefined): void {
    const id = msg.id;
    const counted = msg.op === 'put-chunk' || msg.op === 'get-chunk';
    if (counted) {
      this.outstanding++;
      this.maxOutstanding = Math.max(this.maxOutstanding, this.outstanding);
    }
    const failure = this.options.failWith?.(msg);
    if (failure !== undefined) {
      if (counted) {
        this.outstanding--;
        this.repliedChunks++;
      }
      this.replyError(client, id, failure);
      return;
    }
    switch (msg.op) {
      case 'put-begin': {
        const uploadId = `u${this.nextId++}`;
        this.uploads.set(uploadId, { name: String(msg.name), chunks: new Map() });
        this.startTransfer(Math.ceil(Number(msg.sizeBytes) / this.chunkSizeBytes));
        this.reply(client, id, {
          uploadId,
          chunkSizeBytes: this.chunkSizeBytes,
          maxChunksInFlight: this.window,
        });
        return;
      }
      case 'put-chunk': {
        this.uploads
          .get(String(msg.uploadId))
          ?.chunks.set(Number(msg.index), data ?? Buffer.alloc(0));
        this.hold(client, Number(msg.index), [client, pack({ id, ok: true })]);
        return;
      }
      case 'put-commit': {
        const upload = this.uploads.get(String(msg.uploadId));
        if (upload === undefined) {
          this.replyError(client, id, { code: 'STORE_NOT_FOUND', message: 'no such upload' });
          return;
        }
        const parts = [...upload.chunks.entries()].sort(([a], [b]) => a - b).map(([, b]) => b);
        this.put(upload.name, Buffer.concat(parts));
        this.reply(client, id, { metadata: this.files.get(upload.name)!.metadata });
        return;
      }
      case 'put-abort':
      case 'get-end':
      case 'delete':
        if (msg.op === 'delete' && !this.files.delete(String(msg.name))) {
          this.replyError(client, id, notFound(String(msg.name)));
          return;
        }
        this.reply(client, id, {});
        return;
      case 'put-whole': {
        // As the coordinator: one request for a file of at most one chunk, else a refusal that
        // tells the client the chunk size.
        const bytes = data ?? Buffer.alloc(0);
        if (bytes.length > this.chunkSizeBytes) {
          this.replyError(client, id, {
            code: 'STORE_BAD_REQUEST',
            message: 'put-whole takes at most one chunk',
            detail: { chunkSizeBytes: this.chunkSizeBytes },
          });
          return;
        }
        this.put(String(msg.name), bytes);
        this.reply(client, id, { metadata: this.files.get(String(msg.name))!.metadata });
        return;
      }
      case 'get-whole': {
        const file = this.files.get(String(msg.name));
        if (file === undefined) {
          this.replyError(client, id, notFound(String(msg.name)));
          return;
        }
        if (file.metadata.chunks.length <= 1) {
          const bytes = Buffer.from(file.data);
          if (this.options.corruptIndex === 0 && bytes.length > 0) bytes[0] = bytes[0]! ^ 1;
          this.reply(
            client,
            id,
            { metadata: file.metadata, whole: true },
            bytes.length > 0 ? bytes : undefined,
          );
          return;
        }
        this.startTransfer(file.metadata.chunks.length);
        const readId = `r${this.nextId++}`;
        this.reads.set(readId, file);
        this.reply(client, id, { readId, metadata: file.metadata, maxChunksInFlight: this.window });
        return;
      }
      case 'get-begin': {
        const file = this.files.get(String(msg.name));
        if (file === undefined) {
          this.replyError(client, id, notFound(String(msg.name)));
          return;
        }
        this.startTransfer(file.metadata.chunks.length);
        const readId = `r${this.nextId++}`;
        this.reads.set(readId, file);
        this.reply(client, id, {
          readId,
          metadata: file.metadata,
          maxChunksInFlight: this.window,
        });
        return;
      }
      case 'get-chunk': {
        const index = Number(msg.index);
        const file = this.reads.get(String(msg.readId));
        const start = index * this.chunkSizeBytes;
        const bytes = Buffer.from(
          (file?.data ?? Buffer.alloc(0)).subarray(start, start + this.chunkSizeBytes),
        );
        if (index === this.options.corruptIndex && bytes.length > 0) bytes[0] = bytes[0]! ^ 1;
        this.hold(client, index, [client, pack({ id, ok: true }), bytes]);
        return;
      }
      case 'stat': {
        const file = this.files.get(String(msg.name));
        if (file === undefined) this.replyError(client, id, notFound(String(msg.name)));
        else this.reply(client, id, { metadata: file.metadata });
        return;
      }
      case 'list': {
        const files: ListEntry[] = [...this.files.values()].map(({ metadata }) => ({
          name: metadata.name,
          sizeBytes: metadata.sizeBytes,
          modified: metadata.modified,
          chunks: metadata.chunks.length,
          health: 'healthy',
        }));
        this.reply(client, id, { files });
        return;
      }
      case 'status':
        this.reply(client, id, {
          ranks: [
            { rank: 1, host: 'h1', state: 'alive', usedBytes: 0, capacityBytes: 1, chunkCopies: 0 },
          ],
          replicas: 2,
          chunkSizeBytes: this.chunkSizeBytes,
          files: this.files.size,
          underReplicatedChunks: 0,
        });
        return;
      default:
        this.replyError(client, id, { code: 'STORE_BAD_REQUEST', message: 'unknown op' });
    }
  }

  private startTransfer(chunks: number): void {
    this.expectedChunks = chunks;
    this.repliedChunks = 0;
  }

  private hold(client: Buffer, index: number, frames: Buffer[]): void {
    const policy = this.options.chunkPolicy ?? 'immediate';
    this.held.push({ client, index, frames });
    if (policy === 'manual') return;
    if (policy === 'immediate') {
      this.release(false);
      return;
    }
    // Release once the client has all it may have outstanding: the whole window, or every chunk
    // still missing when fewer remain. The 20 ms pause lets a client that overshoots the window
    // show it (its extra requests arrive meanwhile and raise maxOutstanding); a correct client
    // sends nothing until a reply comes, so the pause changes nothing for it.
    const remaining = this.expectedChunks - this.repliedChunks;
    if (this.held.length === Math.min(this.window, remaining)) {
      setTimeout(() => this.release(policy === 'fill-window-reverse'), 20);
    }
  }

  private release(reverse: boolean): void {
    const batch = this.held.splice(0, this.held.length);
    if (reverse) batch.reverse();
    for (const item of batch) {
      this.outstanding--;
      this.repliedChunks++;
      this.send(item.frames);
    }
  }

  private metadataFor(name: string, data: Buffer): FileMetadata {
    const chunks = [];
    for (let index = 0; index * this.chunkSizeBytes < data.length; index++) {
      const bytes = data.subarray(index * this.chunkSizeBytes, (index + 1) * this.chunkSizeBytes);
      chunks.push({
        index,
        sizeBytes: bytes.length,
        checksum: chunkChecksum(bytes),
        copies: [
          { rank: 1, host: 'host-a', state: 'alive' as const },
          { rank: 2, host: 'host-b', state: 'alive' as const },
        ],
      });
    }
    const now = new Date(Date.UTC(2024, 4, 1, 12, 0, 0)).toISOString();
    return {
      name,
      sizeBytes: data.length,
      sha256: this.options.wrongSha256 === true ? 'ee'.repeat(32) : sha256(data),
      version: 1,
      created: now,
      modified: now,
      chunkSizeBytes: this.chunkSizeBytes,
      replicas: 2,
      chunks,
      underReplicatedChunks: 0,
    };
  }
}

function notFound(name: string): WireError {
  return { code: 'STORE_NOT_FOUND', message: `no such file: "${name}"`, detail: { name } };
}

// ---- fixtures ---------------------------------------------------------------------------------

let fake: FakeCoordinator | undefined;
const clients: DfsClient[] = [];
let dir = '';

async function startFake(options: FakeOptions = {}): Promise<FakeCoordinator> {
  fake = await FakeCoordinator.start(options);
  return fake;
}

function clientFor(server: string, timeoutMs = 5_000): DfsClient {
  const client = new DfsClient({ server, timeoutMs });
  clients.push(client);
  return client;
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'dfs-client-test-'));
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  fake?.close();
  fake = undefined;
  await rm(dir, { recursive: true, force: true });
});

// ---- upload -----------------------------------------------------------------------------------

describe('upload', () => {
  it('sends put-begin, 6 put-chunks of 64 KiB (last 123 B) with BLAKE3 checksums, then put-commit with the sha256; never more than the window of 2 outstanding', async () => {
    const f = await startFake({
      chunkSizeBytes: 64 * KIB,
      maxChunksInFlight: 2,
      chunkPolicy: 'fill-window',
    });
    const data = content(5 * 64 * KIB + 123);
    const file = path.join(dir, 'report.bin');
    await writeFile(file, data);
    const progress: number[] = [];

    const metadata = await clientFor(f.server).upload(file, {
      onProgress: (p) => progress.push(p.doneBytes),
    });

    expect(f.ops()).toEqual(['put-begin', ...Array<string>(6).fill('put-chunk'), 'put-commit']);
    expect(f.received[0]!.msg).toMatchObject({ name: 'report.bin', sizeBytes: data.length });
    const chunks = f.received.filter((r) => r.op === 'put-chunk');
    expect(chunks.map((c) => c.msg.index)).toEqual([0, 1, 2, 3, 4, 5]);
    chunks.forEach((chunk, index) => {
      const expected = data.subarray(index * 64 * KIB, (index + 1) * 64 * KIB);
      expect(chunk.data?.equals(expected)).toBe(true);
      expect(chunk.msg.checksum).toBe(chunkChecksum(expected));
    });
    expect(f.received.at(-1)!.msg.sha256).toBe(sha256(data));
    expect(f.maxOutstanding).toBe(2);
    expect(metadata.name).toBe('report.bin');
    expect(metadata.sizeBytes).toBe(data.length);
    expect(progress.at(-1)).toBe(data.length);
  });

  it('keeps 4 chunks outstanding, then sends the lone last one (5 chunks, window 4, replies reversed)', async () => {
    const f = await startFake({
      chunkSizeBytes: 1 * KIB,
      maxChunksInFlight: 4,
      chunkPolicy: 'fill-window-reverse',
    });
    const data = content(5 * KIB - 1, 7);
    const file = path.join(dir, 'five.bin');
    await writeFile(file, data);
    await clientFor(f.server).upload(file, { name: 'other-name' });
    expect(f.maxOutstanding).toBe(4);
    expect(f.files.get('other-name')?.data.equals(data)).toBe(true);
  });

  it('uploads an empty file as one put-whole with no bytes and the empty sha256', async () => {
    const f = await startFake();
    const file = path.join(dir, 'empty');
    await writeFile(file, '');
    const metadata = await clientFor(f.server).upload(file);
    expect(f.ops()).toEqual(['put-whole']);
    expect(f.received[0]!.msg.sha256).toBe(sha256(Buffer.alloc(0)));
    expect(f.received[0]!.data ?? Buffer.alloc(0)).toHaveLength(0);
    expect(metadata.chunks).toEqual([]);
  });

  it('uploads a one-chunk file in one put-whole round trip, and reads it back in one get-whole', async () => {
    const f = await startFake({ chunkSizeBytes: 4 * KIB });
    const file = path.join(dir, 'small');
    const data = content(3000);
    await writeFile(file, data);
    const client = clientFor(f.server);
    await client.upload(file);
    expect(f.ops()).toEqual(['put-whole']);
    expect(f.received[0]!.msg.checksum).toBe(chunkChecksum(data));
    const out = path.join(dir, 'small.out');
    await client.download('small', out);
    expect(f.ops()).toEqual(['put-whole', 'get-whole']);
    expect(sha256(await readFile(out))).toBe(sha256(data));
  });

  it('a small file larger than the store chunk size falls back to the chunked upload, once', async () => {
    const f = await startFake({ chunkSizeBytes: KIB });
    const file = path.join(dir, 'three');
    await writeFile(file, content(3 * KIB));
    const client = clientFor(f.server);
    await client.upload(file);
    await client.upload(file, { name: 'again' });
    expect(f.ops()).toEqual([
      'put-whole',
      'put-begin',
      'put-chunk',
      'put-chunk',
      'put-chunk',
      'put-commit',
      'put-begin',
      'put-chunk',
      'put-chunk',
      'put-chunk',
      'put-commit',
    ]);
  });

  it('refuses a missing path and a directory with CLIENT_LOCAL_PATH naming the path, before contacting the store', async () => {
    const f = await startFake();
    const client = clientFor(f.server);
    const missing = path.join(dir, 'nope.bin');
    const err = await rejection(client.upload(missing));
    expect(err.code).toBe('CLIENT_LOCAL_PATH');
    expect(err.message).toContain(missing);
    expect(err.message).toContain('no such file or directory');
    const dirErr = await rejection(client.upload(dir));
    expect(dirErr.code).toBe('CLIENT_LOCAL_PATH');
    expect(dirErr.message).toContain('is a directory');
    expect(f.received).toEqual([]);
  });

  it('refuses a FIFO at once as not a regular file, without waiting for a writer', async () => {
    const f = await startFake();
    const fifo = path.join(dir, 'pipe');
    execFileSync('mkfifo', [fifo]);
    const err = await rejection(clientFor(f.server).upload(fifo));
    expect(err.code).toBe('CLIENT_LOCAL_PATH');
    expect(err.message).toContain('not a regular file');
    expect(f.received).toEqual([]);
  });

  it('refuses a small file that holds more than its size said (a /proc file) with CLIENT_FILE_CHANGED', async () => {
    const f = await startFake();
    const err = await rejection(clientFor(f.server).upload('/proc/self/status'));
    expect(err.code).toBe('CLIENT_FILE_CHANGED');
    expect(err.message).toContain('grew');
    expect(f.ops()).toEqual([]);
  });

  it('passes STORE_NO_SPACE from put-begin through with its detail, and sends no chunk', async () => {
    const f = await startFake({
      failWith: (msg) =>
        msg.op === 'put-begin' || msg.op === 'put-whole'
          ? {
              code: 'STORE_NO_SPACE',
              message: 'not enough space',
              detail: { neededBytes: 10, availableBytes: 5 },
            }
          : undefined,
    });
    const file = path.join(dir, 'big');
    await writeFile(file, content(100));
    const err = await rejection(clientFor(f.server).upload(file));
    expect(err.code).toBe('STORE_NO_SPACE');
    expect(err.detail).toEqual({ neededBytes: 10, availableBytes: 5 });
    expect(f.ops()).toEqual(['put-whole']);
  });

  it('sends put-abort and rethrows when a chunk fails (STORE_UNAVAILABLE on chunk 2 of 4)', async () => {
    const f = await startFake({
      chunkSizeBytes: KIB,
      maxChunksInFlight: 1,
      failWith: (msg) =>
        msg.op === 'put-chunk' && msg.index === 2
          ? { code: 'STORE_UNAVAILABLE', message: 'no data rank can take a chunk' }
          : undefined,
    });
    const file = path.join(dir, 'four');
    await writeFile(file, content(4 * KIB));
    const err = await rejection(clientFor(f.server).upload(file));
    expect(err.code).toBe('STORE_UNAVAILABLE');
    await waitFor(() => f.ops().includes('put-abort'), 'put-abort');
    // The first attempt is one put-whole; the fake's 1 KiB chunks send it to the chunked path.
    expect(f.ops()).toEqual([
      'put-whole',
      'put-begin',
      'put-chunk',
      'put-chunk',
      'put-chunk',
      'put-abort',
    ]);
    expect(f.received.at(-1)!.msg.uploadId).toBe(f.received[2]!.msg.uploadId);
  });

  it('aborts with CLIENT_FILE_CHANGED and put-abort when the file shrinks during the upload', async () => {
    const f = await startFake({ chunkSizeBytes: KIB, maxChunksInFlight: 1, chunkPolicy: 'manual' });
    const file = path.join(dir, 'shrinking');
    await writeFile(file, content(3 * KIB));
    const upload = clientFor(f.server).upload(file);
    await waitFor(() => f.ops().includes('put-chunk'), 'the first chunk');
    await truncate(file, KIB + 10);
    f.releaseHeld();
    const err = await rejection(upload);
    expect(err.code).toBe('CLIENT_FILE_CHANGED');
    expect(err.message).toContain('shrank');
    await waitFor(() => f.ops().includes('put-abort'), 'put-abort');
  });

  it('stops with CLIENT_ABORTED and sends put-abort when the signal fires mid-upload', async () => {
    const f = await startFake({ chunkSizeBytes: KIB, maxChunksInFlight: 2, chunkPolicy: 'manual' });
    const file = path.join(dir, 'abort');
    await writeFile(file, content(8 * KIB));
    const controller = new AbortController();
    const upload = clientFor(f.server).upload(file, { signal: controller.signal });
    await waitFor(() => f.ops().filter((op) => op === 'put-chunk').length === 2, 'two chunks');
    controller.abort();
    const err = await rejection(upload);
    expect(err.code).toBe('CLIENT_ABORTED');
    await waitFor(() => f.ops().includes('put-abort'), 'put-abort');
  });
});

// ---- download ---------------------------------------------------------------------------------

describe('download', () => {
  it('writes the exact bytes of a 7-chunk file to a path, sends get-end, and leaves no temporary file', async () => {
    const f = await startFake({
      chunkSizeBytes: 4 * KIB,
      maxChunksInFlight: 3,
      chunkPolicy: 'fill-window',
    });
    const data = content(6 * 4 * KIB + 999, 3);
    f.put('x.bin', data);
    const target = path.join(dir, 'out.bin');
    const progress: number[] = [];
    const metadata = await clientFor(f.server).download('x.bin', target, {
      onProgress: (p) => progress.push(p.doneBytes),
    });
    expect((await readFile(target)).equals(data)).toBe(true);
    expect(metadata.sha256).toBe(sha256(data));
    expect(f.maxOutstanding).toBe(3);
    expect(f.ops().at(-1)).toBe('get-end');
    expect(await readdir(dir)).toEqual(['out.bin']);
    expect(progress.at(-1)).toBe(data.length);
  });

  it('keeps 16 chunk requests outstanding on one abort listener, and stops with CLIENT_ABORTED, leaving no file', async () => {
    const f = await startFake({
      chunkSizeBytes: KIB,
      maxChunksInFlight: 16,
      chunkPolicy: 'manual',
    });
    f.put('deep', content(40 * KIB, 8));
    const controller = new AbortController();
    const target = path.join(dir, 'deep');
    const download = clientFor(f.server).download('deep', target, { signal: controller.signal });
    await waitFor(() => f.ops().filter((op) => op === 'get-chunk').length === 16, '16 chunks');
    // One listener for all 16 (Node warns on stderr past 10 listeners of one signal).
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    controller.abort();
    expect((await rejection(download)).code).toBe('CLIENT_ABORTED');
    expect(await readdir(dir)).toEqual([]);
  });

  it('puts chunks in order when every window of 4 is answered in reverse (9 chunks)', async () => {
    const f = await startFake({
      chunkSizeBytes: KIB,
      maxChunksInFlight: 4,
      chunkPolicy: 'fill-window-reverse',
    });
    const data = content(9 * KIB - 5, 11);
    f.put('rev', data);
    const target = path.join(dir, 'rev');
    await clientFor(f.server).download('rev', target);
    expect((await readFile(target)).equals(data)).toBe(true);
    expect(f.maxOutstanding).toBe(4);
  });

  it('rejects chunk 2 whose bytes do not match its checksum with CLIENT_INTEGRITY, leaves no file, and still sends get-end', async () => {
    const f = await startFake({ chunkSizeBytes: KIB, maxChunksInFlight: 2, corruptIndex: 2 });
    f.put('bad', content(5 * KIB));
    const target = path.join(dir, 'bad');
    const err = await rejection(clientFor(f.server).download('bad', target));
    expect(err.code).toBe('CLIENT_INTEGRITY');
    expect(err.message).toContain('chunk 2');
    expect(existsSync(target)).toBe(false);
    expect(await readdir(dir)).toEqual([]);
    await waitFor(() => f.ops().includes('get-end'), 'get-end');
  });

  it('checks the whole sha256 only when asked (verifySha256): a mismatch then fails CLIENT_INTEGRITY and leaves no file', async () => {
    const f = await startFake({ chunkSizeBytes: KIB, wrongSha256: true });
    const data = content(3 * KIB + 5);
    f.put('odd', data);
    const client = clientFor(f.server);
    const plain = path.join(dir, 'plain');
    await client.download('odd', plain);
    expect((await readFile(plain)).equals(data)).toBe(true);
    const checked = path.join(dir, 'checked');
    const err = await rejection(client.download('odd', checked, { verifySha256: true }));
    expect(err.code).toBe('CLIENT_INTEGRITY');
    expect(err.message).toMatch(/does not match its sha256/);
    expect(await readdir(dir)).toEqual(['plain']);
  });

  it('never writes a corrupt chunk to a stream: only the chunks before it go out', async () => {
    const f = await startFake({ chunkSizeBytes: KIB, maxChunksInFlight: 2, corruptIndex: 3 });
    const data = content(5 * KIB);
    f.put('bad', data);
    const parts: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        parts.push(chunk);
        done();
      },
    });
    const err = await rejection(clientFor(f.server).download('bad', sink));
    expect(err.code).toBe('CLIENT_INTEGRITY');
    expect(Buffer.concat(parts).equals(data.subarray(0, 3 * KIB))).toBe(true);
  });

  it('refuses to overwrite an existing file without force (CLIENT_EXISTS, file untouched, store not contacted), replaces it with force', async () => {
    const f = await startFake();
    const data = content(3000);
    f.put('x', data);
    const target = path.join(dir, 'x');
    await writeFile(target, 'keep me');
    const client = clientFor(f.server);
    const err = await rejection(client.download('x', target));
    expect(err.code).toBe('CLIENT_EXISTS');
    expect(err.message).toContain(target);
    expect(await readFile(target, 'utf8')).toBe('keep me');
    expect(f.received).toEqual([]);
    await client.download('x', target, { force: true });
    expect((await readFile(target)).equals(data)).toBe(true);
  });

  it('refuses a target that is a directory, or inside a missing directory, with CLIENT_LOCAL_PATH', async () => {
    const f = await startFake();
    f.put('x', content(10));
    const client = clientFor(f.server);
    await mkdir(path.join(dir, 'sub'));
    expect(
      (await rejection(client.download('x', path.join(dir, 'sub'), { force: true }))).code,
    ).toBe('CLIENT_LOCAL_PATH');
    const missing = await rejection(client.download('x', path.join(dir, 'no', 'x')));
    expect(missing.code).toBe('CLIENT_LOCAL_PATH');
    expect(missing.message).toContain('no such file or directory');
    expect(f.received).toEqual([]);
  });

  it('writes to a stream in order, waiting for drain (highWaterMark 1 KiB, slow reader, 10 chunks of 2 KiB)', async () => {
    const f = await startFake({
      chunkSizeBytes: 2 * KIB,
      maxChunksInFlight: 3,
      chunkPolicy: 'fill-window-reverse',
    });
    const data = content(10 * 2 * KIB, 5);
    f.put('s', data);
    const stream = new PassThrough({ highWaterMark: KIB });
    const parts: Buffer[] = [];
    const reading = (async () => {
      for await (const part of stream) {
        parts.push(part as Buffer);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    })();
    await clientFor(f.server).download('s', stream);
    stream.end();
    await reading;
    expect(Buffer.concat(parts).equals(data)).toBe(true);
  });

  it('hands a stream bytes that own their memory when small files arrive in one batch of replies', async () => {
    const f = await startFake({ chunkSizeBytes: 4 * KIB });
    const files = Array.from({ length: 8 }, (_, i) => content(3000, i));
    files.forEach((data, i) => f.put(`s${i}`, data));
    const client = clientFor(f.server);
    const parts: Buffer[][] = files.map(() => []);
    // Asked in one turn: the requests travel as one batch, and so do the replies.
    await Promise.all(
      files.map(async (_, i) => {
        const stream = new PassThrough();
        stream.on('data', (part: Buffer) => parts[i]!.push(part));
        await client.download(`s${i}`, stream);
      }),
    );
    files.forEach((data, i) => {
      expect(Buffer.concat(parts[i]!).equals(data)).toBe(true);
      // Not a view of the batch: keeping one file's bytes must not keep the other seven.
      for (const part of parts[i]!) expect(part.buffer.byteLength).toBe(part.byteLength);
    });
  });

  it('creates an empty file for an empty stored file', async () => {
    const f = await startFake();
    f.put('empty', Buffer.alloc(0));
    const target = path.join(dir, 'empty');
    await clientFor(f.server).download('empty', target);
    expect((await readFile(target)).length).toBe(0);
  });

  it('surfaces STORE_NOT_FOUND from get-begin and creates nothing', async () => {
    const f = await startFake();
    const target = path.join(dir, 'ghost');
    const err = await rejection(clientFor(f.server).download('ghost', target));
    expect(err.code).toBe('STORE_NOT_FOUND');
    expect(err.detail).toEqual({ name: 'ghost' });
    expect(await readdir(dir)).toEqual([]);
  });
});

// ---- requests, deadlines, errors --------------------------------------------------------------

describe('requests', () => {
  it('fails CLIENT_UNREACHABLE naming the server, well within the timeout, when nothing listens on the port', async () => {
    const port = await freePort();
    const client = clientFor(`127.0.0.1:${port}`, 2_000);
    const started = Date.now();
    const err = await rejection(client.list());
    expect(err.code).toBe('CLIENT_UNREACHABLE');
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('fails CLIENT_UNREACHABLE after timeoutMs (300 ms) when the server accepts but never answers', async () => {
    const f = await startFake({ silent: true });
    const client = clientFor(f.server, 300);
    const started = Date.now();
    const err = await rejection(client.stat('x'));
    const elapsed = Date.now() - started;
    expect(err.code).toBe('CLIENT_UNREACHABLE');
    expect(err.message).toContain(f.server);
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(3_000);
  });

  it.each<[StoreErrorCode, string]>([
    ['STORE_NOT_FOUND', 'stat'],
    ['STORE_BAD_NAME', 'delete'],
    ['STORE_INTERNAL', 'list'],
  ])('surfaces %s from %s with its message and detail', async (code, op) => {
    const f = await startFake({
      failWith: () => ({ code, message: `${code} happened`, detail: { why: op } }),
    });
    const client = clientFor(f.server);
    const call =
      op === 'stat' ? client.stat('a') : op === 'delete' ? client.delete('a/b') : client.list();
    const err = await rejection(call);
    expect(err.code).toBe(code);
    expect(err.message).toBe(`${code} happened`);
    expect(err.detail).toEqual({ why: op });
  });

  it('matches replies to requests by id when they come out of order (stat a answered 50 ms after stat b and list)', async () => {
    const f = await startFake({ delayMs: (msg) => (msg.name === 'a' ? 50 : 0) });
    f.put('a', content(10, 1));
    f.put('b', content(20, 2));
    const client = clientFor(f.server);
    const order: string[] = [];
    const [a, b, list] = await Promise.all([
      client.stat('a').finally(() => order.push('a')),
      client.stat('b').finally(() => order.push('b')),
      client.list().finally(() => order.push('list')),
    ]);
    expect(order.at(-1)).toBe('a');
    expect(a.sizeBytes).toBe(10);
    expect(b.sizeBytes).toBe(20);
    expect(list.map((entry) => entry.name).sort()).toEqual(['a', 'b']);
    const ids = f.received.map((r) => r.msg.id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('deletes, and reports status', async () => {
    const f = await startFake();
    f.put('gone', content(5));
    const client = clientFor(f.server);
    await client.delete('gone');
    expect((await rejection(client.stat('gone'))).code).toBe('STORE_NOT_FOUND');
    const status = await client.status();
    expect(status.ranks).toHaveLength(1);
  });

  it('fails outstanding requests with CLIENT_CLOSED on close()', async () => {
    const f = await startFake({ silent: true });
    const client = clientFor(f.server);
    const pending = client.list();
    await waitFor(() => f.received.length === 1, 'the request');
    client.close();
    expect((await rejection(pending)).code).toBe('CLIENT_CLOSED');
  });

  it('parses server addresses and refuses bad ones with CLIENT_BAD_ARGUMENT', () => {
    expect(parseServerAddress('node1:7000')).toEqual({ host: 'node1', port: 7000 });
    expect(parseServerAddress('[::1]:7000')).toEqual({ host: '::1', port: 7000 });
    expect(parseServerAddress('node1')).toEqual({ host: 'node1', port: 7070 });
    for (const bad of ['', 'a:b:c', 'host:0', 'host:70000', 'host:']) {
      expect(() => parseServerAddress(bad)).toThrow(DfsError);
    }
    expect(() => new DfsClient({ server: '127.0.0.1:1', timeoutMs: 0 })).toThrow(/timeout/);
  });
});

// ---- progress ---------------------------------------------------------------------------------

describe('progress', () => {
  it('renders label, bar, percent, MiB and MiB/s within the terminal width', () => {
    const line = renderProgressLine(
      'report.pdf',
      { doneBytes: 5 * 1024 * 1024, totalBytes: 10 * 1024 * 1024 },
      2_000,
      80,
    );
    expect(line).toMatch(/^report\.pdf \[#+-+\] {2}50% 5\.0\/10\.0 MiB 2\.5 MiB\/s$/);
    expect(line.length).toBeLessThan(80);
    const narrow = renderProgressLine(
      'a-very-long-file-name-indeed.tar.gz',
      { doneBytes: 0, totalBytes: 1 },
      10,
      40,
    );
    expect(narrow.length).toBeLessThanOrEqual(50);
  });

  it('writes nothing to a stream that is not a TTY, and nothing before showAfterMs on one', () => {
    const writes: string[] = [];
    const stream = Object.assign(new PassThrough(), { isTTY: false });
    stream.on('data', (d: Buffer) => writes.push(d.toString()));
    const bar = new ProgressBar({ stream, label: 'x', showAfterMs: 0 });
    bar.update({ doneBytes: 1, totalBytes: 2 });
    bar.finish();
    let nowMs = 0;
    const tty = Object.assign(new PassThrough(), { isTTY: true, columns: 80 });
    const ttyWrites: string[] = [];
    tty.on('data', (d: Buffer) => ttyWrites.push(d.toString()));
    const shown = new ProgressBar({ stream: tty, label: 'y', now: () => nowMs });
    shown.update({ doneBytes: 1, totalBytes: 2 });
    nowMs = 400;
    shown.update({ doneBytes: 2, totalBytes: 4 });
    nowMs = 450; // within the redraw interval: skipped
    shown.update({ doneBytes: 3, totalBytes: 4 });
    shown.finish();
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        expect(writes).toEqual([]);
        expect(ttyWrites.join('')).toContain(' 50%');
        expect(ttyWrites.join('')).not.toContain(' 75%');
        expect(ttyWrites.at(-1)).toBe('\r\x1b[K');
        resolve();
      }),
    );
  });
});

// ---- the CLI ----------------------------------------------------------------------------------

interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI asynchronously (the fake lives in this process), killed after 20 s. */
function cli(
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  const script = path.join(ROOT, 'dist/src/cli/dfs-client.js');
  if (!existsSync(script)) throw new Error(`${script} is missing: run \`npm run build\` first`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/dfs-client.js'), ...args], {
      cwd: options.cwd ?? dir,
      env: { ...process.env, MEMFLOW_SERVER: '', MEMFLOW_DEBUG: '', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

describe('dfs-client CLI', () => {
  it('exits 2 with a message for usage errors (no target, two operations, a name unusable as a default path)', async () => {
    const none = await cli([]);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/^dfs-client: missing <file\|name>/);
    const two = await cli(['x', '-a', '-r']);
    expect(two.status).toBe(2);
    expect(two.stderr).toContain('choose one of -a, -r, -m, -d');
    const slash = await cli(['a/b', '-r', '--server', '127.0.0.1:1']);
    expect(slash.status).toBe(2);
    expect(slash.stderr).toContain('-o PATH');
  });

  it('exits 1 naming the path for a missing local file, without contacting the store', async () => {
    const result = await cli(['missing.bin', '-a', '--server', '127.0.0.1:1']);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe(
      'dfs-client: cannot upload "missing.bin": no such file or directory\n',
    );
  });

  it('exits 4 when the store is unreachable (--server 127.0.0.1:1)', async () => {
    const result = await cli(['x.bin', '-m', '--server', '127.0.0.1:1']);
    expect(result.status).toBe(4);
    expect(result.stderr).toMatch(
      /^dfs-client: cannot show "x\.bin": cannot reach the store at 127\.0\.0\.1:1/,
    );
    expect(result.stderr.split('\n')).toHaveLength(2);
  });

  it('uploads, lists, shows metadata, retrieves (to ./NAME and stdout), refuses to overwrite, deletes, and exits 3 for a missing name', async () => {
    const f = await startFake({ chunkSizeBytes: 4 * KIB, maxChunksInFlight: 2 });
    const server = ['--server', f.server];
    const data = content(3 * 4 * KIB + 17, 9);
    await writeFile(path.join(dir, 'local.bin'), data);

    const up = await cli(['local.bin', '-a', '--as', 'report.bin', ...server]);
    expect(up.stderr).toBe('');
    expect(up.status).toBe(0);
    expect(up.stdout).toMatch(
      /^uploaded report\.bin \(12\.0 KiB, 4 chunks, 2 copies each\) in \d+\.\d+ s\n$/,
    );

    const list = await cli(['list', ...server]);
    expect(list.status).toBe(0);
    expect(list.stdout).toMatch(
      /^NAME\s+SIZE\s+MODIFIED\s+HEALTH\nreport\.bin\s+12\.0 KiB\s+\S+ \S+\s+healthy\n1 file, 12\.0 KiB\n$/,
    );
    const listJson = JSON.parse((await cli(['list', '--json', ...server])).stdout) as ListEntry[];
    expect(listJson).toEqual([
      expect.objectContaining({ name: 'report.bin', sizeBytes: data.length, health: 'healthy' }),
    ]);

    const meta = await cli(['report.bin', '-m', ...server]);
    expect(meta.status).toBe(0);
    expect(meta.stdout).toContain(sha256(data));
    expect(meta.stdout).toMatch(/\n\s+3\s+17 B\s+[0-9a-f]{12}\s+1@host-a, 2@host-b\n$/);
    const metaJson = JSON.parse(
      (await cli(['report.bin', '-m', '--json', ...server])).stdout,
    ) as FileMetadata;
    expect(metaJson).toMatchObject({
      name: 'report.bin',
      sizeBytes: data.length,
      sha256: sha256(data),
      version: 1,
    });
    expect(metaJson.chunks[0]!.copies.map((c) => `${c.rank}@${c.host}`)).toEqual([
      '1@host-a',
      '2@host-b',
    ]);

    const get = await cli(['report.bin', '-r', ...server]);
    expect(get.status).toBe(0);
    expect((await readFile(path.join(dir, 'report.bin'))).equals(data)).toBe(true);
    const again = await cli(['report.bin', '-r', ...server]);
    expect(again.status).toBe(1);
    expect(again.stderr).toBe(
      'dfs-client: cannot retrieve "report.bin": ./report.bin already exists (use --force to overwrite)\n',
    );
    expect((await cli(['report.bin', '-r', '--force', ...server])).status).toBe(0);

    const toStdout = await new Promise<Buffer>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [path.join(ROOT, 'bin/dfs-client.js'), 'report.bin', '-r', '-o', '-', ...server],
        {
          cwd: dir,
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      const parts: Buffer[] = [];
      child.stdout.on('data', (d: Buffer) => parts.push(d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.on('error', reject);
      child.on('close', () => {
        clearTimeout(timer);
        resolve(Buffer.concat(parts));
      });
    });
    expect(toStdout.equals(data)).toBe(true);

    const del = await cli(['report.bin', '-d', ...server]);
    expect(del.stdout).toBe('deleted report.bin\n');
    const gone = await cli(['report.bin', '-r', '-o', 'elsewhere', ...server]);
    expect(gone.status).toBe(3);
    expect(gone.stderr).toBe(
      'dfs-client: cannot retrieve "report.bin": no such file in the store\n',
    );
    expect(existsSync(path.join(dir, 'elsewhere'))).toBe(false);
  });

  it('status prints one row per data rank and the replication summary; --json gives the fields', async () => {
    const f = await startFake();
    const human = await cli(['status', '--server', f.server]);
    expect(human.status).toBe(0);
    expect(human.stdout).toMatch(
      /^RANK +HOST +STATE +USED +CAPACITY +% USED +COPIES\n +1 +h1 +alive /,
    );
    expect(human.stdout).toContain('every chunk has its 2 copies');
    const json = await cli(['status', '--json', '--server', f.server]);
    expect(JSON.parse(json.stdout)).toMatchObject({
      underReplicatedChunks: 0,
      ranks: [{ rank: 1, state: 'alive' }],
    });
  });

  it('exits 5 with the sizes when the store has no space', async () => {
    const f = await startFake({
      failWith: (msg) =>
        msg.op === 'put-begin' || msg.op === 'put-whole'
          ? {
              code: 'STORE_NO_SPACE',
              message: 'full',
              detail: { neededBytes: 2 * 1024 * 1024, availableBytes: 1024 },
            }
          : undefined,
    });
    await writeFile(path.join(dir, 'big.bin'), content(10));
    const result = await cli(['big.bin', '-a', '--server', f.server]);
    expect(result.status).toBe(5);
    expect(result.stderr).toBe(
      'dfs-client: cannot upload "big.bin": not enough space in the store (2.0 MiB needed for all copies, 1.0 KiB available)\n',
    );
  });
});
