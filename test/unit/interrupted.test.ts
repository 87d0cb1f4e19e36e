/**
 * retryOnInterrupt, which the ZeroMQ transport wraps around connect, socket monitors and
 * endpoint reads. Goal: a signal landing in one of those calls no longer ends the rank, and no
 * other error is hidden or retried. Method: calls that fail with errors shaped as zeromq.js
 * throws them (an Error with errno and code), a given number of times.
 */
import { describe, expect, it } from 'vitest';
import { INTERRUPT_RETRIES, retryOnInterrupt } from '../../src/comm/interrupted.js';

function zmqError(code: string, errno: number, message: string): Error {
  return Object.assign(new Error(message), { code, errno });
}

/** A call that fails with `error` `failures` times, then returns 'done'; counts its calls. */
function failing(
  failures: number,
  error: () => Error,
): { call: () => string; calls: () => number } {
  let calls = 0;
  return {
    call: () => {
      calls++;
      if (calls <= failures) throw error();
      return 'done';
    },
    calls: () => calls,
  };
}

describe('retryOnInterrupt', () => {
  it('calls again after EINTR and returns what the call returns', () => {
    const f = failing(3, () => zmqError('EINTR', 4, 'Interrupted system call'));
    expect(retryOnInterrupt(f.call)).toBe('done');
    expect(f.calls()).toBe(4);
  });

  it('calls once when nothing interrupts it', () => {
    const f = failing(0, () => new Error('unused'));
    expect(retryOnInterrupt(f.call)).toBe('done');
    expect(f.calls()).toBe(1);
  });

  it('throws any other error at once, untouched', () => {
    const refused = zmqError('EADDRINUSE', 98, 'Address already in use');
    const f = failing(5, () => refused);
    expect(() => retryOnInterrupt(f.call)).toThrow(refused);
    expect(f.calls()).toBe(1);
  });

  it('gives up after INTERRUPT_RETRIES interrupted attempts and throws the last EINTR', () => {
    const f = failing(Infinity, () => zmqError('EINTR', 4, 'Interrupted system call'));
    expect(() => retryOnInterrupt(f.call)).toThrow('Interrupted system call');
    expect(f.calls()).toBe(INTERRUPT_RETRIES);
  });

  it('does not take a thrown non-object for an interrupt', () => {
    let calls = 0;
    expect(() =>
      retryOnInterrupt(() => {
        calls++;
        // eslint-disable-next-line @typescript-eslint/only-throw-error -- what a native call may do
        throw 'EINTR';
      }),
    ).toThrow('EINTR');
    expect(calls).toBe(1);
  });
});
