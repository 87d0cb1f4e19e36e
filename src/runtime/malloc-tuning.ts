/**
 * glibc malloc settings for processes that move chunk data: the ranks (memflow-run gives them to
 * every rank it starts), and clients of large transfers (`npm run bench` runs with them; a
 * program using DfsClient or dfs-client gets them by starting with GLIBC_TUNABLES set as
 * below). glibc reads GLIBC_TUNABLES once, when the process starts, so they cannot be set from
 * inside a running process; elsewhere than glibc the variable is ignored.
 *
 * Why: each chunk a process receives lands in a 4 MiB buffer that ZeroMQ mallocs, freed only when
 * the garbage collector finalizes its Buffer, tens of chunks at once. By default glibc then hands
 * the freed memory back to the kernel (it trims a heap once 8 MiB are free at its top), and the
 * next chunks touch fresh pages, which this VM's host backs slowly. Measured on a 1 GiB
 * retrieve: 12,000-30,000 page faults per GiB in the client and in each data rank; with these
 * settings 250-5,000 in the client and ~700 in a data rank. Of 4 alternating pairs of four 1 GiB
 * retrieves, 3 were faster (1.38-1.50 s per GiB against 1.49-1.54) and one slower (1.58 against
 * 1.53); 1 GiB uploads were faster in 6 of 6 runs, by ~10%.
 *
 * - mmap_threshold 32 MiB: chunks come from malloc's heaps, not each from its own mmap (setting
 *   the trim threshold alone turns glibc's adjustment of this threshold off, and then every 4 MiB
 *   buffer was mmapped: 260,000 faults per GiB).
 * - trim_threshold 256 MiB: up to that much freed memory stays for the next chunks. A rank's
 *   resident memory stays near its peak between transfers, bounded as before by the windows.
 * - arena_max 1: every thread allocates from the main heap. ZeroMQ's I/O thread otherwise gets
 *   an arena of its own, made of 64 MiB heaps that glibc unmaps whenever one is wholly free,
 *   whatever the trim threshold: rank 0, which relays every chunk, still took 8,000-26,000 faults
 *   per GiB retrieved with the two settings above, ~300-500 with this one too. Of 6 alternating
 *   pairs of four 1 GiB retrieves, 5 were faster with it (1.19-1.51 s per GiB against 1.30-1.75).
 *   The threads that allocate here are few (the event loop, ZeroMQ's I/O thread, the thread
 *   pool), so one arena's lock costs little. Small uploads showed no effect either way: 3
 *   alternating pairs favoured one arena (565 against 655 us of CPU per upload, medians), 4 later
 *   pairs the default (694 against 662 us), within this VM's noise.
 */
export const MALLOC_TUNABLES =
  'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456:glibc.malloc.arena_max=1';

/**
 * GLIBC_TUNABLES with these settings first. glibc applies the list in order, so any setting the
 * user gave (in `current`) wins over ours.
 */
export function withMallocTunables(current: string | undefined): string {
  if (current === undefined || current === '') return MALLOC_TUNABLES;
  if (current.includes(MALLOC_TUNABLES)) return current;
  return `${MALLOC_TUNABLES}:${current}`;
}

/** Whether an environment's GLIBC_TUNABLES carries these settings. */
export function hasMallocTunables(current: string | undefined): boolean {
  return current !== undefined && current.includes(MALLOC_TUNABLES);
}
