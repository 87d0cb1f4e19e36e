/**
 * Rank 0's side of the point-to-point chunk requests: sends a DataRequest to one data rank and
 * waits for the matching DataReply. One receive loop takes every reply (they come back in any
 * order) and settles the request with the same reqId; each request has a deadline on the
 * injected clock, and fails at once when the rank is marked failed.
 */
import { ANY_SOURCE, type Communicator } from '../comm/communicator.js';
import { isCommError } from '../comm/errors.js';
import { StoreError } from '../store/errors.js';
import type { StoreErrorCode } from '../protocol/client-protocol.js';
import { TAG_DATA_REPLY, TAG_DATA_REQUEST, type DataReply, type DataRequest } from './messages.js';

type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;
export type DataRequestBody = DistributiveOmit<DataRequest, 'reqId'>;

interface Pending {
  rank: number;
  resolve: (r: { reply: Extract<DataReply, { ok: true }>; payload: Uint8Array[] }) => void;
  reject: (e: unknown) => void;
  cancelTimer: () => void;
}

export class DataClient {
  private nextReqId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly stop = new AbortController();

  constructor(
    private readonly comm: Communicator,
    private readonly timeoutMs: number,
  ) {
    void this.receiveLoop();
  }

  /**
   * Sends `body` (+ payload frames) to world rank `rank`. Resolves with the reply and its payload;
   * rejects with a StoreError: the data rank's own code (STORE_CORRUPT, STORE_NOT_FOUND,
   * STORE_NO_SPACE, ...), STORE_TIMEOUT when it does not answer in time, STORE_UNAVAILABLE when
   * it is known to have failed.
   */
  request(
    rank: number,
    body: DataRequestBody,
    payload: readonly Uint8Array[] = [],
  ): Promise<{ reply: Extract<DataReply, { ok: true }>; payload: Uint8Array[] }> {
    const reqId = this.nextReqId++;
    return new Promise((resolve, reject) => {
      const cancelTimer = this.comm.clock.setTimer(this.timeoutMs, () => {
        this.settle(
          reqId,
          undefined,
          new StoreError(
            'STORE_TIMEOUT',
            `rank ${rank} did not answer ${body.op} within ${this.timeoutMs} ms`,
            { rank },
          ),
        );
      });
      this.pending.set(reqId, { rank, resolve, reject, cancelTimer });
      this.comm
        .send(this.comm.localOf(rank), TAG_DATA_REQUEST, { ...body, reqId }, payload)
        .catch((err: unknown) => {
          this.settle(reqId, undefined, unavailable(rank, err));
        });
    });
  }

  /**
   * Requests waiting for a reply, per rank (ranks with none are absent). One pass over every
   * request rank 0 has out, so a caller asks once per decision, not once per rank compared.
   */
  inFlightByRank(): Map<number, number> {
    const counts = new Map<number, number>();
    for (const p of this.pending.values()) counts.set(p.rank, (counts.get(p.rank) ?? 0) + 1);
    return counts;
  }

  /** Fails every request waiting on `rank` (it was declared dead). */
  failRank(rank: number, reason: string): void {
    for (const [reqId, p] of [...this.pending]) {
      if (p.rank === rank)
        this.settle(
          reqId,
          undefined,
          new StoreError('STORE_UNAVAILABLE', `rank ${rank} ${reason}`, { rank }),
        );
    }
  }

  close(): void {
    this.stop.abort();
    for (const reqId of [...this.pending.keys()])
      this.settle(
        reqId,
        undefined,
        new StoreError('STORE_UNAVAILABLE', 'the coordinator is shutting down'),
      );
  }

  private settle(
    reqId: number,
    ok: { reply: Extract<DataReply, { ok: true }>; payload: Uint8Array[] } | undefined,
    err?: unknown,
  ): void {
    const p = this.pending.get(reqId);
    if (!p) return;
    this.pending.delete(reqId);
    p.cancelTimer();
    if (ok) p.resolve(ok);
    else p.reject(err);
  }

  private async receiveLoop(): Promise<void> {
    for (;;) {
      let msg;
      try {
        msg = await this.comm.recv<DataReply>(ANY_SOURCE, TAG_DATA_REPLY, {
          timeoutMs: Infinity,
          signal: this.stop.signal,
        });
      } catch (err) {
        if (this.stop.signal.aborted || isCommError(err, 'COMM_CLOSED')) return;
        throw err;
      }
      const reply = msg.data;
      if (reply.ok) this.settle(reply.reqId, { reply, payload: msg.payload });
      else
        this.settle(
          reply.reqId,
          undefined,
          new StoreError(reply.code as StoreErrorCode, reply.message, {
            rank: this.comm.worldRankOf(msg.source),
          }),
        );
    }
  }
}

function unavailable(rank: number, cause: unknown): StoreError {
  const why = isCommError(cause) ? cause.message : String(cause);
  return new StoreError(
    'STORE_UNAVAILABLE',
    `cannot reach rank ${rank}: ${why}`,
    { rank },
    { cause },
  );
}
