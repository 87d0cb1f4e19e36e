/**
 * A socket that clients send requests to, as the rank's request handlers need it: rank 0's
 * client socket and a data rank's chunk port (ServiceSocket in production, an in-memory fake in
 * simulation). Each client is known by an opaque id, which a reply is sent back to.
 */
export interface ClientChannel {
  onMessage(handler: (client: Buffer, frames: Buffer[]) => void): void;
  send(client: Buffer, frames: readonly Uint8Array[]): Promise<void>;
}
