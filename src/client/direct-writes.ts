/**
 * Direct writes (docs/PROTOCOL.md): an upload of large chunks writes each chunk's copies straight
 * to the chunk ports of the data ranks rank 0 places them on, instead of sending the bytes through
 * rank 0, which would receive every byte once and send it twice. Rank 0 still places each chunk,
 * learns from the data ranks (not from this client) which copies are durable, and commits.
 *
 * Anything that goes wrong on the short path (put-place refused, a port that cannot be reached or
 * answers with an error, a confirmation rank 0 refuses) sends that chunk's bytes through rank 0,
 * which keeps the copies that did arrive and writes the rest. An upload whose copies land on ports
 * this client cannot reach sends every later chunk through rank 0.
 */
import type { PutChunk, PutPlace, PutPlaceResult } from '../protocol/client-protocol.js';
import { Semaphore } from '../runtime/semaphore.js';
import { isPortEndpoint, reachableFrom, type ChunkPorts } from './chunk-ports.js';

/** Sends one request to rank 0 (DfsClient's), resolving with the reply's fields. */
export type AskRank0 = (
  body: Omit<PutPlace, 'id'> | Omit<PutChunk, 'id'>,
  payload?: Uint8Array,
) => Promise<Record<string, unknown>>;

export class DirectUpload {
  /** Set once a placement named a port this client cannot reach: no more direct tries. */
  private unreachable = false;
  /**
   * Chunks sent with their bytes through rank 0 at once. Rank 0 bounds a client's chunk requests
   * that carry bytes (2 × its window for uploads through it); a direct upload's window is that
   * whole budget, so if every chunk fell back at once, a download or another upload by the same
   * client would be refused STORE_BUSY. Bounded to an upload's share through rank 0, they are not.
   */
  private readonly viaRank0: Semaphore;

  constructor(
    private readonly ports: ChunkPorts,
    private readonly ask: AskRank0,
    private readonly uploadId: string,
    private readonly serverHost: string,
    maxViaRank0: number,
  ) {
    this.viaRank0 = new Semaphore(maxViaRank0);
  }

  /** Stores chunk `index`; rejects only as a put-chunk through rank 0 would. */
  async send(
    index: number,
    checksum: string,
    data: Uint8Array,
    signal?: AbortSignal,
  ): Promise<void> {
    const { uploadId } = this;
    if (!this.unreachable && !signal?.aborted) {
      try {
        if (await this.writeCopies(index, checksum, data, signal)) return;
      } catch {
        // The bytes through rank 0 below: it keeps the copies that arrived and writes the rest.
      }
    }
    await this.viaRank0.with(() => this.ask({ op: 'put-chunk', uploadId, index, checksum }, data));
  }

  /** True once the copies are written and rank 0 has confirmed them; false to use rank 0. */
  private async writeCopies(
    index: number,
    checksum: string,
    data: Uint8Array,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    const { uploadId } = this;
    const place = placeResultOf(await this.ask({ op: 'put-place', uploadId, index, checksum }));
    if (place === undefined) return false;
    if ('stored' in place) return true;
    if (!place.copies.every((c) => reachableFrom(this.serverHost, c.endpoint))) {
      this.unreachable = true;
      return false;
    }
    // The confirmation goes with the writes: rank 0 answers it once every data rank placed has
    // its copy, or as soon as one cannot (a rank it declares dead answers nothing here until this
    // client's own deadline). A write that fails sends the bytes through rank 0 at once.
    const writes = Promise.all(
      place.copies.map((c) => this.ports.write(c.endpoint, place.chunkId, checksum, data, signal)),
    );
    const confirmed = this.ask({ op: 'put-chunk', uploadId, index, checksum });
    // The race's loser may still fail; that outcome is not wanted.
    writes.catch(() => undefined);
    confirmed.catch(() => undefined);
    await Promise.race([writes.then(() => confirmed), confirmed]);
    return true;
  }
}

/** put-place's reply when it is well formed; else undefined (the chunk then goes through rank 0). */
function placeResultOf(fields: Record<string, unknown>): PutPlaceResult | undefined {
  if (fields.stored === true) return { stored: true };
  const { chunkId, copies } = fields;
  if (typeof chunkId !== 'string' || !Array.isArray(copies) || copies.length === 0)
    return undefined;
  if (!copies.every(isPortEndpoint)) return undefined;
  return { chunkId, copies };
}
