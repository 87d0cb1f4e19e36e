/**
 * The failure detector, as a specification. Goal: exact, repeatable state changes — suspect after
 * 3 missed beats, dead after deadAfterMs of silence, dead within the disconnect grace when the
 * connection dropped and stayed down, never dead early for a merely slow rank, alive again when
 * heard from before death. Method: feed it times directly (it is pure); no clock, no sleeping.
 */
import { describe, expect, it } from 'vitest';
import { FailureDetector } from '../../src/rank/failure-detector.js';

const options = { heartbeatIntervalMs: 1000, deadAfterMs: 5000 };

function states(fd: FailureDetector, ranks: number[]): Array<string | undefined> {
  return ranks.map((r) => fd.state(r));
}

describe('failure detector (heartbeat 1000 ms, dead after 5000 ms)', () => {
  it('a rank heard every beat stays alive for ever', () => {
    const fd = new FailureDetector(options);
    fd.watch(1, 0);
    for (let t = 0; t <= 60_000; t += 1000) {
      fd.heard(1, t);
      expect(fd.tick(t + 999)).toEqual([]);
    }
    expect(fd.state(1)).toBe('alive');
  });

  it('is suspect after exactly 3 missed beats and dead after exactly 5000 ms of silence', () => {
    const fd = new FailureDetector(options);
    fd.watch(1, 0);
    expect(fd.tick(2999)).toEqual([]);
    expect(fd.tick(3000)).toEqual([
      { rank: 1, from: 'alive', to: 'suspect', reason: 'missed 3 heartbeats' },
    ]);
    expect(fd.tick(4999)).toEqual([]);
    expect(fd.tick(5000)).toEqual([
      { rank: 1, from: 'suspect', to: 'dead', reason: 'silent for 5000 ms' },
    ]);
    expect(fd.tick(9000)).toEqual([]);
  });

  it('a suspect rank heard from before the deadline is alive again', () => {
    const fd = new FailureDetector(options);
    fd.watch(1, 0);
    fd.tick(3500);
    expect(fd.heard(1, 4900)).toEqual([
      { rank: 1, from: 'suspect', to: 'alive', reason: 'heard from again' },
    ]);
    expect(fd.tick(5000)).toEqual([]);
    // The silence clock restarted at 4900: suspect again only 3 beats later, dead 5000 ms later.
    expect(fd.tick(7899)).toEqual([]);
    expect(fd.tick(7900)).toEqual([
      { rank: 1, from: 'alive', to: 'suspect', reason: 'missed 3 heartbeats' },
    ]);
    expect(fd.tick(9900)).toEqual([
      { rank: 1, from: 'suspect', to: 'dead', reason: 'silent for 5000 ms' },
    ]);
  });

  it('a dropped connection makes the rank suspect at once and dead after the grace (half a beat) if it stays down', () => {
    const fd = new FailureDetector(options);
    fd.watch(1, 0);
    fd.heard(1, 1000);
    expect(fd.disconnected(1, 1200)).toEqual([
      { rank: 1, from: 'alive', to: 'suspect', reason: 'its connection dropped' },
    ]);
    expect(fd.tick(1699)).toEqual([]);
    expect(fd.tick(1700)).toEqual([
      { rank: 1, from: 'suspect', to: 'dead', reason: 'connection down for 500 ms' },
    ]);
  });

  it('a connection that comes back within the grace is not a death; the next beat revives the rank', () => {
    const fd = new FailureDetector({ ...options, disconnectGraceMs: 300 });
    fd.watch(1, 0);
    fd.disconnected(1, 100);
    fd.reconnected(1);
    expect(fd.tick(1000)).toEqual([]);
    expect(fd.heard(1, 1000)).toEqual([
      { rank: 1, from: 'suspect', to: 'alive', reason: 'heard from again' },
    ]);
  });

  it('a slow rank that keeps its connection is never dead before deadAfterMs', () => {
    const fd = new FailureDetector({ ...options, disconnectGraceMs: 250 });
    fd.watch(1, 0);
    for (let t = 0; t < 5000; t += 50) expect(fd.tick(t).every((x) => x.to !== 'dead')).toBe(true);
    expect(fd.tick(5000).map((x) => x.to)).toEqual(['dead']);
  });

  it('a dead rank stays dead when a late beat arrives, and is alive again only when it rejoins', () => {
    const fd = new FailureDetector(options);
    fd.watch(1, 0);
    fd.tick(6000);
    expect(fd.heard(1, 6100)).toEqual([]);
    expect(fd.state(1)).toBe('dead');
    expect(fd.rejoined(1, 7000)).toEqual([
      { rank: 1, from: 'dead', to: 'alive', reason: 'rejoined' },
    ]);
  });

  it('tracks ranks independently', () => {
    const fd = new FailureDetector(options);
    [1, 2, 3].forEach((r) => fd.watch(r, 0));
    fd.heard(1, 4000);
    fd.heard(2, 1900);
    fd.tick(5000);
    expect(states(fd, [1, 2, 3])).toEqual(['alive', 'suspect', 'dead']);
  });

  it('refuses nonsense timing', () => {
    expect(() => new FailureDetector({ heartbeatIntervalMs: 0, deadAfterMs: 5000 })).toThrow(
      RangeError,
    );
  });
});
