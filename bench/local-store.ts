/**
 * What the store benchmarks share: a local store started with memflow-run on a free port and
 * stopped at the end, and the statistics they print.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findFreePort } from '../launcher/free-port.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** The value below which a fraction `p` (0..1) of the sorted values lie (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

/** A free port on 127.0.0.1 for rank 0's clients, picked as the launcher picks its own. */
export function freePort(): Promise<number> {
  return findFreePort('127.0.0.1');
}

/** The arguments of `node` for `memflow-run -n 4` on `dataDir` and `port`, plus `extraArgs`. */
export function storeArgs(dataDir: string, port: number, extraArgs: string[] = []): string[] {
  const run = join(ROOT, 'bin', 'memflow-run.js');
  return [run, '-n', '4', '--data-dir', dataDir, '--port', String(port), ...extraArgs];
}

/** `memflow-run -n 4` on `dataDir` and `port` (plus `extraArgs`); resolves once it serves. */
export async function startStore(
  dataDir: string,
  port: number,
  extraArgs: string[] = [],
): Promise<ChildProcess> {
  const child = spawn(process.execPath, storeArgs(dataDir, port, extraArgs), {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('the store did not become ready within 60 s')),
      60_000,
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('MemFlow store ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) =>
      reject(new Error(`the store exited (${code}) before it was ready`)),
    );
  });
  return child;
}

/** SIGTERM, and SIGKILL if it has not ended within 15 s. */
export async function stopStore(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}
