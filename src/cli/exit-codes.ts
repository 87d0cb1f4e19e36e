/**
 * dfs-client's exit statuses: one table from error code to status, so scripts can tell "not
 * there" from "store down" from "full" without parsing messages.
 *
 *   0 ok · 1 anything else · 2 usage · 3 no such file in the store · 4 store unreachable or timed
 *   out · 5 not enough space · 130 interrupted (Ctrl-C, as shells report SIGINT)
 *
 * Local path problems (missing or unreadable file to upload, existing target without --force)
 * are "anything else": 1. The table is a Record over every code, so adding a code without
 * deciding its status is a compile error.
 */
import type { DfsErrorCode } from '../client/errors.js';

export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  UNREACHABLE: 4,
  NO_SPACE: 5,
  INTERRUPTED: 130,
} as const;

export const EXIT_STATUS: Readonly<Record<DfsErrorCode, number>> = {
  STORE_BAD_REQUEST: EXIT.FAILURE,
  STORE_BAD_NAME: EXIT.FAILURE,
  STORE_NOT_FOUND: EXIT.NOT_FOUND,
  STORE_NO_SPACE: EXIT.NO_SPACE,
  STORE_CORRUPT: EXIT.FAILURE,
  STORE_UNAVAILABLE: EXIT.UNREACHABLE,
  STORE_BUSY: EXIT.FAILURE,
  STORE_CONFLICT: EXIT.FAILURE,
  STORE_TIMEOUT: EXIT.UNREACHABLE,
  STORE_INTERNAL: EXIT.FAILURE,
  CLIENT_UNREACHABLE: EXIT.UNREACHABLE,
  CLIENT_LOCAL_PATH: EXIT.FAILURE,
  CLIENT_EXISTS: EXIT.FAILURE,
  CLIENT_INTEGRITY: EXIT.FAILURE,
  CLIENT_FILE_CHANGED: EXIT.FAILURE,
  CLIENT_BAD_REPLY: EXIT.FAILURE,
  CLIENT_BAD_ARGUMENT: EXIT.USAGE,
  CLIENT_BAD_DATASET: EXIT.FAILURE,
  CLIENT_ABORTED: EXIT.INTERRUPTED,
  CLIENT_CLOSED: EXIT.FAILURE,
};

/**
 * The exit status for an error: the table's entry for its `code`, or 1 for anything without a
 * known code (an unknown code from a newer store included).
 */
export function exitStatusOf(err: unknown): number {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  if (typeof code === 'string' && Object.prototype.hasOwnProperty.call(EXIT_STATUS, code)) {
    return EXIT_STATUS[code as DfsErrorCode];
  }
  return EXIT.FAILURE;
}
