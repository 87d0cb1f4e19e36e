/**
 * Direct writes, a data rank's side (docs/PROTOCOL.md, "Direct writes"). A client may write a
 * large chunk's copy straight to this rank's chunk port, but only a copy rank 0 placed here:
 * rank 0 first sends an 'accept' for the chunk (its id, size and checksum), which this rank
 * holds as a grant, and answers once the copy is durable or the grant has ended. So rank 0 keeps
 * placement, space accounting and the commit, and learns from this rank, not from the client,
 * which copies exist; only the bytes skip it.
 *
 * A write may come before its grant (the grant and the client's bytes travel on different
 * connections): it waits up to `grantWaitMs` for one. A grant no write fulfils ends after its
 * ttl, or at once when rank 0 revokes it (the client sent the bytes through rank 0 instead, or
 * the upload was aborted); either way rank 0's accept fails and nothing was stored.
 */
import type { Clock } from '../runtime/clock.js';
import { StoreError } from '../store/errors.js';

export interface WriteGrantsOptions {
  clock: Clock;
  /** Stores a copy durably, verifying `checksum` (ChunkStore.put under the rank's slots). */
  put(chunkId: string, bytes: Uint8Array, checksum: string): Promise<void>;
  /** How long a write waits for its grant to arrive (default 5 s). */
  grantWaitMs?: number;
  /** Writes waiting for a grant at once; past this they are refused (default 64). */
  maxWaiting?: number;
}

interface Grant {
  sizeBytes: number;
  checksum: string;
  /** Set while a write of the grant runs: a second one is refused. */
  writing: boolean;
  /** Revoked or expired while a write ran: that write's outcome ends the grant. */
  ending: boolean;
  cancelTtl: () => void;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Waiting {
  arrived: () => void;
  cancelTimer: () => void;
}

export class WriteGrants {
  private readonly grants = new Map<string, Grant>();
  private readonly waiting = new Map<string, Set<Waiting>>();
  private waitingCount = 0;
  private served = { count: 0, bytes: 0 };

  constructor(private readonly options: WriteGrantsOptions) {}

  /** Copies written here directly since start, and their bytes (a copy: the counters move on). */
  get writesServed(): { count: number; bytes: number } {
    return { ...this.served };
  }

  /**
   * Rank 0 placed a copy of `chunkId` here. Resolves once a client's write of it is durable;
   * rejects when the grant ends first (ttl, revoke) or when the chunk is granted twice.
   */
  accept(chunkId: string, sizeBytes: number, checksum: string, ttlMs: number): Promise<void> {
    if (this.grants.has(chunkId))
      return Promise.reject(
        new StoreError('STORE_CONFLICT', `chunk ${chunkId} is already placed here`),
      );
    return new Promise<void>((resolve, reject) => {
      const grant: Grant = {
        sizeBytes,
        checksum,
        writing: false,
        ending: false,
        cancelTtl: this.options.clock.setTimer(ttlMs, () =>
          this.end(chunkId, grant, `no client wrote it within ${ttlMs} ms`),
        ),
        resolve,
        reject,
      };
      this.grants.set(chunkId, grant);
      for (const w of [...(this.waiting.get(chunkId) ?? [])]) w.arrived();
    });
  }

  /** Rank 0 takes the placement back: the grant ends now, or with the write already running. */
  revoke(chunkId: string): void {
    const grant = this.grants.get(chunkId);
    if (grant) this.end(chunkId, grant, 'rank 0 revoked it');
  }

  /** A client's copy of `chunkId`: stored if rank 0 placed it here, else refused. */
  async write(chunkId: string, checksum: string, bytes: Uint8Array): Promise<void> {
    const grant = this.grants.get(chunkId) ?? (await this.waitForGrant(chunkId));
    if (this.grants.get(chunkId) !== grant)
      throw new StoreError('STORE_CONFLICT', `chunk ${chunkId}: rank 0 revoked it`);
    if (grant.writing)
      throw new StoreError('STORE_CONFLICT', `chunk ${chunkId} is being written here already`);
    if (bytes.length !== grant.sizeBytes || checksum !== grant.checksum)
      throw new StoreError(
        'STORE_BAD_REQUEST',
        `chunk ${chunkId} was placed here as ${grant.sizeBytes} bytes with checksum ${grant.checksum}, not ${bytes.length} bytes with ${checksum}`,
      );
    grant.writing = true;
    try {
      await this.options.put(chunkId, bytes, checksum);
    } catch (err) {
      grant.writing = false;
      // A grant that ended meanwhile ends with this failure; else the client may try again, or
      // send the bytes through rank 0, which revokes it.
      if (grant.ending) this.finish(chunkId, grant, err as Error);
      throw err;
    }
    this.served.count++;
    this.served.bytes += bytes.length;
    this.finish(chunkId, grant);
  }

  private waitForGrant(chunkId: string): Promise<Grant> {
    const waitMs = this.options.grantWaitMs ?? 5_000;
    if (this.waitingCount >= (this.options.maxWaiting ?? 64))
      return Promise.reject(
        new StoreError('STORE_BUSY', 'too many writes here are waiting for rank 0 to place them'),
      );
    return new Promise<Grant>((resolve, reject) => {
      const waiters = this.waiting.get(chunkId) ?? new Set<Waiting>();
      this.waiting.set(chunkId, waiters);
      const entry: Waiting = {
        arrived: () => {
          leave();
          resolve(this.grants.get(chunkId)!);
        },
        cancelTimer: this.options.clock.setTimer(waitMs, () => {
          leave();
          reject(
            new StoreError(
              'STORE_CONFLICT',
              `chunk ${chunkId} was not placed here (no word from rank 0 within ${waitMs} ms)`,
            ),
          );
        }),
      };
      // Once only, whichever comes first: the grant or the deadline.
      const leave = (): void => {
        if (!waiters.delete(entry)) return;
        entry.cancelTimer();
        this.waitingCount--;
        if (waiters.size === 0) this.waiting.delete(chunkId);
      };
      waiters.add(entry);
      this.waitingCount++;
    });
  }

  private end(chunkId: string, grant: Grant, why: string): void {
    if (grant.writing) grant.ending = true;
    else this.finish(chunkId, grant, new StoreError('STORE_CONFLICT', `chunk ${chunkId}: ${why}`));
  }

  private finish(chunkId: string, grant: Grant, err?: Error): void {
    if (this.grants.get(chunkId) !== grant) return;
    this.grants.delete(chunkId);
    grant.cancelTtl();
    if (err) grant.reject(err);
    else grant.resolve();
  }
}
