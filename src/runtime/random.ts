/**
 * Randomness is an input, like time. Code that decides anything at random (fault injection,
 * backoff jitter, placement tie-breaks) takes a Random, so a simulation can inject a SeededRandom
 * and replay a failing run exactly from one printed seed; production code gets a CryptoRandom.
 *
 * This module stays free of Node imports (the core never touches the world): CryptoRandom reads
 * the Web Crypto API on globalThis, which Node 20 provides.
 */
export interface Random {
  /** A uniformly distributed number in [0, 1). */
  next(): number;
  /**
   * A uniformly distributed integer in [0, maxExclusive), without modulo bias.
   * Throws RangeError unless maxExclusive is an integer in [1, 2^32].
   */
  int(maxExclusive: number): number;
  /** The seed that replays this sequence, for generators that have one. */
  readonly seed?: number;
}

const TWO_POW_32 = 0x1_0000_0000;
/** Largest seed accepted: seeds are 32-bit so they are short to print and to type back in. */
export const MAX_SEED = 0xffff_ffff;

/**
 * Shared arithmetic for generators that produce 32-bit words. Both public methods are defined in
 * terms of `nextUint32`, so a seeded sequence depends only on the order of calls.
 */
abstract class Uint32Random implements Random {
  /** A uniformly distributed integer in [0, 2^32). */
  abstract nextUint32(): number;

  next(): number {
    return this.nextUint32() / TWO_POW_32;
  }

  int(maxExclusive: number): number {
    if (!Number.isInteger(maxExclusive) || maxExclusive < 1 || maxExclusive > TWO_POW_32) {
      throw new RangeError(`int(maxExclusive) needs an integer in [1, 2^32], got ${maxExclusive}`);
    }
    // Rejection sampling: words at or above `limit` would make low results more likely than high
    // ones, so they are redrawn. Each draw is rejected with probability below 1/2, so the loop
    // ends after fewer than two draws on average.
    const limit = TWO_POW_32 - (TWO_POW_32 % maxExclusive);
    for (;;) {
      const word = this.nextUint32();
      if (word < limit) return word % maxExclusive;
    }
  }
}

/**
 * xoshiro128** (Blackman and Vigna, 2018): a small, fast generator with a period of 2^128 - 1 and
 * good statistical quality. The 32-bit seed is expanded into the 128-bit state with splitmix32,
 * as the authors recommend, so that nearby seeds give unrelated sequences.
 *
 * Contract: the same seed always yields the same sequence on every platform and Node version
 * (only 32-bit integer arithmetic is used). Throws RangeError unless seed is an integer in
 * [0, MAX_SEED].
 */
export class SeededRandom extends Uint32Random {
  readonly seed: number;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    super();
    if (!Number.isInteger(seed) || seed < 0 || seed > MAX_SEED) {
      throw new RangeError(`a seed must be an integer in [0, ${MAX_SEED}], got ${seed}`);
    }
    this.seed = seed;
    let x = seed | 0;
    const splitmix32 = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) | 0;
    };
    this.s0 = splitmix32();
    this.s1 = splitmix32();
    this.s2 = splitmix32();
    this.s3 = splitmix32();
    // The all-zero state is the one fixed point of xoshiro; splitmix32 cannot produce four zero
    // words in a row, but the guard costs nothing and documents the hazard.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9);
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result >>> 0;
  }

  /**
   * A new generator seeded from this one. Give each component of a simulation its own fork, so
   * that one component drawing more numbers does not shift every other component's sequence.
   */
  fork(): SeededRandom {
    return new SeededRandom(this.nextUint32());
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Words fetched from the operating system per call; amortises the cost of getRandomValues. */
const CRYPTO_BATCH_WORDS = 256;

/**
 * Unpredictable randomness from globalThis.crypto.getRandomValues (Web Crypto), for production.
 * It has no seed: nothing it decides can be replayed.
 */
export class CryptoRandom extends Uint32Random {
  private readonly words = new Uint32Array(CRYPTO_BATCH_WORDS);
  private used = CRYPTO_BATCH_WORDS;

  nextUint32(): number {
    if (this.used === CRYPTO_BATCH_WORDS) {
      globalThis.crypto.getRandomValues(this.words);
      this.used = 0;
    }
    // The index is always in range; the fallback only satisfies noUncheckedIndexedAccess.
    return this.words[this.used++] ?? 0;
  }
}

/**
 * The seed for a simulation test: the value of `env[name]` if it is set and not empty, otherwise
 * a fresh random seed. A failing test prints its seed; setting the variable to that value replays
 * the run exactly (`MEMFLOW_SEED=1234 npx vitest run ...`).
 *
 * Throws RangeError if the variable is set to anything but a decimal integer in [0, MAX_SEED]:
 * silently ignoring a mistyped seed would run a different test than the one being replayed.
 */
export function seedFromEnv(
  env: Readonly<Record<string, string | undefined>>,
  name = 'MEMFLOW_SEED',
): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return new CryptoRandom().nextUint32();
  const seed = /^\d{1,10}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(seed <= MAX_SEED)) {
    throw new RangeError(`${name} must be an integer in [0, ${MAX_SEED}], got '${raw}'`);
  }
  return seed;
}
