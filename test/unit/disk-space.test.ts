import { describe, expect, it } from 'vitest';
import { diskReserveBytes, offeredCapacity } from '../../src/store/disk-space.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe('the capacity a data rank offers', () => {
  it('is the disk (used + free, less the reserve) when no capacity is configured', () => {
    expect(offeredCapacity(undefined, 10 * GiB, 90 * GiB)).toBe(100 * GiB - GiB);
    expect(offeredCapacity(Infinity, 0, 6 * MiB)).toBe(6 * MiB - 256 * 1024);
  });

  it('is the configured capacity when the disk has room for it', () => {
    expect(offeredCapacity(512 * MiB, 100 * MiB, 50 * GiB)).toBe(512 * MiB);
  });

  it('is capped by the disk when the configured capacity promises more than it holds', () => {
    // --capacity 24M on a 6 MiB disk offers what the disk can take, not 24 MiB.
    expect(offeredCapacity(24 * MiB, 2 * MiB, 4 * MiB)).toBe(6 * MiB - 256 * 1024);
  });

  it('never offers less than what is already stored, even on a disk filled by others', () => {
    expect(offeredCapacity(24 * MiB, 5 * MiB, 0)).toBe(5 * MiB);
  });

  it('splits what the disk has free among the ranks that share it', () => {
    expect(offeredCapacity(undefined, 0, 100 * GiB, 4)).toBe(Math.floor((99 * GiB) / 4));
    expect(offeredCapacity(undefined, 5 * GiB, 95 * GiB, 2)).toBe(
      5 * GiB + Math.floor((94 * GiB) / 2),
    );
  });

  it('keeps back 1% of the disk, at least 256 KiB and at most 1 GiB', () => {
    expect(diskReserveBytes(1 * MiB)).toBe(256 * 1024);
    expect(diskReserveBytes(10 * GiB)).toBe(Math.floor((10 * GiB) / 100));
    expect(diskReserveBytes(1000 * GiB)).toBe(GiB);
  });
});
