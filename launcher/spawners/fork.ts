/**
 * Starts a rank on this machine: the guard runs under the launcher's own Node binary, with the
 * launcher's environment plus the rank's MEMFLOW_* variables.
 */
import { spawn } from 'node:child_process';
import type { LaunchedRank } from '../rank-process.js';
import { launchedRank } from './launched-rank.js';

/**
 * Starts `node guardArgv...` here. The guard gets its own process group (detached), so a Ctrl-C in
 * the terminal reaches only the launcher, which then stops every rank in order.
 */
export function forkRank(
  guardArgv: readonly string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
): LaunchedRank {
  const child = spawn(process.execPath, guardArgv, { env, cwd, stdio: 'pipe', detached: true });
  return launchedRank(child, process.execPath);
}
