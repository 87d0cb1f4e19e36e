/**
 * How dfs-client and its shell show things: sizes and counts in words, local times, aligned
 * tables, file lists and layouts, progress bars; and the query-by-argument rule both use.
 */
import type { DfsClient } from '../client/dfs-client.js';
import { isDfsError } from '../client/errors.js';
import { ProgressBar, type ProgressBarOptions, type TransferProgress } from '../client/progress.js';
import type { FileMetadata, ListEntry } from '../protocol/client-protocol.js';
import type { RecordId } from '../records/record-ids.js';
import { formatSize } from '../store/sizes.js';

export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}

/** "12.3 MiB, 4 chunks, 2 copies each" (and what is missing when some chunk lacks copies). */
export function describeLayout(metadata: FileMetadata): string {
  const parts = [formatSize(metadata.sizeBytes), plural(metadata.chunks.length, 'chunk')];
  const counts = metadata.chunks.map((chunk) => chunk.copies.length);
  if (counts.length > 0) {
    const least = Math.min(...counts);
    const most = Math.max(...counts);
    parts.push(
      least === most
        ? `${plural(least, 'copy').replace('copys', 'copies')} each`
        : `${least}-${most} copies`,
    );
  }
  if (metadata.underReplicatedChunks > 0) {
    parts.push(`${plural(metadata.underReplicatedChunks, 'chunk')} under-replicated`);
  }
  return parts.join(', ');
}

/** Local time as "YYYY-MM-DD HH:MM:SS"; the text as given if it is not a date. */
export function formatTime(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const two = (n: number): string => String(n).padStart(2, '0');
  return (
    `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} ` +
    `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`
  );
}

/** Rows of cells padded to the widest cell of each column; `right` lists right-aligned columns. */
export function table(rows: string[][], right: ReadonlySet<number> = new Set()): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) => {
          const width = widths[i] ?? 0;
          if (i === row.length - 1 && !right.has(i)) return cell;
          return right.has(i) ? cell.padStart(width) : cell.padEnd(width);
        })
        .join('  '),
    )
    .join('\n');
}

/** The files as `dfs-client list` and the shell's `list` show them. */
export function formatList(files: readonly ListEntry[]): string {
  if (files.length === 0) return 'no files in the store';
  const sorted = [...files].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const rows = sorted.map((file) => [
    file.name,
    formatSize(file.sizeBytes),
    formatTime(file.modified),
    file.health,
  ]);
  const total = files.reduce((sum, file) => sum + file.sizeBytes, 0);
  return `${table([['NAME', 'SIZE', 'MODIFIED', 'HEALTH'], ...rows], new Set([1]))}\n${plural(files.length, 'file')}, ${formatSize(total)}`;
}

/**
 * The record for the first of `ids` the dataset has (a number, then the same text as a string);
 * when none is there, the error for the first, which names the ID as the user typed it.
 */
export async function queryFirst(
  client: Pick<DfsClient, 'queryRecord'>,
  name: string,
  ids: readonly RecordId[],
): Promise<unknown> {
  let first: unknown;
  for (const id of ids) {
    try {
      return await client.queryRecord(name, id);
    } catch (err) {
      const unknownId =
        isDfsError(err) && err.code === 'STORE_NOT_FOUND' && 'recordId' in err.detail;
      if (!unknownId) throw err;
      first ??= err;
    }
  }
  throw first;
}

/**
 * Runs a transfer with a progress bar on `stream` (drawn only on a terminal), erased when the
 * transfer ends either way, so the line printed next starts clean.
 */
export async function withProgress<T>(
  stream: ProgressBarOptions['stream'],
  label: string,
  transfer: (onProgress: (progress: TransferProgress) => void) => Promise<T>,
): Promise<T> {
  const bar = new ProgressBar({ stream, label });
  try {
    return await transfer(bar.update);
  } finally {
    bar.finish();
  }
}
