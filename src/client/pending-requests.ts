/**
 * Requests waiting for their replies, as DfsClient (to rank 0) and ChunkPorts (to the read
 * ports) keep them: each entry has a deadline and an abort watch, both stopped when it settles.
 */
export interface Waiting {
  timer: NodeJS.Timeout;
  detachSignal: () => void;
}

/**
 * Takes request `id` out of `pending` and stops its deadline and abort watch; undefined when it
 * was already settled (a late reply, a reply after its timeout or abort).
 */
export function takePending<T extends Waiting>(pending: Map<number, T>, id: number): T | undefined {
  const entry = pending.get(id);
  if (entry === undefined) return undefined;
  pending.delete(id);
  clearTimeout(entry.timer);
  entry.detachSignal();
  return entry;
}
