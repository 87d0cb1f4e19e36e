/**
 * `dfs-client`: the command line of a MemFlow store, a thin layer on DfsClient.
 *
 *   dfs-client <file> -a [--as NAME]          upload a local file
 *   dfs-client <name> -r [-o PATH|-] [--force] retrieve (default ./NAME; - writes to stdout)
 *   dfs-client <name> -m [--json]             show metadata
 *   dfs-client <name> -d                      delete
 *   dfs-client list [--json]                  list the files
 *   dfs-client status [--json]                the data ranks' state and usage (compact)
 *   dfs-client rebalance [--json]             even out the data ranks' fractions used
 *   dfs-client metrics [--json] [--watch [S]] every data rank (state, heartbeat age, capacity,
 *                                             used, free, % used, primary/replica copies), totals
 *                                             and under-replicated chunks (metrics-table.ts);
 *                                             --watch redraws every S s (default 1) until Ctrl-C,
 *                                             showing an unreachable store rather than exiting;
 *                                             exit 130 (metrics-watch.ts); with --json, NDJSON
 *   dfs-client shell                          an interactive prompt with one connection: distribute,
 *                                             query, metrics, list, get, put, help, exit; history
 *                                             in ~/.memflow_history or $MEMFLOW_HISTORY (shell.ts)
 *
 * The only place (with memflow-rank's CLI) that reads argv and calls process.exit. Every failure
 * is one line on stderr naming the file and the reason, and an exit status from one table
 * (exit-codes.ts); a stack trace only for an unexpected internal error, with MEMFLOW_DEBUG=1.
 *
 * Start-up cost: yargs is needed to parse anything, but the client library (ZeroMQ, msgpackr,
 * the native hash) is imported only once a command is about to talk to the store, so `--help`
 * and usage errors stay fast.
 */
import { basename } from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { DfsClient } from '../client/dfs-client.js';
import { DfsError, isDfsError } from '../client/errors.js';
import type { FileMetadata, StatusResult } from '../protocol/client-protocol.js';
import { formatSize } from '../store/sizes.js';
import { tuneGcForBulkTransfers } from '../runtime/gc-tuning.js';
import { EXIT, exitStatusOf } from './exit-codes.js';
import {
  describeLayout,
  formatList,
  formatTime,
  plural,
  queryFirst,
  table,
  withProgress,
} from './output.js';

const NAME = 'dfs-client';

type Action =
  | { kind: 'upload'; file: string; as: string | undefined }
  | { kind: 'distribute'; file: string; as: string | undefined; idField: string }
  | { kind: 'query'; name: string; id: string; json: boolean }
  | {
      kind: 'retrieve';
      name: string;
      output: string;
      force: boolean;
      ndjson: boolean;
      verify: boolean;
    }
  | { kind: 'metadata'; name: string; json: boolean }
  | { kind: 'delete'; name: string }
  | { kind: 'list'; json: boolean }
  | { kind: 'rebalance'; json: boolean }
  | { kind: 'status'; json: boolean }
  | { kind: 'metrics'; json: boolean; watchMs: number | undefined }
  | { kind: 'shell' };

interface Parsed {
  action: Action;
  server: string | undefined;
  timeoutMs: number | undefined;
}

/** A bad command line: printed with a pointer to --help, exit 2. */
class UsageError extends Error {}

function parse(args: string[]): Parsed {
  const argv = yargs(args)
    .scriptName(NAME)
    .usage(
      [
        'Usage:',
        '  $0 <file> -a [--as NAME]            upload a local file',
        '  $0 <data.json> -a --records [--id-field F] [--as NAME]',
        '                                      store a JSON array or NDJSON as records, indexed by ID',
        '  $0 query <name> <id>                print one record of a records dataset as JSON',
        '  $0 <name> -r [-o PATH|-] [--force] [--verify]  retrieve a file (default ./NAME; "-" for stdout)',
        "  $0 <name> -m [--json]               show a file's metadata",
        '  $0 <name> -d                        delete a file',
        '  $0 list [--json]                    list the files in the store',
        "  $0 rebalance [--json]               move copies until the data ranks' fractions used are within 5 points",
        '  $0 status [--json]                  the data ranks, their state and usage, and under-replicated chunks',
        "  $0 metrics [--json] [--watch [S]]   each data rank's state, heartbeat, usage, copies; totals",
        '  $0 shell                            a prompt: distribute, query, metrics, list, get, put',
      ].join('\n'),
    )
    .option('a', { alias: 'upload', type: 'boolean', describe: 'upload <file>' })
    .option('r', { alias: 'retrieve', type: 'boolean', describe: 'retrieve <name>' })
    .option('m', { alias: 'metadata', type: 'boolean', describe: "show <name>'s metadata" })
    .option('d', { alias: 'delete', type: 'boolean', describe: 'delete <name>' })
    .option('as', {
      type: 'string',
      describe: "with -a: name in the store (default: the file's base name)",
    })
    .option('o', {
      alias: 'output',
      type: 'string',
      describe: 'with -r: where to write, or - for stdout',
    })
    .option('force', { alias: 'f', type: 'boolean', describe: 'with -r: replace an existing file' })
    .option('records', {
      type: 'boolean',
      describe: 'with -a: the file is a JSON array of objects or NDJSON, stored as records',
    })
    .option('id-field', {
      type: 'string',
      describe: 'with -a --records: the field holding each record\'s ID (default "id")',
    })
    .option('verify', {
      type: 'boolean',
      describe:
        "with -r: also recompute the whole file's sha256 and compare it with the store's (every chunk is checked against its BLAKE3 checksum either way)",
    })
    .option('ndjson', {
      type: 'boolean',
      describe: 'with -r of a records dataset: one record a line instead of a JSON array',
    })
    .option('json', { type: 'boolean', describe: 'with -m or list: print JSON' })
    // A string, not a number: yargs gives a bare `--watch` no value at all as a number option.
    .option('watch', {
      type: 'string',
      describe: 'with metrics: refresh every SECONDS (default 1) until Ctrl-C',
    })
    .option('server', {
      type: 'string',
      describe: 'the store, HOST:PORT (default: $MEMFLOW_SERVER, else 127.0.0.1:7070)',
    })
    .option('timeout', { type: 'number', describe: 'seconds to wait for each reply (default 30)' })
    // Positionals are names and paths, never numbers: "007" must stay "007".
    .string('_')
    .strictOptions()
    .help('help')
    .alias('help', 'h')
    .version(false)
    .wrap(Math.min(100, process.stdout.columns ?? 100))
    .fail((message: string | undefined, err: Error | undefined) => {
      throw new UsageError(message ?? err?.message ?? 'bad command line');
    })
    .parseSync();

  const positionals = argv._.map(String);
  const chosen = (['a', 'r', 'm', 'd'] as const).filter((flag) => argv[flag] === true);
  const asName = argv.as;
  const output = argv.o;
  const force = argv.force === true;
  const json = argv.json === true;

  let timeoutMs: number | undefined;
  if (argv.timeout !== undefined) {
    if (!Number.isFinite(argv.timeout) || argv.timeout <= 0) {
      throw new UsageError(`--timeout must be a number of seconds > 0, got ${argv.timeout}`);
    }
    timeoutMs = argv.timeout * 1000;
  }
  const common = { server: argv.server, timeoutMs };

  const idField = argv['id-field'];
  const records = argv.records === true;
  const ndjson = argv.ndjson === true;
  if (idField !== undefined && !records) throw new UsageError('--id-field goes with -a --records');
  if (records && !(chosen.length === 1 && chosen[0] === 'a'))
    throw new UsageError('--records goes with -a (upload)');
  if (ndjson && !(chosen.length === 1 && chosen[0] === 'r'))
    throw new UsageError('--ndjson goes with -r (retrieve)');
  const verify = argv.verify === true;
  if (verify && !(chosen.length === 1 && chosen[0] === 'r'))
    throw new UsageError('--verify goes with -r (retrieve)');
  // "query NAME ID" is the one command with more than one positional.
  if (positionals[0] === 'query' && chosen.length === 0) {
    if (positionals.length !== 3)
      throw new UsageError(`query takes a dataset name and an ID: ${NAME} query <name> <id>`);
    refuseOptions('query', { as: asName, output, force });
    return {
      action: { kind: 'query', name: positionals[1]!, id: positionals[2]!, json },
      ...common,
    };
  }
  if (positionals.length > 1) {
    throw new UsageError(
      `one <file|name> at a time, got ${positionals.length}: ${positionals.map((p) => JSON.stringify(p)).join(' ')}`,
    );
  }
  const target = positionals[0];
  if (target === undefined) {
    throw new UsageError('missing <file|name> (or "list")');
  }
  const isMetrics = target === 'metrics' && chosen.length === 0;
  if (argv.watch !== undefined && !isMetrics) {
    throw new UsageError('--watch can only be used with metrics');
  }
  // "list" is the listing command unless an operation flag says it is a file called "list".
  if (target === 'list' && chosen.length === 0) {
    refuseOptions('list', { as: asName, output, force });
    return { action: { kind: 'list', json }, ...common };
  }
  if (target === 'status' && chosen.length === 0) {
    refuseOptions('status', { as: asName, output, force });
    return { action: { kind: 'status', json }, ...common };
  }
  if (target === 'rebalance' && chosen.length === 0) {
    refuseOptions('rebalance', { as: asName, output, force });
    return { action: { kind: 'rebalance', json }, ...common };
  }
  if (isMetrics) {
    refuseOptions('metrics', { as: asName, output, force });
    const watchMs = argv.watch === undefined ? undefined : watchIntervalMs(argv.watch);
    // A watch keeps going through failures: a dead store should show within seconds, not 30.
    const watchTimeoutMs = watchMs === undefined ? undefined : Math.max(3_000, 2 * watchMs);
    return {
      action: { kind: 'metrics', json, watchMs },
      server: argv.server,
      timeoutMs: timeoutMs ?? watchTimeoutMs,
    };
  }
  if (target === 'shell' && chosen.length === 0) {
    refuseOptions('shell', { as: asName, output, force, json });
    return { action: { kind: 'shell' }, ...common };
  }
  if (chosen.length !== 1) {
    throw new UsageError(
      chosen.length === 0
        ? `say what to do with "${target}": -a (upload), -r (retrieve), -m (metadata) or -d (delete)`
        : `choose one of -a, -r, -m, -d (got ${chosen.map((f) => `-${f}`).join(' ')})`,
    );
  }
  switch (chosen[0]) {
    case 'a':
      refuseOptions('-a', { output, force, json });
      if (asName === '') throw new UsageError('--as needs a name');
      if (records) {
        if (idField === '') throw new UsageError('--id-field needs a field name');
        return {
          action: { kind: 'distribute', file: target, as: asName, idField: idField ?? 'id' },
          ...common,
        };
      }
      return { action: { kind: 'upload', file: target, as: asName }, ...common };
    case 'r':
      refuseOptions('-r', { as: asName, json });
      if (output === '') throw new UsageError('-o needs a path, or - for stdout');
      return {
        action: {
          kind: 'retrieve',
          name: target,
          output: output ?? defaultOutput(target),
          force,
          ndjson,
          verify,
        },
        ...common,
      };
    case 'm':
      refuseOptions('-m', { as: asName, output, force });
      return { action: { kind: 'metadata', name: target, json }, ...common };
    default:
      refuseOptions('-d', { as: asName, output, force, json });
      return { action: { kind: 'delete', name: target }, ...common };
  }
}

/** `--watch [SECONDS]` in ms: a bare --watch is 1 s; at least 0.1 s, at most a day. */
function watchIntervalMs(text: string): number {
  if (text.trim() === '') return 1_000;
  const seconds = Number(text);
  if (!Number.isFinite(seconds) || seconds < 0.1 || seconds > 86_400) {
    throw new UsageError(
      `--watch takes the SECONDS between refreshes (0.1 to 86400), got "${text}"; write: ${NAME} metrics --watch [SECONDS]`,
    );
  }
  return seconds * 1000;
}

/** Options that mean nothing for the chosen operation are refused rather than ignored. */
function refuseOptions(
  operation: string,
  given: { as?: string | undefined; output?: string | undefined; force?: boolean; json?: boolean },
): void {
  const names: string[] = [];
  if (given.as !== undefined) names.push('--as');
  if (given.output !== undefined) names.push('-o');
  if (given.force === true) names.push('--force');
  if (given.json === true) names.push('--json');
  if (names.length > 0)
    throw new UsageError(`${names.join(', ')} cannot be used with ${operation}`);
}

/**
 * ./NAME for `-r` without -o. NAME comes from the user and becomes a path here, so anything that
 * could point elsewhere than a plain file in this directory is refused: ask for -o instead.
 */
function defaultOutput(name: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new UsageError(
      `"${name}" cannot be used as a local file name; give one with -o PATH (or -o - for stdout)`,
    );
  }
  return `./${name}`;
}

// ---- running ----------------------------------------------------------------------------------

async function run(parsed: Parsed): Promise<number> {
  const { DfsClient } = await import('../client/dfs-client.js');
  const client = new DfsClient({ server: parsed.server, timeoutMs: parsed.timeoutMs });
  const controller = new AbortController();
  // First Ctrl-C: abort cleanly (put-abort, no partial file). Second: leave at once.
  const interrupt = (): void => {
    if (controller.signal.aborted) process.exit(EXIT.INTERRUPTED);
    controller.abort();
  };
  process.on('SIGINT', interrupt);
  process.on('SIGTERM', interrupt);
  try {
    // Most commands end in success or an error; metrics --watch and shell end with a status.
    return (await perform(client, parsed.action, controller.signal)) ?? EXIT.OK;
  } finally {
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
    client.close();
  }
}

async function perform(
  client: DfsClient,
  action: Action,
  signal: AbortSignal,
): Promise<number | undefined> {
  const startMs = performance.now();
  const elapsed = (): string => formatSeconds((performance.now() - startMs) / 1000);
  switch (action.kind) {
    case 'upload': {
      const metadata = await withProgress(process.stderr, action.as ?? action.file, (onProgress) =>
        client.upload(action.file, {
          ...(action.as === undefined ? {} : { name: action.as }),
          onProgress,
          signal,
        }),
      );
      out(`uploaded ${metadata.name} (${describeLayout(metadata)}) in ${elapsed()}`);
      return;
    }
    case 'retrieve': {
      const toStdout = action.output === '-';
      const metadata = await withProgress(process.stderr, action.name, (onProgress) =>
        client.download(action.name, toStdout ? process.stdout : action.output, {
          force: action.force,
          onProgress,
          signal,
          records: action.ndjson ? 'ndjson' : 'json',
          verifySha256: action.verify,
        }),
      );
      if (!toStdout) {
        out(
          `retrieved ${metadata.name} (${formatSize(metadata.sizeBytes)}, version ` +
            `${metadata.version}) to ${action.output} in ${elapsed()}`,
        );
      }
      return;
    }
    case 'distribute': {
      const name = action.as ?? basename(action.file);
      const metadata = await withProgress(process.stderr, name, (onProgress) =>
        client.putRecords(action.file, name, { idField: action.idField, onProgress, signal }),
      );
      const count = metadata.records?.count ?? 0;
      const seconds = (performance.now() - startMs) / 1000;
      out(
        `distributed ${metadata.name}: ${count} records (${describeLayout(metadata)}, IDs by ${metadata.records?.lookup === 'ranges' ? 'range' : 'hash'}) in ${elapsed()}` +
          (seconds > 0 && count > 0 ? `, ${Math.round(count / seconds)} records/s` : ''),
      );
      return;
    }
    case 'query': {
      const { idCandidates } = await import('../records/record-ids.js');
      const record = await queryFirst(client, action.name, idCandidates(action.id));
      out(action.json ? JSON.stringify(record, null, 2) : JSON.stringify(record));
      return;
    }
    case 'metadata': {
      const metadata = await client.stat(action.name);
      out(action.json ? JSON.stringify(metadata, null, 2) : formatMetadata(metadata));
      return;
    }
    case 'delete':
      await client.delete(action.name);
      out(`deleted ${action.name}`);
      return;
    case 'list': {
      const files = await client.list();
      out(action.json ? JSON.stringify(files, null, 2) : formatList(files));
      return;
    }
    case 'status': {
      const status = await client.status();
      out(action.json ? JSON.stringify(status, null, 2) : formatStatus(status));
      return;
    }
    case 'metrics': {
      const { formatMetricsTable, metricsDocument } = await import('./metrics-table.js');
      if (action.watchMs === undefined) {
        const status = await client.status();
        out(
          action.json
            ? JSON.stringify(metricsDocument(status, new Date()), null, 2)
            : formatMetricsTable(status),
        );
        return;
      }
      // Runs until Ctrl-C, showing (not failing on) an unreachable store: see metrics-watch.ts.
      const { watchMetrics, reconnectingReader } = await import('./metrics-watch.js');
      const reader = reconnectingReader(client);
      try {
        await watchMetrics({
          ...reader,
          out: process.stdout,
          intervalMs: action.watchMs,
          json: action.json,
          server: client.server,
          signal,
        });
      } finally {
        reader.close();
      }
      return EXIT.INTERRUPTED;
    }
    case 'shell': {
      const { runShell } = await import('./shell.js');
      return runShell(client, { signal });
    }
    case 'rebalance': {
      const result = await client.rebalance();
      const points = (f: number): string => `${(f * 100).toFixed(1)} points`;
      out(
        action.json
          ? JSON.stringify(result, null, 2)
          : `moved ${`${result.moves} ${result.moves === 1 ? 'copy' : 'copies'}`} (${formatSize(result.bytesMoved)}); spread of fractions used ${points(result.spreadBefore)} → ${points(result.spreadAfter)}`,
      );
      return;
    }
  }
}

// ---- human output -----------------------------------------------------------------------------

/** One row per data rank, then the replication summary. */
function formatStatus(status: StatusResult): string {
  const head = ['RANK', 'HOST', 'STATE', 'USED', 'CAPACITY', '% USED', 'COPIES'];
  const rows = status.ranks.map((r) => [
    String(r.rank),
    r.host,
    r.state,
    formatSize(r.usedBytes),
    formatSize(r.capacityBytes),
    r.capacityBytes > 0 ? `${((100 * r.usedBytes) / r.capacityBytes).toFixed(1)}%` : '-',
    String(r.chunkCopies),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 1 || i === 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ');
  const summary =
    status.underReplicatedChunks === 0
      ? `${plural(status.files, 'file')}; every chunk has its ${status.replicas} copies`
      : `${plural(status.files, 'file')}; ${plural(status.underReplicatedChunks, 'chunk')} under-replicated (re-replication under way)`;
  return [line(head), ...rows.map(line), summary].join('\n');
}

function out(text: string): void {
  process.stdout.write(`${text}\n`);
}

function formatSeconds(seconds: number): string {
  return `${seconds < 10 ? seconds.toFixed(2) : seconds.toFixed(1)} s`;
}

function formatMetadata(metadata: FileMetadata): string {
  const health =
    metadata.underReplicatedChunks > 0
      ? `${plural(metadata.underReplicatedChunks, 'chunk')} with fewer than ${metadata.replicas} live copies`
      : 'every chunk has all its copies';
  const header = table([
    ['name', metadata.name],
    ['size', `${formatSize(metadata.sizeBytes)} (${metadata.sizeBytes} bytes)`],
    ['sha256', metadata.sha256],
    ['version', String(metadata.version)],
    ['created', formatTime(metadata.created)],
    ['modified', formatTime(metadata.modified)],
    ['copies', `${metadata.replicas} per chunk; ${health}`],
    ['chunks', `${metadata.chunks.length} of up to ${formatSize(metadata.chunkSizeBytes)}`],
    ...(metadata.records
      ? [
          [
            'records',
            `${metadata.records.count}, ID field "${metadata.records.idField}", found by ${metadata.records.lookup === 'ranges' ? 'ID range per chunk' : 'ID hash per chunk'}`,
          ],
        ]
      : []),
  ]);
  if (metadata.chunks.length === 0) return header;
  const rows = metadata.chunks.map((chunk) => [
    String(chunk.index),
    formatSize(chunk.sizeBytes),
    chunk.checksum.slice(0, 12),
    chunk.copies
      .map((copy) => `${copy.rank}@${copy.host}${copy.state === 'alive' ? '' : ` (${copy.state})`}`)
      .join(', ') || '(no copies)',
  ]);
  const chunkTable = table(
    [['index', 'size', 'checksum', 'copies (rank@host)'], ...rows],
    new Set([0, 1]),
  );
  return `${header}\n\n${chunkTable}`;
}

// ---- errors -----------------------------------------------------------------------------------

/** "cannot retrieve "x.bin"" — what was being done, for the one error line. */
function attempted(action: Action): string {
  switch (action.kind) {
    case 'upload':
      return `cannot upload "${action.file}"`;
    case 'distribute':
      return `cannot distribute "${action.file}"`;
    case 'query':
      return `cannot query "${action.name}"`;
    case 'retrieve':
      return `cannot retrieve "${action.name}"`;
    case 'metadata':
      return `cannot show "${action.name}"`;
    case 'delete':
      return `cannot delete "${action.name}"`;
    case 'list':
      return 'cannot list the files';
    case 'rebalance':
      return 'cannot rebalance';
    case 'status':
      return 'cannot read the status';
    case 'metrics':
      return 'cannot read the metrics';
    case 'shell':
      return 'shell';
  }
}

/** The reason part of the error line, in words a user acts on. */
function reasonOf(err: DfsError, action: Action): string {
  const detail = err.detail;
  switch (err.code) {
    case 'STORE_NOT_FOUND':
      // A query's unknown ID names the ID; an unknown dataset is "no such file".
      return detail.recordId !== undefined ? err.message : 'no such file in the store';
    case 'STORE_NO_SPACE': {
      const needed = detail.neededBytes;
      const available = detail.availableBytes;
      return typeof needed === 'number' && typeof available === 'number'
        ? `not enough space in the store (${formatSize(needed)} needed for all copies, ${formatSize(available)} available)`
        : `not enough space in the store (${err.message})`;
    }
    case 'CLIENT_EXISTS':
      return `${String(detail.path)} already exists (use --force to overwrite)`;
    case 'CLIENT_LOCAL_PATH':
      // The path is the target itself for an upload: say only why, not the path twice.
      return (action.kind === 'upload' || action.kind === 'distribute') &&
        detail.path === action.file &&
        typeof detail.reason === 'string'
        ? detail.reason
        : err.message;
    case 'CLIENT_ABORTED':
      return 'interrupted';
    default:
      return err.message;
  }
}

async function main(args: string[]): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parse(args);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${NAME}: ${err.message}\nTry '${NAME} --help' for usage.\n`);
      return EXIT.USAGE;
    }
    throw err;
  }
  try {
    return await run(parsed);
  } catch (err) {
    if (isDfsError(err)) {
      process.stderr.write(
        `${NAME}: ${attempted(parsed.action)}: ${reasonOf(err, parsed.action)}\n`,
      );
      return exitStatusOf(err);
    }
    throw err;
  }
}

function flush(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => stream.write('', () => resolve()));
}

// A reader that goes away (| head) must not crash us with an unhandled 'error' event.
process.stdout.on('error', () => undefined);

tuneGcForBulkTransfers();
let status: number;
try {
  status = await main(hideBin(process.argv));
} catch (err) {
  // Not an operating error: a bug. One line by default, the stack on request.
  if (process.env.MEMFLOW_DEBUG === '1') {
    process.stderr.write(
      `${NAME}: internal error\n${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
  } else {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`${NAME}: internal error: ${message} (set MEMFLOW_DEBUG=1 for details)\n`);
  }
  status = EXIT.FAILURE;
}
// Exit explicitly (after stdout has drained: it may be a pipe) so no leftover handle keeps a
// finished command alive.
await Promise.all([flush(process.stdout), flush(process.stderr)]);
process.exit(status);
