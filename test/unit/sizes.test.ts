/**
 * Sizes. Goal: parseSize reads every spelling of its contract with binary (1024-based) units and
 * refuses anything else with a message naming the problem; formatSize prints one decimal and a
 * binary unit. Method: tables of inputs and expected outputs.
 */
import { describe, expect, it } from 'vitest';
import { formatSize, parseSize } from '../../src/store/sizes.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

describe('parseSize', () => {
  it.each([
    ['100', 100],
    ['100B', 100],
    ['100b', 100],
    ['0', 0],
    ['512K', 512 * KiB],
    ['512k', 512 * KiB],
    ['512KiB', 512 * KiB],
    ['512KB', 512 * KiB],
    ['4M', 4 * MiB],
    ['4m', 4 * MiB],
    ['4MB', 4 * MiB],
    ['4MiB', 4 * MiB],
    ['4mib', 4 * MiB],
    ['4Mi', 4 * MiB],
    ['4 MiB', 4 * MiB],
    ['  4MiB  ', 4 * MiB],
    ['1G', GiB],
    ['1.5G', 1.5 * GiB],
    ['0.5K', 512],
    ['2T', 2 * TiB],
    ['8192', 8192],
  ])('reads %j as %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it('passes through a number that is already a byte count', () => {
    expect(parseSize(4096)).toBe(4096);
    expect(() => parseSize(-1)).toThrow(/non-negative whole number/);
    expect(() => parseSize(1.5)).toThrow(/non-negative whole number/);
  });

  it.each([
    ['', /must not be empty/],
    ['   ', /must not be empty/],
    ['-4M', /has a sign/],
    ['+4M', /has a sign/],
    ['4X', /not understood/],
    ['4 PB', /not understood/],
    ['4iB', /not understood/],
    ['M', /not understood/],
    ['4..5M', /not understood/],
    ['.5M', /not understood/],
    ['4 M B extra', /not understood/],
    ['1e3', /not understood/],
    ['0x10', /not understood/],
    ['1.5B', /not a whole number of bytes/],
    ['0.1K', /not a whole number of bytes/],
    ['99999999T', /larger than/],
    ['9'.repeat(100), /too long/],
  ])('refuses %j with a clear message', (text, message) => {
    expect(() => parseSize(text)).toThrow(message);
  });

  it('throws a plain Error (sizes come from options, not requests)', () => {
    try {
      parseSize('lots');
      expect.unreachable();
    } catch (err) {
      expect((err as Error).constructor).toBe(Error);
      expect((err as Error).message).toContain('"lots"');
    }
  });
});

describe('formatSize', () => {
  it.each([
    [0, '0 B'],
    [100, '100 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [4 * MiB, '4.0 MiB'],
    [1.5 * GiB, '1.5 GiB'],
    [MiB - 1, '1.0 MiB'],
    [3 * TiB, '3.0 TiB'],
    [1024 * TiB, '1.0 PiB'],
  ])('prints %d bytes as %j', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });

  it('reads back (to one decimal) what parseSize reads', () => {
    for (const text of ['4.0 MiB', '1.5 GiB', '512.0 KiB']) {
      expect(formatSize(parseSize(text))).toBe(text);
    }
  });

  it('refuses negative and non-finite counts', () => {
    expect(() => formatSize(-1)).toThrow(RangeError);
    expect(() => formatSize(Number.NaN)).toThrow(RangeError);
    expect(() => formatSize(Infinity)).toThrow(RangeError);
  });
});
