/**
 * The command lines that start a rank (pure): the guard invocation, the ssh command with its
 * quoted remote shell line, and the --launcher-exec template. The spawners only execute these, so
 * quoting and substitution are tested without starting anything.
 */
import { LaunchError } from './errors.js';

/** What the guard runs, and how long it lets the program handle SIGTERM. */
export interface GuardInvocation {
  /** Absolute path of dist/launcher/rank-guard.js (the same on every host). */
  guardScript: string;
  graceMs: number;
  program: string;
  args: readonly string[];
}

/** The guard's argv after `node`. */
export function guardArgs(invocation: GuardInvocation): string[] {
  return [
    invocation.guardScript,
    `--grace-ms=${invocation.graceMs}`,
    '--',
    invocation.program,
    ...invocation.args,
  ];
}

/**
 * Quotes one word for a POSIX shell: unchanged when it holds only safe characters, otherwise in
 * single quotes with each `'` written as `'\''`.
 */
export function shellQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * The remote shell line for ssh: change to the launcher's working directory, then replace the
 * shell with `env VAR=value ... node GUARD ...`, so the guard's parent is sshd itself and the
 * MEMFLOW_* variables reach the rank whatever the remote login shell is.
 */
export function sshRemoteCommand(
  cwd: string,
  env: Readonly<Record<string, string>>,
  nodeArgv: readonly string[],
): string {
  const assignments = Object.entries(env).map(([key, value]) => shellQuote(`${key}=${value}`));
  const words = ['exec', 'env', ...assignments, ...nodeArgv.map(shellQuote)];
  return `cd ${shellQuote(cwd)} && ${words.join(' ')}`;
}

/**
 * ssh's argv: BatchMode so a missing key fails at once with a message instead of prompting for
 * a password in the middle of a job.
 */
export function sshArgv(host: string, remoteCommand: string): string[] {
  return ['-o', 'BatchMode=yes', host, remoteCommand];
}

/**
 * Splits a --launcher-exec template into argv words the way a shell would split plain words:
 * whitespace separates, single and double quotes group, backslash escapes one character. No
 * expansion of any kind happens. Throws LaunchError LAUNCH_USAGE for an empty template or an
 * unterminated quote.
 */
export function splitTemplate(template: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < template.length; i++) {
    const char = template.charAt(i);
    if (quote !== null) {
      if (char === quote) quote = null;
      else if (char === '\\' && quote === '"' && i + 1 < template.length) word += template[++i];
      else word += char;
    } else if (char === "'" || char === '"') {
      quote = char;
      inWord = true;
    } else if (char === '\\' && i + 1 < template.length) {
      word += template[++i];
      inWord = true;
    } else if (/\s/.test(char)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += char;
      inWord = true;
    }
  }
  if (quote !== null) {
    throw new LaunchError(
      'LAUNCH_USAGE',
      `--launcher-exec: unterminated ${quote} in "${template}"`,
    );
  }
  if (inWord) words.push(word);
  if (words.length === 0) {
    throw new LaunchError('LAUNCH_USAGE', '--launcher-exec: the template is empty');
  }
  return words;
}

/**
 * The argv that starts a rank through an exec template: the template words with every `{host}`
 * replaced, then the command (node, guard, program, args) appended.
 */
export function execTemplateArgv(
  templateWords: readonly string[],
  host: string,
  command: readonly string[],
): string[] {
  return [...templateWords.map((word) => word.replaceAll('{host}', host)), ...command];
}
