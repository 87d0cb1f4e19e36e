/**
 * The launch plan (pure): which rank runs on which host, how it is started, and the environment
 * it gets. Given the same hosts, size and machine identity it always gives the same plan, so the
 * whole placement policy is tested without starting a process.
 *
 * Placement follows mpirun's default "by slot": ranks fill the slots of the first host, then the
 * next, in file order. Ranks beyond the total slot count wrap around, one per host, round-robin in
 * file order again; that costs one warning, never a refusal (mpirun's "not enough slots" is the
 * complaint we design out).
 */
import { formatHostPort, type RootAddress } from '../src/comm/world-env.js';
import { withMallocTunables } from '../src/runtime/malloc-tuning.js';
import { LaunchError } from './errors.js';
import { MAX_RANKS, type HostEntry } from './hostfile.js';
import { isLocalHost, type LocalIdentity } from './local-host.js';

/** How a rank is started: fork here, ssh to its host, or the --launcher-exec template. */
export type SpawnMode = 'fork' | 'ssh' | 'exec';

/** Ranks started without a hostfile or --host, all on localhost. */
export const DEFAULT_SIZE = 4;

/** The address local ranks bind on when the hostfile gives no addr=. */
export const LOCAL_ADDR = '127.0.0.1';

export interface PlanInput {
  /** Hosts from the hostfile or --host; undefined when neither was given (localhost only). */
  hosts?: readonly HostEntry[];
  /** -n; undefined means one rank per slot (DEFAULT_SIZE on localhost without hosts). */
  size?: number;
  /** The machine the launcher runs on, to tell local hosts from remote ones. */
  identity: LocalIdentity;
  /** --launcher fork|ssh: one mode for every host instead of fork-if-local-else-ssh. */
  launcher?: 'fork' | 'ssh';
  /** --launcher-exec was given: every host is started through the template. */
  execTemplate?: boolean;
}

export interface RankPlacement {
  rank: number;
  /** The host as written in the hostfile (what ssh and `{host}` get). */
  host: string;
  /** The address this rank binds on and advertises (MEMFLOW_HOST). */
  addr: string;
  /** The host is this machine. */
  local: boolean;
  /** Index among the ranks on the same host; all local hosts count as one machine. */
  localRank: number;
  mode: SpawnMode;
  /** Per-host keys of the hostfile line, upper case, passed on as MEMFLOW_HOST_<KEY>. */
  hostKeys: Record<string, string>;
}

export interface LaunchPlan {
  size: number;
  ranks: RankPlacement[];
  /** One-line warnings for stderr (the wrap-around). */
  warnings: string[];
}

/**
 * Places `size` ranks on the hosts. Throws LaunchError LAUNCH_USAGE when the size is not an
 * integer from 1 to MAX_RANKS.
 */
export function placeRanks(input: PlanInput): LaunchPlan {
  const hosts: readonly HostEntry[] = input.hosts ?? [
    { name: 'localhost', slots: input.size ?? DEFAULT_SIZE, keys: {}, origin: 'default' },
  ];
  if (hosts.length === 0) {
    throw new LaunchError('LAUNCH_USAGE', 'no hosts to start ranks on');
  }
  const totalSlots = hosts.reduce((sum, host) => sum + host.slots, 0);
  const size = input.size ?? totalSlots;
  if (!Number.isInteger(size) || size < 1 || size > MAX_RANKS) {
    throw new LaunchError(
      'LAUNCH_USAGE',
      `the number of ranks must be from 1 to ${MAX_RANKS}, got ${size}`,
    );
  }

  const hostOfRank: HostEntry[] = [];
  for (const host of hosts) {
    for (let slot = 0; slot < host.slots && hostOfRank.length < size; slot++) hostOfRank.push(host);
  }
  for (let next = 0; hostOfRank.length < size; next = (next + 1) % hosts.length) {
    hostOfRank.push(hosts[next] as HostEntry);
  }

  const warnings: string[] = [];
  if (size > totalSlots) {
    const extra =
      size - totalSlots === 1 ? `rank ${totalSlots} wraps` : `ranks ${totalSlots}-${size - 1} wrap`;
    warnings.push(
      `memflow-run: warning: ${size} ranks but only ${totalSlots} slots; ` +
        `${extra} around the hosts round-robin`,
    );
  }

  const perHostCount = new Map<string, number>();
  const ranks = hostOfRank.map((host, rank): RankPlacement => {
    const local = isLocalHost(host.name, input.identity);
    const machine = local ? '\0local' : host.name.toLowerCase();
    const localRank = perHostCount.get(machine) ?? 0;
    perHostCount.set(machine, localRank + 1);
    return {
      rank,
      host: host.name,
      addr: host.addr ?? (local ? LOCAL_ADDR : hostPart(host.name)),
      local,
      localRank,
      mode: spawnMode(local, input),
      hostKeys: host.keys,
    };
  });
  return { size, ranks, warnings };
}

/** What every rank of one launch shares. */
export interface WorldInfo {
  size: number;
  /** Rank 0's rendezvous address (MEMFLOW_ROOT). */
  root: RootAddress;
  jobId: string;
}

/**
 * The MEMFLOW_* environment of one rank, exactly what src/comm/world-env.ts parseWorldEnv reads,
 * plus MEMFLOW_HOST_<KEY> for the per-host keys of its hostfile line.
 */
export function rankEnv(placement: RankPlacement, world: WorldInfo): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(placement.hostKeys)) env[`MEMFLOW_HOST_${key}`] = value;
  // The launcher's own variables come last so a per-host key can never shadow them.
  env.MEMFLOW_RANK = String(placement.rank);
  env.MEMFLOW_SIZE = String(world.size);
  env.MEMFLOW_ROOT = formatHostPort(world.root);
  env.MEMFLOW_HOST = placement.addr;
  env.MEMFLOW_JOB_ID = world.jobId;
  env.MEMFLOW_LOCAL_RANK = String(placement.localRank);
  return env;
}

/**
 * What every rank inherits from the launcher's environment `env`: `local` for ranks started here
 * or through --launcher-exec (all of it), `remote` for ssh ranks, whose login has none of it (the
 * MEMFLOW_* variables, and what the launcher adds). MEMFLOW_JOIN comes only from --join
 * (`joining`), never from the launcher's own environment. The store's ranks (`store`: no
 * PROGRAM) move chunk data and get glibc malloc settings that keep freed chunk buffers for the
 * next chunks (src/runtime/malloc-tuning.ts); a PROGRAM gets the environment as it is.
 */
export function inheritedEnvironment(
  env: Readonly<Record<string, string | undefined>>,
  options: { joining: boolean; store: boolean },
): { local: Record<string, string | undefined>; remote: Record<string, string> } {
  const local = { ...env };
  if (!options.joining) delete local.MEMFLOW_JOIN;
  if (options.store) local.GLIBC_TUNABLES = withMallocTunables(local.GLIBC_TUNABLES);
  const remote: Record<string, string> = {};
  for (const [key, value] of Object.entries(local)) {
    const carried = key.startsWith('MEMFLOW_') || (options.store && key === 'GLIBC_TUNABLES');
    if (carried && value !== undefined) remote[key] = value;
  }
  return { local, remote };
}

/** MEMFLOW_JOB_ID of ranks started by --join (the world they join has its own id). */
export const JOIN_JOB_ID = 'join';

/**
 * The MEMFLOW_* environment of a rank started by `--join`: it joins the running world whose rank 0
 * serves its rendezvous at `root`. Its rank and the world's size are only known once rank 0 has
 * admitted it, so MEMFLOW_RANK=0 and MEMFLOW_SIZE=1 are placeholders that keep the contract
 * parseable; MEMFLOW_JOIN=1 tells the rank to ask rank 0 for its number. MEMFLOW_LOCAL_RANK counts
 * the ranks of this join per machine (not the ranks already running there).
 */
export function joinRankEnv(placement: RankPlacement, root: RootAddress): Record<string, string> {
  const env = rankEnv(placement, { size: 1, root, jobId: JOIN_JOB_ID });
  env.MEMFLOW_RANK = '0';
  env.MEMFLOW_JOIN = '1';
  return env;
}

/**
 * How output tags and reports name the rank at `index` of a --join launch: its real number is only
 * assigned by rank 0 at wire-up, so `j0`, `j1`, ... (the index within this join).
 */
export function joinName(index: number): string {
  return `j${index}`;
}

function spawnMode(local: boolean, input: PlanInput): SpawnMode {
  if (input.execTemplate === true) return 'exec';
  if (input.launcher !== undefined) return input.launcher;
  return local ? 'fork' : 'ssh';
}

/** `user@node1` binds and advertises as `node1`. */
function hostPart(name: string): string {
  return name.slice(name.lastIndexOf('@') + 1);
}
