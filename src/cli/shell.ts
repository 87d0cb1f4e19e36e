/**
 * `dfs-client shell`: MemFlow's commands at a prompt, over one DfsClient connection.
 *
 *   memflow> distribute people.json as people --id-field id
 *   memflow> query people 42
 *   memflow> metrics
 *
 * Commands (words split like a POSIX shell: '…' and "…" quote, \ escapes, # starts a comment):
 *
 *   distribute <file.json> [as NAME] [--id-field F]  store a JSON dataset as records (NAME
 *                                                    defaults to the file's base name)
 *   query <name> <id>                                one record, as JSON. IDs as dfs-client query
 *                                                    reads them (idCandidates): an unquoted JSON
 *                                                    number (42, -3, 1.5e3) is tried as that
 *                                                    number, then as the same text; a quoted "42"
 *                                                    is only the string; anything else the string
 *   put <file> [as NAME]                             upload a file
 *   get <name> [PATH|-] [--force]                    retrieve (default ./NAME; - for stdout)
 *   list [--json] · metrics [--json] · help · exit | quit
 *
 * Interactive (stdin a terminal): a `memflow> ` prompt, line editing and history (the last 1000
 * commands, in $MEMFLOW_HISTORY, else ~/.memflow_history; MEMFLOW_HISTORY= turns it off; loaded
 * at start, each command appended as it is entered; consecutive repeats kept once, as readline
 * does). Ctrl-C clears the line, or interrupts the command that is running (put, get and
 * distribute stop cleanly, leaving nothing behind; list, metrics and query stop waiting for
 * their reply); Ctrl-D on an empty
 * line, `exit` or `quit` end the session with status 0.
 *
 * Not interactive (commands piped in): no prompt, no history (like sh, a script does not fill the
 * user's history); each line runs in order; the session ends at EOF or `exit`. Its status is 0 if
 * every command succeeded, else the status of the last command that failed (exit-codes.ts: 3 no
 * such file, 4 store unreachable, 2 a line the shell cannot parse, ...), so `dfs-client shell <
 * script` can be checked by a caller.
 *
 * Every failed command prints one line on stderr ("query: no file named "x" in the store") and
 * the session goes on. A SIGINT or SIGTERM sent to the process (not Ctrl-C typed at the prompt)
 * ends the session with status 130.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import type { DfsClient } from '../client/dfs-client.js';
import { DfsError, isDfsError } from '../client/errors.js';
import type { FileMetadata } from '../protocol/client-protocol.js';
import { idCandidates, type RecordId } from '../records/record-ids.js';
import { formatSize } from '../store/sizes.js';
import { EXIT, exitStatusOf } from './exit-codes.js';
import { formatMetricsTable, metricsDocument } from './metrics-table.js';
import { formatList, plural, queryFirst, withProgress } from './output.js';

export const PROMPT = 'memflow> ';
export const HISTORY_LIMIT = 1000;

// ---- parsing a line (pure) ------------------------------------------------------------------

/** One word of a shell line; `quoted` when any part of it was quoted or escaped. */
export interface ShellWord {
  text: string;
  quoted: boolean;
}

/** A line the shell cannot run: printed as one line; status 2 in a piped session. */
export class ShellSyntaxError extends Error {}

/**
 * Splits a line into words like a POSIX shell (without expansions): blanks separate words;
 * '…' keeps everything literally; "…" keeps everything but \" and \\ (a backslash before anything
 * else stays); outside quotes a backslash keeps the next character; a # at the start of a word
 * begins a comment. Adjacent parts join: a"b c"d is one word. Throws ShellSyntaxError for an
 * unclosed quote or a trailing backslash.
 */
export function splitShellLine(line: string): ShellWord[] {
  const words: ShellWord[] = [];
  let text = '';
  let quoted = false;
  let inWord = false;
  const end = (): void => {
    if (inWord) words.push({ text, quoted });
    text = '';
    quoted = false;
    inWord = false;
  };
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      end();
    } else if (c === '#' && !inWord) {
      break;
    } else if (c === "'") {
      const close = line.indexOf("'", i + 1);
      if (close < 0) throw new ShellSyntaxError(`unclosed ' in: ${line.trim()}`);
      text += line.slice(i + 1, close);
      quoted = inWord = true;
      i = close;
    } else if (c === '"') {
      let j = i + 1;
      for (; j < line.length && line[j] !== '"'; j++) {
        if (line[j] === '\\' && (line[j + 1] === '"' || line[j + 1] === '\\')) j++;
        text += line[j];
      }
      if (j >= line.length) throw new ShellSyntaxError(`unclosed " in: ${line.trim()}`);
      quoted = inWord = true;
      i = j;
    } else if (c === '\\') {
      if (i + 1 >= line.length) throw new ShellSyntaxError('a \\ at the end of the line');
      text += line[++i];
      quoted = inWord = true;
    } else {
      text += c;
      inWord = true;
    }
  }
  end();
  return words;
}

/**
 * The record IDs a query word may mean, in the order to try them, as `dfs-client query` reads its
 * argument (idCandidates): an unquoted JSON number (42, -3, 1.5e3) is that number, then the same
 * text as a string; a word quoted or escaped in any part ("42", '42', 4\2) is exactly its text;
 * anything else (007, 0x1F, abc) the string as written.
 */
export function recordIdCandidates(word: ShellWord): RecordId[] {
  return word.quoted ? [word.text] : idCandidates(word.text);
}

export type ShellCommand =
  | { kind: 'empty' }
  | { kind: 'help' }
  | { kind: 'exit' }
  | { kind: 'list'; json: boolean }
  | { kind: 'metrics'; json: boolean }
  | { kind: 'distribute'; file: string; name: string; idField: string | undefined }
  | { kind: 'query'; name: string; ids: RecordId[] }
  | { kind: 'put'; file: string; name: string }
  | { kind: 'get'; name: string; output: string; force: boolean };

export const SHELL_HELP = [
  'commands:',
  '  distribute <file.json> [as NAME] [--id-field F]  store a JSON dataset as records',
  '  query <name> <id>                                one record as JSON (42: the number, "42": text)',
  '  put <file> [as NAME]                             upload a file',
  '  get <name> [PATH|-] [--force]                    retrieve (default ./NAME; - for the terminal)',
  '  list [--json]                                    the files in the store',
  '  metrics [--json]                                 every data rank: state, heartbeat, usage, copies',
  '  help                                             this list',
  '  exit, quit (or Ctrl-D)                           leave',
  'quote names with spaces: put \'my file.json\' as "my data"',
].join('\n');

/** The base name of a local path, as the default name in the store. */
function baseName(file: string): string {
  return path.basename(file);
}

/** Picks `as NAME`, `--OPTION VALUE` / `--OPTION=VALUE` and flags out of `args`; the rest are positional. */
function options(
  command: string,
  args: ShellWord[],
  spec: { as?: boolean; values?: string[]; flags?: string[] },
): {
  positional: string[];
  as: string | undefined;
  values: Map<string, string>;
  flags: Set<string>;
} {
  const positional: string[] = [];
  const values = new Map<string, string>();
  const flags = new Set<string>();
  let as: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const word = args[i]!;
    // Only an unquoted word is a keyword or an option: 'as' and "--x" in quotes are names.
    if (!word.quoted && spec.as === true && word.text === 'as' && positional.length > 0) {
      const next = args[++i];
      if (next === undefined || next.text === '')
        throw new ShellSyntaxError(`${command}: "as" needs a name`);
      if (as !== undefined) throw new ShellSyntaxError(`${command}: "as" given twice`);
      as = next.text;
    } else if (!word.quoted && word.text.startsWith('--')) {
      const eq = word.text.indexOf('=');
      const key = word.text.slice(2, eq < 0 ? undefined : eq);
      if (spec.flags?.includes(key) === true && eq < 0) {
        flags.add(key);
      } else if (spec.values?.includes(key) === true) {
        const value = eq < 0 ? args[++i]?.text : word.text.slice(eq + 1);
        if (value === undefined || value === '')
          throw new ShellSyntaxError(`${command}: --${key} needs a value`);
        values.set(key, value);
      } else {
        throw new ShellSyntaxError(`${command}: unknown option ${word.text}`);
      }
    } else {
      positional.push(word.text);
    }
  }
  return { positional, as, values, flags };
}

function expectPositionals(
  command: string,
  got: string[],
  min: number,
  max: number,
  usage: string,
): void {
  if (got.length < min || got.length > max) {
    throw new ShellSyntaxError(
      `${command}: ${got.length < min ? 'missing arguments' : 'too many arguments'}; usage: ${usage}`,
    );
  }
}

/**
 * ./NAME for `get` without a path. NAME comes from the store and becomes a path here, so anything
 * that could point elsewhere than a plain file in this directory is refused (as dfs-client -r).
 */
function defaultOutput(name: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new ShellSyntaxError(`get: "${name}" cannot be used as a local file name; give a PATH`);
  }
  return `./${name}`;
}

/** The command a line asks for. Throws ShellSyntaxError naming what is wrong. Pure. */
export function parseShellCommand(line: string): ShellCommand {
  const words = splitShellLine(line);
  const first = words[0];
  if (first === undefined) return { kind: 'empty' };
  const args = words.slice(1);
  const command = first.text;
  switch (command) {
    case 'help':
    case '?':
      return { kind: 'help' };
    case 'exit':
    case 'quit': {
      expectPositionals(
        command,
        args.map((w) => w.text),
        0,
        0,
        command,
      );
      return { kind: 'exit' };
    }
    case 'list':
    case 'metrics': {
      const o = options(command, args, { flags: ['json'] });
      expectPositionals(command, o.positional, 0, 0, `${command} [--json]`);
      return { kind: command, json: o.flags.has('json') };
    }
    case 'distribute': {
      const usage = 'distribute <file.json> [as NAME] [--id-field F]';
      const o = options(command, args, { as: true, values: ['id-field'] });
      expectPositionals(command, o.positional, 1, 1, usage);
      const file = o.positional[0]!;
      return {
        kind: 'distribute',
        file,
        name: o.as ?? baseName(file),
        idField: o.values.get('id-field'),
      };
    }
    case 'query': {
      // Positional only, so that an id such as "-3" or "--x" is an id, not an option.
      if (args.length !== 2) {
        throw new ShellSyntaxError(
          `query: ${args.length < 2 ? 'missing arguments' : 'too many arguments'}; usage: query <name> <id>`,
        );
      }
      return { kind: 'query', name: args[0]!.text, ids: recordIdCandidates(args[1]!) };
    }
    case 'put': {
      const o = options(command, args, { as: true });
      expectPositionals(command, o.positional, 1, 1, 'put <file> [as NAME]');
      const file = o.positional[0]!;
      return { kind: 'put', file, name: o.as ?? baseName(file) };
    }
    case 'get': {
      const o = options(command, args, { flags: ['force'] });
      expectPositionals(command, o.positional, 1, 2, 'get <name> [PATH|-] [--force]');
      const name = o.positional[0]!;
      return {
        kind: 'get',
        name,
        output: o.positional[1] ?? defaultOutput(name),
        force: o.flags.has('force'),
      };
    }
    default:
      throw new ShellSyntaxError(`unknown command "${command}" (try help)`);
  }
}

// ---- history ----------------------------------------------------------------------------------

/** $MEMFLOW_HISTORY if set (empty: no history), else ~/.memflow_history. */
export function historyPath(
  env: NodeJS.ProcessEnv = process.env,
  home = os.homedir(),
): string | undefined {
  const chosen = env.MEMFLOW_HISTORY;
  if (chosen !== undefined) return chosen.trim() === '' ? undefined : chosen;
  return path.join(home, '.memflow_history');
}

/**
 * The last `limit` commands in the history file, oldest first ([] when there is none). A file
 * grown past the limit is cut back to it.
 */
export function loadHistory(file: string, limit = HISTORY_LIMIT): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const kept = lines.slice(-limit);
  if (kept.length < lines.length) writeHistory(file, kept);
  return kept;
}

function writeHistory(file: string, lines: string[]): void {
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, lines.map((l) => `${l}\n`).join(''), { mode: 0o600 });
  fs.renameSync(temp, file);
}

/** Keeps the history file to the last `limit` lines (after a session appended to it). */
export function trimHistory(file: string, limit = HISTORY_LIMIT): void {
  loadHistory(file, limit);
}

/** Appends one command; false (and nothing thrown) when it cannot be written. */
export function appendHistory(file: string, line: string): boolean {
  try {
    fs.appendFileSync(file, `${line}\n`, { mode: 0o600 });
    return true;
  } catch {
    return false;
  }
}

// ---- running ----------------------------------------------------------------------------------

/** What the shell needs of DfsClient (a fake in tests). */
export type ShellClient = Pick<
  DfsClient,
  'server' | 'upload' | 'download' | 'list' | 'status' | 'putRecords' | 'queryRecord'
>;

export interface ShellOptions {
  /** Ends the session (status 130): the CLI's SIGINT/SIGTERM. */
  signal: AbortSignal;
  input?: NodeJS.ReadableStream & { isTTY?: boolean };
  output?: NodeJS.WritableStream & { isTTY?: boolean };
  errors?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  env?: NodeJS.ProcessEnv;
}

function describe(metadata: FileMetadata): string {
  return `${formatSize(metadata.sizeBytes)}, ${plural(metadata.chunks.length, 'chunk')}, version ${metadata.version}`;
}

/**
 * `work`, or CLIENT_ABORTED as soon as `signal` fires: for the read-only requests, which take no
 * signal (the reply, should it come, is dropped by the client as a late one).
 */
function abortable<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new DfsError('CLIENT_ABORTED', 'interrupted'));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Runs one command; returns the text to print (may be empty). Throws on failure. */
async function execute(
  client: ShellClient,
  command: Exclude<ShellCommand, { kind: 'empty' | 'exit' }>,
  signal: AbortSignal,
  io: {
    output: NodeJS.WritableStream;
    errors: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  },
): Promise<string> {
  switch (command.kind) {
    case 'help':
      return SHELL_HELP;
    case 'list': {
      const files = await abortable(client.list(), signal);
      return command.json ? JSON.stringify(files, null, 2) : formatList(files);
    }
    case 'metrics': {
      const status = await abortable(client.status(), signal);
      return command.json
        ? JSON.stringify(metricsDocument(status, new Date()), null, 2)
        : formatMetricsTable(status);
    }
    case 'distribute': {
      const metadata = await withProgress(io.errors, command.name, (onProgress) =>
        client.putRecords(command.file, command.name, {
          ...(command.idField === undefined ? {} : { idField: command.idField }),
          onProgress,
          signal,
        }),
      );
      const count = metadata.records?.count ?? 0;
      return `distributed ${metadata.name}: ${plural(count, 'record')} (${describe(metadata)})`;
    }
    case 'query': {
      const record = await abortable(queryFirst(client, command.name, command.ids), signal);
      return JSON.stringify(record, null, 2) ?? 'undefined';
    }
    case 'put': {
      const metadata = await withProgress(io.errors, command.name, (onProgress) =>
        client.upload(command.file, { name: command.name, onProgress, signal }),
      );
      return `uploaded ${metadata.name} (${describe(metadata)})`;
    }
    case 'get': {
      const toOutput = command.output === '-';
      const metadata = await withProgress(io.errors, command.name, (onProgress) =>
        client.download(command.name, toOutput ? io.output : command.output, {
          force: command.force,
          onProgress,
          signal,
        }),
      );
      return toOutput
        ? ''
        : `retrieved ${metadata.name} (${describe(metadata)}) to ${command.output}`;
    }
  }
}

/** The one error line for a failed command, and its status. */
export function describeShellError(
  commandName: string,
  err: unknown,
): { line: string; status: number } {
  if (err instanceof ShellSyntaxError) return { line: err.message, status: EXIT.USAGE };
  if (isDfsError(err)) {
    const reason = err.code === 'CLIENT_ABORTED' ? 'interrupted' : err.message;
    return { line: `${commandName}: ${reason}`, status: exitStatusOf(err) };
  }
  // A local failure outside the client (a bug, or the file system): still one line.
  const message = err instanceof Error ? err.message : String(err);
  return { line: `${commandName}: ${message}`, status: EXIT.FAILURE };
}

/**
 * The session: reads lines from `input` until EOF, `exit`, or `signal`; returns the exit status
 * (see the file comment).
 */
export async function runShell(client: ShellClient, options: ShellOptions): Promise<number> {
  const input = options.input ?? process.stdin;
  const output = options.output ?? process.stdout;
  const errors = options.errors ?? process.stderr;
  const interactive = input.isTTY === true;
  const say = (stream: NodeJS.WritableStream, text: string): void => {
    if (text !== '') stream.write(`${text}\n`);
  };

  let history: string[] = [];
  let historyFile = interactive ? historyPath(options.env ?? process.env) : undefined;
  if (historyFile !== undefined) {
    try {
      history = loadHistory(historyFile);
    } catch (err) {
      say(errors, `history off: cannot read ${historyFile}: ${(err as Error).message}`);
      historyFile = undefined;
    }
  }
  let lastEntry = history.at(-1);

  const rl = readline.createInterface({
    input,
    output,
    terminal: interactive,
    prompt: PROMPT,
    // readline wants the newest first.
    history: [...history].reverse(),
    historySize: HISTORY_LIMIT,
  });

  let running: AbortController | undefined;
  // Ctrl-C typed at the prompt (a terminal in raw mode sends it as a key, not a signal): stops
  // the running command, else clears the line.
  rl.on('SIGINT', () => {
    if (running !== undefined) {
      running.abort();
      return;
    }
    rl.write(null, { ctrl: true, name: 'e' });
    rl.write(null, { ctrl: true, name: 'u' });
    output.write('^C\n');
    rl.prompt();
  });
  let endedBySignal = false;
  // The running command sees it through its signal (every command stops on its signal).
  const onSessionAbort = (): void => {
    endedBySignal = true;
    rl.close();
  };
  if (options.signal.aborted) onSessionAbort();
  options.signal.addEventListener('abort', onSessionAbort, { once: true });

  let lastFailure = EXIT.OK as number;
  let exitAsked = false;
  try {
    if (interactive) {
      say(
        output,
        `MemFlow shell on ${client.server}; type help for the commands, exit or Ctrl-D to leave`,
      );
      rl.prompt();
    }
    for await (const line of rl) {
      if (historyFile !== undefined && line.trim() !== '' && line !== lastEntry) {
        if (!appendHistory(historyFile, line)) {
          say(errors, `history off: cannot write ${historyFile}`);
          historyFile = undefined;
        }
        lastEntry = line;
      }
      let commandName = line.trim().split(/\s+/)[0] ?? '';
      try {
        const command = parseShellCommand(line);
        if (command.kind === 'exit') {
          exitAsked = true;
          break;
        }
        if (command.kind !== 'empty') {
          commandName = command.kind;
          running = new AbortController();
          const signal = AbortSignal.any([running.signal, options.signal]);
          say(output, await execute(client, command, signal, { output, errors }));
        }
      } catch (err) {
        if (endedBySignal) break;
        const { line: message, status } = describeShellError(commandName, err);
        say(errors, message);
        lastFailure = status;
      } finally {
        running = undefined;
      }
      if (endedBySignal) break;
      if (interactive) rl.prompt();
    }
  } finally {
    options.signal.removeEventListener('abort', onSessionAbort);
    rl.close();
    if (historyFile !== undefined) {
      try {
        trimHistory(historyFile);
      } catch {
        // The history is a convenience: never a reason for a failed session.
      }
    }
  }
  if (endedBySignal) return EXIT.INTERRUPTED;
  // Ctrl-D leaves the cursor after the prompt: end the line as shells do.
  if (interactive && !exitAsked) output.write('\n');
  return interactive ? EXIT.OK : lastFailure;
}
