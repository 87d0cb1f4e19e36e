/**
 * Errors of the message-passing runtime. Each carries a prefixed code and plain data, so it can
 * cross ranks as a message and be mapped to an exit status in one table.
 */
export type CommErrorCode =
  | 'COMM_TIMEOUT' // a wait ran past its deadline; detail.ranks names whom we waited for
  | 'COMM_ABORTED' // the caller's AbortSignal fired
  | 'COMM_PEER_FAILED' // a peer is known to be dead (crashed, or declared dead); detail.ranks
  | 'COMM_QUEUE_FULL' // a bounded queue is full; the caller must slow down or fail
  | 'COMM_CLOSED' // the transport or communicator was closed
  | 'COMM_BAD_MESSAGE' // a frame could not be decoded
  | 'COMM_BAD_ARGUMENT' // a rank, root or size out of range
  | 'COMM_WIREUP'; // rendezvous failed (bad address, timeout, duplicate rank)

export interface CommErrorDetail {
  ranks?: number[];
  [key: string]: unknown;
}

export class CommError extends Error {
  override readonly name = 'CommError';

  constructor(
    readonly code: CommErrorCode,
    message: string,
    readonly detail: CommErrorDetail = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isCommError(err: unknown, code?: CommErrorCode): err is CommError {
  return err instanceof CommError && (code === undefined || err.code === code);
}
