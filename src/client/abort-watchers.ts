/**
 * Many waits on one AbortSignal, as one listener on it: a download keeps up to 16 requests
 * outstanding (to rank 0 and to the chunk ports), and Node warns on stderr past 10 listeners of
 * one signal.
 */
export class AbortWatchers {
  /** Per signal, what its one listener calls when it fires. */
  private readonly watchers = new WeakMap<AbortSignal, Set<() => void>>();

  /** Runs `onAbort` when `signal` fires; returns the function that stops watching. */
  watch(signal: AbortSignal | undefined, onAbort: () => void): () => void {
    if (signal === undefined) return () => {};
    const watchers = this.watchers.get(signal) ?? new Set<() => void>();
    if (!this.watchers.has(signal)) {
      this.watchers.set(signal, watchers);
      signal.addEventListener('abort', () => [...watchers].forEach((watcher) => watcher()), {
        once: true,
      });
    }
    watchers.add(onAbort);
    return () => watchers.delete(onAbort);
  }
}
