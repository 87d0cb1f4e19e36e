/**
 * The client protocol: what a DfsClient and the coordinator (rank 0) say to each other over
 * ZeroMQ (DEALER on the client, ROUTER on rank 0). docs/PROTOCOL.md tells the story; this file is
 * the contract, shared by src/client and src/rank.
 *
 * Every message is one or two frames: frame 0 is a msgpack map, frame 1 (only where noted) is raw
 * chunk data. Requests carry a client-chosen `id` (unique among that client's requests in
 * flight); every reply echoes it. A reply is either `{ id, ok: true, ...result }` or
 * `{ id, ok: false, error: { code, message, detail } }`. Requests may be answered out of order.
 *
 * Limits the coordinator enforces (and a client can rely on):
 * - a message larger than chunkSizeBytes + 64 KiB is refused by ZeroMQ itself (the connection
 *   is dropped), so a huge frame never reaches our code;
 * - a frame 0 that is not a msgpack map with a known `op` gets STORE_BAD_REQUEST;
 * - each client may have at most 2 × `maxChunksInFlight` put-chunk (with bytes) and get-chunk
 *   requests outstanding (told in the reply to get-begin, and to put-begin unless it offers direct
 *   writes, where it is the deeper window) and 256 put-whole/get-whole requests; more get
 *   STORE_BUSY.
 */

import type { RecordId } from '../records/record-ids.js';

export const PROTOCOL_VERSION = 1;

/** Error codes that cross the wire. The CLI maps them to exit statuses in one table. */
export type StoreErrorCode =
  | 'STORE_BAD_REQUEST' // malformed message, wrong types, unknown op
  | 'STORE_BAD_NAME' // a file name the store refuses ('.', '..', '/', NUL, > 255 bytes, empty)
  | 'STORE_NOT_FOUND' // no such file (or upload id)
  | 'STORE_NO_SPACE' // not enough capacity for all copies; detail.neededBytes, detail.availableBytes
  | 'STORE_CORRUPT' // no good copy of a chunk could be read
  | 'STORE_UNAVAILABLE' // no live rank holds a copy, or no data rank can take a chunk
  | 'STORE_BUSY' // too many requests in flight for this client
  | 'STORE_CONFLICT' // the upload was superseded or aborted
  | 'STORE_TIMEOUT' // a data rank did not answer in time
  | 'STORE_INTERNAL'; // a bug: logged on rank 0 with detail

export interface WireError {
  code: StoreErrorCode;
  message: string;
  detail?: Record<string, unknown>;
}

// ---- Requests ----------------------------------------------------------------------------------

export interface PutBegin {
  op: 'put-begin';
  id: number;
  name: string;
  sizeBytes: number;
  /**
   * A records dataset: chunks are cut at record boundaries (any size up to the chunk size, each
   * put-chunk carries its records' IDs) and `sizeBytes` is an upper bound for the space check.
   */
  records?: { idField: string };
}
/**
 * Frame 1 holds the chunk's bytes; `checksum` is chunkChecksum(bytes). Chunks may arrive in any
 * order. Without frame 1 it says that the copies put-place asked for are being written directly
 * (it may be sent with the writes): rank 0 answers once the data ranks have confirmed them all,
 * or with an error as soon as one cannot (then send the bytes).
 */
export interface PutChunk {
  op: 'put-chunk';
  id: number;
  uploadId: string;
  index: number;
  checksum: string;
  /** Records uploads: the position of the chunk's first record and every record's ID. */
  records?: { first: number; ids: RecordId[] };
}
/**
 * Where to write chunk `index` of an upload whose put-begin offered `direct` (docs/PROTOCOL.md,
 * "Direct writes"). Rank 0 places the copies and tells those data ranks to expect them; the
 * reply (PutPlaceResult) names them. The client writes each copy to its rank's chunk port
 * (ChunkWrite), then sends put-chunk without bytes.
 */
export interface PutPlace {
  op: 'put-place';
  id: number;
  uploadId: string;
  index: number;
  checksum: string;
}
export interface PutCommit {
  op: 'put-commit';
  id: number;
  uploadId: string;
  /** sha256 hex of the whole content, computed by the client while it streamed. */
  sha256: string;
  /** Records uploads: how many chunks and records were sent (the store checks both). */
  records?: { chunks: number; count: number };
}
export interface PutAbort {
  op: 'put-abort';
  id: number;
  uploadId: string;
}
/** Pins the current version of `name` until get-end (or until the client goes silent). */
export interface GetBegin {
  op: 'get-begin';
  id: number;
  name: string;
}
/** Reply carries frame 1 with the chunk's bytes, already verified against its checksum. */
export interface GetChunk {
  op: 'get-chunk';
  id: number;
  readId: string;
  index: number;
}
export interface GetEnd {
  op: 'get-end';
  id: number;
  readId: string;
}
/**
 * One record of a records dataset by its ID (a number and a string are different IDs). The reply
 * carries the record's JSON bytes in frame 1; an unknown ID is STORE_NOT_FOUND with detail.recordId.
 */
export interface Query {
  op: 'query';
  id: number;
  name: string;
  recordId: RecordId;
}
export interface Stat {
  op: 'stat';
  id: number;
  name: string;
}
export interface List {
  op: 'list';
  id: number;
}
export interface Delete {
  op: 'delete';
  id: number;
  name: string;
}
export interface Status {
  op: 'status';
  id: number;
}

/**
 * A whole small file in one request (frame 1: its bytes, at most the store's chunk size): the
 * put-begin, put-chunk and put-commit of a one-chunk upload in one round trip. A file larger than
 * a chunk is refused with STORE_BAD_REQUEST and detail.chunkSizeBytes (use put-begin).
 */
export interface PutWhole {
  op: 'put-whole';
  id: number;
  name: string;
  checksum: string;
  sha256: string;
}
/**
 * Reads a file in one round trip when it is one chunk: the reply carries `metadata` and, in
 * frame 1, the bytes (no frame for an empty file), with `whole: true`. For a larger file the
 * reply is exactly get-begin's (a pinned read to continue with get-chunk and end with get-end).
 */
export interface GetWhole {
  op: 'get-whole';
  id: number;
  name: string;
}

/** Moves copies until every live data rank's fraction used is within 5 points of the others. */
export interface Rebalance {
  op: 'rebalance';
  id: number;
}

export type Request =
  | PutBegin
  | PutChunk
  | PutPlace
  | PutCommit
  | PutAbort
  | GetBegin
  | GetChunk
  | GetEnd
  | Stat
  | List
  | Delete
  | Status
  | Rebalance
  | PutWhole
  | GetWhole
  | Query;
export type RequestOp = Request['op'];

// ---- Results (the fields of an ok reply besides id/ok) -----------------------------------------

export interface ChunkCopyInfo {
  rank: number;
  host: string;
  /** 'alive' unless the rank is suspect or dead (issue 4). */
  state: RankState;
}

export type RankState = 'alive' | 'suspect' | 'dead';

export interface ChunkInfo {
  index: number;
  sizeBytes: number;
  checksum: string;
  copies: ChunkCopyInfo[];
}

export interface FileMetadata {
  name: string;
  sizeBytes: number;
  sha256: string;
  version: number;
  /** ISO 8601 times: when the name was first stored, and when this version was committed. */
  created: string;
  modified: string;
  chunkSizeBytes: number;
  replicas: number;
  chunks: ChunkInfo[];
  /** Chunks with fewer live copies than `replicas`. */
  underReplicatedChunks: number;
  /** Set for a records dataset: its ID field, record count and how the index finds an ID. */
  records?: { idField: string; count: number; lookup: 'ranges' | 'hashed' };
}

export interface ListEntry {
  name: string;
  sizeBytes: number;
  modified: string;
  chunks: number;
  /** 'healthy' when every chunk has `replicas` live copies, 'under-replicated' when some have fewer, 'unavailable' when some have none. */
  health: 'healthy' | 'under-replicated' | 'unavailable';
}

export interface PutBeginResult {
  uploadId: string;
  chunkSizeBytes: number;
  maxChunksInFlight: number;
  /** Offered for files of large chunks: the client may write their copies itself (put-place). */
  direct?: true;
}
/**
 * put-place's reply: the chunk's id and, for each copy, the data rank and its chunk port; or
 * `stored: true` when the chunk is stored already (a retried request), with nothing to write.
 */
export type PutPlaceResult =
  { chunkId: string; copies: Array<{ rank: number; endpoint: string }> } | { stored: true };
export interface PutCommitResult {
  metadata: FileMetadata;
}
export interface GetBeginResult {
  readId: string;
  metadata: FileMetadata;
  maxChunksInFlight: number;
  /** Offered for files of large chunks: where the client may read each chunk itself. */
  direct?: DirectSources;
}

// ---- Direct reads and writes: a data rank's chunk port ----------------------------------------

/**
 * Chunks of at least this size may be read straight from the data ranks that hold them, not
 * through rank 0: relaying a large chunk costs rank 0 as much CPU as it costs the client to
 * receive it, and on a machine of few cores that is a third of a retrieve's work. Small chunks
 * still go through rank 0, which answers many of them in one message and caches them.
 */
export const DIRECT_READ_MIN_CHUNK_BYTES = 512 * 1024;

/**
 * Uploads of at least two chunks of at least this size may write their copies straight to the
 * data ranks (put-place): for the same reason, rank 0 relays no bytes, and small chunks are
 * cheaper batched through it.
 */
export const DIRECT_WRITE_MIN_CHUNK_BYTES = DIRECT_READ_MIN_CHUNK_BYTES;

/**
 * The get-begin reply's offer of direct reads: chunk i's id is `chunkIds[i]`; the holders of a
 * copy (metadata.chunks[i].copies) that are reachable have their chunk port in `endpoints`.
 */
export interface DirectSources {
  chunkIds: string[];
  endpoints: Array<{ rank: number; endpoint: string }>;
  /** How often the client must send a chunk's request through rank 0 to keep its pin. */
  renewMs?: number;
}

/**
 * The one request a data rank's chunk port takes (same envelope as rank 0's requests). The reply
 * carries the copy's bytes in frame 1, verified against their checksum on the way out. Errors:
 * STORE_NOT_FOUND (no such copy here), STORE_CORRUPT (the copy failed its checksum; the rank tells
 * rank 0, which replaces it), STORE_BUSY (more than DIRECT_READS_PER_CLIENT outstanding),
 * STORE_BAD_REQUEST. A client that gets any of these, or no answer, reads the chunk through rank 0.
 */
export interface ChunkRead {
  op: 'chunk-read';
  id: number;
  chunkId: string;
}

/**
 * A copy of a chunk rank 0 placed on this data rank (put-place), sent here by the client; frame 1
 * carries its bytes. Answered `{ok: true}` once the copy is durable. Errors: STORE_CONFLICT (rank
 * 0 did not place this chunk here, or took the placement back), STORE_BAD_REQUEST (not the size
 * or checksum placed), STORE_CORRUPT (the bytes do not match their checksum), STORE_NO_SPACE,
 * STORE_BUSY. A client that gets any of these, or no answer, sends the chunk through rank 0.
 */
export interface ChunkWrite {
  op: 'chunk-write';
  id: number;
  chunkId: string;
  checksum: string;
}

export type ChunkPortRequest = ChunkRead | ChunkWrite;

/** The requests one client may have outstanding at one data rank's chunk port. */
export const DIRECT_READS_PER_CLIENT = 32;

/**
 * A read pins its version at rank 0 until get-end, or until rank 0 hears nothing of it for its
 * session idle time (60 s). A client reading directly sends a chunk's request through rank 0 at
 * least this often, which keeps the pin (or as often as the offer's renewMs says, which rank 0
 * makes shorter when its idle time is).
 */
export const DIRECT_READ_PIN_RENEW_MS = 5_000;
export interface ListResult {
  files: ListEntry[];
}
export interface RankStatus {
  rank: number;
  host: string;
  state: RankState;
  /** Milliseconds since rank 0 last heard this rank's heartbeat (null: never heard). */
  heartbeatAgeMs: number | null;
  usedBytes: number;
  /** What the rank offers: its --capacity or hostfile capacity=, capped by its disk. */
  capacityBytes: number;
  /** Chunk copies the rank holds by its own count (including leftovers not yet trimmed). */
  chunkCopies: number;
  /** Copies the index places on this rank first (the chunk's primary) and after (its replicas). */
  primaryCopies: number;
  replicaCopies: number;
  /**
   * Chunks clients read straight from this rank's chunk port since it started, and their bytes
   * (reads through rank 0 are counted by rank 0's request metrics). Absent before its first report.
   */
  directReads?: { count: number; bytes: number };
  /** Copies clients wrote straight to its chunk port (direct writes), and their bytes. */
  directWrites?: { count: number; bytes: number };
}

export interface StatusResult {
  ranks: RankStatus[];
  replicas: number;
  chunkSizeBytes: number;
  files: number;
  /** Chunks of all current files, and how many of them have fewer live copies than they should. */
  chunks: number;
  underReplicatedChunks: number;
  /** Milliseconds since rank 0 started serving. */
  uptimeMs: number;
}

export interface RebalanceResult {
  moves: number;
  bytesMoved: number;
  /** Largest minus smallest fraction of capacity used among live data ranks (0..1). */
  spreadBefore: number;
  spreadAfter: number;
}
