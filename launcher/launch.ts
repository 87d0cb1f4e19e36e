/**
 * One launch, start to end: read the hosts, plan the ranks, pick rank 0's port (or, with --join,
 * point the ranks at a running world's rank 0), start every rank under its guard, forward output
 * and stdin, and let the supervisor decide the exit status and restart failed ranks (--restart). The
 * world outside (stdio, environment, signals) comes in through LauncherIo, so cli.ts stays the only
 * place that touches process.argv and process.exit.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { PassThrough, Writable, type Readable } from 'node:stream';
import type { LaunchRequest } from './args.js';
import { execTemplateArgv, guardArgs, sshRemoteCommand } from './commands.js';
import { LaunchError } from './errors.js';
import { findFreePort, randomPort } from './free-port.js';
import { parseHostfile, parseHostList, type HostEntry } from './hostfile.js';
import { currentLocalIdentity } from './local-host.js';
import { forwardOutput, rankTag } from './output.js';
import { GUARD_SCRIPT, PACKAGE_ROOT, STORE_PROGRAM } from './paths.js';
import {
  inheritedEnvironment,
  joinName,
  joinRankEnv,
  placeRanks,
  rankEnv,
  type RankPlacement,
} from './plan.js';
import type { LaunchedRank } from './rank-process.js';
import { execTemplateRank } from './spawners/exec-template.js';
import { forkRank } from './spawners/fork.js';
import { sshRank } from './spawners/ssh.js';
import { forwardStdin, sendStdinEof } from './stdin-forward.js';
import { Supervisor, type SupervisedRank } from './supervisor.js';

export interface LauncherIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Subscribes to SIGINT/SIGTERM/SIGHUP of the launcher; returns the unsubscribe function. */
  onSignal(handler: (signal: NodeJS.Signals) => void): () => void;
}

/** The status when the launcher's own stdout is closed under it, as if it had died of SIGPIPE. */
const OUTPUT_CLOSED_STATUS = 141;

/**
 * Runs the whole launch; resolves to the launcher's exit status. Rejects with LaunchError for
 * usage and configuration errors found before any rank starts (nothing is left running then).
 */
export async function launch(request: LaunchRequest, io: LauncherIo): Promise<number> {
  const joining = request.join !== undefined;
  const hosts = readHosts(request);
  // A join adds one rank unless -n says otherwise, wherever the hosts have slots.
  const size = request.size ?? (joining ? 1 : undefined);
  const plan = placeRanks({
    ...(hosts === undefined ? {} : { hosts }),
    ...(size === undefined ? {} : { size }),
    identity: currentLocalIdentity(),
    ...(request.launcher === undefined ? {} : { launcher: request.launcher }),
    execTemplate: request.launcherExec !== undefined,
  });
  const program = rankProgram(request);
  if (!fs.existsSync(GUARD_SCRIPT)) {
    throw new LaunchError(
      'LAUNCH_NOT_BUILT',
      `the rank guard is not built (${GUARD_SCRIPT} is missing): run npm run build`,
    );
  }
  for (const warning of plan.warnings) io.stderr.write(`${warning}\n`);

  const envOf = await rankEnvironment(request, plan.ranks[0] as RankPlacement, plan.size);
  // The launcher's own environment reaches the ranks too (see inheritedEnvironment).
  const { local: inherited, remote: memflowEnv } = inheritedEnvironment(io.env, {
    joining,
    store: request.command.kind !== 'program',
  });
  const launchIo = { ...io, env: inherited };

  /** Starts (or restarts) a rank as planned and forwards its output. */
  const start = (supervised: SupervisedRank, placement: RankPlacement): void => {
    const env = envOf(placement);
    const command = program(placement);
    const argv = guardArgs({
      guardScript: GUARD_SCRIPT,
      graceMs: request.graceMs,
      program: command.program,
      args: command.args,
    });
    const launched = startRank(placement, env, argv, request, launchIo, memflowEnv);
    const name = supervised.name ?? placement.rank;
    const tag = request.tagOutput ? rankTag(name) : null;
    delete supervised.notice;
    supervised.process = launched;
    supervised.outputDone = Promise.all([
      forwardOutput(launched.stdout, io.stdout, { tag }),
      forwardOutput(launched.stderr, io.stderr, {
        tag,
        onNotice: (notice) => (supervised.notice = notice),
      }),
    ]).then(() => undefined);
  };

  const ranks = plan.ranks.map((placement): SupervisedRank => {
    // start() fills in process and outputDone before anyone looks at them.
    const supervised = {
      rank: placement.rank,
      ...(joining ? { name: joinName(placement.rank) } : {}),
      host: placement.host,
      mode: placement.mode,
    } as SupervisedRank;
    start(supervised, placement);
    return supervised;
  });

  // stdin goes to rank 0 only; the ranks of a join are never rank 0, so none of them gets it.
  const first = ranks[0] as SupervisedRank;
  const stopStdin = joining ? () => undefined : forwardStdin(io.stdin, first.process.control);
  for (const rank of joining ? ranks : ranks.slice(1)) sendStdinEof(rank.process.control);

  const supervisor = new Supervisor(ranks, {
    graceMs: request.graceMs,
    onRankFailure: request.onRankFailure,
    report: (line) => io.stderr.write(`${line}\n`),
    onRank0Ended: stopStdin,
    hasRank0: !joining,
    maxRestarts: request.restarts,
    restart: (rank) => {
      // Rank 0 is never restarted, so a restarted rank never gets stdin.
      start(rank, plan.ranks[rank.rank] as RankPlacement);
      sendStdinEof(rank.process.control);
    },
  });
  const offSignal = io.onSignal((signal) => supervisor.onSignal(signal));
  const onOutputError = (): void =>
    supervisor.abort('memflow-run: output closed; stopping all ranks', OUTPUT_CLOSED_STATUS);
  io.stdout.on('error', onOutputError);
  try {
    return await supervisor.run();
  } finally {
    offSignal();
    stopStdin();
    io.stdout.off('error', onOutputError);
  }
}

/**
 * The environment function of this launch: a new world (rank 0's rendezvous on a port picked
 * here, a fresh job id), or ranks joining the world at --join.
 */
async function rankEnvironment(
  request: LaunchRequest,
  rank0: RankPlacement,
  size: number,
): Promise<(placement: RankPlacement) => Record<string, string>> {
  const { join } = request;
  if (join !== undefined) return (placement) => joinRankEnv(placement, join);
  const world = {
    size,
    root: { host: rank0.addr, port: request.rootPort ?? (await pickRootPort(rank0)) },
    jobId: randomBytes(4).toString('hex'),
  };
  return (placement) => rankEnv(placement, world);
}

function readHosts(request: LaunchRequest): HostEntry[] | undefined {
  if (request.hostList !== undefined) return parseHostList(request.hostList);
  if (request.hostfile === undefined) return undefined;
  let text: string;
  try {
    text = fs.readFileSync(request.hostfile, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code;
    throw new LaunchError('LAUNCH_HOSTFILE', `cannot read hostfile ${request.hostfile}: ${why}`, {
      cause: error,
    });
  }
  return parseHostfile(text, request.hostfile);
}

/**
 * What each rank runs. In store mode that is `node STORE_PROGRAM <forwarded options>`, with this
 * launcher's own Node for ranks started here and `node` from PATH over ssh.
 */
function rankProgram(
  request: LaunchRequest,
): (placement: RankPlacement) => { program: string; args: string[] } {
  const { command } = request;
  if (command.kind === 'program') return () => ({ program: command.program, args: command.args });
  if (!fs.existsSync(STORE_PROGRAM)) {
    throw new LaunchError(
      'LAUNCH_NOT_BUILT',
      `the store program is not built (${STORE_PROGRAM.slice(PACKAGE_ROOT.length + 1)} is ` +
        'missing): run npm run build, or give a PROGRAM',
    );
  }
  return (placement) => ({
    program: placement.mode === 'ssh' ? 'node' : process.execPath,
    args: [STORE_PROGRAM, ...command.args],
  });
}

/** A free port when rank 0 is on this machine; a random guess otherwise (see free-port.ts). */
async function pickRootPort(rank0: RankPlacement): Promise<number> {
  if (!rank0.local) return randomPort();
  try {
    return await findFreePort(rank0.addr);
  } catch {
    // The addr may live in another network namespace; rank 0 reports a failed bind itself.
    return randomPort();
  }
}

function startRank(
  placement: RankPlacement,
  env: Record<string, string>,
  guardArgv: string[],
  request: LaunchRequest,
  io: LauncherIo,
  memflowEnv: Record<string, string>,
): LaunchedRank {
  try {
    switch (placement.mode) {
      case 'fork':
        return forkRank(guardArgv, { ...io.env, ...env }, io.cwd);
      case 'exec': {
        const argv = execTemplateArgv(request.launcherExec ?? [], placement.host, [
          process.execPath,
          ...guardArgv,
        ]);
        return execTemplateRank(argv, { ...io.env, ...env }, io.cwd);
      }
      case 'ssh':
        return sshRank(
          placement.host,
          sshRemoteCommand(io.cwd, { ...memflowEnv, ...env }, ['node', ...guardArgv]),
        );
    }
  } catch (error) {
    // spawn() throws synchronously for a few errors (e.g. a NUL byte in an argument).
    return notStartedRank(placement.mode, error);
  }
}

/** A rank that never started, shaped like the others so the supervisor reports it the same way. */
function notStartedRank(command: string, error: unknown): LaunchedRank {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.end();
  stderr.end();
  return {
    pid: undefined,
    control: new Writable({ write: (_chunk, _encoding, done) => done() }),
    stdout,
    stderr,
    ended: Promise.resolve({
      kind: 'not-started',
      command,
      errorCode: (error as NodeJS.ErrnoException).code ?? 'UNKNOWN',
      message: error instanceof Error ? error.message : String(error),
    }),
    signal: () => undefined,
  };
}
