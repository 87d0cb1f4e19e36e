/**
 * A data rank's chunk port: clients read copies of large chunks here, straight from the rank that
 * holds them (docs/PROTOCOL.md, "Direct reads"). Through rank 0 each byte of a retrieve crosses
 * two connections and rank 0 spends as much CPU relaying it as the client spends receiving it;
 * read here, it crosses one. Rank 0 still pins the version and says where the copies are; a
 * client that gets an error or no answer here reads the chunk through rank 0, which knows more
 * (other copies, ranks it has declared dead).
 *
 * Clients also write copies of large chunks here (docs/PROTOCOL.md, "Direct writes"), but only
 * copies rank 0 placed on this rank and told it to expect (write-grants.ts): the bytes skip rank
 * 0, the placement and the commit do not.
 *
 * The port serves only reads of copies the rank holds, verified against their checksum as every
 * read is (ChunkStore.get), through the rank's own bound on concurrent requests. Reads may hold
 * or wait for only `readSlots` of those at once, so rank 0's requests (the copies of uploads,
 * repairs, deletes) always find some free, or wait behind at most that many reads, however many
 * clients read here: those slots are served in arrival order, and a flood of queued reads would
 * otherwise hold back uploads until every read ahead of them had run.
 */
import { pack } from 'msgpackr';
import { DIRECT_READS_PER_CLIENT, type ChunkWrite } from '../protocol/client-protocol.js';
import { StoreError, toWireError } from '../store/errors.js';
import type { ClientChannel } from './client-channel.js';
import { Semaphore } from '../runtime/semaphore.js';
import { decodeChunkPortRequest } from './validate.js';

export interface ChunkPortOptions {
  /** Reads a copy, verified (ChunkStore.get). */
  get(chunkId: string): Promise<Uint8Array>;
  /** The rank's bound on requests served at once, shared with rank 0's requests. */
  slots: Semaphore;
  /** Of those, how many reads may hold or wait for at once (see the file comment). */
  readSlots: number;
  /** A copy here failed its checksum: rank 0 should replace it. */
  onBadCopy(chunkId: string, reason: string): void;
  /** Called as each read begins (the scrub slows down while reads keep coming). */
  onRequest?: () => void;
  /**
   * Stores a client's copy of a chunk rank 0 placed here (WriteGrants.write, which takes the
   * rank's slots itself: these are rank 0's copies, so not bound by `readSlots`). Without it,
   * writes are refused and clients send their chunks through rank 0.
   */
  write?: (chunkId: string, checksum: string, bytes: Uint8Array) => Promise<void>;
}

/**
 * Bytes of copies read and not yet sent, beyond which new reads are refused (STORE_BUSY): a
 * client that asks and never takes its replies, from however many connections, holds at most this.
 */
const MAX_BYTES_HELD = 64 * 1024 * 1024;

/** Chunk ids already reported bad, remembered so that repeated reads of one do not repeat it. */
const MAX_REPORTED = 1024;

export class ChunkPort {
  /**
   * Requests per client (hex id) not yet answered, reads and writes, counted until the reply has
   * gone out, so that one client cannot make the rank read or hold unbounded data.
   */
  private readonly outstanding = new Map<string, number>();
  private bytesHeld = 0;
  private readonly reported = new Set<string>();
  private served = { count: 0, bytes: 0 };
  private readonly readSlots: Semaphore;

  constructor(
    private readonly channel: ClientChannel,
    private readonly options: ChunkPortOptions,
  ) {
    this.readSlots = new Semaphore(options.readSlots);
    channel.onMessage((client, frames) => void this.handle(client, frames));
  }

  /** Reads answered with bytes since start, and their bytes (a copy: the counters move on). */
  get readsServed(): { count: number; bytes: number } {
    return { ...this.served };
  }

  private async handle(client: Buffer, frames: Buffer[]): Promise<void> {
    const { id, request, error } = decodeChunkPortRequest(frames[0]);
    if (!request) return this.send(client, { id, ok: false, error: toWireError(error) });
    if (request.op === 'chunk-write') return this.handleWrite(client, id, request, frames[1]);
    const key = client.toString('hex');
    const count = this.outstanding.get(key) ?? 0;
    if (count >= DIRECT_READS_PER_CLIENT || this.bytesHeld >= MAX_BYTES_HELD) {
      const busy = new StoreError(
        'STORE_BUSY',
        count >= DIRECT_READS_PER_CLIENT
          ? `more than ${DIRECT_READS_PER_CLIENT} reads outstanding at this data rank`
          : 'this data rank has too many replies waiting to go out',
        { limit: DIRECT_READS_PER_CLIENT },
      );
      return this.send(client, { id, ok: false, error: toWireError(busy) });
    }
    const done = this.hold(key);
    let held = 0;
    try {
      let bytes: Uint8Array;
      try {
        bytes = await this.read(request.chunkId);
      } catch (err) {
        return await this.send(client, { id, ok: false, error: toWireError(err) });
      }
      held = bytes.length;
      this.bytesHeld += held;
      this.served.count++;
      this.served.bytes += bytes.length;
      await this.send(client, { id, ok: true }, bytes);
    } finally {
      this.bytesHeld -= held;
      done();
    }
  }

  /** A client's copy of a chunk placed here, counted against the same per-client bound as reads. */
  private async handleWrite(
    client: Buffer,
    id: number,
    request: ChunkWrite,
    bytes: Buffer | undefined,
  ): Promise<void> {
    const refuse = (err: StoreError): Promise<void> =>
      this.send(client, { id, ok: false, error: toWireError(err) });
    const write = this.options.write;
    if (!write)
      return refuse(new StoreError('STORE_BAD_REQUEST', 'this data rank takes no direct writes'));
    if (bytes === undefined)
      return refuse(
        new StoreError('STORE_BAD_REQUEST', `chunk-write of ${request.chunkId} carries no bytes`),
      );
    const key = client.toString('hex');
    if ((this.outstanding.get(key) ?? 0) >= DIRECT_READS_PER_CLIENT)
      return refuse(
        new StoreError(
          'STORE_BUSY',
          `more than ${DIRECT_READS_PER_CLIENT} requests outstanding at this data rank`,
          { limit: DIRECT_READS_PER_CLIENT },
        ),
      );
    const done = this.hold(key);
    try {
      await write(request.chunkId, request.checksum, bytes);
      await this.send(client, { id, ok: true });
    } catch (err) {
      await this.send(client, { id, ok: false, error: toWireError(err) });
    } finally {
      done();
    }
  }

  /** Counts a request of client `key` as outstanding until the function returned is called. */
  private hold(key: string): () => void {
    this.outstanding.set(key, (this.outstanding.get(key) ?? 0) + 1);
    return () => {
      const left = (this.outstanding.get(key) ?? 1) - 1;
      if (left > 0) this.outstanding.set(key, left);
      else this.outstanding.delete(key);
    };
  }

  /** Resolves once the reply has gone out or could not (the client went away: nothing to tell). */
  private send(client: Buffer, reply: Record<string, unknown>, bytes?: Uint8Array): Promise<void> {
    const frames = bytes ? [pack(reply), bytes] : [pack(reply)];
    return this.channel.send(client, frames).catch(() => undefined);
  }

  private async read(chunkId: string): Promise<Uint8Array> {
    this.options.onRequest?.();
    try {
      return await this.readSlots.with(() =>
        this.options.slots.with(() => this.options.get(chunkId)),
      );
    } catch (err) {
      // Only a copy that is here and bad, and once. Any client can ask for any id, and rank 0
      // looks each notice up in its whole index, so unknown ids are not passed on; a copy lost
      // from under the store is found by rank 0's own reads, the scrub, and the inventory at
      // restart.
      if (err instanceof StoreError && err.code === 'STORE_CORRUPT') this.reportBad(chunkId, err);
      throw err;
    }
  }

  private reportBad(chunkId: string, err: StoreError): void {
    if (this.reported.has(chunkId)) return;
    if (this.reported.size >= MAX_REPORTED)
      this.reported.delete(this.reported.values().next().value!);
    this.reported.add(chunkId);
    this.options.onBadCopy(chunkId, err.message);
  }
}
