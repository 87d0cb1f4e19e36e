/**
 * One launch, start to end: read the hosts, plan the ranks, pick rank 0's port, start every rank
 * under its guard, forward output and stdin, and let the supervisor decide the exit status. The
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
import { placeRanks, rankEnv, type RankPlacement } from './plan.js';
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
  const hosts = readHosts(request);
  const plan = placeRanks({
    ...(hosts === undefined ? {} : { hosts }),
    ...(request.size === undefined ? {} : { size: request.size }),
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

  const rank0 = plan.ranks[0] as RankPlacement;
  const world = {
    size: plan.size,
    root: { host: rank0.addr, port: request.rootPort ?? (await pickRootPort(rank0)) },
    jobId: randomBytes(4).toString('hex'),
  };
  const memflowEnv = Object.fromEntries(
    Object.entries(io.env).filter(
      (entry): entry is [string, string] =>
        entry[0].startsWith('MEMFLOW_') && entry[1] !== undefined,
    ),
  );

  const ranks = plan.ranks.map((placement): SupervisedRank => {
    const env = rankEnv(placement, world);
    const command = program(placement);
    const argv = guardArgs({
      guardScript: GUARD_SCRIPT,
      graceMs: request.graceMs,
      program: command.program,
      args: command.args,
    });
    const launched = startRank(placement, env, argv, request, io, memflowEnv);
    const tag = request.tagOutput ? rankTag(placement.rank) : null;
    const supervised: SupervisedRank = {
      rank: placement.rank,
      host: placement.host,
      mode: placement.mode,
      process: launched,
      outputDone: Promise.resolve(),
    };
    supervised.outputDone = Promise.all([
      forwardOutput(launched.stdout, io.stdout, { tag }),
      forwardOutput(launched.stderr, io.stderr, {
        tag,
        onNotice: (notice) => (supervised.notice = notice),
      }),
    ]).then(() => undefined);
    return supervised;
  });

  const first = ranks[0] as SupervisedRank;
  const stopStdin = forwardStdin(io.stdin, first.process.control);
  for (const rank of ranks.slice(1)) sendStdinEof(rank.process.control);

  const supervisor = new Supervisor(ranks, {
    graceMs: request.graceMs,
    onRankFailure: request.onRankFailure,
    report: (line) => io.stderr.write(`${line}\n`),
    onRank0Ended: stopStdin,
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
