/**
 * The launcher's command line, minus yargs (pure). mpiexec's rule holds: launcher options come
 * first, and the first word that is not one of them starts the program part, which belongs to the
 * program untouched:
 *
 *   memflow-run [launcher options] [--] PROGRAM [ARGS...]
 *   memflow-run [launcher options] [store options]        (store mode: no PROGRAM)
 *   memflow-run --join HOST:PORT [launcher options] ...  (new ranks join a running world)
 *
 * When that first word is an option the launcher does not know (`--port 7070`), there is no
 * PROGRAM: the launcher runs the store program and forwards it every option it does not know,
 * while still taking its own options from anywhere in the line. An unknown option before an
 * explicit `-- PROGRAM` is a usage error (strict checking outside store mode).
 *
 * splitCommandLine() separates the parts and rewrites the launcher's own options into canonical
 * `--name=value` words, which cli.ts hands to yargs (strict, for the help text and one more
 * check); toLaunchRequest() validates the values yargs returns.
 */
import { parseHostPort, type RootAddress } from '../src/comm/world-env.js';
import { LaunchError } from './errors.js';
import { MAX_RANKS } from './hostfile.js';
import { splitTemplate } from './commands.js';

export interface OptionSpec {
  /** The canonical long name (`--name`). */
  name: string;
  /** Other spellings: one letter means `-x`, longer means `--xx` (and `-np`, as mpirun allows). */
  aliases: readonly string[];
  /** 'string' options take a value; 'boolean' ones take none and have a `--no-` form. */
  type: 'string' | 'boolean';
  description: string;
}

/** Every option the launcher owns; cli.ts builds yargs from this table. */
export const LAUNCHER_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'n',
    aliases: ['np'],
    type: 'string',
    description:
      'number of ranks (default: the total slots; 4 without --hostfile or --host; 1 with --join)',
  },
  {
    name: 'hostfile',
    aliases: ['machinefile'],
    type: 'string',
    description: 'hosts file: "node1 slots=4" or "node1:4" lines, optional key=value per host',
  },
  {
    name: 'host',
    aliases: ['H'],
    type: 'string',
    description: 'comma-separated hosts, same syntax as hostfile lines: h1,h2:2',
  },
  {
    name: 'launcher',
    aliases: [],
    type: 'string',
    description: 'fork | ssh: start every host this way (default: fork if local, else ssh)',
  },
  {
    name: 'launcher-exec',
    aliases: [],
    type: 'string',
    description: 'command template replacing ssh for every host, e.g. "ip netns exec {host}"',
  },
  {
    name: 'root-port',
    aliases: [],
    type: 'string',
    description: "port of rank 0's rendezvous (default: a free port)",
  },
  {
    name: 'grace-ms',
    aliases: [],
    type: 'string',
    description: 'time ranks get between SIGTERM and SIGKILL (default 3000)',
  },
  {
    name: 'tag-output',
    aliases: [],
    type: 'boolean',
    description: 'prefix every output line with [rank] (default on; --no-tag-output)',
  },
  {
    name: 'on-rank-failure',
    aliases: [],
    type: 'string',
    description:
      'abort (stop all ranks; the default with a PROGRAM) | continue (the default in store mode and with --join)',
  },
  {
    name: 'restart',
    aliases: ['max-restarts'],
    type: 'string',
    description:
      'restart a failed rank (not rank 0) up to N times with the same environment (default 0)',
  },
  {
    name: 'join',
    aliases: [],
    type: 'string',
    description:
      'start -n new ranks (default 1) that join the running world whose rank 0 is at HOST:PORT',
  },
  { name: 'help', aliases: ['h'], type: 'boolean', description: 'show this help' },
];

/** What to run on every rank. */
export type RankCommand =
  | { kind: 'program'; program: string; args: string[] }
  /** Store mode: the store program, with the options the launcher does not know. */
  | { kind: 'store'; args: string[] };

export interface SplitCommandLine {
  /** The launcher's own options as canonical `--name=value` / `--name` / `--no-name` words. */
  launcherArgv: string[];
  command: RankCommand;
}

/**
 * Splits argv (without node and script) into the launcher's options and the rank command. Throws
 * LaunchError LAUNCH_USAGE for a launcher option without its value, or an unknown option before an
 * explicit `-- PROGRAM`.
 */
export function splitCommandLine(argv: readonly string[]): SplitCommandLine {
  const launcherArgv: string[] = [];
  const unknown: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i] as string;
    if (word === '--') {
      const rest = argv.slice(i + 1);
      const [program, ...args] = rest;
      if (program === undefined) return { launcherArgv, command: { kind: 'store', args: unknown } };
      if (unknown.length > 0) throw unknownOption(unknown[0] as string);
      return { launcherArgv, command: { kind: 'program', program, args } };
    }
    const option = matchOption(word);
    if (option === null) {
      if (unknown.length === 0 && !isOptionLike(word)) {
        return {
          launcherArgv,
          command: { kind: 'program', program: word, args: argv.slice(i + 1) },
        };
      }
      // Store mode: everything the launcher does not know goes to the store program.
      unknown.push(word);
      continue;
    }
    const { spec, negated, inlineValue } = option;
    if (spec.type === 'boolean') {
      if (inlineValue !== undefined) {
        throw new LaunchError('LAUNCH_USAGE', `option ${word}: --${spec.name} takes no value`);
      }
      launcherArgv.push(negated ? `--no-${spec.name}` : `--${spec.name}`);
      continue;
    }
    let value = inlineValue;
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) {
        throw new LaunchError('LAUNCH_USAGE', `option ${word} needs a value`);
      }
    }
    launcherArgv.push(`--${spec.name}=${value}`);
  }
  return { launcherArgv, command: { kind: 'store', args: unknown } };
}

export interface LaunchRequest {
  size?: number;
  hostfile?: string;
  hostList?: string;
  launcher?: 'fork' | 'ssh';
  /** The template split into words (with `{host}` still in them). */
  launcherExec?: string[];
  rootPort?: number;
  graceMs: number;
  tagOutput: boolean;
  onRankFailure: 'abort' | 'continue';
  /** --restart: how many times each rank but rank 0 may be restarted after failing (0: never). */
  restarts: number;
  /** --join: rank 0's rendezvous of the running world the new ranks join. */
  join?: RootAddress;
  command: RankCommand;
}

export const DEFAULT_GRACE_MS = 3000;
const MAX_GRACE_MS = 600_000;
/** The most restarts --restart allows per rank. */
export const MAX_RESTARTS = 1000;

/**
 * Validates the option values (as yargs returns them for launcherArgv) into a LaunchRequest.
 * Throws LaunchError LAUNCH_USAGE naming the option and the accepted values.
 */
export function toLaunchRequest(
  values: Readonly<Record<string, unknown>>,
  command: RankCommand,
): LaunchRequest {
  const text = (name: string): string | undefined => {
    // yargs gives strings for 'string' options; numbers only come from tests that pass them.
    const value = values[name];
    if (value === undefined) return undefined;
    return typeof value === 'string' ? value : JSON.stringify(value);
  };
  const join = joinOption(text('join'));
  const request: LaunchRequest = {
    graceMs: integerOption('--grace-ms', text('grace-ms'), 0, MAX_GRACE_MS) ?? DEFAULT_GRACE_MS,
    tagOutput: values['tag-output'] !== false,
    // Store mode survives data-rank deaths; joining ranks have no rank 0 whose end ends the job.
    onRankFailure:
      choiceOption('--on-rank-failure', text('on-rank-failure'), ['abort', 'continue'] as const) ??
      (command.kind === 'store' || join !== undefined ? 'continue' : 'abort'),
    restarts: integerOption('--restart', text('restart'), 0, MAX_RESTARTS) ?? 0,
    command,
  };
  if (join !== undefined) {
    if (text('root-port') !== undefined) {
      throw new LaunchError(
        'LAUNCH_USAGE',
        "--join and --root-port contradict each other: the rendezvous is the running world's",
      );
    }
    request.join = join;
  }
  const size = integerOption('-n', text('n'), 1, MAX_RANKS);
  if (size !== undefined) request.size = size;
  const rootPort = integerOption('--root-port', text('root-port'), 1, 65535);
  if (rootPort !== undefined) request.rootPort = rootPort;
  const launcher = choiceOption('--launcher', text('launcher'), ['fork', 'ssh'] as const);
  if (launcher !== undefined) request.launcher = launcher;

  const hostfile = text('hostfile');
  const hostList = text('host');
  if (hostfile !== undefined && hostList !== undefined) {
    throw new LaunchError('LAUNCH_USAGE', 'give either --hostfile or --host, not both');
  }
  if (hostfile !== undefined) {
    if (hostfile === '') throw new LaunchError('LAUNCH_USAGE', '--hostfile needs a file name');
    request.hostfile = hostfile;
  }
  if (hostList !== undefined) request.hostList = hostList;

  const template = text('launcher-exec');
  if (template !== undefined) {
    if (launcher === 'fork') {
      throw new LaunchError(
        'LAUNCH_USAGE',
        '--launcher fork and --launcher-exec contradict each other: the template starts every host',
      );
    }
    request.launcherExec = splitTemplate(template);
  }
  return request;
}

function integerOption(
  name: string,
  value: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim()) || Number(value) < min || Number(value) > max) {
    throw new LaunchError(
      'LAUNCH_USAGE',
      `${name} must be an integer from ${min} to ${max}, got "${value}"`,
    );
  }
  return Number(value);
}

/** --join HOST:PORT (IPv6 as [addr]:PORT), the address the running world's rank 0 serves. */
function joinOption(value: string | undefined): RootAddress | undefined {
  if (value === undefined) return undefined;
  try {
    return parseHostPort(value, '--join');
  } catch {
    throw new LaunchError(
      'LAUNCH_USAGE',
      `--join must be HOST:PORT of the running world's rank 0 (IPv6 as [addr]:PORT, port 1-65535), got "${value}"`,
    );
  }
}

function choiceOption<T extends string>(
  name: string,
  value: string | undefined,
  choices: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  const choice = choices.find((c) => c === value);
  if (choice === undefined) {
    throw new LaunchError(
      'LAUNCH_USAGE',
      `${name} must be ${choices.join(' or ')}, got "${value}"`,
    );
  }
  return choice;
}

function isOptionLike(word: string): boolean {
  return word.startsWith('-') && word !== '-';
}

function matchOption(
  word: string,
): { spec: OptionSpec; negated: boolean; inlineValue: string | undefined } | null {
  if (!isOptionLike(word)) return null;
  const doubleDash = word.startsWith('--');
  const body = word.slice(doubleDash ? 2 : 1);
  const eq = body.indexOf('=');
  const key = eq === -1 ? body : body.slice(0, eq);
  const inlineValue = eq === -1 ? undefined : body.slice(eq + 1);
  for (const spec of LAUNCHER_OPTIONS) {
    const names = [spec.name, ...spec.aliases];
    if (doubleDash) {
      // Long names are written --name; booleans also --no-name.
      if (names.some((name) => name.length > 1 && name === key)) {
        return { spec, negated: false, inlineValue };
      }
      if (spec.type === 'boolean' && names.some((name) => `no-${name}` === key)) {
        return { spec, negated: true, inlineValue };
      }
    } else {
      // One-letter names are written -x; mpirun users also write -np.
      if (names.some((name) => name === key && (name.length === 1 || name === 'np'))) {
        return { spec, negated: false, inlineValue };
      }
      // -n4: a one-letter option with its number attached.
      const attached = /^([A-Za-z])(\d+)$/.exec(key);
      if (attached !== null && inlineValue === undefined && spec.type === 'string') {
        if (names.includes(attached[1] as string)) {
          return { spec, negated: false, inlineValue: attached[2] };
        }
      }
    }
  }
  return null;
}

function unknownOption(word: string): LaunchError {
  return new LaunchError(
    'LAUNCH_USAGE',
    `unknown option ${word} (launcher options go before PROGRAM; memflow-run --help lists them)`,
  );
}
