/**
 * Hostfile parsing (pure). One line names one host, in either of the two forms users bring from
 * MPI:
 *
 *   node1 slots=4            Open MPI
 *   node1:4                  MPICH Hydra
 *   node1                    one slot
 *   node2:2 capacity=512M addr=10.0.0.2   per-host keys after the host
 *
 * `#` starts a comment (whole line or trailing); blank lines are ignored. `slots` and `addr` belong
 * to the launcher; every other key=value is handed to the ranks on that host as
 * MEMFLOW_HOST_<KEY>. IPv6 literals are written in brackets when they carry a slot count
 * (`[::1]:2`). Every mistake is a LaunchError LAUNCH_HOSTFILE whose message starts with the place
 * (`hosts.txt:3:`) and says what is wrong.
 */
import { parseSize } from '../src/store/sizes.js';
import { LaunchError } from './errors.js';

/** The most ranks (and slots on one host) a launch may have: each rank costs the launcher 3 pipes. */
export const MAX_RANKS = 4096;

export interface HostEntry {
  /** The host as written: what ssh connects to and what `{host}` becomes in an exec template. */
  name: string;
  /** How many ranks this line takes before the next line gets any. */
  slots: number;
  /** The address ranks on this host bind on and advertise (`addr=`), when the line gives one. */
  addr?: string;
  /** Every other key=value of the line, keys in upper case (they become MEMFLOW_HOST_<KEY>). */
  keys: Record<string, string>;
  /** Where the entry came from, for messages: `hosts.txt:3` or `--host item 2`. */
  origin: string;
}

/**
 * Parses a whole hostfile. `fileName` is used only in error messages. Returns the hosts in file
 * order (a host listed twice appears twice, and takes slots at both places). Throws LaunchError
 * LAUNCH_HOSTFILE for a malformed line or a file without any host.
 */
export function parseHostfile(text: string, fileName: string): HostEntry[] {
  const hosts: HostEntry[] = [];
  text.split(/\r?\n/).forEach((line, index) => {
    const entry = parseHostLine(line, `${fileName}:${index + 1}`);
    if (entry !== null) hosts.push(entry);
  });
  if (hosts.length === 0) {
    throw new LaunchError('LAUNCH_HOSTFILE', `${fileName}: the hostfile names no host`);
  }
  return hosts;
}

/**
 * Parses the value of `--host h1,h2:2,h3 slots=4`: each comma-separated item is read exactly like
 * a hostfile line. Throws LaunchError LAUNCH_HOSTFILE naming the item.
 */
export function parseHostList(list: string): HostEntry[] {
  const hosts: HostEntry[] = [];
  list.split(',').forEach((item, index) => {
    const origin = `--host item ${index + 1}`;
    const entry = parseHostLine(item, origin);
    if (entry === null) {
      throw new LaunchError('LAUNCH_HOSTFILE', `${origin}: empty host name in "${list}"`);
    }
    hosts.push(entry);
  });
  return hosts;
}

/**
 * Parses one line; returns null for a blank or comment-only line. `origin` prefixes error messages.
 * Throws LaunchError LAUNCH_HOSTFILE.
 */
export function parseHostLine(line: string, origin: string): HostEntry | null {
  const hash = line.indexOf('#');
  const content = (hash === -1 ? line : line.slice(0, hash)).trim();
  if (content === '') return null;

  const fail = (what: string): never => {
    throw new LaunchError('LAUNCH_HOSTFILE', `${origin}: ${what}`);
  };

  const [hostToken = '', ...keyTokens] = content.split(/\s+/);
  if (hostToken.includes('=')) {
    fail(`the line must start with a host name, got "${hostToken}"`);
  }
  const { name, slotsText } = splitHostToken(hostToken, fail);

  let slots: number | undefined;
  if (slotsText !== undefined) slots = parseSlots(slotsText, `":${slotsText}"`, fail);

  let addr: string | undefined;
  const keys: Record<string, string> = {};
  for (const token of keyTokens) {
    const eq = token.indexOf('=');
    if (eq <= 0) {
      fail(`expected key=value after the host, got "${token}"`);
    }
    const key = token.slice(0, eq);
    const value = token.slice(eq + 1);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      fail(`key "${key}" must be letters, digits and _ (it becomes MEMFLOW_HOST_<KEY>)`);
    }
    if (value === '') {
      fail(`key "${key}" has no value`);
    }
    const upper = key.toUpperCase();
    if (upper === 'SLOTS') {
      if (slots !== undefined)
        fail(`the slot count is given twice ("${hostToken}" and "${token}")`);
      slots = parseSlots(value, `"${token}"`, fail);
    } else if (upper === 'ADDR') {
      if (addr !== undefined) fail('addr is given twice');
      addr = parseAddr(value, fail);
    } else {
      if (upper in keys) fail(`key "${key}" is given twice`);
      // The store reads capacity= as the data ranks' offered space: a typo must stop the
      // launch here, not surface later as one rank failing to start.
      if (upper === 'CAPACITY') checkSize(key, value, fail);
      keys[upper] = value;
    }
  }

  const entry: HostEntry = { name, slots: slots ?? 1, keys, origin };
  if (addr !== undefined) entry.addr = addr;
  return entry;
}

function checkSize(key: string, value: string, fail: (what: string) => never): void {
  try {
    parseSize(value);
  } catch (err) {
    fail(`${key}=${value}: ${(err as Error).message}`);
  }
}

function splitHostToken(
  token: string,
  fail: (what: string) => never,
): { name: string; slotsText: string | undefined } {
  // Bracketed IPv6 literal, with or without a slot count.
  const bracketed = /^\[([0-9A-Fa-f:.%\w]+)\](?::(.*))?$/.exec(token);
  if (bracketed !== null) {
    return { name: bracketed[1] ?? '', slotsText: bracketed[2] };
  }
  const colons = token.split(':').length - 1;
  if (colons >= 2) {
    // A bare IPv6 literal: it cannot carry a slot count without brackets.
    if (!/^[0-9A-Fa-f:.%\w]+$/.test(token)) fail(`"${token}" is not a valid IPv6 address`);
    return { name: token, slotsText: undefined };
  }
  const [name = '', slotsText] = token.split(':');
  // Host names go to ssh as one argument: refuse anything ssh could take for an option or that
  // no resolver accepts, instead of failing obscurely later.
  if (!/^[A-Za-z0-9_][A-Za-z0-9._@%-]*$/.test(name)) {
    fail(`"${name}" is not a valid host name (letters, digits, . _ - and user@host)`);
  }
  return { name, slotsText };
}

function parseSlots(text: string, shown: string, fail: (what: string) => never): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > MAX_RANKS) {
    fail(`the slot count in ${shown} must be an integer from 1 to ${MAX_RANKS}`);
  }
  return Number(text);
}

function parseAddr(value: string, fail: (what: string) => never): string {
  const unbracketed = /^\[(.+)\]$/.exec(value)?.[1] ?? value;
  if (!/^[A-Za-z0-9_.:%-]+$/.test(unbracketed)) {
    fail(`addr "${value}" is not a host name or IP address`);
  }
  return unbracketed;
}
