/**
 * What rank 0 and the data ranks say to each other. Bulk chunk traffic is point-to-point (a chunk
 * goes to the ranks placement chose, as the seed sent an upload to the smallest rank); requests
 * that concern every data rank (inventory, statistics, garbage collection) are collectives, driven
 * by the command loop in commands.ts.
 *
 * Tags (user tags ≥ 0 of the world communicator; collectives use their own negative tags):
 */
import type { RecordId } from '../records/record-ids.js';

export const TAG_DATA_REQUEST = 1; // rank 0 → data rank: DataRequest (+ chunk bytes for 'put')
export const TAG_DATA_REPLY = 2; // data rank → rank 0: DataReply (+ chunk bytes for 'get')
export const TAG_COMMAND = 3; // rank 0 → data ranks: Command, followed by its collective
export const TAG_HEARTBEAT = 4; // data rank → rank 0: RankReport, every heartbeat interval
export const TAG_NOTICE = 5; // data rank → rank 0: Notice (the scrub found a bad copy)

export const TAG_PEER = 6; // rank 0 → data ranks: PeerUpdate (a rank restarted or joined)

export type Notice = { op: 'bad-copy'; chunkId: string; reason: string };

/** Where a rank that restarted (new port) or joined (new number) can now be reached. */
export type PeerUpdate = { rank: number; endpoint: string };

export type DataRequest =
  | { op: 'put'; reqId: number; chunkId: string; checksum: string }
  | { op: 'get'; reqId: number; chunkId: string }
  /**
   * A client will write a copy of this chunk to the rank's chunk port (direct writes,
   * write-grants.ts): the reply comes once that copy is durable, or fails when no write came
   * within `ttlMs` or the placement was revoked.
   */
  | {
      op: 'accept';
      reqId: number;
      chunkId: string;
      sizeBytes: number;
      checksum: string;
      ttlMs: number;
    }
  /** Takes an 'accept' back: it ends now, or with the write already running. */
  | { op: 'revoke'; reqId: number; chunkId: string }
  /** Read a local copy and put it on world rank `to` (re-replication, rebalancing, repair). */
  | { op: 'copy'; reqId: number; chunkId: string; to: number }
  | { op: 'delete'; reqId: number; chunkIds: string[] }
  /** Look a record up by ID in a records chunk this rank holds (reply: found, + its bytes). */
  | { op: 'find'; reqId: number; chunkId: string; idField: string; id: RecordId }
  /** The rank's inventory (for a rank that rejoins: what it holds decides what is trimmed). */
  | { op: 'list'; reqId: number };

export type DataReply =
  | {
      reqId: number;
      ok: true;
      deleted?: number;
      /** 'find': whether the chunk holds the record (frame 1 then carries it). */
      found?: boolean;
      /**
       * 'put', 'accept', 'copy' (the target's), 'delete': the seq of the last RankReport the rank made
       * before the change. Reports after it include the change; rank 0 counts it only if it has
       * not seen one of those yet (a heartbeat can overtake the reply's handling).
       */
      reportSeq?: number;
      chunks?: Array<{ id: string; sizeBytes: number; checksum: string }>;
    }
  | { reqId: number; ok: false; code: string; message: string };

/** A data rank's view of itself, gathered by rank 0 at start-up and for status. */
export interface RankReport {
  /** Counts the rank's reports (heartbeats and command replies), 1, 2, ...: see DataReply.reportSeq. */
  seq: number;
  rank: number;
  host: string;
  usedBytes: number;
  /** The configured capacity (capped where the disk last said it was full). */
  capacityBytes: number;
  chunkCount: number;
  /** Where clients read this rank's copies of large chunks directly (chunk-port.ts). */
  portEndpoint?: string;
  /** What its chunk port has served since the rank started: reads, and writes of placed copies. */
  directReads?: { count: number; bytes: number };
  directWrites?: { count: number; bytes: number };
  /**
   * The file system the chunks live on (a device number, per host) and its free bytes when the
   * report was made: rank 0 caps the capacity by the rank's share of that space.
   */
  disk?: { id: string; freeBytes: number };
}

export interface InventoryReport extends RankReport {
  chunks: Array<{ id: string; sizeBytes: number; checksum: string }>;
}

/**
 * Commands run by every data rank in the order rank 0 sends them; each is followed by exactly
 * the collective its comment names, so all ranks enter the same collectives in the same order.
 */
export type Command =
  | { op: 'inventory' } // gather(InventoryReport)
  | { op: 'report' } // gather(RankReport)
  | { op: 'collect-garbage' } // scatter(string[] chunk ids to delete), then gather(number deleted)
  /** No collective: from now on commands run over the communicator of these world ranks (named by epoch). */
  | { op: 'reconfigure'; epoch: number; group: number[] }
  | { op: 'shutdown' }; // no collective: the data rank exits its loops
