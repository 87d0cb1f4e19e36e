/**
 * The transport moves opaque multi-frame messages between ranks. It knows nothing of tags,
 * collectives or files: the Communicator builds those on top. Two implementations pass one
 * contract suite (test/unit/transport-contract.ts): ZeroMQ (zmq-transport.ts) and in-memory
 * (memory-transport.ts, with fault injection).
 *
 * Guarantees every implementation gives:
 * - Messages from one sender to one receiver arrive in the order they were sent, or not at all
 *   (after a crash or an injected drop). Frames of one message arrive together.
 * - `send` resolves once the message is queued for the wire (not once delivered) and rejects
 *   with a CommError: COMM_BAD_ARGUMENT (unknown rank), COMM_QUEUE_FULL (bounded queue full for
 *   longer than `sendTimeoutMs`), COMM_TIMEOUT, COMM_CLOSED.
 * - Sending to oneself works and delivers asynchronously.
 * - Received frames may be retained by the handler; the transport never reuses them.
 */
export type Frames = readonly Uint8Array[];

export type PeerEventKind = 'connected' | 'disconnected';

export interface PeerEvent {
  kind: PeerEventKind;
  /** The peer's rank. A 'disconnected' event is evidence of death, never proof (the peer may reconnect). */
  rank: number;
}

export interface Transport {
  readonly rank: number;
  /** Ranks this transport can currently address (grows when ranks join). */
  peers(): number[];
  send(dest: number, frames: Frames): Promise<void>;
  /** Sets the single consumer of incoming messages; messages that arrive earlier are held until then. */
  onMessage(handler: (source: number, frames: Frames) => void): void;
  onPeerEvent(handler: (event: PeerEvent) => void): void;
  /** Stops sending and receiving; pending sends reject with COMM_CLOSED. Idempotent. */
  close(): Promise<void>;
}
