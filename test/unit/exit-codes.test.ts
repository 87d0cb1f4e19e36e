/**
 * dfs-client's exit statuses. Goal: the table says what the CLI promises scripts — 3 for a name
 * the store does not have, 4 for a store that cannot be reached or timed out, 5 for no space, 2
 * for usage, 130 for an interrupt, 1 for everything else — and covers every error code. Method:
 * look up every code, and errors with unknown or missing codes.
 */
import { describe, expect, it } from 'vitest';
import { EXIT, EXIT_STATUS, exitStatusOf } from '../../src/cli/exit-codes.js';
import {
  CLIENT_ERROR_CODES,
  DfsError,
  STORE_ERROR_CODES,
  type DfsErrorCode,
} from '../../src/client/errors.js';

describe('exit statuses', () => {
  it.each<[DfsErrorCode, number]>([
    ['STORE_NOT_FOUND', 3],
    ['CLIENT_UNREACHABLE', 4],
    ['STORE_TIMEOUT', 4],
    ['STORE_UNAVAILABLE', 4],
    ['STORE_NO_SPACE', 5],
    ['CLIENT_BAD_ARGUMENT', 2],
    ['CLIENT_ABORTED', 130],
    ['CLIENT_LOCAL_PATH', 1],
    ['CLIENT_EXISTS', 1],
    ['CLIENT_INTEGRITY', 1],
    ['STORE_BAD_NAME', 1],
    ['STORE_CORRUPT', 1],
    ['STORE_INTERNAL', 1],
  ])('%s exits %i', (code, status) => {
    expect(EXIT_STATUS[code]).toBe(status);
    expect(exitStatusOf(new DfsError(code, 'm'))).toBe(status);
  });

  it('has an entry for every store and client code, and nothing else', () => {
    const all = [...STORE_ERROR_CODES, ...CLIENT_ERROR_CODES].sort();
    expect(Object.keys(EXIT_STATUS).sort()).toEqual(all);
    for (const status of Object.values(EXIT_STATUS)) {
      expect(Object.values(EXIT)).toContain(status);
    }
  });

  it('exits 1 for errors without a known code (an unknown store code, a plain Error, a non-error)', () => {
    expect(exitStatusOf(new DfsError('STORE_FUTURE' as DfsErrorCode, 'm'))).toBe(1);
    expect(exitStatusOf(new Error('boom'))).toBe(1);
    expect(exitStatusOf(Object.assign(new Error('x'), { code: 'toString' }))).toBe(1);
    expect(exitStatusOf(undefined)).toBe(1);
    expect(exitStatusOf('text')).toBe(1);
  });

  it('keeps the documented numbers', () => {
    expect(EXIT).toEqual({
      OK: 0,
      FAILURE: 1,
      USAGE: 2,
      NOT_FOUND: 3,
      UNREACHABLE: 4,
      NO_SPACE: 5,
      INTERRUPTED: 130,
    });
  });
});
