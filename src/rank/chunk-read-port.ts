/**
 * A data rank's read port: clients read copies of large chunks here, straight from the rank that
 * holds them (docs/PROTOCOL.md, "Direct reads"). Through rank 0 each byte of a retrieve crosses
 * two connections and rank 0 spends as much CPU relaying it as the client spends receiving it;
 * read here, it crosses one. Rank 0 still pins the version and says where the copies are; a
 * client that gets an error or no answer here reads the chunk through rank 0, which knows more
 * (other copies, ranks it has declared dead).
 *
 * The port serves only reads of copies the rank holds, verified against their checksum as every
 * read is (ChunkStore.get), through the rank's own bound on concurrent requests.
 */
import { pack } from 'msgpackr';
import { DIRECT_READS_PER_CLIENT } from '../protocol/client-protocol.js';
import { StoreError, toWireError } from '../store/errors.js';
import type { ClientChannel } from './coordinator.js';
import { decodeChunkRead } from './validate.js';

export interface ChunkReadPortOptions {
  /** Reads a copy, verified (ChunkStore.get). */
  get(chunkId: string): Promise<Uint8Array>;
  /** Shared with rank 0's requests: at most this many reads at once across both. */
  acquire(): Promise<void>;
  release(): void;
  /** A copy here failed its checksum: rank 0 should replace it. */
  onBadCopy(chunkId: string, reason: string): void;
  /** Called as each read begins (the scrub slows down while reads keep coming). */
  onRequest?: () => void;
}

export class ChunkReadPort {
  /** Outstanding reads per client (hex id), so one client cannot queue unbounded work here. */
  private readonly outstanding = new Map<string, number>();
  private served = { count: 0, bytes: 0 };

  constructor(
    private readonly channel: ClientChannel,
    private readonly options: ChunkReadPortOptions,
  ) {
    channel.onMessage((client, frames) => void this.handle(client, frames));
  }

  /** Reads answered with bytes since start, and their bytes (a copy: the counters move on). */
  get readsServed(): { count: number; bytes: number } {
    return { ...this.served };
  }

  private async handle(client: Buffer, frames: Buffer[]): Promise<void> {
    const { id, request, error } = decodeChunkRead(frames[0]);
    const key = client.toString('hex');
    const count = this.outstanding.get(key) ?? 0;
    let reply: Record<string, unknown>;
    let payload: Uint8Array[] = [];
    if (!request) {
      reply = { id, ok: false, error: toWireError(error) };
    } else if (count >= DIRECT_READS_PER_CLIENT) {
      const busy = new StoreError(
        'STORE_BUSY',
        `more than ${DIRECT_READS_PER_CLIENT} reads outstanding at this data rank`,
        { limit: DIRECT_READS_PER_CLIENT },
      );
      reply = { id, ok: false, error: toWireError(busy) };
    } else {
      this.outstanding.set(key, count + 1);
      try {
        const bytes = await this.read(request.chunkId);
        payload = [bytes];
        reply = { id, ok: true };
        this.served.count++;
        this.served.bytes += bytes.length;
      } catch (err) {
        reply = { id, ok: false, error: toWireError(err) };
      } finally {
        const left = (this.outstanding.get(key) ?? 1) - 1;
        if (left > 0) this.outstanding.set(key, left);
        else this.outstanding.delete(key);
      }
    }
    await this.channel.send(client, [pack(reply), ...payload]).catch(() => {
      // The client went away: nothing to tell it.
    });
  }

  private async read(chunkId: string): Promise<Uint8Array> {
    this.options.onRequest?.();
    await this.options.acquire();
    try {
      return await this.options.get(chunkId);
    } catch (err) {
      // Only a copy that is here and bad. Any client can ask for any id, and rank 0 looks each
      // notice up in its whole index, so unknown ids are not passed on; a copy lost from under
      // the store is found by rank 0's own reads, the scrub, and the inventory at restart.
      if (err instanceof StoreError && err.code === 'STORE_CORRUPT')
        this.options.onBadCopy(chunkId, err.message);
      throw err;
    } finally {
      this.options.release();
    }
  }
}
