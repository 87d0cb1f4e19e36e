/**
 * memflow-run: start PROGRAM as N ranks, like mpiexec.
 *
 *   memflow-run [-n N] [--hostfile FILE | --host h1,h2:2] [--launcher fork|ssh]
 *               [--launcher-exec TEMPLATE] [--root-port P] [--grace-ms MS] [--no-tag-output]
 *               [--on-rank-failure abort|continue] [--restart N] [--] PROGRAM [ARGS...]
 *   memflow-run --join HOST:PORT [-n N] [hosts] [store options]   (new ranks join a running world)
 *
 * Without PROGRAM it runs the store (dist/src/cli/memflow-rank.js) and forwards it every option it
 * does not know. This file is the only one that reads argv and calls process.exit; the work is in
 * args.ts (command line), launch.ts (the launch) and the modules they use. docs/LAUNCHER.md has
 * the whole contract.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { LAUNCHER_OPTIONS, splitCommandLine, toLaunchRequest } from './args.js';
import { EXIT_STATUS, LaunchError } from './errors.js';
import { launch } from './launch.js';

const USAGE = `memflow-run [options] [--] PROGRAM [ARGS...]
memflow-run [options] [store options]
memflow-run --join HOST:PORT [-n N] [options] [store options]

Runs PROGRAM as N ranks. Every rank gets MEMFLOW_RANK, MEMFLOW_SIZE, MEMFLOW_ROOT, MEMFLOW_HOST,
MEMFLOW_JOB_ID and MEMFLOW_LOCAL_RANK. Without PROGRAM it runs the store program and forwards
every option it does not know. With --join, N new ranks (default 1) join the running world whose
rank 0 serves its rendezvous at HOST:PORT. Launcher options go before PROGRAM.`;

/** Failures nobody planned for are bugs: they keep their stack and exit with this status. */
const INTERNAL_ERROR_STATUS = 70;

async function main(argv: string[]): Promise<number> {
  // The split comes before yargs because yargs forgets where `--` stood and rewrites the values
  // of options it does not know, and store mode must forward those verbatim. yargs then sees only
  // the launcher's own options (strict, halting at anything else as a second line of defence) and
  // provides the help text.
  const { launcherArgv, command } = splitCommandLine(argv);
  const parser = yargs(launcherArgv)
    .scriptName('memflow-run')
    .usage(USAGE)
    .parserConfiguration({
      'halt-at-non-option': true,
      'populate--': true,
      'duplicate-arguments-array': false,
      'camel-case-expansion': false,
    })
    .strict()
    .help(false)
    .version(false)
    .exitProcess(false)
    .wrap(Math.min(100, process.stdout.columns ?? 100))
    .epilog('Environment contract and examples (mpirun, srun): docs/LAUNCHER.md')
    .fail((message: string | undefined, error: Error | undefined) => {
      throw new LaunchError(
        'LAUNCH_USAGE',
        (error?.message ?? message ?? 'bad usage').replace(/\s+/g, ' '),
      );
    });
  for (const spec of LAUNCHER_OPTIONS) {
    parser.option(spec.name, {
      alias: [...spec.aliases],
      type: spec.type,
      describe: spec.description,
    });
  }
  const values = (await parser.parse()) as Record<string, unknown>;
  if (values.help === true) {
    process.stdout.write(`${await parser.getHelp()}\n`);
    return 0;
  }
  const request = toLaunchRequest(values, command);
  return launch(request, {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    onSignal(handler) {
      const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
      signals.forEach((signal) => process.on(signal, handler));
      return () => signals.forEach((signal) => process.off(signal, handler));
    },
  });
}

main(hideBin(process.argv)).then(
  (status) => process.exit(status),
  (error: unknown) => {
    if (error instanceof LaunchError) {
      process.stderr.write(`memflow-run: ${error.message}\n`);
      process.exit(EXIT_STATUS[error.code]);
    }
    process.stderr.write(
      `memflow-run: internal error: ${error instanceof Error ? error.stack : String(error)}\n`,
    );
    process.exit(INTERNAL_ERROR_STATUS);
  },
);
