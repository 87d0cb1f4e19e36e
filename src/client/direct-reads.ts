/**
 * Direct reads (docs/PROTOCOL.md): a download of large chunks reads each one from the chunk port
 * of a data rank that holds a copy, instead of through rank 0. Rank 0 still opens the read (and
 * so pins the version) and says where the copies are; this is only a shorter path for the bytes.
 *
 * Anything that goes wrong on the short path (no answer, connection lost, an error reply, bytes
 * that fail their checksum) sends that chunk through rank 0, which knows more: other copies, the
 * ranks it has declared dead, and how to replace a bad copy. A rank that could not be reached is
 * not tried again for the rest of the download.
 */
import {
  DIRECT_READ_PIN_RENEW_MS,
  type DirectSources,
  type FileMetadata,
} from '../protocol/client-protocol.js';
import { ChunkPortError, isPortEndpoint, reachableFrom, type ChunkPorts } from './chunk-ports.js';

/**
 * One download's choice of where each chunk comes from. Each chunk goes to the holder with the
 * fewest of this download's reads outstanding (ties by chunk index, so copies take turns), which
 * keeps every holder's disk busy. A chunk goes through rank 0 instead when no holder can be read
 * directly, when the direct read failed, and at least every renewMs of rank 0's offer (5 s by
 * default), which keeps rank 0's pin of the version while the bytes come from elsewhere.
 */
export class DirectDownload {
  private readonly endpoints = new Map<number, string>();
  private readonly outstanding = new Map<number, number>();
  private lastViaRank0Ms: number;

  constructor(
    private readonly reader: ChunkPorts,
    private readonly metadata: FileMetadata,
    private readonly sources: DirectSources,
    /** Reads chunk `index` through rank 0, verified. */
    private readonly viaRank0: (index: number) => Promise<Buffer>,
    /** Throws when `data` is not chunk `index` (its size and checksum). */
    private readonly verify: (index: number, data: Buffer) => void,
    private readonly now: () => number = () => performance.now(),
  ) {
    for (const { rank, endpoint } of sources.endpoints) this.endpoints.set(rank, endpoint);
    this.lastViaRank0Ms = now();
  }

  /**
   * Chunk `index`, verified. Rejects only as viaRank0 does: the direct path's failures fall back
   * (after `signal` fires, viaRank0 is what says so).
   */
  async fetch(index: number, signal?: AbortSignal): Promise<Buffer> {
    const rank = this.pick(index);
    const chunkId = this.sources.chunkIds[index];
    const renewMs = this.sources.renewMs ?? DIRECT_READ_PIN_RENEW_MS;
    if (
      rank === undefined ||
      chunkId === undefined ||
      this.now() - this.lastViaRank0Ms >= renewMs
    ) {
      this.lastViaRank0Ms = this.now();
      return this.viaRank0(index);
    }
    this.outstanding.set(rank, (this.outstanding.get(rank) ?? 0) + 1);
    try {
      const data = await this.reader.read(this.endpoints.get(rank)!, chunkId, signal);
      this.verify(index, data);
      return data;
    } catch (err) {
      // Not tried again in this download: a rank that cannot be reached now will not be soon.
      if (err instanceof ChunkPortError && err.unreachable) this.endpoints.delete(rank);
      return this.viaRank0(index);
    } finally {
      this.outstanding.set(rank, (this.outstanding.get(rank) ?? 1) - 1);
    }
  }

  private pick(index: number): number | undefined {
    const holders = (this.metadata.chunks[index]?.copies ?? [])
      .map((c) => c.rank)
      .filter((r) => this.endpoints.has(r));
    if (holders.length === 0) return undefined;
    let best = holders[index % holders.length]!;
    for (const r of holders)
      if ((this.outstanding.get(r) ?? 0) < (this.outstanding.get(best) ?? 0)) best = r;
    return best;
  }
}

/**
 * The get-begin reply's `direct` field, when it is well formed and fits the file; else undefined.
 * Chunk ports this client cannot reach (reachableFrom) are left out.
 */
export function directSourcesOf(
  value: unknown,
  metadata: FileMetadata,
  serverHost: string,
): DirectSources | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { chunkIds, endpoints } = value as Record<string, unknown>;
  if (
    !Array.isArray(chunkIds) ||
    chunkIds.length !== metadata.chunks.length ||
    !chunkIds.every((id) => typeof id === 'string') ||
    !Array.isArray(endpoints) ||
    !endpoints.every(isPortEndpoint)
  )
    return undefined;
  const { renewMs } = value as { renewMs?: unknown };
  return {
    chunkIds,
    endpoints: endpoints.filter(({ endpoint }) => reachableFrom(serverHost, endpoint)),
    // Rank 0's own figure when it gives a usable one; this client's default otherwise.
    ...(Number.isSafeInteger(renewMs) && (renewMs as number) > 0 && { renewMs: renewMs as number }),
  };
}
