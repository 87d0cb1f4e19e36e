/**
 * The data folder lock (src/store/directory-lock.ts). Goal: a second process, or a second store
 * in this one, cannot take a data folder that is in use, whatever path it is given; the refusal
 * names the folder and the holder; the folder is free again once released. (That a holder killed
 * with kill -9 frees it is shown end to end: the durability tests restart the store on its folders
 * after kill -9 of every rank.) Method: real temp folders, locked from this process.
 */
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { lockDirectory, type DirectoryLock } from '../../src/store/directory-lock.js';

const linux = process.platform === 'linux';
if (!linux) console.warn('skipped: the data folder lock exists on Linux only');

const temps: string[] = [];
const held: DirectoryLock[] = [];
afterEach(async () => {
  for (const lock of held.splice(0)) await lock.release();
  for (const dir of temps.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'memflow-lock-'));
  temps.push(dir);
  return dir;
}

describe.skipIf(!linux)('lockDirectory', () => {
  it('refuses a folder in use, naming it and its holder, and takes it once released', async () => {
    const dir = join(await freshDir(), 'rank-1');
    const first = await lockDirectory(dir);
    const refusal = lockDirectory(dir);
    await expect(refusal).rejects.toThrow(`${dir} is in use by another MemFlow rank`);
    await expect(refusal).rejects.toThrow(`(pid ${process.pid} on `);
    await first.release();
    held.push(await lockDirectory(dir));
  });

  it('is one lock for one folder whatever the path: through a symlink, or with a trailing /', async () => {
    const base = await freshDir();
    const dir = join(base, 'rank-2');
    held.push(await lockDirectory(dir));
    await symlink(dir, join(base, 'alias'));
    await expect(lockDirectory(join(base, 'alias'))).rejects.toThrow('is in use');
    await expect(lockDirectory(`${dir}/`)).rejects.toThrow('is in use');
  });

  it('locks different folders independently', async () => {
    const base = await freshDir();
    held.push(await lockDirectory(join(base, 'rank-1')));
    held.push(await lockDirectory(join(base, 'rank-2')));
    expect(held).toHaveLength(2);
  });
});
