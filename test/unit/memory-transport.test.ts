/**
 * The in-memory transport. Goal: it honours the transport contract, and its fault injection
 * (drops, delays, partitions, crashes, restarts, bounded queues) does exactly what simulations
 * rely on, repeatably from a seed. Method: the shared contract suite on a MemoryNetwork world,
 * then fault scenarios driven by a ManualClock and a SeededRandom (or a scripted Random where a
 * test needs particular draws). A seeded test prints its seed when it fails; MEMFLOW_SEED=<seed>
 * replays it.
 */
import { describe, expect, it, onTestFailed } from 'vitest';
import { isCommError, type CommErrorCode } from '../../src/comm/errors.js';
import { MemoryNetwork } from '../../src/comm/memory-transport.js';
import type { PeerEvent, Transport } from '../../src/comm/transport.js';
import { ManualClock } from '../../src/runtime/clock.js';
import { SeededRandom, seedFromEnv, type Random } from '../../src/runtime/random.js';
import {
  Conditions,
  collectMessages,
  collectPeerEvents,
  describeTransportContract,
  expectCommError,
  readU32,
  u32Frame,
  type Received,
} from './transport-contract.js';

const seed = seedFromEnv(process.env);

/** Makes a failure of the current test print the seed that replays it. */
function reportSeedOnFailure(): void {
  onTestFailed(() => {
    console.error(`seeded test failed; replay with MEMFLOW_SEED=${seed}`);
  });
}

/** Lets every queued microtask run (message delivery without delay happens in microtasks). */
function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function expectThrowsCode(fn: () => unknown, code: CommErrorCode): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  if (!isCommError(thrown, code)) {
    throw new Error(`expected a CommError ${code} to be thrown, got ${String(thrown)}`);
  }
}

/** A Random that returns scripted values, for tests that need particular delays. */
class ScriptedRandom implements Random {
  constructor(private readonly ints: number[]) {}
  next(): number {
    return 0;
  }
  int(maxExclusive: number): number {
    const value = this.ints.shift();
    if (value === undefined || value >= maxExclusive) throw new Error('script exhausted');
    return value;
  }
}

function ranks(network: MemoryNetwork, size: number): Transport[] {
  return [...Array(size).keys()].map((rank) => network.createTransport(rank));
}

describeTransportContract('memory', async (size) => {
  const network = new MemoryNetwork();
  const transports = ranks(network, size);
  return {
    transports,
    crash: async (rank) => network.crash(rank),
    close: async () => {
      await Promise.all(transports.map((t) => t.close()));
    },
  };
});

describe('MemoryNetwork: drops', () => {
  /** Sends `count` numbered messages 0 -> 1 at drop rate `p`; returns what arrived. */
  async function dropRun(runSeed: number, p: number, count: number) {
    const network = new MemoryNetwork({ random: new SeededRandom(runSeed) });
    const [t0, t1] = ranks(network, 2);
    const received: number[] = [];
    t1!.onMessage((_source, frames) => received.push(readU32(frames[0])));
    network.setDropRate(p);
    for (let i = 0; i < count; i++) await t0!.send(1, [u32Frame(i)]);
    await flush();
    return { received, stats: network.stats() };
  }

  it('drops about 30% of 2,000 messages at p = 0.3, and the same seed drops the same ones', async () => {
    reportSeedOnFailure();
    const count = 2_000;
    const first = await dropRun(seed, 0.3, count);
    const again = await dropRun(seed, 0.3, count);
    expect(again.received).toEqual(first.received);
    const dropped = count - first.received.length;
    // Binomial(2000, 0.3): mean 600, standard deviation 20.5; +-6 deviations never flakes.
    expect(dropped).toBeGreaterThan(600 - 123);
    expect(dropped).toBeLessThan(600 + 123);
    expect(first.stats).toEqual({ sent: count, delivered: count - dropped, dropped, pending: 0 });
    // The survivors still arrive in order: drops make holes, never reorderings.
    expect(first.received).toEqual([...first.received].sort((a, b) => a - b));
  });

  it('drops nothing at p = 0 and everything at p = 1, except messages to self', async () => {
    const none = await dropRun(seed, 0, 100);
    expect(none.received).toHaveLength(100);
    const all = await dropRun(seed, 1, 100);
    expect(all.received).toHaveLength(0);
    expect(all.stats.dropped).toBe(100);

    const network = new MemoryNetwork({ random: new SeededRandom(seed) });
    const [t0] = ranks(network, 2);
    const conditions = new Conditions();
    const atSelf = collectMessages(t0!, conditions);
    network.setDropRate(1);
    await t0!.send(0, [u32Frame(7)]);
    await flush();
    expect(atSelf.map((m) => readU32(m.frames[0]))).toEqual([7]);
  });
});

describe('MemoryNetwork: delays on a ManualClock', () => {
  /** 100 messages from each of ranks 0 and 1 to rank 2 with delays in [10, 50] ms. */
  async function delayRun(runSeed: number) {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, random: new SeededRandom(runSeed) });
    const transports = ranks(network, 3);
    const trace: [source: number, seq: number, atMs: number][] = [];
    transports[2]!.onMessage((source, frames) =>
      trace.push([source, readU32(frames[0]), clock.now()]),
    );
    network.setDelay(10, 50);
    for (let i = 0; i < 100; i++) {
      await transports[0]!.send(2, [u32Frame(i)]);
      await transports[1]!.send(2, [u32Frame(i)]);
    }
    await flush();
    const beforeAdvance = trace.length;
    clock.advance(9);
    await flush();
    const after9Ms = trace.length;
    clock.advance(41);
    await flush();
    return { trace, beforeAdvance, after9Ms, pendingTimers: clock.pendingTimers() };
  }

  it('delivers nothing before advance(), everything by the maximum delay, in per-pair FIFO order', async () => {
    reportSeedOnFailure();
    const run = await delayRun(seed);
    expect(run.beforeAdvance).toBe(0);
    expect(run.after9Ms).toBe(0);
    expect(run.trace).toHaveLength(200);
    expect(run.pendingTimers).toBe(0);
    for (const source of [0, 1]) {
      const mine = run.trace.filter(([s]) => s === source);
      expect(mine.map(([, seq]) => seq)).toEqual([...Array(100).keys()]);
      const times = mine.map(([, , atMs]) => atMs);
      expect(times).toEqual([...times].sort((a, b) => a - b));
      for (const atMs of times) {
        expect(atMs).toBeGreaterThanOrEqual(10);
        expect(atMs).toBeLessThanOrEqual(50);
      }
    }
    // The same seed gives the same arrival times.
    expect((await delayRun(seed)).trace).toEqual(run.trace);
  });

  it('holds a later message with a short delay behind an earlier one with a long delay, on that pair only', async () => {
    const clock = new ManualClock();
    // Delays are 10 + the scripted draw: 0->1 first 50 ms, 0->1 second 10 ms, 2->1 10 ms.
    const network = new MemoryNetwork({ clock, random: new ScriptedRandom([40, 0, 0]) });
    const transports = ranks(network, 3);
    const trace: string[] = [];
    transports[1]!.onMessage((source, frames) =>
      trace.push(`${source}:${readU32(frames[0])}@${clock.now()}`),
    );
    network.setDelay(10, 50);
    await transports[0]!.send(1, [u32Frame(1)]);
    await transports[0]!.send(1, [u32Frame(2)]);
    await transports[2]!.send(1, [u32Frame(3)]);
    clock.advance(10);
    await flush();
    expect(trace).toEqual(['2:3@10']);
    clock.advance(40);
    await flush();
    expect(trace).toEqual(['2:3@10', '0:1@50', '0:2@50']);
  });

  it('setDelay(0, 0) returns to microtask delivery without overtaking messages still delayed', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, random: new SeededRandom(seed) });
    const [t0, t1] = ranks(network, 2);
    const received: number[] = [];
    t1!.onMessage((_source, frames) => received.push(readU32(frames[0])));
    network.setDelay(20, 20);
    await t0!.send(1, [u32Frame(1)]);
    network.setDelay(0, 0);
    await t0!.send(1, [u32Frame(2)]);
    await flush();
    expect(received).toEqual([]);
    clock.advance(20);
    await flush();
    expect(received).toEqual([1, 2]);
  });
});

describe('MemoryNetwork: partitions, crashes, restarts, close', () => {
  /** A world whose every transport records messages and events; initial events are cleared. */
  async function observedWorld(size: number, network = new MemoryNetwork()) {
    const conditions = new Conditions();
    const transports = ranks(network, size);
    const inboxes = transports.map((t) => collectMessages(t, conditions));
    const events = transports.map((t) => collectPeerEvents(t, conditions));
    await flush();
    for (const list of events) list.length = 0;
    return { network, transports, inboxes, events, conditions };
  }

  const from = (inbox: Received[]): number[] => inbox.map((m) => m.source);
  const disconnected = (...peers: number[]): PeerEvent[] =>
    peers.map((rank) => ({ kind: 'disconnected', rank }));
  const connected = (...peers: number[]): PeerEvent[] =>
    peers.map((rank) => ({ kind: 'connected', rank }));

  it('gives every new transport and its peers a connected event for each other, and peers() grows', async () => {
    const network = new MemoryNetwork();
    const [t0, t1] = ranks(network, 2);
    const events0 = collectPeerEvents(t0!, new Conditions());
    const events1 = collectPeerEvents(t1!, new Conditions());
    await flush();
    expect(events0).toEqual(connected(1));
    expect(events1).toEqual(connected(0));
    const t2 = network.createTransport(2);
    const events2 = collectPeerEvents(t2, new Conditions());
    await flush();
    expect(events0).toEqual(connected(1, 2));
    expect(events1).toEqual(connected(0, 2));
    expect(events2).toEqual(connected(0, 1));
    expect(t0!.peers()).toEqual([0, 1, 2]);
    expectThrowsCode(() => network.createTransport(2), 'COMM_WIREUP');
    expectThrowsCode(() => network.createTransport(-1), 'COMM_BAD_ARGUMENT');
  });

  it('partition([0,1],[2,3]) drops in-flight and new messages across only, with events on both sides; heal() reconnects', async () => {
    const { network, transports, inboxes, events } = await observedWorld(4);
    const [t0, t1, t2, t3] = transports;
    // Not awaited before the cut: the message is queued inside send() and still in flight.
    const inFlight = t0!.send(2, [u32Frame(0)]);
    network.partition([0, 1], [2, 3]);
    await inFlight;
    await flush();
    expect(events[0]).toEqual(disconnected(2, 3));
    expect(events[1]).toEqual(disconnected(2, 3));
    expect(events[2]).toEqual(disconnected(0, 1));
    expect(events[3]).toEqual(disconnected(0, 1));

    await t0!.send(1, [u32Frame(1)]);
    await t0!.send(2, [u32Frame(2)]);
    await t2!.send(3, [u32Frame(3)]);
    await t3!.send(1, [u32Frame(4)]);
    await flush();
    expect(from(inboxes[1]!)).toEqual([0]);
    expect(from(inboxes[2]!)).toEqual([]);
    expect(from(inboxes[3]!)).toEqual([2]);
    expect(network.stats()).toMatchObject({ sent: 5, delivered: 2, dropped: 3, pending: 0 });

    for (const list of events) list.length = 0;
    network.heal();
    await flush();
    expect(events[0]).toEqual(connected(2, 3));
    expect(events[3]).toEqual(connected(0, 1));
    await t0!.send(2, [u32Frame(5)]);
    await t1!.send(3, [u32Frame(6)]);
    await flush();
    expect(inboxes[2]!.map((m) => readU32(m.frames[0]))).toEqual([5]);
    expect(inboxes[3]!.map((m) => readU32(m.frames[0]))).toEqual([3, 6]);
  });

  it('crash(1) drops messages in flight both ways, fails its sends with COMM_CLOSED, swallows sends to it; restart(1) reconnects', async () => {
    const { network, transports, inboxes, events } = await observedWorld(3);
    const [t0, t1, t2] = transports;
    // Not awaited before the crash: both are queued inside send() and still in flight.
    const inFlight = [t1!.send(0, [u32Frame(10)]), t0!.send(1, [u32Frame(11)])];
    network.crash(1);
    await Promise.all(inFlight);
    await flush();
    expect(inboxes[0]).toEqual([]);
    expect(inboxes[1]).toEqual([]);
    expect(events[0]).toEqual(disconnected(1));
    expect(events[2]).toEqual(disconnected(1));
    expect(events[1]).toEqual([]);
    await expectCommError(t1!.send(0, [u32Frame(12)]), 'COMM_CLOSED');
    await t0!.send(1, [u32Frame(13)]); // resolves: the loss is silent, as with TCP
    expect(network.stats()).toMatchObject({ sent: 3, delivered: 0, dropped: 3, pending: 0 });

    network.crash(1); // idempotent: no second event
    expectThrowsCode(() => network.restart(0), 'COMM_BAD_ARGUMENT');
    expectThrowsCode(() => network.crash(9), 'COMM_BAD_ARGUMENT');
    await flush();
    expect(events[0]).toEqual(disconnected(1));

    const reborn = network.restart(1);
    const rebornInbox = collectMessages(reborn, new Conditions());
    const rebornEvents = collectPeerEvents(reborn, new Conditions());
    await flush();
    expect(events[0]).toEqual([...disconnected(1), ...connected(1)]);
    expect(events[2]).toEqual([...disconnected(1), ...connected(1)]);
    expect(rebornEvents).toEqual(connected(0, 2));
    await t0!.send(1, [u32Frame(14)]);
    await reborn.send(2, [u32Frame(15)]);
    await flush();
    expect(rebornInbox.map((m) => readU32(m.frames[0]))).toEqual([14]);
    expect(inboxes[2]!.map((m) => readU32(m.frames[0]))).toEqual([15]);
    expect(inboxes[1]).toEqual([]); // the dead incarnation never hears anything again
    await expectCommError(t1!.send(2, []), 'COMM_CLOSED');
    await t2!.close();
  });

  it('close() lets messages already sent arrive, then peers get disconnected; messages to it are dropped', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, random: new SeededRandom(seed) });
    const transports = ranks(network, 2);
    const [t0, t1] = transports;
    const log: string[] = [];
    t1!.onMessage((source, frames) => log.push(`msg ${source}:${readU32(frames[0])}`));
    t1!.onPeerEvent((event) => log.push(`${event.kind} ${event.rank}`));
    await flush();
    log.length = 0;
    network.setDelay(5, 5);
    await t0!.send(1, [u32Frame(1)]);
    await t0!.send(1, [u32Frame(2)]);
    await t1!.send(0, [u32Frame(3)]); // in flight to the rank that closes: dropped
    await t0!.close();
    await flush();
    expect(log).toEqual([]);
    clock.advance(5);
    await flush();
    expect(log).toEqual(['msg 0:1', 'msg 0:2', 'disconnected 0']);
    await t1!.send(0, [u32Frame(4)]); // to a closed rank: silently dropped
    expect(network.stats()).toMatchObject({ sent: 4, delivered: 2, dropped: 2, pending: 0 });
    expect(clock.pendingTimers()).toBe(0);
  });

  it('a closed rank can be restarted', async () => {
    const { network, transports, events } = await observedWorld(2);
    await transports[1]!.close();
    const reborn = network.restart(1);
    const inbox = collectMessages(reborn, new Conditions());
    await flush();
    expect(events[0]).toEqual([...disconnected(1), ...connected(1)]);
    await transports[0]!.send(1, [u32Frame(1)]);
    await flush();
    expect(inbox.map((m) => m.source)).toEqual([0]);
  });
});

describe('MemoryNetwork: bounded queues', () => {
  it('rejects the 4th undelivered message on a pair with COMM_QUEUE_FULL at maxQueuedPerPeer = 3; other pairs and later sends are unaffected', async () => {
    const network = new MemoryNetwork({ maxQueuedPerPeer: 3 });
    const [t0, t1, t2] = ranks(network, 3);
    for (let i = 0; i < 3; i++) await t0!.send(1, [u32Frame(i)]);
    await flush(); // they arrive and are held: rank 1 has no handler yet, and they still count
    await expectCommError(t0!.send(1, [u32Frame(3)]), 'COMM_QUEUE_FULL');
    await t2!.send(1, [u32Frame(100)]);
    await t0!.send(2, [u32Frame(200)]);
    expect(network.stats()).toMatchObject({ sent: 5, pending: 5 });

    const received: number[] = [];
    t1!.onMessage((_source, frames) => received.push(readU32(frames[0])));
    await flush();
    expect(received).toEqual([0, 1, 2, 100]);
    await t0!.send(1, [u32Frame(3)]);
    await flush();
    expect(received).toEqual([0, 1, 2, 100, 3]);
  });

  it('counts messages in flight against the bound too', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({
      clock,
      random: new SeededRandom(seed),
      maxQueuedPerPeer: 2,
    });
    const [t0, t1] = ranks(network, 2);
    t1!.onMessage(() => undefined);
    network.setDelay(10, 10);
    await t0!.send(1, []);
    await t0!.send(1, []);
    await expectCommError(t0!.send(1, []), 'COMM_QUEUE_FULL');
    clock.advance(10);
    await t0!.send(1, []);
  });
});

describe('MemoryNetwork: arguments', () => {
  it('rejects bad fault settings and bad ranks with COMM_BAD_ARGUMENT', async () => {
    expectThrowsCode(() => new MemoryNetwork({ maxQueuedPerPeer: 0 }), 'COMM_BAD_ARGUMENT');
    const network = new MemoryNetwork();
    const [t0] = ranks(network, 2);
    for (const p of [-0.1, 1.5, Number.NaN]) {
      expectThrowsCode(() => network.setDropRate(p), 'COMM_BAD_ARGUMENT');
    }
    for (const [min, max] of [
      [5, 1],
      [-1, 2],
      [0.5, 1],
    ] as const) {
      expectThrowsCode(() => network.setDelay(min, max), 'COMM_BAD_ARGUMENT');
    }
    expectThrowsCode(() => network.partition([0, 1], [1, 2]), 'COMM_BAD_ARGUMENT');
    expectThrowsCode(() => network.partition([0], [1.5]), 'COMM_BAD_ARGUMENT');
    // Frames that are not byte arrays are refused rather than passed on.
    await expectCommError(t0!.send(1, ['x' as unknown as Uint8Array]), 'COMM_BAD_ARGUMENT');
  });
});

describe('MemoryNetwork: a whole faulty run replays from its seed', () => {
  /**
   * 4 ranks for 200 ticks of 1 ms: each tick every live rank sends a message to a random rank,
   * with 10% drops and 1-20 ms delays; a partition at tick 50 heals at tick 100; rank 3 crashes
   * at tick 120 and restarts at tick 150. Returns every delivery and event with its time.
   */
  async function faultyRun(runSeed: number) {
    const clock = new ManualClock();
    const root = new SeededRandom(runSeed);
    const network = new MemoryNetwork({ clock, random: root.fork() });
    const choices = root.fork();
    const trace: string[] = [];
    const observe = (t: Transport): Transport => {
      t.onMessage((source, frames) =>
        trace.push(`${clock.now()} ${source}->${t.rank} #${readU32(frames[0])}`),
      );
      t.onPeerEvent((event) => trace.push(`${clock.now()} ${t.rank} ${event.kind} ${event.rank}`));
      return t;
    };
    const transports = ranks(network, 4).map(observe);
    network.setDropRate(0.1);
    network.setDelay(1, 20);
    let seq = 0;
    for (let tick = 0; tick < 200; tick++) {
      if (tick === 50) network.partition([0, 1], [2, 3]);
      if (tick === 100) network.heal();
      if (tick === 120) network.crash(3);
      if (tick === 150) transports[3] = observe(network.restart(3));
      for (const t of transports) {
        if (tick >= 120 && tick < 150 && t.rank === 3) continue;
        await t.send(choices.int(4), [u32Frame(seq++)]);
      }
      clock.advance(1);
      await flush();
    }
    clock.advance(20);
    await flush();
    return { trace, stats: network.stats() };
  }

  it('gives the same deliveries and events, at the same times, for the same seed', async () => {
    reportSeedOnFailure();
    const first = await faultyRun(seed);
    const again = await faultyRun(seed);
    expect(again.trace).toEqual(first.trace);
    expect(again.stats).toEqual(first.stats);
    const { sent, delivered, dropped, pending } = first.stats;
    expect(pending).toBe(0);
    expect(delivered + dropped).toBe(sent);
    expect(dropped).toBeGreaterThan(0);
    expect(delivered).toBeGreaterThan(0);
  });
});

describe('stall and resume (SIGSTOP / SIGCONT)', () => {
  it('holds messages to and from a stalled rank in order, with no peer events, and delivers them on resume', async () => {
    const network = new MemoryNetwork();
    const [a, b] = [network.createTransport(0), network.createTransport(1)];
    const got: number[] = [];
    const events: PeerEvent[] = [];
    b.onMessage((_source, frames) => got.push(readU32(frames[0])));
    a.onPeerEvent((e) => events.push(e));
    await flush();
    events.length = 0;
    network.stall(1);
    for (let i = 0; i < 5; i++) await a.send(1, [u32Frame(i)]);
    await flush();
    expect(got).toEqual([]);
    network.resume(1);
    await flush();
    expect(got).toEqual([0, 1, 2, 3, 4]);
    expect(events).toEqual([]);
  });
});
