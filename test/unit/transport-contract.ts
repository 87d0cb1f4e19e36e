/**
 * The transport contract suite: the guarantees documented in src/comm/transport.ts, asserted for
 * any implementation. Goal: the in-memory transport (fault injection, simulations) and the ZeroMQ
 * transport (production) are interchangeable. Method: each test builds a fresh world of real
 * transports through the factory it is given, drives it only through the Transport interface, and
 * waits for conditions with deadlines driven by the message and event handlers (never by sleeping
 * and hoping). Call it from a *.test.ts file:
 *
 *   describeTransportContract('memory', async (size) => ({ transports, crash, close }));
 *
 * This file is not a test file itself (vitest collects only *.test.ts).
 */
import { Buffer } from 'node:buffer';
import { afterEach, describe, expect, it } from 'vitest';
import { isCommError, type CommErrorCode } from '../../src/comm/errors.js';
import type { Frames, PeerEvent, Transport } from '../../src/comm/transport.js';

export interface TransportWorld {
  /** transports[r] is rank r; size = transports.length. No handlers are set yet. */
  transports: Transport[];
  /** Kills rank r abruptly (kill -9 for processes); resolves once the kill is done, not detected. */
  crash(rank: number): Promise<void>;
  /** Releases everything; must tolerate transports the test already closed or crashed. */
  close(): Promise<void>;
}

export interface TransportContractOptions {
  /** Deadline for each wait on a condition. Default 10,000 ms (generous for real sockets). */
  deadlineMs?: number;
}

/**
 * Waits on conditions that handlers make true. Handlers call `notify()` after changing state;
 * every pending `waitFor` re-evaluates its condition then, so a wait ends the moment its condition
 * holds, and fails with a description of what was missing once its deadline passes.
 */
export class Conditions {
  private readonly waiters = new Set<{ cond: () => boolean; resolve: () => void }>();

  notify(): void {
    for (const waiter of [...this.waiters]) {
      if (waiter.cond()) {
        this.waiters.delete(waiter);
        waiter.resolve();
      }
    }
  }

  /**
   * Resolves when `cond()` holds (checked now and at every notify); rejects with an Error naming
   * `what()` if it still does not hold after `timeoutMs` of real time.
   */
  waitFor(cond: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        cond,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }
}

export interface Received {
  source: number;
  frames: Frames;
}

/** Installs a handler on `transport` that records every message and notifies `conditions`. */
export function collectMessages(transport: Transport, conditions: Conditions): Received[] {
  const received: Received[] = [];
  transport.onMessage((source, frames) => {
    received.push({ source, frames });
    conditions.notify();
  });
  return received;
}

/** Installs a handler on `transport` that records every peer event and notifies `conditions`. */
export function collectPeerEvents(transport: Transport, conditions: Conditions): PeerEvent[] {
  const events: PeerEvent[] = [];
  transport.onPeerEvent((event) => {
    events.push(event);
    conditions.notify();
  });
  return events;
}

/** A 4-byte frame holding `value`, so tests can tag messages and check order. */
export function u32Frame(value: number): Uint8Array {
  const frame = new Uint8Array(4);
  new DataView(frame.buffer).setUint32(0, value);
  return frame;
}

export function readU32(frame: Uint8Array | undefined): number {
  if (frame?.byteLength !== 4) throw new Error(`expected a 4-byte frame, got ${frame?.byteLength}`);
  return new DataView(frame.buffer, frame.byteOffset, 4).getUint32(0);
}

/** Asserts that `promise` rejects with a CommError of `code`. */
export async function expectCommError(
  promise: Promise<unknown>,
  code: CommErrorCode,
): Promise<void> {
  const outcome = await promise.then(
    () => 'resolved',
    (err: unknown) => err,
  );
  if (!isCommError(outcome, code)) {
    throw new Error(`expected a CommError ${code}, got ${String(outcome)}`);
  }
}

function bytes(frame: Uint8Array | undefined): Buffer {
  if (frame === undefined) throw new Error('missing frame');
  return Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
}

function text(frame: Uint8Array | undefined): string {
  return bytes(frame).toString('utf8');
}

const encoder = new TextEncoder();

/** Runs the contract suite against the transports `makeWorld` builds. */
export function describeTransportContract(
  name: string,
  makeWorld: (size: number) => Promise<TransportWorld>,
  options: TransportContractOptions = {},
): void {
  const deadlineMs = options.deadlineMs ?? 10_000;

  describe(`transport contract: ${name}`, () => {
    const worlds: TransportWorld[] = [];

    /** A world that is closed after the test, whether it passed or not. */
    async function world(size: number): Promise<TransportWorld> {
      const created = await makeWorld(size);
      worlds.push(created);
      expect(created.transports.map((t) => t.rank)).toEqual([...Array(size).keys()]);
      return created;
    }

    afterEach(async () => {
      for (const created of worlds.splice(0)) await created.close();
    });

    it('numbers transports by rank and lists every rank of the world, self included, as a peer', async () => {
      const transports = (await world(3)).transports;
      for (const transport of transports) {
        expect([...transport.peers()].sort((a, b) => a - b)).toEqual([0, 1, 2]);
      }
    });

    it('delivers a 3-frame message whole, with the sender as source', async () => {
      const [t0, t1] = (await world(2)).transports;
      const conditions = new Conditions();
      const received = collectMessages(t1!, conditions);
      await t0!.send(1, [encoder.encode('alpha'), encoder.encode('beta'), encoder.encode('gamma')]);
      await conditions.waitFor(
        () => received.length >= 1,
        deadlineMs,
        () => 'one message at rank 1',
      );
      expect(received).toHaveLength(1);
      expect(received[0]!.source).toBe(0);
      expect(received[0]!.frames.map(text)).toEqual(['alpha', 'beta', 'gamma']);
    });

    it('keeps per-pair FIFO order for 1,000 messages from each of two senders to one receiver', async () => {
      const transports = (await world(3)).transports;
      const conditions = new Conditions();
      const received = collectMessages(transports[1]!, conditions);
      const count = 1_000;
      const sendAll = async (from: number): Promise<void> => {
        for (let i = 0; i < count; i++) await transports[from]!.send(1, [u32Frame(i)]);
      };
      await Promise.all([sendAll(0), sendAll(2)]);
      await conditions.waitFor(
        () => received.length >= 2 * count,
        deadlineMs,
        () => `${2 * count} messages at rank 1 (have ${received.length})`,
      );
      for (const source of [0, 2]) {
        const sequence = received
          .filter((m) => m.source === source)
          .map((m) => readU32(m.frames[0]));
        expect(sequence).toEqual([...Array(count).keys()]);
      }
      expect(received).toHaveLength(2 * count);
    });

    it('delivers all-to-all among 4 ranks (self included), each message exactly once', async () => {
      const size = 4;
      const transports = (await world(size)).transports;
      const conditions = new Conditions();
      const inboxes = transports.map((t) => collectMessages(t, conditions));
      await Promise.all(
        transports.flatMap((t) =>
          transports.map((_, dest) => t.send(dest, [u32Frame(t.rank), u32Frame(dest)])),
        ),
      );
      await conditions.waitFor(
        () => inboxes.every((inbox) => inbox.length >= size),
        deadlineMs,
        () => `${size} messages at every rank (have ${inboxes.map((i) => i.length).join(', ')})`,
      );
      inboxes.forEach((inbox, dest) => {
        const pairs = inbox.map((m) => [m.source, readU32(m.frames[0]), readU32(m.frames[1])]);
        pairs.sort((a, b) => a[0]! - b[0]!);
        expect(pairs).toEqual([...Array(size).keys()].map((source) => [source, source, dest]));
      });
    });

    it('delivers a 16 MiB frame plus a small one intact, in both directions', async () => {
      const [t0, t1] = (await world(2)).transports;
      const conditions = new Conditions();
      const at0 = collectMessages(t0!, conditions);
      const at1 = collectMessages(t1!, conditions);
      const big = (salt: number): Uint8Array => {
        const frame = new Uint8Array(16 * 1024 * 1024);
        // A position-dependent pattern catches reordered, truncated or shifted bytes.
        for (let i = 0; i < frame.length; i++) frame[i] = (i * 31 + (i >>> 12) + salt) & 0xff;
        return frame;
      };
      const from0 = [big(1), encoder.encode('tail')];
      const from1 = [encoder.encode('head'), big(2)];
      await Promise.all([t0!.send(1, from0), t1!.send(0, from1)]);
      await conditions.waitFor(
        () => at0.length >= 1 && at1.length >= 1,
        deadlineMs * 3,
        () => 'one 16 MiB message at each of ranks 0 and 1',
      );
      for (const [received, sent] of [
        [at1, from0],
        [at0, from1],
      ] as const) {
        const frames = received[0]!.frames;
        expect(frames.map((f) => f.byteLength)).toEqual(sent.map((f) => f.byteLength));
        frames.forEach((frame, i) => expect(bytes(frame).equals(bytes(sent[i]))).toBe(true));
      }
    });

    it('delivers zero-frame messages and empty frames as sent', async () => {
      const [t0, t1] = (await world(2)).transports;
      const conditions = new Conditions();
      const received = collectMessages(t1!, conditions);
      const empty = new Uint8Array(0);
      const shapes: Frames[] = [[], [empty], [empty, encoder.encode('x'), empty], [empty, empty]];
      for (const frames of shapes) await t0!.send(1, frames);
      await conditions.waitFor(
        () => received.length >= shapes.length,
        deadlineMs,
        () => `${shapes.length} messages at rank 1 (have ${received.length})`,
      );
      expect(received.map((m) => m.frames.map((f) => f.byteLength))).toEqual([
        [],
        [0],
        [0, 1, 0],
        [0, 0],
      ]);
      expect(text(received[2]!.frames[1])).toBe('x');
    });

    it('delivers a message to self, asynchronously (never inside send)', async () => {
      const [t0] = (await world(2)).transports;
      const conditions = new Conditions();
      const received = collectMessages(t0!, conditions);
      const sent = t0!.send(0, [encoder.encode('me')]);
      expect(received).toHaveLength(0);
      await sent;
      await conditions.waitFor(
        () => received.length >= 1,
        deadlineMs,
        () => 'the self-message',
      );
      expect(received[0]!.source).toBe(0);
      expect(text(received[0]!.frames[0])).toBe('me');
    });

    it('rejects a send to an unknown rank (-1, size, 1.5) with COMM_BAD_ARGUMENT', async () => {
      const [t0] = (await world(2)).transports;
      for (const dest of [-1, 2, 1.5]) {
        await expectCommError(t0!.send(dest, [encoder.encode('x')]), 'COMM_BAD_ARGUMENT');
      }
    });

    it('holds messages that arrive before onMessage is set, then delivers them in order', async () => {
      const [t0, t1] = (await world(2)).transports;
      const count = 5;
      for (let i = 0; i < count; i++) await t0!.send(1, [u32Frame(i)]);
      // No event reports that a message reached a transport without a handler, so give them a
      // short real-time window to arrive. The assertions hold whether or not they did arrive
      // within it; the window only makes the "held" path the likely one.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const conditions = new Conditions();
      const received = collectMessages(t1!, conditions);
      await conditions.waitFor(
        () => received.length >= count,
        deadlineMs,
        () => `${count} held messages at rank 1 (have ${received.length})`,
      );
      expect(received.map((m) => [m.source, readU32(m.frames[0])])).toEqual(
        [...Array(count).keys()].map((i) => [0, i]),
      );
    });

    it('after close(), sends to peers and to self reject COMM_CLOSED, and close() is idempotent', async () => {
      const [t0] = (await world(2)).transports;
      await t0!.close();
      await expectCommError(t0!.send(1, [encoder.encode('x')]), 'COMM_CLOSED');
      await expectCommError(t0!.send(0, [encoder.encode('x')]), 'COMM_CLOSED');
      await t0!.close();
      await expectCommError(t0!.send(1, []), 'COMM_CLOSED');
    });

    it('after crash(r), every other rank gets a disconnected event naming r', async () => {
      const size = 3;
      const crashed = 1;
      const crashWorld = await world(size);
      const transports = crashWorld.transports;
      const conditions = new Conditions();
      const inboxes = transports.map((t) => collectMessages(t, conditions));
      const events = transports.map((t) => collectPeerEvents(t, conditions));
      // Exchange a message on every pair first, so that every link is known to be up before the
      // crash (a connection never established cannot be reported as lost).
      await Promise.all(
        transports.flatMap((t) =>
          transports.filter((d) => d !== t).map((d) => t.send(d.rank, [u32Frame(t.rank)])),
        ),
      );
      await conditions.waitFor(
        () => inboxes.every((inbox) => inbox.length >= size - 1),
        deadlineMs,
        () => 'one message on every pair before the crash',
      );
      await crashWorld.crash(crashed);
      const survivors = transports.filter((t) => t.rank !== crashed).map((t) => t.rank);
      const sawDisconnect = (rank: number): boolean =>
        events[rank]!.some((e) => e.kind === 'disconnected' && e.rank === crashed);
      await conditions.waitFor(
        () => survivors.every(sawDisconnect),
        deadlineMs,
        () =>
          `'disconnected' for rank ${crashed} at ranks ${survivors.join(', ')} ` +
          `(seen at ${survivors.filter(sawDisconnect).join(', ') || 'none'})`,
      );
    });
  });
}
