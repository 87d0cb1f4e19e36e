/**
 * Starts a rank through a --launcher-exec template (e.g. `ip netns exec {host}`). The template
 * command runs on this machine, so the rank's environment travels in the spawn environment rather
 * than on a command line.
 */
import { spawn } from 'node:child_process';
import type { LaunchedRank } from '../rank-process.js';
import { launchedRank } from './launched-rank.js';

/** Runs `argv` (built by commands.ts execTemplateArgv) with `env`. */
export function execTemplateRank(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
): LaunchedRank {
  const [command = '', ...args] = argv;
  const child = spawn(command, args, { env, cwd, stdio: 'pipe', detached: true });
  return launchedRank(child, command);
}
