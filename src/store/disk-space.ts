/**
 * What a data rank's disk can still take. A rank offers the smaller of its configured capacity
 * and its share of what its disk can really hold (rank 0 works it out from the ranks' reports:
 * ranks on one file system share its free space), so placement and the up-front "not enough
 * space" refusal see a disk that is smaller than promised, shared, or filled by something else
 * before a write fails on it.
 */
import { mkdir, stat, statfs } from 'node:fs/promises';

/** Free bytes available to us on the file system holding `dir` (created if missing). */
export async function freeBytes(dir: string): Promise<number> {
  await mkdir(dir, { recursive: true });
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * Which file system holds `dir` (its device number): ranks on one host whose folders share a
 * file system share its free space, and rank 0 must not offer that space once per rank.
 */
export async function diskId(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  return String((await stat(dir)).dev);
}

/**
 * Space kept back from what the disk reports free: room for record headers, the index and
 * volumes not yet compacted, so a rank whose offered capacity is full still has a disk that is
 * not (1% of the disk's share, at least 256 KiB, at most 1 GiB).
 */
export function diskReserveBytes(diskBytes: number): number {
  return Math.min(1024 ** 3, Math.max(256 * 1024, Math.floor(diskBytes / 100)));
}

/**
 * The capacity a data rank offers: its configured capacity (from --capacity or the hostfile;
 * undefined means "the disk"), capped by the chunk bytes it holds plus its share of what the disk
 * still has free, less the reserve — `sharers` data ranks keep their chunks on that disk, and
 * each may count on an equal part of its free space.
 */
export function offeredCapacity(
  configuredBytes: number | undefined,
  usedBytes: number,
  diskFreeBytes: number,
  sharers = 1,
): number {
  const room = Math.max(0, diskFreeBytes - diskReserveBytes(usedBytes + diskFreeBytes));
  const onDisk = usedBytes + Math.floor(room / Math.max(1, sharers));
  return configuredBytes === undefined ? onDisk : Math.min(configuredBytes, onDisk);
}
