/**
 * Rank 0's picture of the data ranks: where each runs, what it offers and holds, and whether it
 * can take writes. Placement reads it; uploads reserve space in it before bytes move, so two
 * concurrent uploads never both count on the same free bytes.
 */
import type { RankState } from '../protocol/client-protocol.js';
import type { RankUsage } from '../store/placement.js';
import { offeredCapacity } from '../store/disk-space.js';
import type { RankReport } from './messages.js';

export interface RankInfo {
  rank: number;
  host: string;
  capacityBytes: number;
  /** Bytes of chunk copies the rank holds, by its last report plus what we stored since. */
  usedBytes: number;
  /** Bytes promised to chunks being written now. */
  reservedBytes: number;
  chunkCopies: number;
  state: RankState;
  /** The seq of the newest report taken (RankReport.seq; 0 before any). */
  reportSeq: number;
  /** The file system its chunks live on (host:device), when it said. */
  diskId?: string;
  /** Its chunk port, where clients read large chunks directly (when it has one). */
  portEndpoint?: string;
  /** What that port has served since the rank started, by its last report. */
  directReads?: { count: number; bytes: number };
  directWrites?: { count: number; bytes: number };
}

export class Cluster {
  private readonly ranks = new Map<number, RankInfo>();

  /**
   * Takes a data rank's own report (start-up inventory, status refresh). Its capacity is capped
   * by its share of its disk's free space: the disk's free bytes are split evenly among the
   * ranks (not dead) that keep their chunks on it, so ranks of one host on one file system do not
   * each offer all of it.
   */
  update(report: RankReport): void {
    const known = this.ranks.get(report.rank);
    const sharers = report.disk
      ? 1 +
        this.all().filter(
          (r) => r.rank !== report.rank && r.state !== 'dead' && r.diskId === report.disk!.id,
        ).length
      : 1;
    this.ranks.set(report.rank, {
      rank: report.rank,
      host: report.host,
      capacityBytes: report.disk
        ? offeredCapacity(report.capacityBytes, report.usedBytes, report.disk.freeBytes, sharers)
        : report.capacityBytes,
      ...(report.disk && { diskId: report.disk.id }),
      ...(report.portEndpoint !== undefined && { portEndpoint: report.portEndpoint }),
      ...(report.directReads !== undefined && { directReads: report.directReads }),
      ...(report.directWrites !== undefined && { directWrites: report.directWrites }),
      usedBytes: report.usedBytes,
      reservedBytes: known?.reservedBytes ?? 0,
      chunkCopies: report.chunkCount,
      state: known?.state ?? 'alive',
      // A restarted rank counts its reports from 1 again: its first report starts afresh.
      reportSeq: report.seq,
    });
  }

  /** Takes every rank's report at once (start-up): each sees who shares its disk. */
  updateAll(reports: readonly RankReport[]): void {
    // Twice: the first pass makes every rank's disk known, the second splits the disks by it.
    for (const report of reports) this.update(report);
    for (const report of reports) this.update(report);
  }

  get(rank: number): RankInfo | undefined {
    return this.ranks.get(rank);
  }

  all(): RankInfo[] {
    return [...this.ranks.values()].sort((a, b) => a.rank - b.rank);
  }

  hostOf(rank: number): string {
    return this.ranks.get(rank)?.host ?? '?';
  }

  stateOf(rank: number): RankState {
    return this.ranks.get(rank)?.state ?? 'dead';
  }

  setState(rank: number, state: RankState): void {
    const info = this.ranks.get(rank);
    if (info) info.state = state;
  }

  isAlive(rank: number): boolean {
    return this.ranks.get(rank)?.state === 'alive';
  }

  /** The usage vector placement works on: reservations count as used; only live ranks take writes. */
  usage(): RankUsage[] {
    return this.all().map((r) => ({
      rank: r.rank,
      host: r.host,
      usedBytes: r.usedBytes + r.reservedBytes,
      capacityBytes: r.capacityBytes,
      writable: r.state === 'alive',
    }));
  }

  /** The rank's disk refused a write: offer nothing beyond what it holds until it reports again. */
  markFull(rank: number): void {
    const info = this.ranks.get(rank);
    if (info) info.capacityBytes = Math.min(info.capacityBytes, info.usedBytes);
  }

  reserve(rank: number, bytes: number): void {
    const info = this.ranks.get(rank);
    if (info) info.reservedBytes += bytes;
  }

  /**
   * Ends a reservation; when `stored`, the bytes now count as a stored copy — unless a report the
   * rank made after storing it (seq > `reportSeq`, from the put's reply) was taken already: that
   * report counts it, and counting it again would make the rank look fuller than it is until
   * the next heartbeat (and an upload be refused for space that exists).
   */
  release(rank: number, bytes: number, stored: boolean, reportSeq?: number): void {
    const info = this.ranks.get(rank);
    if (!info) return;
    info.reservedBytes = Math.max(0, info.reservedBytes - bytes);
    if (stored && !this.reportedSince(info, reportSeq)) {
      info.usedBytes += bytes;
      info.chunkCopies++;
    }
  }

  /**
   * Copies were deleted (`reportSeq`: the rank's last report before the deletions began). Left
   * to the reports when one made after that was taken already, which may count them.
   */
  forget(rank: number, bytes: number, reportSeq?: number): void {
    const info = this.ranks.get(rank);
    if (!info || this.reportedSince(info, reportSeq)) return;
    info.usedBytes = Math.max(0, info.usedBytes - bytes);
    info.chunkCopies = Math.max(0, info.chunkCopies - 1);
  }

  private reportedSince(info: RankInfo, reportSeq: number | undefined): boolean {
    return reportSeq !== undefined && info.reportSeq > reportSeq;
  }
}
