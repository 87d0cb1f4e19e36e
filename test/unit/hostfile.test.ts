/**
 * Goal: the hostfile reader accepts what Open MPI and MPICH users already write, and refuses
 * everything else with the file, the line and the reason.
 * Method: parse small texts with parseHostfile / parseHostList and compare the entries, or the
 * LaunchError message, exactly.
 */
import { describe, expect, it } from 'vitest';
import { LaunchError } from '../../launcher/errors.js';
import { MAX_RANKS, parseHostfile, parseHostList } from '../../launcher/hostfile.js';

function hostsOf(text: string): { name: string; slots: number }[] {
  return parseHostfile(text, 'hosts.txt').map(({ name, slots }) => ({ name, slots }));
}

function errorOf(fn: () => unknown): LaunchError {
  try {
    fn();
  } catch (error) {
    if (error instanceof LaunchError) return error;
    throw error;
  }
  throw new Error('expected a LaunchError');
}

describe('hostfile forms', () => {
  it('reads the Open MPI form "host slots=N"', () => {
    expect(hostsOf('node1 slots=4\nnode2 slots=2\n')).toEqual([
      { name: 'node1', slots: 4 },
      { name: 'node2', slots: 2 },
    ]);
  });

  it('reads the MPICH Hydra form "host:N"', () => {
    expect(hostsOf('node1:4\nnode2:2')).toEqual([
      { name: 'node1', slots: 4 },
      { name: 'node2', slots: 2 },
    ]);
  });

  it('gives a bare host one slot, and mixes both forms in one file', () => {
    expect(hostsOf('node1\nnode2:3\nnode3 slots=2')).toEqual([
      { name: 'node1', slots: 1 },
      { name: 'node2', slots: 3 },
      { name: 'node3', slots: 2 },
    ]);
  });

  it('skips whole-line comments, trailing comments and blank lines, keeping file order', () => {
    const text = [
      '# cluster of three',
      '',
      'node1 slots=2   # the big one',
      '   ',
      '\t# indented comment',
      'node2:1#no space before the comment',
      'node1',
    ].join('\n');
    expect(hostsOf(text)).toEqual([
      { name: 'node1', slots: 2 },
      { name: 'node2', slots: 1 },
      { name: 'node1', slots: 1 },
    ]);
  });

  it('accepts CRLF line endings, user@host names and IPv6 literals', () => {
    expect(hostsOf('alice@node1:2\r\n[::1]:3\r\nfe80::1\r\n10.0.0.2 slots=2\r\n')).toEqual([
      { name: 'alice@node1', slots: 2 },
      { name: '::1', slots: 3 },
      { name: 'fe80::1', slots: 1 },
      { name: '10.0.0.2', slots: 2 },
    ]);
  });

  it('records where each entry came from', () => {
    expect(parseHostfile('# c\nnode1\n\nnode2', 'h').map((h) => h.origin)).toEqual(['h:2', 'h:4']);
  });
});

describe('per-host keys', () => {
  it('takes slots and addr for the launcher and hands every other key on in upper case', () => {
    const [entry] = parseHostfile('node2:2 capacity=512M addr=10.0.0.2 zone=b', 'hosts.txt');
    expect(entry).toEqual({
      name: 'node2',
      slots: 2,
      addr: '10.0.0.2',
      keys: { CAPACITY: '512M', ZONE: 'b' },
      origin: 'hosts.txt:1',
    });
  });

  it('accepts keys in any case and a bracketed IPv6 addr', () => {
    const [entry] = parseHostfile('node1 SLOTS=3 Addr=[fd00::2] Capacity=1G', 'hosts.txt');
    expect(entry).toMatchObject({ slots: 3, addr: 'fd00::2', keys: { CAPACITY: '1G' } });
  });

  it('leaves addr unset when the line gives none', () => {
    const [entry] = parseHostfile('node1', 'hosts.txt');
    expect(entry?.addr).toBeUndefined();
  });
});

describe('malformed lines name the file, the line and the mistake', () => {
  const cases: [string, string, string][] = [
    ['a slot count that is not a number', 'node1\nnode2 slots=x', 'hosts.txt:2: the slot count'],
    ['zero slots', 'node1:0', 'hosts.txt:1: the slot count in ":0" must be an integer from 1'],
    ['negative slots', 'node1 slots=-2', 'hosts.txt:1: the slot count in "slots=-2"'],
    ['too many slots', `node1:${MAX_RANKS + 1}`, 'hosts.txt:1: the slot count'],
    ['an empty slot count', 'node1:', 'hosts.txt:1: the slot count in ":"'],
    ['slots given twice', 'node1:2 slots=3', 'hosts.txt:1: the slot count is given twice'],
    ['a word that is not key=value', '\n\nnode1 fast', 'hosts.txt:3: expected key=value'],
    ['a key without value', 'node1 capacity=', 'hosts.txt:1: key "capacity" has no value'],
    ['a capacity that is not a size', 'node1 capacity=lots', 'hosts.txt:1: capacity=lots: size'],
    [
      'a negative capacity',
      'node1 Capacity=-1G',
      'hosts.txt:1: Capacity=-1G: size "-1G" has a sign',
    ],
    ['a key with bad characters', 'node1 cap-acity=1', 'hosts.txt:1: key "cap-acity" must be'],
    ['a key given twice', 'node1 zone=a ZONE=b', 'hosts.txt:1: key "ZONE" is given twice'],
    ['addr given twice', 'node1 addr=a addr=b', 'hosts.txt:1: addr is given twice'],
    ['a bad addr', 'node1 addr=a/b', 'hosts.txt:1: addr "a/b" is not a host name'],
    ['a key=value in place of the host', 'slots=4', 'hosts.txt:1: the line must start with a host'],
    ['a host that looks like an option', '-oProxyCommand=x', 'hosts.txt:1: the line must start'],
    ['a host with a bad character', 'node$1', 'hosts.txt:1: "node$1" is not a valid host name'],
    ['a host starting with a dash', '-node', 'hosts.txt:1: "-node" is not a valid host name'],
  ];
  it.each(cases)('refuses %s', (_what, text, message) => {
    const error = errorOf(() => parseHostfile(text, 'hosts.txt'));
    expect(error.code).toBe('LAUNCH_HOSTFILE');
    expect(error.message.startsWith(message)).toBe(true);
  });

  it('refuses a file without any host', () => {
    expect(errorOf(() => parseHostfile('# nothing\n\n', 'empty.txt')).message).toBe(
      'empty.txt: the hostfile names no host',
    );
  });
});

describe('--host lists', () => {
  it('reads "h1,h2:2" exactly like the lines "h1" and "h2:2"', () => {
    const fromList = parseHostList('h1,h2:2').map(({ name, slots, keys }) => ({
      name,
      slots,
      keys,
    }));
    const fromFile = parseHostfile('h1\nh2:2', 'f').map(({ name, slots, keys }) => ({
      name,
      slots,
      keys,
    }));
    expect(fromList).toEqual(fromFile);
  });

  it('accepts per-host keys inside an item', () => {
    expect(parseHostList('h1 slots=2 capacity=1G, h2')[0]).toMatchObject({
      slots: 2,
      keys: { CAPACITY: '1G' },
      origin: '--host item 1',
    });
  });

  it('names the item of a malformed entry', () => {
    expect(errorOf(() => parseHostList('h1,h2:x')).message).toMatch(/^--host item 2: the slot/);
    expect(errorOf(() => parseHostList('h1,,h2')).message).toMatch(/^--host item 2: empty host/);
  });
});
