/**
 * What the status page shows, as one JSON document (`/status.json`, each `/events` message, and
 * the data the page is first rendered from). The status is the one `dfs-client status` gets;
 * files are capped so that a store with a million of them still answers quickly.
 */
import type { ListEntry, StatusResult } from '../../protocol/client-protocol.js';
import type { OpMetricsView } from '../op-metrics.js';
import type { RecentTransitionsView } from '../recent-transitions.js';

/** What the status server reads: the coordinator, or a fake in tests. */
export interface StatusSource {
  status(): StatusResult;
  files(): ListEntry[];
  readonly metrics: OpMetricsView;
  readonly transitions: RecentTransitionsView;
}

export interface StatusSnapshot {
  generatedAt: string;
  /** As `dfs-client status` gets it. A capacity without limit (Infinity) is null in JSON. */
  status: StatusResult;
  files: { total: number; shown: ListEntry[] };
  /** Newest first. */
  transitions: Array<{ at: string; rank: number; from: string; to: string; reason: string }>;
}

export const DEFAULT_MAX_FILES = 200;

export function takeSnapshot(
  source: StatusSource,
  nowMs: number,
  maxFiles = DEFAULT_MAX_FILES,
): StatusSnapshot {
  const files = source.files();
  return {
    generatedAt: new Date(nowMs).toISOString(),
    status: source.status(),
    files: { total: files.length, shown: files.slice(0, maxFiles) },
    transitions: source.transitions
      .entries()
      .reverse()
      .map((t) => ({
        at: new Date(t.atMs).toISOString(),
        rank: t.rank,
        from: t.from,
        to: t.to,
        reason: t.reason,
      })),
  };
}

/**
 * JSON that is safe inside an HTML <script> element too: "<" is escaped so that no "</script>"
 * (say in a file name) can end the element early.
 */
export function snapshotJson(snapshot: StatusSnapshot): string {
  return JSON.stringify(snapshot).replace(/</g, '\\u003c');
}
