/** What a data rank's disk can still take: the default capacity of a rank given none. */
import { mkdir, statfs } from 'node:fs/promises';

/** Free bytes available to us on the file system holding `dir` (created if missing). */
export async function freeBytes(dir: string): Promise<number> {
  await mkdir(dir, { recursive: true });
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}
