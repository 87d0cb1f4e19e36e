/**
 * Errors of the storage layer. One class, a prefixed code from the client protocol and plain
 * data, so an error raised on a data rank can cross to the coordinator and on to a client as a
 * WireError, and the CLI can map its code to an exit status in one table.
 */
import type { StoreErrorCode, WireError } from '../protocol/client-protocol.js';

export type { StoreErrorCode, WireError };

/** Plain data only (numbers, strings, arrays, plain objects): it is sent as msgpack. */
export type StoreErrorDetail = Record<string, unknown>;

export class StoreError extends Error {
  override readonly name = 'StoreError';

  constructor(
    readonly code: StoreErrorCode,
    message: string,
    readonly detail: StoreErrorDetail = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Whether `err` is a StoreError (with the given code, if one is given). */
export function isStoreError(err: unknown, code?: StoreErrorCode): err is StoreError {
  return err instanceof StoreError && (code === undefined || err.code === code);
}

// A Record over the union makes the compiler reject this table when a code is added to the
// protocol and forgotten here, so fromWireError never misreads a newer code as an older one.
const KNOWN_CODES: Record<StoreErrorCode, true> = {
  STORE_BAD_REQUEST: true,
  STORE_BAD_NAME: true,
  STORE_NOT_FOUND: true,
  STORE_NO_SPACE: true,
  STORE_CORRUPT: true,
  STORE_UNAVAILABLE: true,
  STORE_BUSY: true,
  STORE_CONFLICT: true,
  STORE_TIMEOUT: true,
  STORE_INTERNAL: true,
};

/** Whether `code` is one of the StoreErrorCodes this build knows. */
export function isStoreErrorCode(code: unknown): code is StoreErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(KNOWN_CODES, code);
}

/**
 * The plain-data form of any thrown value, for a reply or a message to another rank. A StoreError
 * keeps its code, message and detail (detail is left out when empty); anything else is a bug in
 * our code or an unexpected lower-level failure, so it becomes STORE_INTERNAL carrying the
 * original message and error name. Never throws. The cause is not sent: it may hold objects that
 * do not serialise, and the receiving side cannot act on it.
 */
export function toWireError(err: unknown): WireError {
  if (err instanceof StoreError) {
    const wire: WireError = { code: err.code, message: err.message };
    if (Object.keys(err.detail).length > 0) wire.detail = err.detail;
    return wire;
  }
  if (err instanceof Error) {
    return { code: 'STORE_INTERNAL', message: err.message, detail: { errorName: err.name } };
  }
  return { code: 'STORE_INTERNAL', message: String(err) };
}

/**
 * The StoreError a WireError describes, for re-throwing on the receiving side. A code this build
 * does not know (a newer peer) becomes STORE_INTERNAL with detail.wireCode holding the original,
 * so no caller ever sees a code outside StoreErrorCode. Never throws.
 */
export function fromWireError(w: WireError): StoreError {
  const detail: StoreErrorDetail =
    typeof w.detail === 'object' && w.detail !== null ? { ...w.detail } : {};
  const message = typeof w.message === 'string' ? w.message : String(w.message);
  if (isStoreErrorCode(w.code)) return new StoreError(w.code, message, detail);
  return new StoreError('STORE_INTERNAL', message, { ...detail, wireCode: String(w.code) });
}
