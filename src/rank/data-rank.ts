/**
 * A data rank: keeps chunk copies in its ChunkStore, answers rank 0's point-to-point chunk
 * requests, and takes part in the collectives rank 0's commands call for.
 *
 * Two loops run side by side: the request loop (put/get/delete of single chunks, many at once,
 * bounded by `maxConcurrentRequests`) and the command loop (one collective at a time, in rank 0's
 * order). Both stop when `signal` aborts or rank 0 sends 'shutdown'.
 */
import { ANY_SOURCE, type Communicator } from '../comm/communicator.js';
import { isCommError } from '../comm/errors.js';
import type { ChunkStore } from '../store/chunk-store.js';
import { StoreError } from '../store/errors.js';
import {
  TAG_COMMAND,
  TAG_DATA_REPLY,
  TAG_DATA_REQUEST,
  type Command,
  type DataReply,
  type DataRequest,
  type InventoryReport,
  type RankReport,
} from './messages.js';
import { Semaphore } from './semaphore.js';

export interface DataRankOptions {
  host: string;
  /** The capacity this rank offers (from --capacity, the hostfile, or the disk's free space). */
  capacityBytes: number;
  maxConcurrentRequests?: number;
  log?: (line: string) => void;
}

export class DataRank {
  private readonly slots: Semaphore;
  private readonly stop = new AbortController();

  constructor(
    private readonly comm: Communicator,
    private readonly store: ChunkStore,
    private readonly options: DataRankOptions,
  ) {
    this.slots = new Semaphore(options.maxConcurrentRequests ?? 16);
  }

  /** Runs until rank 0 says shutdown or `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const onAbort = (): void => this.stop.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await Promise.all([this.requestLoop(), this.commandLoop()]);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  report(): RankReport {
    return {
      rank: this.comm.worldRank,
      host: this.options.host,
      usedBytes: this.store.usedBytes(),
      capacityBytes: this.options.capacityBytes,
      chunkCount: this.store.list().length,
    };
  }

  private async requestLoop(): Promise<void> {
    for (;;) {
      let msg;
      try {
        msg = await this.comm.recv<DataRequest>(ANY_SOURCE, TAG_DATA_REQUEST, {
          timeoutMs: Infinity,
          signal: this.stop.signal,
        });
      } catch (err) {
        if (this.stop.signal.aborted || isCommError(err, 'COMM_CLOSED')) return;
        throw err;
      }
      await this.slots.acquire();
      const source = msg.source;
      void this.serve(msg.data, msg.payload[0])
        .then(({ reply, payload }) => this.comm.send(source, TAG_DATA_REPLY, reply, payload))
        .catch((err: unknown) =>
          this.options.log?.(`reply to rank ${source} failed: ${String(err)}`),
        )
        .finally(() => this.slots.release());
    }
  }

  private async serve(
    req: DataRequest,
    bytes: Uint8Array | undefined,
  ): Promise<{ reply: DataReply; payload: Uint8Array[] }> {
    try {
      switch (req.op) {
        case 'put':
          if (!bytes)
            throw new StoreError('STORE_BAD_REQUEST', `put of ${req.chunkId} carries no bytes`);
          await this.store.put(req.chunkId, bytes, req.checksum);
          return { reply: { reqId: req.reqId, ok: true }, payload: [] };
        case 'get':
          return {
            reply: { reqId: req.reqId, ok: true },
            payload: [await this.store.get(req.chunkId)],
          };
        case 'delete': {
          let deleted = 0;
          for (const id of req.chunkIds) if (await this.store.delete(id)) deleted++;
          return { reply: { reqId: req.reqId, ok: true, deleted }, payload: [] };
        }
      }
    } catch (err) {
      const code = err instanceof StoreError ? err.code : 'STORE_INTERNAL';
      const message = err instanceof Error ? err.message : String(err);
      return { reply: { reqId: req.reqId, ok: false, code, message }, payload: [] };
    }
  }

  private async commandLoop(): Promise<void> {
    const wait = { timeoutMs: Infinity, signal: this.stop.signal };
    for (;;) {
      let command: Command;
      try {
        command = (await this.comm.recv<Command>(0, TAG_COMMAND, wait)).data;
      } catch (err) {
        if (this.stop.signal.aborted || isCommError(err, 'COMM_CLOSED')) return;
        throw err;
      }
      switch (command.op) {
        case 'inventory': {
          const report: InventoryReport = { ...this.report(), chunks: this.store.list() };
          await this.comm.gather(report, 0);
          break;
        }
        case 'report':
          await this.comm.gather(this.report(), 0);
          break;
        case 'collect-garbage': {
          const ids = (await this.comm.scatter<string[]>(undefined, 0)) ?? [];
          let deleted = 0;
          for (const id of ids) if (await this.store.delete(id)) deleted++;
          if (deleted > 0) this.options.log?.(`removed ${deleted} chunk copies no file refers to`);
          await this.comm.gather(deleted, 0);
          break;
        }
        case 'shutdown':
          this.stop.abort('shutdown');
          return;
      }
    }
  }
}
