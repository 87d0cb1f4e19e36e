#!/usr/bin/env node
/**
 * `memflow-rank`: one rank of the MemFlow store. memflow-run starts it on every rank when no
 * PROGRAM is given; any other launcher can too (mpirun, srun) with MEMFLOW_ROOT set, see
 * docs/LAUNCHER.md. The only place (with dfs-client's CLI) that reads argv and calls process.exit.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { isCommError } from '../comm/errors.js';
import { runStore, type StoreOptions } from '../rank/main.js';
import { parseSize } from '../store/sizes.js';
import { tuneGcForBulkTransfers } from '../runtime/gc-tuning.js';

tuneGcForBulkTransfers();

function sizeOption(label: string) {
  return (value: string | undefined): number | undefined => {
    if (value === undefined) return undefined;
    try {
      return parseSize(String(value));
    } catch (err) {
      throw new Error(`--${label}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
}

/**
 * This rank's number in its log lines. A joining rank's MEMFLOW_RANK is only its place among the
 * joiners; rank 0 gives it its number, and runStore tells it here.
 */
let rank = process.env.MEMFLOW_JOIN === '1' ? 'joining' : (process.env.MEMFLOW_RANK ?? '?');

async function main(): Promise<void> {
  const argv = await yargs(hideBin(process.argv))
    .scriptName('memflow-rank')
    .usage(
      '$0 [options]\n\nOne rank of the MemFlow store (started by memflow-run, mpirun or srun).',
    )
    .option('port', { type: 'number', default: 7070, describe: "rank 0's client port" })
    .option('bind', {
      type: 'string',
      default: '127.0.0.1',
      describe: 'address rank 0 serves clients on',
    })
    .option('data-dir', {
      type: 'string',
      default: './memflow-data',
      describe: 'each rank keeps its data in rank-N below it',
    })
    .option('replicas', { type: 'number', default: 2, describe: 'copies of every chunk' })
    .option('chunk-size', {
      type: 'string',
      default: '4MiB',
      describe: 'chunk size (K/M/G suffixes)',
      coerce: sizeOption('chunk-size'),
    })
    .option('capacity', {
      type: 'string',
      describe: "bytes each data rank offers (default: its disk's free space)",
      coerce: sizeOption('capacity'),
    })
    .option('heartbeat-ms', {
      type: 'number',
      default: 1000,
      describe: 'heartbeat period of the data ranks',
    })
    .option('dead-after-ms', {
      type: 'number',
      default: 5000,
      describe: 'silence after which a data rank is dead and its copies are re-created',
    })
    .option('scrub-rate', {
      type: 'string',
      default: '32MiB',
      describe: 'bytes per second each data rank re-verifies in the background (0: off)',
      coerce: sizeOption('scrub-rate'),
    })
    .option('read-cache', {
      type: 'string',
      default: '64MiB',
      describe: 'bytes of small chunks rank 0 keeps to answer small reads itself (0: none)',
      coerce: sizeOption('read-cache'),
    })
    .option('http-port', {
      type: 'number',
      describe:
        "rank 0's status page and /metrics port, on --bind (0: any free port; default: none)",
    })
    .check((a) => {
      if (!(a['heartbeat-ms'] > 0) || !(a['dead-after-ms'] > a['heartbeat-ms'])) {
        throw new Error('--heartbeat-ms must be > 0 and --dead-after-ms larger than it');
      }
      if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535)
        throw new Error(`--port ${a.port} is not a port number`);
      const http = a['http-port'];
      if (http !== undefined && (!Number.isInteger(http) || http < 0 || http > 65535))
        throw new Error(`--http-port ${http} is not a port number`);
      if (!Number.isInteger(a.replicas) || a.replicas < 1)
        throw new Error(`--replicas must be a whole number ≥ 1, got ${a.replicas}`);
      const chunk = a['chunk-size'];
      if (chunk === undefined || chunk < 1 || chunk > 256 * 1024 * 1024)
        throw new Error('--chunk-size must be between 1 byte and 256 MiB');
      return true;
    })
    .strict()
    .help()
    .exitProcess(false)
    .fail((msg, err) => {
      console.error(`memflow-rank: ${err?.message ?? msg}`);
      process.exit(2);
    })
    .parseAsync();

  const options: StoreOptions = {
    port: argv.port,
    bind: argv.bind,
    dataDir: argv['data-dir'],
    replicas: argv.replicas,
    chunkSizeBytes: argv['chunk-size'] ?? 4 * 1024 * 1024,
    capacityBytes: argv.capacity,
    heartbeatIntervalMs: argv['heartbeat-ms'],
    deadAfterMs: argv['dead-after-ms'],
    scrubBytesPerSecond: argv['scrub-rate'] ?? 0,
    readCacheBytes: argv['read-cache'] ?? 0,
    httpPort: argv['http-port'],
  };
  const log = (line: string): void => console.error(`memflow-rank ${rank}: ${line}`);
  // The lines a caller waits for (and reads addresses from) go to stdout, the rest to stderr.
  const forStdout = (line: string): boolean =>
    line.startsWith('MemFlow store ready') ||
    line.startsWith('status page: ') ||
    line.startsWith('joined the store at ');
  const running = await runStore(
    process.env,
    options,
    (line) => (forStdout(line) ? console.log(line) : log(line)),
    (assigned) => (rank = String(assigned)),
  );
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    running.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log(`error while stopping: ${String(err)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  await running.done;
  process.exit(0);
}

main().catch((err: unknown) => {
  const message = isCommError(err) || err instanceof Error ? err.message : String(err);
  console.error(`memflow-rank ${rank}: ${message}`);
  if (process.env.MEMFLOW_DEBUG && err instanceof Error) console.error(err.stack);
  process.exit(1);
});
