/**
 * Direct reads and writes on a real store. Goal: an upload of a file of large chunks stores every
 * copy straight from dfs-client to the data ranks (what an operator sees: the data ranks' direct
 * write counters grow by every copy's bytes, and rank 0 placed each chunk once), and the file
 * reads back whole; a data rank stopped (SIGSTOP) in the middle of an upload does not make it
 * fail, and the file reads back before and after the rank is continued.
 *
 * For reads: a retrieve of a file of large chunks gets the right bytes
 * with rank 0 no longer relaying them (what an operator sees: rank 0 served at most a chunk per
 * 5 s of the retrieve through get-chunk, where a relay serves every chunk); a data rank's read
 * port answers a well-formed bad request with STORE_BAD_REQUEST or STORE_NOT_FOUND, drops a
 * connection that sends an oversized frame, shrugs off random bytes, and afterwards the store still
 * stores and retrieves files right; a data rank stopped (SIGSTOP) in the middle of a retrieve does
 * not make it fail: it completes with the right sha256 within a generous bound.
 *
 * Method: a real store per test (memflow-run, rank 0 + 3 data ranks, 1 MiB chunks, so every
 * chunk is large enough for direct reads; test/helpers/store-process.ts) with its status server
 * on a port of the kernel's choosing (--http-port 0), whose /metrics counts every request rank 0
 * answered, by op. dfs-client runs as a user runs it. The chunk ports are found as a client finds
 * them: a get-begin sent to rank 0 from a ZeroMQ DEALER in this process, whose reply offers them.
 * "In the middle of a retrieve" is made exact, not guessed: the test stops reading dfs-client's
 * stdout once 8 MiB came out, so the client is held there (its stdout full) while the rank is
 * stopped, then reads on. Every stopped process is continued and every process stopped in
 * afterEach, also when a test fails.
 */
import { createCipheriv, createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pack, unpack } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import type { DirectSources, FileMetadata } from '../../src/protocol/client-protocol.js';
import { httpGet } from '../helpers/http-get.js';
import { parseExposition } from '../helpers/prometheus-text.js';
import { FAST, uploadUnderWay, waitLine } from '../helpers/store-checks.js';
import {
  KiB,
  MiB,
  StoreProcess,
  cleanupStores,
  describeRun,
  dfs,
  isRunning,
  makeTempDir,
  sha256Of,
  startDfs,
  waitUntil,
  writePseudoRandomFile,
  type DfsResult,
  type StoreOptions,
} from '../helpers/store-process.js';

const CHUNK = MiB;
/** ZeroMQ sockets opened by a test, closed in afterEach. */
const sockets: Array<zmq.Dealer> = [];
const stoppedPids = new Set<number>();

afterEach(async () => {
  // A stopped rank cannot act on SIGTERM: continue it first.
  for (const pid of stoppedPids) signal(pid, 'SIGCONT');
  stoppedPids.clear();
  for (const s of sockets.splice(0)) s.close();
  await cleanupStores();
});

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

/**
 * SIGSTOP of data rank `rank` (continued in afterEach if the test does not). Returns when it
 * stopped, and where rank 0's output stood then (to wait for the line declaring it dead).
 */
function stopRank(store: StoreProcess, rank: number): { stoppedAt: number; mark: number } {
  const pid = store.rankPid(rank);
  stoppedPids.add(pid);
  const mark = store.stderr.length;
  signal(pid, 'SIGSTOP');
  return { stoppedAt: performance.now(), mark };
}

/** SIGCONT of a data rank stopped by stopRank; resolves once rank 0 says it is alive again. */
async function continueRank(store: StoreProcess, rank: number): Promise<void> {
  const pid = store.rankPid(rank);
  const resumed = store.stderr.length;
  signal(pid, 'SIGCONT');
  stoppedPids.delete(pid);
  await waitLine(store, new RegExp(`^rank ${rank} is alive \\(`), resumed);
}

/** A store of 1 MiB chunks with its status server (for /metrics) on a port the kernel picks. */
function startStore(extraArgs: string[] = []): Promise<StoreProcess> {
  const options: StoreOptions = {
    chunkSize: '1MiB',
    extraArgs: ['--http-port', '0', ...extraArgs],
  };
  return StoreProcess.start(options);
}

/** Requests of `op` rank 0 has answered (any outcome, or only `outcome`), from its /metrics. */
async function requestsAnswered(
  store: StoreProcess,
  op: string,
  outcome?: string,
): Promise<number> {
  const res = await httpGet(`${store.statusUrl()}metrics`);
  expect(res.status).toBe(200);
  const parsed = parseExposition(res.text);
  return parsed.samples
    .filter(
      (s) =>
        s.name === 'memflow_requests_total' &&
        s.labels.op === op &&
        (outcome === undefined || s.labels.outcome === outcome),
    )
    .reduce((n, s) => n + s.value, 0);
}

/**
 * Bytes all data ranks' chunk ports have served (reads) or taken (writes), by the ranks' last
 * reports, from rank 0's /metrics.
 */
async function directBytes(store: StoreProcess, kind: 'read' | 'write'): Promise<number> {
  const res = await httpGet(`${store.statusUrl()}metrics`);
  const parsed = parseExposition(res.text);
  return parsed.samples
    .filter((s) => s.name === `memflow_rank_direct_${kind}_bytes_total`)
    .reduce((n, s) => n + s.value, 0);
}

/** Uploads a pseudo-random file of `bytes` as `name` with dfs-client; returns its sha256. */
async function upload(
  store: StoreProcess,
  work: string,
  name: string,
  bytes: number,
): Promise<string> {
  const src = path.join(work, `${name}.src`);
  const sha = await writePseudoRandomFile(src, bytes, name);
  const args = [src, '-a', '--as', name];
  const put = await dfs(store.server, args, { timeoutMs: 60_000 });
  expect(put.code, describeRun(args, put)).toBe(0);
  return sha;
}

/**
 * `dfs-client NAME -r -o -`; expects exit 0 and the sha256 `sha`. Returns the run, and how many
 * get-chunk requests rank 0 answered meanwhile (read once the reply to the read's opening,
 * get-whole, has been counted: rank 0 counts a request after sending its reply).
 */
async function retrieve(
  store: StoreProcess,
  name: string,
  sha: string,
): Promise<{ run: DfsResult; getChunks: number }> {
  const chunksBefore = await requestsAnswered(store, 'get-chunk');
  const opensBefore = await requestsAnswered(store, 'get-whole');
  const args = [name, '-r', '-o', '-'];
  const run = await dfs(store.server, args, { timeoutMs: 60_000 });
  expect(run.code, describeRun(args, run)).toBe(0);
  expect(sha256Of(run.stdout), `content of ${name}`).toBe(sha);
  await waitUntil(
    'rank 0 to count the retrieve',
    async () => (await requestsAnswered(store, 'get-whole')) > opensBefore,
    5_000,
  );
  return { run, getChunks: (await requestsAnswered(store, 'get-chunk')) - chunksBefore };
}

/** A DEALER connected to `endpoint` (tcp://host:port); receive() fails after 5 s. */
function dealer(endpoint: string): zmq.Dealer {
  const socket = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  sockets.push(socket);
  socket.connect(endpoint);
  return socket;
}

async function reply(
  socket: zmq.Dealer,
): Promise<{ fields: Record<string, unknown>; data?: Buffer }> {
  const [head, data] = await socket.receive();
  return { fields: unpack(head!) as Record<string, unknown>, ...(data && { data }) };
}

/** Opens a read of `name` at rank 0 as a client does (get-begin); returns the reply. */
async function getBegin(
  store: StoreProcess,
  name: string,
): Promise<{ readId: string; metadata: FileMetadata; direct?: DirectSources }> {
  const socket = dealer(`tcp://${store.server}`);
  await socket.send([pack({ op: 'get-begin', id: 1, name })]);
  const { fields } = await reply(socket);
  expect(fields, 'the reply to get-begin').toMatchObject({ id: 1, ok: true });
  // Leave nothing pinned.
  await socket.send([pack({ op: 'get-end', id: 2, readId: fields.readId })]);
  expect((await reply(socket)).fields).toMatchObject({ id: 2, ok: true });
  return fields as unknown as { readId: string; metadata: FileMetadata; direct?: DirectSources };
}

/** Deterministic pseudo-random bytes for `seed`. */
function randomBytesFor(seed: string, length: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(length));
}

/** The first `length` bytes of a local file. */
function head(file: string, length: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    fs.readSync(fd, buf, 0, length, 0);
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

describe('direct reads (a real store: rank 0 + 3 data ranks, 1 MiB chunks)', () => {
  it('a 24 MiB file retrieved with dfs-client -r matches its sha256, and rank 0 served at most one get-chunk per 5 s of it: the bytes came from the data ranks', async () => {
    const store = await startStore();
    const work = makeTempDir('direct-work');
    const size = 24 * MiB;
    const sha = await upload(store, work, 'big.bin', size);

    const { run, getChunks } = await retrieve(store, 'big.bin', sha);
    const allowed = 1 + Math.floor(run.elapsedMs / 5000);
    console.log(
      `24 MiB retrieve: ${Math.round(run.elapsedMs)} ms, rank 0 answered ${getChunks} get-chunk of ${size / CHUNK} chunks`,
    );
    expect(
      getChunks,
      `get-chunk requests rank 0 answered during a ${Math.round(run.elapsedMs)} ms retrieve of ${size / CHUNK} chunks`,
    ).toBeLessThanOrEqual(allowed);
    expect(getChunks).toBeLessThan(size / CHUNK / 4);
    // And the data ranks' own counters, which their heartbeats carry to /metrics, show the bytes.
    await waitUntil(
      "the data ranks' direct-read counters to show the retrieve's bytes",
      async () => (await directBytes(store, 'read')) >= size - getChunks * CHUNK,
      10_000,
    );
  });

  it("a data rank's chunk port, found through rank 0's get-begin: serves a chunk's exact bytes; random bytes, an unknown op, a wrong field, an unknown chunk and a frame over a chunk are refused or dropped; the store then stores and retrieves right, directly", async () => {
    const store = await startStore();
    const work = makeTempDir('direct-work');
    const sha = await upload(store, work, 'first.bin', 6 * MiB + 123);

    // The offer: every data rank's chunk port, and chunk i's id.
    const begin = await getBegin(store, 'first.bin');
    expect(begin.metadata.chunks).toHaveLength(7);
    expect(begin.direct, 'get-begin offers direct reads').toBeDefined();
    const { chunkIds, endpoints } = begin.direct!;
    expect(chunkIds).toHaveLength(7);
    expect(endpoints.map((e) => e.rank).sort()).toEqual([1, 2, 3]);
    for (const e of endpoints) expect(e.endpoint).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    expect(new Set(endpoints.map((e) => e.endpoint)).size).toBe(3);

    // Chunk 0 from its first holder, by hand: exactly the file's first MiB.
    const holder = begin.metadata.chunks[0]!.copies[0]!.rank;
    const endpoint = endpoints.find((e) => e.rank === holder)!.endpoint;
    const port = Number(/:(\d+)$/.exec(endpoint)![1]);
    const socket = dealer(endpoint);
    await socket.send([pack({ op: 'chunk-read', id: 10, chunkId: chunkIds[0] })]);
    const good = await reply(socket);
    expect(good.fields).toEqual({ id: 10, ok: true });
    expect(good.data?.equals(head(path.join(work, 'first.bin.src'), CHUNK)), 'chunk 0 bytes').toBe(
      true,
    );

    // Random bytes over plain TCP (not even ZeroMQ's greeting): the exchange just ends.
    await new Promise<void>((resolve, reject) => {
      const tcp = net.connect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => {
        tcp.destroy();
        reject(new Error('the TCP exchange did not finish within 10 s'));
      }, 10_000);
      tcp.on('error', () => undefined); // a reset is an acceptable answer
      tcp.on('data', () => undefined);
      tcp.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
      tcp.on('connect', () => tcp.end(randomBytesFor('read-port-tcp', 64 * KiB)));
    });

    // 30 messages of 1 to 3 random frames: each answered STORE_BAD_REQUEST.
    for (let i = 0; i < 30; i++)
      await socket.send(
        [...Array((i % 3) + 1).keys()].map((f) =>
          randomBytesFor(`read-port-${i}-${f}`, 1 + ((i * 37 + f * 101) % 2000)),
        ),
      );
    for (let i = 0; i < 30; i++) {
      const { fields } = await reply(socket);
      expect(fields, `reply to random message ${i}`).toMatchObject({
        ok: false,
        error: { code: 'STORE_BAD_REQUEST' },
      });
    }

    // Well-formed but wrong: each answered under its own id with the code and what was wrong.
    const wrong: Array<[object, string, string]> = [
      [{ op: 'format-disk', id: 21 }, 'STORE_BAD_REQUEST', 'format-disk'],
      [{ op: 'get-chunk', id: 22, readId: 'r1', index: 0 }, 'STORE_BAD_REQUEST', 'get-chunk'],
      [{ op: 'chunk-read', id: 23, chunkId: 5 }, 'STORE_BAD_REQUEST', 'chunkId'],
      [{ op: 'chunk-read', id: 24 }, 'STORE_BAD_REQUEST', 'chunkId'],
      [{ op: 'chunk-read', id: 25, chunkId: 'no-such-chunk' }, 'STORE_NOT_FOUND', 'no-such-chunk'],
      [{ op: 'chunk-read', id: 26, chunkId: '../../rank-1' }, 'STORE_BAD_REQUEST', 'may hold only'],
    ];
    // A chunk this rank holds no copy of (rank 0 sent a client to the wrong rank).
    const notHere = begin.metadata.chunks.find((c) => !c.copies.some((x) => x.rank === holder));
    if (notHere) {
      const chunkId = chunkIds[notHere.index]!;
      wrong.push([{ op: 'chunk-read', id: 27, chunkId }, 'STORE_NOT_FOUND', chunkId]);
    }
    for (const [message, code, mention] of wrong) {
      await socket.send([pack(message)]);
      const { fields, data } = await reply(socket);
      const id = (message as { id: number }).id;
      expect(fields, JSON.stringify(message)).toMatchObject({ id, ok: false, error: { code } });
      expect((fields.error as { message: string }).message, JSON.stringify(message)).toContain(
        mention,
      );
      expect(data, 'no bytes with an error').toBeUndefined();
    }

    // A frame of a chunk and 128 KiB (past what a chunk port takes: a chunk and 64 KiB, for
    // direct writes): ZeroMQ in the rank drops that connection, unanswered.
    const dropped = new Promise<void>((resolve) => socket.events.on('disconnect', () => resolve()));
    await socket.send([
      pack({ op: 'chunk-read', id: 30, chunkId: chunkIds[0] }),
      randomBytesFor('huge', CHUNK + 128 * KiB),
    ]);
    await Promise.race([
      dropped,
      new Promise((_, reject) =>
        setTimeout(
          () => reject(new Error('the chunk port kept a connection that sent a frame too large')),
          10_000,
        ),
      ),
    ]);
    // The DEALER connects again by itself, and is served.
    await socket.send([pack({ op: 'chunk-read', id: 31, chunkId: chunkIds[0] })]);
    const after = await reply(socket);
    expect(after.fields, 'a chunk-read after the drop').toEqual({ id: 31, ok: true });
    expect(after.data?.length).toBe(CHUNK);

    // The store as a whole: every rank runs, a new file goes in, both come back, directly.
    for (const [rank, pid] of store.rankPids)
      expect(isRunning(pid), `rank ${rank} runs`).toBe(true);
    expect(store.exited).toBe(false);
    const sha2 = await upload(store, work, 'second.bin', 9 * MiB + 7);
    for (const [name, expected, chunks] of [
      ['first.bin', sha, 7],
      ['second.bin', sha2, 10],
    ] as const) {
      const { run, getChunks } = await retrieve(store, name, expected);
      expect(getChunks, `get-chunk for ${name} (${chunks} chunks)`).toBeLessThanOrEqual(
        1 + Math.floor(run.elapsedMs / 5000),
      );
    }
  });

  it('a data rank stopped (SIGSTOP) in the middle of a 64 MiB retrieve: the retrieve completes with the right sha256 within 60 s', async () => {
    const store = await startStore(FAST);
    const work = makeTempDir('direct-work');
    const size = 64 * MiB;
    const sha = await upload(store, work, 'big.bin', size);
    const chunksBefore = await requestsAnswered(store, 'get-chunk');

    const args = ['big.bin', '-r', '-o', '-', '--server', store.server];
    const run = startDfs(args, { timeoutMs: 65_000 });
    const stdout = run.child.stdout!;
    let written = 0;
    let held = false;
    stdout.on('data', (d: Buffer) => {
      written += d.length;
      if (!held && written >= 8 * MiB) {
        held = true;
        stdout.pause(); // the client blocks on its full stdout, in the middle of the retrieve
      }
    });
    await waitUntil(
      '8 MiB of the retrieve written out',
      () => held || run.child.exitCode !== null,
      30_000,
    );
    expect(run.child.exitCode, 'the retrieve was still running at the stop').toBeNull();
    const { stoppedAt, mark } = stopRank(store, 2);
    stdout.resume();

    const result = await run.result;
    const tookMs = performance.now() - stoppedAt;
    expect(result.code, describeRun(args, result)).toBe(0);
    expect(result.stdout.length).toBe(size);
    expect(sha256Of(result.stdout), 'the retrieve during the stop').toBe(sha);
    expect(tookMs, 'from the stop to the end of the retrieve').toBeLessThan(60_000);
    const viaRank0 = (await requestsAnswered(store, 'get-chunk')) - chunksBefore;
    console.log(
      `SIGSTOP mid-retrieve: done ${Math.round(tookMs)} ms after the stop (${Math.round(result.elapsedMs)} ms in all); rank 0 answered ${viaRank0} get-chunk of ${size / CHUNK}`,
    );

    // Continued, it rejoins; the file still reads back right.
    await waitLine(store, /^rank 2 is dead \(/, mark);
    await continueRank(store, 2);
    await retrieve(store, 'big.bin', sha);
  }, 120_000);
});

describe('direct writes (a real store: rank 0 + 3 data ranks, 1 MiB chunks)', () => {
  it('a 24 MiB file uploaded with dfs-client -a: rank 0 placed each of its 24 chunks once, the data ranks took all 48 MiB of copies straight from the client, and it reads back whole', async () => {
    const store = await startStore();
    const work = makeTempDir('direct-work');
    const size = 24 * MiB;
    const placesBefore = await requestsAnswered(store, 'put-place');
    const sha = await upload(store, work, 'up.bin', size);
    await waitUntil(
      'rank 0 to count the upload',
      async () => (await requestsAnswered(store, 'put-commit')) === 1,
      5_000,
    );
    expect((await requestsAnswered(store, 'put-place', 'ok')) - placesBefore).toBe(24);
    // Every copy: the data ranks' heartbeats carry their counters to rank 0.
    await waitUntil(
      "the data ranks' direct-write counters to show both copies of every chunk",
      async () => (await directBytes(store, 'write')) === 2 * size,
      10_000,
    );
    await retrieve(store, 'up.bin', sha);
  });

  it('a data rank stopped (SIGSTOP) in the middle of a 200 MiB upload: the upload succeeds and reads back; continued, the rank rejoins', async () => {
    const store = await startStore(FAST);
    const work = makeTempDir('direct-work');
    const src = path.join(work, 'big.src');
    const sha = await writePseudoRandomFile(src, 200 * MiB, 'stopped-upload');
    const { args, run } = await uploadUnderWay(store, src, 'big.bin', 16 * MiB, {
      timeoutMs: 65_000,
      waitMs: 30_000,
    });
    const { stoppedAt, mark } = stopRank(store, 2);

    const result = await run.result;
    expect(result.code, describeRun(args, result)).toBe(0);
    console.log(
      `SIGSTOP mid-upload: done ${Math.round(performance.now() - stoppedAt)} ms after the stop`,
    );
    await waitLine(store, /^rank 2 is dead \(/, mark);
    await retrieve(store, 'big.bin', sha);
    await continueRank(store, 2);
    await retrieve(store, 'big.bin', sha);
  }, 120_000);
});
