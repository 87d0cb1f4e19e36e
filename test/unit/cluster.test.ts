/**
 * Rank 0's usage bookkeeping: a copy is counted once, whether its put's reply or a heartbeat
 * made after it is handled first — so the space check never refuses an upload for space a
 * double count hid, nor accepts one for space a double subtraction invented.
 */
import { describe, expect, it } from 'vitest';
import { Cluster } from '../../src/rank/cluster.js';
import type { RankReport } from '../../src/rank/messages.js';

const MiB = 1024 * 1024;

function report(seq: number, usedBytes: number, chunkCount: number): RankReport {
  return { seq, rank: 1, host: 'h', usedBytes, capacityBytes: 100 * MiB, chunkCount };
}

describe('Cluster counts each copy once', () => {
  it('a put whose reply is handled before any later report: counted on release, then the report agrees', () => {
    const c = new Cluster();
    c.update(report(1, 0, 0));
    c.reserve(1, MiB);
    expect(c.usage()[0]!.usedBytes).toBe(MiB); // reserved counts as used
    c.release(1, MiB, true, 1); // stored after report 1
    expect(c.get(1)!.usedBytes).toBe(MiB);
    c.update(report(2, MiB, 1));
    expect(c.get(1)!.usedBytes).toBe(MiB);
    expect(c.usage()[0]!.usedBytes).toBe(MiB);
  });

  it('a heartbeat made after the put but handled before its reply: the reply does not count it again', () => {
    const c = new Cluster();
    c.update(report(1, 0, 0));
    c.reserve(1, MiB);
    c.update(report(2, MiB, 1)); // made after the put (seq 2 > the reply's 1)
    c.release(1, MiB, true, 1);
    expect(c.get(1)!.usedBytes).toBe(MiB);
    expect(c.get(1)!.chunkCopies).toBe(1);
    expect(c.usage()[0]!.usedBytes).toBe(MiB);
  });

  it('a failed put frees its reservation and counts nothing', () => {
    const c = new Cluster();
    c.update(report(1, 2 * MiB, 2));
    c.reserve(1, MiB);
    c.release(1, MiB, false);
    expect(c.usage()[0]!.usedBytes).toBe(2 * MiB);
  });

  it('a delete is subtracted once: by its reply, unless a report made after the deletions began was handled first', () => {
    const c = new Cluster();
    c.update(report(5, 3 * MiB, 3));
    c.forget(1, MiB, 5); // no report since the deletions began
    expect(c.get(1)!.usedBytes).toBe(2 * MiB);

    const d = new Cluster();
    d.update(report(5, 3 * MiB, 3));
    d.update(report(6, 2 * MiB, 2)); // already shows the deletion
    d.forget(1, MiB, 5);
    expect(d.get(1)!.usedBytes).toBe(2 * MiB);
    expect(d.get(1)!.chunkCopies).toBe(2);
  });

  it('a restarted rank counts its reports from 1 again, and its first report is taken as it is', () => {
    const c = new Cluster();
    c.update(report(40, 5 * MiB, 5));
    c.update(report(1, 4 * MiB, 4));
    c.reserve(1, MiB);
    c.release(1, MiB, true, 1);
    expect(c.get(1)!.usedBytes).toBe(5 * MiB);
  });
});

describe('Cluster splits a shared disk', () => {
  const GiB = 1024 * MiB;
  const onDisk = (
    rank: number,
    disk: string,
    freeBytes: number,
    capacityBytes = Number.MAX_SAFE_INTEGER,
  ): RankReport => ({
    seq: 1,
    rank,
    host: 'h',
    usedBytes: 0,
    capacityBytes,
    chunkCount: 0,
    disk: { id: disk, freeBytes },
  });

  it('ranks on one file system each offer their share of its free space, not all of it', () => {
    const c = new Cluster();
    c.updateAll([
      onDisk(1, 'h:1', 100 * GiB),
      onDisk(2, 'h:1', 100 * GiB),
      onDisk(3, 'h:2', 10 * GiB),
    ]);
    const capacities = c.all().map((r) => r.capacityBytes);
    // 1% of each disk kept back, the rest split between the ranks on it.
    expect(capacities).toEqual([
      Math.floor((99 * GiB) / 2),
      Math.floor((99 * GiB) / 2),
      10 * GiB - Math.floor((10 * GiB) / 100),
    ]);
    const offered = capacities.reduce((a, b) => a + b, 0);
    expect(offered).toBeLessThanOrEqual(110 * GiB);
  });

  it('a dead rank no longer takes a share, and a configured capacity still caps the share', () => {
    const c = new Cluster();
    c.updateAll([onDisk(1, 'h:1', 100 * GiB), onDisk(2, 'h:1', 100 * GiB, 10 * GiB)]);
    expect(c.get(2)!.capacityBytes).toBe(10 * GiB);
    c.setState(2, 'dead');
    c.update({ ...onDisk(1, 'h:1', 100 * GiB), seq: 2 });
    expect(c.get(1)!.capacityBytes).toBe(99 * GiB);
  });
});
