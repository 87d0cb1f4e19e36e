/**
 * The client layer's one error class. A DfsError carries either a code that crossed the wire from
 * the coordinator (STORE_*, passed through untouched with its message and detail) or a CLIENT_*
 * code for what went wrong on this side. The CLI maps every code to an exit status in one table
 * (src/cli/exit-codes.ts) and prints the message as one line, so messages name the thing at fault
 * and the reason, and never need a stack trace to be understood.
 */
import type { StoreErrorCode } from '../protocol/client-protocol.js';

export type ClientErrorCode =
  /** No reply within the deadline, or the connection was refused: detail.server, detail.op. */
  | 'CLIENT_UNREACHABLE'
  /** A local path is missing, unreadable, a directory, or not writable: detail.path, detail.reason. */
  | 'CLIENT_LOCAL_PATH'
  /** The download target exists and `force` was not given: detail.path. */
  | 'CLIENT_EXISTS'
  /** A chunk or the whole file did not match its checksum; nothing was handed out. */
  | 'CLIENT_INTEGRITY'
  /** The local file changed size while it was being uploaded; the upload was aborted. */
  | 'CLIENT_FILE_CHANGED'
  /** The coordinator sent a reply this client cannot understand (wrong shape or types). */
  | 'CLIENT_BAD_REPLY'
  /** A bad argument from the caller: a malformed server address, a bad timeout. */
  | 'CLIENT_BAD_ARGUMENT'
  /** A JSON dataset given to putRecords is malformed or its records lack usable IDs: detail.offset. */
  | 'CLIENT_BAD_DATASET'
  /** The caller's AbortSignal fired (Ctrl-C in the CLI). */
  | 'CLIENT_ABORTED'
  /** The client was closed while the request was outstanding. */
  | 'CLIENT_CLOSED';

export type DfsErrorCode = StoreErrorCode | ClientErrorCode;

/** Every code, for exhaustive tables and tests. */
export const CLIENT_ERROR_CODES: readonly ClientErrorCode[] = [
  'CLIENT_UNREACHABLE',
  'CLIENT_LOCAL_PATH',
  'CLIENT_EXISTS',
  'CLIENT_INTEGRITY',
  'CLIENT_FILE_CHANGED',
  'CLIENT_BAD_REPLY',
  'CLIENT_BAD_ARGUMENT',
  'CLIENT_BAD_DATASET',
  'CLIENT_ABORTED',
  'CLIENT_CLOSED',
];

export const STORE_ERROR_CODES: readonly StoreErrorCode[] = [
  'STORE_BAD_REQUEST',
  'STORE_BAD_NAME',
  'STORE_NOT_FOUND',
  'STORE_NO_SPACE',
  'STORE_CORRUPT',
  'STORE_UNAVAILABLE',
  'STORE_BUSY',
  'STORE_CONFLICT',
  'STORE_TIMEOUT',
  'STORE_INTERNAL',
];

export class DfsError extends Error {
  override readonly name = 'DfsError';

  constructor(
    readonly code: DfsErrorCode,
    message: string,
    readonly detail: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isDfsError(err: unknown, code?: DfsErrorCode): err is DfsError {
  return err instanceof DfsError && (code === undefined || err.code === code);
}
