/**
 * One process per data folder. Two ranks on one folder (the store started twice on the same
 * --data-dir, or a rank restarted while its old process still hangs on) would append to the same
 * volumes and the same index journal, and each would overwrite what the other wrote: the store
 * must refuse to start the second one.
 *
 * The lock is a listening socket in Linux's abstract namespace, named after the folder's real
 * path: binding it is atomic, a second bind fails with EADDRINUSE, and the kernel releases it
 * when the process ends however it ends (kill -9 included), so there is never a stale lock to
 * clean up by hand, as a lock file would leave. It is per host (per network namespace), which is
 * where a data folder lives. Other systems get no lock. A note naming the holder (pid, start time)
 * is written next to the data, for the refusal message only.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, realpath, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';

export interface DirectoryLock {
  release(): Promise<void>;
}

/** The file, inside the locked folder, that names the process holding it. */
const LOCK_NOTE = 'in-use-by.json';

/**
 * Takes `dir` (created if missing) for this process until release() or exit. Rejects with an
 * Error naming the holder when another process has it.
 */
export async function lockDirectory(dir: string): Promise<DirectoryLock> {
  await mkdir(dir, { recursive: true });
  if (process.platform !== 'linux') return { release: () => Promise.resolve() };
  const real = await realpath(dir);
  const name = `\0memflow-dir-${createHash('sha256').update(real).digest('hex').slice(0, 40)}`;
  const server = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(name, () => resolve());
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    throw new Error(
      `${real} is in use by another MemFlow rank${await holder(real)}; two ranks on one folder ` +
        'would overwrite each other. Stop that one first, or give this one another --data-dir',
    );
  }
  // The socket must not keep the process alive, nor accept anything.
  server.unref();
  server.on('connection', (socket) => socket.destroy());
  const note = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
  await writeFile(join(real, LOCK_NOTE), `${JSON.stringify(note)}\n`).catch(() => undefined);
  return {
    release: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** " (pid N on HOST, since TIME)" from the holder's note, or "" when it cannot be read. */
async function holder(dir: string): Promise<string> {
  try {
    const note = JSON.parse(await readFile(join(dir, LOCK_NOTE), 'utf8')) as Record<
      string,
      unknown
    >;
    return ` (pid ${String(note.pid)} on ${String(note.host)}, since ${String(note.since)})`;
  } catch {
    return '';
  }
}
