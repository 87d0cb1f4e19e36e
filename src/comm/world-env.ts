/**
 * Where a rank learns its place in the world: a pure reading of the environment that memflow-run
 * (or another launcher: Open MPI, MPICH Hydra, Slurm, torchrun) gave the process. The full contract,
 * with examples, is in docs/LAUNCHER.md. This module touches nothing: the caller passes
 * `process.env`, tests pass plain objects.
 */
import { CommError } from './errors.js';

/** The address of rank 0's rendezvous socket. */
export interface RootAddress {
  host: string;
  port: number;
}

export interface WorldEnv {
  /** This process's rank, 0 <= rank < size. */
  rank: number;
  /** The number of ranks in the world. */
  size: number;
  /** Where rank 0 listens for the wire-up. */
  root: RootAddress;
  /** The address this rank binds on and advertises to the others. */
  host: string;
  /** An id shared by every rank of one launch, so ranks of two jobs never wire up together. */
  jobId: string;
  /** This rank's index among the ranks on the same host. */
  localRank: number;
}

export type Env = Record<string, string | undefined>;

/**
 * The launchers we understand, in order of precedence. The first one whose rank or size variable is
 * set supplies both (never a rank from one launcher and a size from another); its local-rank
 * variable is used when MEMFLOW_LOCAL_RANK is absent.
 */
const RANK_SOURCES: readonly { rank: string; size: string; localRank: readonly string[] }[] = [
  { rank: 'MEMFLOW_RANK', size: 'MEMFLOW_SIZE', localRank: [] },
  {
    rank: 'OMPI_COMM_WORLD_RANK',
    size: 'OMPI_COMM_WORLD_SIZE',
    localRank: ['OMPI_COMM_WORLD_LOCAL_RANK'],
  },
  { rank: 'PMI_RANK', size: 'PMI_SIZE', localRank: ['MPI_LOCALRANKID', 'PMI_LOCAL_RANK'] },
  { rank: 'SLURM_PROCID', size: 'SLURM_NTASKS', localRank: ['SLURM_LOCALID'] },
  { rank: 'RANK', size: 'WORLD_SIZE', localRank: ['LOCAL_RANK'] },
];

/** Rank and size variables, in precedence order, as documented in docs/LAUNCHER.md. */
export const RANK_VARIABLES: readonly string[] = RANK_SOURCES.flatMap((s) => [s.rank, s.size]);

/**
 * Reads the world of this rank from `env`.
 *
 * - rank/size: MEMFLOW_RANK/MEMFLOW_SIZE, else OMPI_COMM_WORLD_RANK/SIZE, else PMI_RANK/PMI_SIZE,
 *   else SLURM_PROCID/SLURM_NTASKS, else RANK/WORLD_SIZE.
 * - root: MEMFLOW_ROOT (`host:port` or `[ipv6]:port`), always required.
 * - host: MEMFLOW_HOST (an IPv6 address with or without brackets); when absent and the root is a loopback address, the root's host (a job on
 *   one machine); otherwise required.
 * - jobId: MEMFLOW_JOB_ID, else the MEMFLOW_ROOT string (the same on every rank of one job).
 * - localRank: MEMFLOW_LOCAL_RANK, else the chosen launcher's local-rank variable, else the rank
 *   itself (unique on the host, which is what per-host resource naming needs).
 *
 * Throws CommError COMM_BAD_ARGUMENT, whose message names the variable that is missing or invalid
 * and whose detail.variable holds it.
 */
export function parseWorldEnv(env: Env): WorldEnv {
  const source = RANK_SOURCES.find((s) => isSet(env[s.rank]) || isSet(env[s.size]));
  if (source === undefined) {
    throw bad(
      'MEMFLOW_RANK',
      'no rank in the environment: set MEMFLOW_RANK and MEMFLOW_SIZE, or start the program with ' +
        'memflow-run, mpirun (OMPI_COMM_WORLD_RANK), MPICH (PMI_RANK), srun (SLURM_PROCID) or ' +
        'torchrun (RANK)',
    );
  }
  const size = readInteger(env, source.size, 1);
  const rank = readInteger(env, source.rank, 0);
  if (rank >= size) {
    throw bad(source.rank, `${source.rank}=${rank} is not below ${source.size}=${size}`);
  }

  const rootText = env.MEMFLOW_ROOT;
  if (!isSet(rootText)) {
    throw bad(
      'MEMFLOW_ROOT',
      'MEMFLOW_ROOT is not set: set it to host:port of rank 0 (memflow-run sets it; with mpirun, ' +
        'srun or torchrun export it to every rank yourself)',
    );
  }
  const root = parseHostPort(rootText, 'MEMFLOW_ROOT');

  let host: string;
  if (isSet(env.MEMFLOW_HOST)) {
    // An IPv6 address may come in brackets, as in a URL; ranks bind on the bare address.
    host = env.MEMFLOW_HOST.trim().replace(/^\[(.*)\]$/, '$1');
    if (/[\s/[\]]/.test(host)) {
      throw bad('MEMFLOW_HOST', `MEMFLOW_HOST must be a host name or address, got "${host}"`);
    }
  } else if (isLoopback(root.host)) {
    host = root.host;
  } else {
    throw bad(
      'MEMFLOW_HOST',
      `MEMFLOW_HOST is not set: with rank 0 at ${rootText} the ranks may be on several hosts, so ` +
        'each rank needs MEMFLOW_HOST=<the address it binds on and advertises>',
    );
  }

  const jobId = isSet(env.MEMFLOW_JOB_ID) ? env.MEMFLOW_JOB_ID.trim() : rootText.trim();

  const localVar = ['MEMFLOW_LOCAL_RANK', ...source.localRank].find((name) => isSet(env[name]));
  const localRank = localVar === undefined ? rank : readInteger(env, localVar, 0);

  return { rank, size, root, host, jobId, localRank };
}

/**
 * Parses `host:port` or `[ipv6]:port` as found in MEMFLOW_ROOT; `variable` names the source in
 * errors. Throws CommError COMM_BAD_ARGUMENT.
 */
export function parseHostPort(text: string, variable: string): RootAddress {
  const trimmed = text.trim();
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(trimmed) ?? /^([^:\s[\]]+):(\d+)$/.exec(trimmed);
  if (match === null) {
    throw bad(variable, `${variable} must be host:port or [ipv6]:port, got "${text}"`);
  }
  const port = Number(match[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw bad(variable, `${variable} has port ${match[2]}, which is not in 1-65535`);
  }
  return { host: match[1] ?? '', port };
}

/** Formats a root address the way parseHostPort reads it (IPv6 literals in brackets). */
export function formatHostPort(address: RootAddress): string {
  return address.host.includes(':')
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

function readInteger(env: Env, name: string, min: number): number {
  const text = env[name];
  if (!isSet(text)) {
    throw bad(name, `${name} is not set`);
  }
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed) || !Number.isSafeInteger(Number(trimmed)) || Number(trimmed) < min) {
    throw bad(name, `${name} must be an integer >= ${min}, got "${text}"`);
  }
  return Number(trimmed);
}

function isSet(value: string | undefined): value is string {
  return value !== undefined && value.trim() !== '';
}

/** Whether `host` (a name or address, IPv6 without brackets) names this machine's loopback. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function bad(variable: string, message: string): CommError {
  return new CommError('COMM_BAD_ARGUMENT', message, { variable });
}
