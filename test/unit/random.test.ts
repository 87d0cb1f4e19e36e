/**
 * Random sources. Goal: SeededRandom is exactly xoshiro128** seeded by splitmix32 (so a printed
 * seed replays a run on any machine), int() is unbiased and in range, CryptoRandom behaves like
 * any Random, and seedFromEnv replays a given seed or invents a fresh one. Method: pinned output
 * of the C reference implementation, fixed-seed chi-square checks (deterministic, so never
 * flaky), and argument checks.
 */
import { describe, expect, it } from 'vitest';
import {
  CryptoRandom,
  MAX_SEED,
  SeededRandom,
  seedFromEnv,
  type Random,
} from '../../src/runtime/random.js';

/** Pearson's chi-square statistic of observed counts against equal expected counts. */
function chiSquare(counts: number[]): number {
  const total = counts.reduce((a, b) => a + b, 0);
  const expected = total / counts.length;
  return counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
}

function draws(random: SeededRandom, count: number): number[] {
  return Array.from({ length: count }, () => random.nextUint32());
}

describe('SeededRandom', () => {
  it('matches the C reference of xoshiro128** seeded by splitmix32 (seeds 0, 1, 2^32 - 1)', () => {
    // Printed by the reference code of Blackman and Vigna, state filled by splitmix32(seed).
    expect(draws(new SeededRandom(0), 5)).toEqual([
      3809008728, 1133695204, 53579671, 2891528803, 139681546,
    ]);
    expect(draws(new SeededRandom(1), 5)).toEqual([
      2442144158, 3238099751, 3819917871, 2104621829, 2021136066,
    ]);
    expect(draws(new SeededRandom(MAX_SEED), 5)).toEqual([
      835879718, 1921286648, 2356205009, 1885780724, 980451116,
    ]);
  });

  it('gives the same mixed sequence of next() and int() for the same seed, and another for another seed', () => {
    const sequence = (seed: number): number[] => {
      const random = new SeededRandom(seed);
      return Array.from({ length: 100 }, (_, i) => (i % 2 ? random.next() : random.int(1_000 + i)));
    };
    expect(sequence(42)).toEqual(sequence(42));
    expect(sequence(43)).not.toEqual(sequence(42));
    expect(new SeededRandom(42).seed).toBe(42);
  });

  it('keeps next() in [0, 1) and int(n) in [0, n) for n from 1 to 2^32', () => {
    const random = new SeededRandom(7);
    for (let i = 0; i < 10_000; i++) {
      const x = random.next();
      expect(x >= 0 && x < 1).toBe(true);
    }
    for (const n of [1, 2, 3, 10, 1_000_003, 2 ** 31, 3 * 2 ** 30, 2 ** 32]) {
      for (let i = 0; i < 1_000; i++) {
        const v = random.int(n);
        expect(Number.isInteger(v) && v >= 0 && v < n).toBe(true);
      }
    }
    expect(new SeededRandom(7).int(1)).toBe(0);
  });

  it('draws int(10) uniformly (chi-square, 100,000 draws, fixed seed)', () => {
    const random = new SeededRandom(12_345);
    const counts = new Array<number>(10).fill(0);
    for (let i = 0; i < 100_000; i++) counts[random.int(10)]!++;
    // 27.88 is the 0.999 quantile for 9 degrees of freedom.
    expect(chiSquare(counts)).toBeLessThan(27.88);
  });

  it('has no modulo bias: int(3 * 2^30) falls in each third equally often', () => {
    // Plain `word % n` would put half of all draws in the first third for this n.
    const random = new SeededRandom(99);
    const counts = [0, 0, 0];
    for (let i = 0; i < 30_000; i++) counts[Math.floor(random.int(3 * 2 ** 30) / 2 ** 30)]!++;
    // 13.82 is the 0.999 quantile for 2 degrees of freedom.
    expect(chiSquare(counts)).toBeLessThan(13.82);
  });

  it('fork() is repeatable and independent of its parent', () => {
    const a = new SeededRandom(5);
    const b = new SeededRandom(5);
    const forkA = a.fork();
    const forkB = b.fork();
    expect(forkA.seed).toBe(forkB.seed);
    expect(draws(forkA, 10)).toEqual(draws(forkB, 10));
    expect(draws(a, 10)).toEqual(draws(b, 10));
    expect(draws(new SeededRandom(5).fork(), 10)).not.toEqual(draws(new SeededRandom(5), 10));
  });

  it('rejects seeds outside [0, 2^32 - 1] and bounds outside [1, 2^32] with RangeError', () => {
    for (const seed of [-1, 1.5, 2 ** 32, Number.NaN]) {
      expect(() => new SeededRandom(seed)).toThrow(RangeError);
    }
    const random = new SeededRandom(1);
    for (const n of [0, -1, 1.5, 2 ** 32 + 1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => random.int(n)).toThrow(RangeError);
    }
  });
});

describe('CryptoRandom', () => {
  it('keeps next() and int() in range over several refills, has no seed, and differs between instances', () => {
    const random: Random = new CryptoRandom();
    expect(random.seed).toBeUndefined();
    for (let i = 0; i < 2_000; i++) {
      const x = random.next();
      expect(x >= 0 && x < 1).toBe(true);
      const v = random.int(6);
      expect(Number.isInteger(v) && v >= 0 && v < 6).toBe(true);
    }
    const a = new CryptoRandom();
    const b = new CryptoRandom();
    // Four 32-bit words in a row coincide with probability 2^-128.
    expect(draws4(a)).not.toEqual(draws4(b));
    expect(() => a.int(0)).toThrow(RangeError);
  });
});

function draws4(random: CryptoRandom): number[] {
  return Array.from({ length: 4 }, () => random.nextUint32());
}

describe('seedFromEnv', () => {
  it('returns the variable when it holds a decimal integer in [0, 2^32 - 1]', () => {
    expect(seedFromEnv({ MEMFLOW_SEED: '42' })).toBe(42);
    expect(seedFromEnv({ MEMFLOW_SEED: ' 7 ' })).toBe(7);
    expect(seedFromEnv({ MEMFLOW_SEED: '0' })).toBe(0);
    expect(seedFromEnv({ MEMFLOW_SEED: '4294967295' })).toBe(MAX_SEED);
    expect(seedFromEnv({ OTHER_SEED: '9' }, 'OTHER_SEED')).toBe(9);
  });

  it('rejects anything else loudly, so a mistyped seed never runs a different test', () => {
    for (const value of ['abc', '-1', '1.5', '4294967296', '1e3', '0x10', '12abc']) {
      expect(() => seedFromEnv({ MEMFLOW_SEED: value })).toThrow(RangeError);
    }
  });

  it('invents a fresh valid seed when the variable is unset or empty', () => {
    for (const env of [{}, { MEMFLOW_SEED: '' }, { MEMFLOW_SEED: '   ' }]) {
      const seed = seedFromEnv(env);
      expect(Number.isInteger(seed) && seed >= 0 && seed <= MAX_SEED).toBe(true);
      expect(() => new SeededRandom(seed)).not.toThrow();
    }
  });
});
