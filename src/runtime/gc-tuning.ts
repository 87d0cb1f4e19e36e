/**
 * Garbage-collector settings for processes that move chunk data: ranks, dfs-client, and
 * programs that use DfsClient for large transfers (call it once, first thing).
 *
 * Why: every chunk a process receives is a Buffer outside V8's heap, and V8 starts a new
 * incremental marking cycle each time such external memory has grown by 64 MB, so a GiB through
 * a process restarts it 16-30 times. With incremental marking the cycles are spread over many
 * small steps and tasks, and on this 2-core machine rank 0 spent 8.6 CPU-seconds of its 11.9
 * busy ones in the garbage collector while 3 GiB went up and 6 GiB down; with whole (atomic)
 * mark-compacts instead, 3.3 of 5.2, and uploads got about 10% faster. The heaps here are small
 * (rank 0's is ~8 MB with its index of 10,000 files), so a whole mark-compact pauses a few
 * milliseconds; incremental marking earns its keep only with heaps hundreds of times larger.
 */
import { setFlagsFromString } from 'node:v8';

export function tuneGcForBulkTransfers(): void {
  setFlagsFromString('--no-incremental-marking');
}
