/**
 * Direct reads (docs/PROTOCOL.md): a download of large chunks reads each one from the chunk port
 * of a data rank that holds a copy, instead of through rank 0. Rank 0 still opens the read (and
 * so pins the version) and says where the copies are; this is only a shorter path for the bytes.
 *
 * Anything that goes wrong on the short path (no answer, connection lost, an error reply, bytes
 * that fail their checksum) sends that chunk through rank 0, which knows more: other copies, the
 * ranks it has declared dead, and how to replace a bad copy. A read with no answer within 2 s is
 * asked of rank 0 as well. A rank that could not be reached, or was that slow, is not tried again
 * for the rest of the download.
 */
import {
  DIRECT_READ_PIN_RENEW_MS,
  type DirectSources,
  type FileMetadata,
} from '../protocol/client-protocol.js';
import { ChunkPortError, isPortEndpoint, reachableFrom, type ChunkPorts } from './chunk-ports.js';

/**
 * A direct read with no answer after this long is asked of rank 0 as well, and the first good
 * answer is taken. A data rank that stopped answering (SIGSTOP, a hung disk) keeps the connection
 * up, so the direct read would wait for its whole deadline (10 s), where rank 0 declares such a
 * rank dead within seconds and reads another copy. A 4 MiB read here takes milliseconds.
 */
export const DIRECT_READ_HEDGE_MS = 2_000;

/** Calls `fn` after `ms`; the function returned cancels it (a Clock's setTimer). */
export type SetTimer = (ms: number, fn: () => void) => () => void;

const realTimer: SetTimer = (ms, fn) => {
  const timer = setTimeout(fn, ms);
  return () => clearTimeout(timer);
};

/**
 * One download's choice of where each chunk comes from. Each chunk goes to the holder with the
 * fewest of this download's reads outstanding (ties by chunk index, so copies take turns), which
 * keeps every holder's disk busy. A chunk goes through rank 0 instead when no holder can be read
 * directly, when the direct read failed, and at least every renewMs of rank 0's offer (5 s by
 * default), which keeps rank 0's pin of the version while the bytes come from elsewhere; and as
 * well as the direct read when that has no answer after hedgeAfterMs.
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
    private readonly setTimer: SetTimer = realTimer,
    private readonly hedgeAfterMs: number = DIRECT_READ_HEDGE_MS,
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
    let cancelTimer = (): void => undefined;
    try {
      const direct = this.reader.read(this.endpoints.get(rank)!, chunkId, signal).then((data) => {
        this.verify(index, data);
        return data;
      });
      const slow = new Promise<'slow'>((resolve) => {
        cancelTimer = this.setTimer(this.hedgeAfterMs, () => resolve('slow'));
      });
      let first: Buffer | 'slow';
      try {
        first = await Promise.race([direct, slow]);
      } catch (err) {
        // Not tried again in this download: a rank that cannot be reached now will not be soon.
        if (err instanceof ChunkPortError && err.unreachable) this.endpoints.delete(rank);
        return await this.viaRank0(index);
      }
      if (first !== 'slow') return first;
      // No answer yet: rank 0 as well, and the first good answer. A rank this slow is passed over
      // for the rest of the download.
      this.endpoints.delete(rank);
      const hedge = this.viaRank0(index);
      direct.catch(() => undefined);
      hedge.catch(() => undefined);
      return await Promise.any([direct, hedge]).catch(() => hedge);
    } finally {
      cancelTimer();
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
