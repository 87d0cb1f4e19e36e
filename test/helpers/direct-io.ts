/**
 * Whether O_DIRECT works in the temp directory the store tests use: on ext4 and xfs it does, on
 * tmpfs it does not. Tests of the direct path skip, saying why, where it cannot run.
 */
import { constants } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function directIoInTmpdir(): Promise<{ works: boolean; why: string }> {
  if (constants.O_DIRECT === undefined) return { works: false, why: 'no O_DIRECT on this OS' };
  const dir = await mkdtemp(join(tmpdir(), 'memflow-direct-probe-'));
  try {
    const handle = await open(
      join(dir, 'probe'),
      constants.O_CREAT | constants.O_RDWR | constants.O_DIRECT,
    );
    await handle.close();
    return { works: true, why: '' };
  } catch (err) {
    return { works: false, why: `${tmpdir()} refuses O_DIRECT (${(err as Error).message})` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
