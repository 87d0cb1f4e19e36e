/**
 * Starts a rank on another host through `ssh -o BatchMode=yes HOST 'cd DIR && exec env ... node
 * GUARD ...'`. ssh's stdin is the guard's control pipe: when the launcher dies, ssh's stdin closes,
 * the remote guard sees the end of its own stdin, and it stops the program there.
 */
import { spawn } from 'node:child_process';
import type { LaunchedRank } from '../rank-process.js';
import { sshArgv } from '../commands.js';
import { launchedRank } from './launched-rank.js';

/** Runs `remoteCommand` (built by commands.ts sshRemoteCommand) on `host`. */
export function sshRank(host: string, remoteCommand: string): LaunchedRank {
  const child = spawn('ssh', sshArgv(host, remoteCommand), { stdio: 'pipe', detached: true });
  return launchedRank(child, 'ssh');
}
