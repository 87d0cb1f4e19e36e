/**
 * Goal: the launch plan puts ranks where mpirun would (slots filled in file order, a warned
 * wrap-around instead of a refusal), starts local hosts by fork and others by ssh or the exec
 * template, and gives every rank exactly the environment the rank side reads. Also covers the
 * other pure pieces of a launch: the command line split, the ssh/template command lines, the guard
 * frames and the output line splitting.
 * Method: call the pure functions with a described machine (LocalIdentity) and compare results.
 */
import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { parseWorldEnv } from '../../src/comm/world-env.js';
import { splitCommandLine, toLaunchRequest, type RankCommand } from '../../launcher/args.js';
import {
  execTemplateArgv,
  guardArgs,
  shellQuote,
  splitTemplate,
  sshArgv,
  sshRemoteCommand,
} from '../../launcher/commands.js';
import { LaunchError } from '../../launcher/errors.js';
import {
  encodeData,
  encodeFrame,
  formatGuardNotice,
  FRAME,
  FrameDecoder,
  MAX_FRAME_PAYLOAD_BYTES,
  parseGuardNotice,
} from '../../launcher/guard-protocol.js';
import { parseHostfile, type HostEntry } from '../../launcher/hostfile.js';
import { isLocalHost, type LocalIdentity } from '../../launcher/local-host.js';
import { formatLines, LineBuffer, rankTag } from '../../launcher/output.js';
import {
  inheritedEnvironment,
  joinName,
  joinRankEnv,
  placeRanks,
  rankEnv,
  type PlanInput,
} from '../../launcher/plan.js';
import {
  hasMallocTunables,
  MALLOC_TUNABLES,
  withMallocTunables,
} from '../../src/runtime/malloc-tuning.js';
import type { LaunchedRank, RankEnd } from '../../launcher/rank-process.js';
import {
  describeFailure,
  exitStatus,
  Supervisor,
  type SupervisedRank,
  type SupervisorOptions,
} from '../../launcher/supervisor.js';

const machine: LocalIdentity = {
  hostname: 'alpha.example.org',
  addresses: ['127.0.0.1', '192.168.1.10', '::1', 'fe80::1'],
};

function hosts(text: string): HostEntry[] {
  return parseHostfile(text, 'hosts.txt');
}

function plan(input: Omit<PlanInput, 'identity'>) {
  return placeRanks({ identity: machine, ...input });
}

function hostsOfRanks(input: Omit<PlanInput, 'identity'>): string[] {
  return plan(input).ranks.map((r) => r.host);
}

describe('slot filling', () => {
  it('fills the slots of each host in file order', () => {
    expect(hostsOfRanks({ hosts: hosts('a slots=2\nb:3\nc'), size: 6 })).toEqual([
      'a',
      'a',
      'b',
      'b',
      'b',
      'c',
    ]);
  });

  it('starts one rank per slot when -n is not given', () => {
    const result = plan({ hosts: hosts('a:2\nb:3') });
    expect(result.size).toBe(5);
    expect(result.warnings).toEqual([]);
  });

  it('starts 4 ranks on localhost without a hostfile or --host', () => {
    const result = plan({});
    expect(result.size).toBe(4);
    expect(result.ranks.map((r) => [r.host, r.mode, r.addr])).toEqual(
      Array(4).fill(['localhost', 'fork', '127.0.0.1']),
    );
  });

  it('takes -n as given on localhost without a hostfile, without a warning', () => {
    const result = plan({ size: 9 });
    expect(result.size).toBe(9);
    expect(result.warnings).toEqual([]);
  });

  it('uses fewer ranks than slots when -n is smaller', () => {
    expect(hostsOfRanks({ hosts: hosts('a:4\nb:4'), size: 3 })).toEqual(['a', 'a', 'a']);
  });

  it('wraps ranks beyond the slots round-robin over the hosts, with one warning line', () => {
    const result = plan({ hosts: hosts('a:2\nb:1\nc:1'), size: 9 });
    expect(result.ranks.map((r) => r.host)).toEqual(['a', 'a', 'b', 'c', 'a', 'b', 'c', 'a', 'b']);
    expect(result.warnings).toEqual([
      'memflow-run: warning: 9 ranks but only 4 slots; ranks 4-8 wrap around the hosts round-robin',
    ]);
  });

  it('names a single extra rank in the singular', () => {
    expect(plan({ hosts: hosts('a:2'), size: 3 }).warnings).toEqual([
      'memflow-run: warning: 3 ranks but only 2 slots; rank 2 wraps around the hosts round-robin',
    ]);
  });

  it('refuses a size beyond the maximum with a usage error', () => {
    expect(() => plan({ size: 100_000 })).toThrow(LaunchError);
  });
});

describe('local hosts', () => {
  const local = [
    'localhost',
    'LOCALHOST',
    '127.0.0.1',
    '127.1.2.3',
    '::1',
    '[::1]',
    'alpha.example.org',
    'alpha',
    'ALPHA',
    '192.168.1.10',
    'fe80::1',
    'bob@localhost',
  ];
  const remote = ['node1', 'alpha2', '192.168.1.11', '10.0.0.2', 'example.org', 'beta.example.org'];

  it.each(local)('treats %s as this machine', (host) => {
    expect(isLocalHost(host, machine)).toBe(true);
  });

  it.each(remote)('treats %s as another machine', (host) => {
    expect(isLocalHost(host, machine)).toBe(false);
  });

  it('starts local hosts by fork and others by ssh, binding local ranks on 127.0.0.1', () => {
    const result = plan({ hosts: hosts('localhost\nnode1\nalpha\n192.168.1.10') });
    expect(result.ranks.map((r) => [r.host, r.mode, r.local, r.addr])).toEqual([
      ['localhost', 'fork', true, '127.0.0.1'],
      ['node1', 'ssh', false, 'node1'],
      ['alpha', 'fork', true, '127.0.0.1'],
      ['192.168.1.10', 'fork', true, '127.0.0.1'],
    ]);
  });

  it('binds on addr= when the hostfile gives it, and on the host part of user@host otherwise', () => {
    const result = plan({
      hosts: hosts('localhost addr=10.1.1.1\nbob@node1 addr=10.0.0.2\nbob@node2'),
    });
    expect(result.ranks.map((r) => r.addr)).toEqual(['10.1.1.1', '10.0.0.2', 'node2']);
  });

  it('forces one mode with --launcher, and the exec template for every host', () => {
    const mixed = hosts('localhost\nnode1');
    expect(plan({ hosts: mixed, launcher: 'ssh' }).ranks.map((r) => r.mode)).toEqual([
      'ssh',
      'ssh',
    ]);
    expect(plan({ hosts: mixed, launcher: 'fork' }).ranks.map((r) => r.mode)).toEqual([
      'fork',
      'fork',
    ]);
    expect(plan({ hosts: mixed, execTemplate: true }).ranks.map((r) => r.mode)).toEqual([
      'exec',
      'exec',
    ]);
  });

  it('numbers ranks per machine (all local names are one machine), wrap-around included', () => {
    const result = plan({ hosts: hosts('localhost:2\nnode1:2\n127.0.0.1:1'), size: 7 });
    expect(result.ranks.map((r) => `${r.host}/${r.localRank}`)).toEqual([
      'localhost/0',
      'localhost/1',
      'node1/0',
      'node1/1',
      '127.0.0.1/2',
      'localhost/3',
      'node1/2',
    ]);
  });
});

describe('the environment of each rank', () => {
  const world = { size: 3, root: { host: '10.0.0.1', port: 4567 }, jobId: 'ab12cd34' };

  it('sets every MEMFLOW_* variable and the per-host keys', () => {
    const result = plan({
      hosts: hosts('node1:2 addr=10.0.0.1 capacity=512M\nnode2 addr=10.0.0.2'),
    });
    expect(result.ranks.map((r) => rankEnv(r, world))).toEqual([
      {
        MEMFLOW_HOST_CAPACITY: '512M',
        MEMFLOW_RANK: '0',
        MEMFLOW_SIZE: '3',
        MEMFLOW_ROOT: '10.0.0.1:4567',
        MEMFLOW_HOST: '10.0.0.1',
        MEMFLOW_JOB_ID: 'ab12cd34',
        MEMFLOW_LOCAL_RANK: '0',
      },
      {
        MEMFLOW_HOST_CAPACITY: '512M',
        MEMFLOW_RANK: '1',
        MEMFLOW_SIZE: '3',
        MEMFLOW_ROOT: '10.0.0.1:4567',
        MEMFLOW_HOST: '10.0.0.1',
        MEMFLOW_JOB_ID: 'ab12cd34',
        MEMFLOW_LOCAL_RANK: '1',
      },
      {
        MEMFLOW_RANK: '2',
        MEMFLOW_SIZE: '3',
        MEMFLOW_ROOT: '10.0.0.1:4567',
        MEMFLOW_HOST: '10.0.0.2',
        MEMFLOW_JOB_ID: 'ab12cd34',
        MEMFLOW_LOCAL_RANK: '0',
      },
    ]);
  });

  it('produces exactly what parseWorldEnv reads back', () => {
    const result = plan({ hosts: hosts('[::1]:2\nnode1 addr=fd00::7') });
    const v6world = { size: 3, root: { host: '::1', port: 7000 }, jobId: 'j1' };
    expect(result.ranks.map((r) => parseWorldEnv(rankEnv(r, v6world)))).toEqual([
      {
        rank: 0,
        size: 3,
        root: { host: '::1', port: 7000 },
        host: '127.0.0.1',
        jobId: 'j1',
        localRank: 0,
      },
      {
        rank: 1,
        size: 3,
        root: { host: '::1', port: 7000 },
        host: '127.0.0.1',
        jobId: 'j1',
        localRank: 1,
      },
      {
        rank: 2,
        size: 3,
        root: { host: '::1', port: 7000 },
        host: 'fd00::7',
        jobId: 'j1',
        localRank: 0,
      },
    ]);
    expect(rankEnv(result.ranks[0]!, v6world).MEMFLOW_ROOT).toBe('[::1]:7000');
  });
});

describe("what ranks inherit of the launcher's environment", () => {
  const env = { PATH: '/bin', MEMFLOW_NOTE: 'n', MEMFLOW_JOIN: '1', HOME: '/root' };

  it('the store gets the malloc settings here and over ssh; ssh carries only MEMFLOW_* besides', () => {
    const { local, remote } = inheritedEnvironment(env, { joining: false, store: true });
    expect(local).toEqual({
      PATH: '/bin',
      MEMFLOW_NOTE: 'n',
      HOME: '/root',
      GLIBC_TUNABLES: MALLOC_TUNABLES,
    });
    expect(remote).toEqual({ MEMFLOW_NOTE: 'n', GLIBC_TUNABLES: MALLOC_TUNABLES });
  });

  it('a PROGRAM gets the environment as it is, MEMFLOW_JOIN only with --join', () => {
    const program = inheritedEnvironment(env, { joining: false, store: false });
    expect(program.local).toEqual({ PATH: '/bin', MEMFLOW_NOTE: 'n', HOME: '/root' });
    expect(program.remote).toEqual({ MEMFLOW_NOTE: 'n' });
    const joining = inheritedEnvironment(env, { joining: true, store: false });
    expect(joining.local.MEMFLOW_JOIN).toBe('1');
    expect(joining.remote).toEqual({ MEMFLOW_NOTE: 'n', MEMFLOW_JOIN: '1' });
  });

  it("keeps the user's own GLIBC_TUNABLES after ours, so that theirs win", () => {
    const user = 'glibc.malloc.trim_threshold=0';
    const { local } = inheritedEnvironment(
      { GLIBC_TUNABLES: user },
      { joining: false, store: true },
    );
    expect(local.GLIBC_TUNABLES).toBe(`${MALLOC_TUNABLES}:${user}`);
    expect(withMallocTunables(local.GLIBC_TUNABLES)).toBe(local.GLIBC_TUNABLES);
    expect(hasMallocTunables(local.GLIBC_TUNABLES)).toBe(true);
    expect(hasMallocTunables(user)).toBe(false);
  });
});

describe('the environment of a joining rank (--join)', () => {
  const root = { host: '10.0.0.1', port: 40123 };

  it('gives placeholders rank 0 of size 1, MEMFLOW_JOIN=1, job id "join" and the usual host keys', () => {
    const result = plan({ hosts: hosts('node2:2 addr=10.0.0.2 capacity=2G'), size: 2 });
    expect(result.ranks.map((r) => joinRankEnv(r, root))).toEqual([
      {
        MEMFLOW_HOST_CAPACITY: '2G',
        MEMFLOW_RANK: '0',
        MEMFLOW_SIZE: '1',
        MEMFLOW_ROOT: '10.0.0.1:40123',
        MEMFLOW_HOST: '10.0.0.2',
        MEMFLOW_JOB_ID: 'join',
        MEMFLOW_LOCAL_RANK: '0',
        MEMFLOW_JOIN: '1',
      },
      {
        MEMFLOW_HOST_CAPACITY: '2G',
        MEMFLOW_RANK: '0',
        MEMFLOW_SIZE: '1',
        MEMFLOW_ROOT: '10.0.0.1:40123',
        MEMFLOW_HOST: '10.0.0.2',
        MEMFLOW_JOB_ID: 'join',
        MEMFLOW_LOCAL_RANK: '1',
        MEMFLOW_JOIN: '1',
      },
    ]);
  });

  it('stays parseable by parseWorldEnv', () => {
    const [placement] = plan({ hosts: hosts('localhost'), size: 1 }).ranks;
    const env = joinRankEnv(placement!, { host: '::1', port: 7000 });
    expect(env.MEMFLOW_ROOT).toBe('[::1]:7000');
    expect(parseWorldEnv(env)).toEqual({
      rank: 0,
      size: 1,
      root: { host: '::1', port: 7000 },
      host: '127.0.0.1',
      jobId: 'join',
      localRank: 0,
    });
  });

  it('names joining ranks j0, j1, ... in output tags', () => {
    expect(String(formatLines([Buffer.from('hi\n')], rankTag(joinName(1))))).toBe('[j1] hi\n');
  });
});

describe('the command line', () => {
  function split(line: string[]) {
    return splitCommandLine(line);
  }

  it('takes launcher options up to PROGRAM and leaves the rest to the program', () => {
    expect(split(['-n', '4', 'node', '-e', 'x', '-n', '2'])).toEqual({
      launcherArgv: ['--n=4'],
      command: { kind: 'program', program: 'node', args: ['-e', 'x', '-n', '2'] },
    });
  });

  it('treats everything after -- as PROGRAM and its arguments', () => {
    expect(split(['--np', '2', '--no-tag-output', '--', '--weird', 'a']).command).toEqual({
      kind: 'program',
      program: '--weird',
      args: ['a'],
    });
    expect(split(['-np', '2', '--no-tag-output', '--', 'p']).launcherArgv).toEqual([
      '--n=2',
      '--no-tag-output',
    ]);
  });

  it('canonicalises every spelling of the launcher options', () => {
    expect(
      split([
        '-n4',
        '--hostfile=h.txt',
        '-H',
        'a,b:2',
        '--launcher',
        'ssh',
        '--launcher-exec',
        'ip netns exec {host}',
        '--root-port=7000',
        '--grace-ms',
        '100',
        '--tag-output',
        '--on-rank-failure=continue',
        '-h',
        'prog',
      ]).launcherArgv,
    ).toEqual([
      '--n=4',
      '--hostfile=h.txt',
      '--host=a,b:2',
      '--launcher=ssh',
      '--launcher-exec=ip netns exec {host}',
      '--root-port=7000',
      '--grace-ms=100',
      '--tag-output',
      '--on-rank-failure=continue',
      '--help',
    ]);
  });

  it('enters store mode without PROGRAM and forwards the options it does not know', () => {
    expect(
      split([
        '-n',
        '3',
        '--port',
        '7070',
        '--data-dir',
        'x',
        '--grace-ms',
        '10',
        '--replicas',
        '2',
      ]),
    ).toEqual({
      launcherArgv: ['--n=3', '--grace-ms=10'],
      command: { kind: 'store', args: ['--port', '7070', '--data-dir', 'x', '--replicas', '2'] },
    });
    expect(split([]).command).toEqual({ kind: 'store', args: [] });
    expect(split(['-n', '2', '--']).command).toEqual({ kind: 'store', args: [] });
  });

  it('refuses an unknown option before an explicit -- PROGRAM, and an option without value', () => {
    expect(() => split(['--bogus', '--', 'node'])).toThrow(/unknown option --bogus/);
    expect(() => split(['-n'])).toThrow(/option -n needs a value/);
    expect(() => split(['--no-tag-output=1', 'p'])).toThrow(/takes no value/);
  });

  const program: RankCommand = { kind: 'program', program: 'p', args: [] };

  it('validates values into a request with defaults', () => {
    expect(toLaunchRequest({}, program)).toEqual({
      graceMs: 3000,
      tagOutput: true,
      onRankFailure: 'abort',
      restarts: 0,
      command: program,
    });
    expect(
      toLaunchRequest(
        {
          n: '8',
          host: 'a,b',
          launcher: 'ssh',
          'launcher-exec': "ip netns exec '{host}'",
          'root-port': '7000',
          'grace-ms': '0',
          'tag-output': false,
          'on-rank-failure': 'continue',
        },
        program,
      ),
    ).toEqual({
      size: 8,
      hostList: 'a,b',
      launcher: 'ssh',
      launcherExec: ['ip', 'netns', 'exec', '{host}'],
      rootPort: 7000,
      graceMs: 0,
      tagOutput: false,
      onRankFailure: 'continue',
      restarts: 0,
      command: program,
    });
  });

  it('reads --restart N (alias --max-restarts) anywhere, store mode included', () => {
    expect(split(['--restart', '3', '-n', '2', 'p']).launcherArgv).toEqual([
      '--restart=3',
      '--n=2',
    ]);
    expect(split(['--max-restarts=2', '--port', '7070', '--restart', '1'])).toEqual({
      launcherArgv: ['--restart=2', '--restart=1'],
      command: { kind: 'store', args: ['--port', '7070'] },
    });
    expect(toLaunchRequest({ restart: '3' }, program).restarts).toBe(3);
    expect(toLaunchRequest({ restart: '0' }, program).restarts).toBe(0);
    expect(toLaunchRequest({ restart: '1000' }, program).restarts).toBe(1000);
  });

  it('reads --join HOST:PORT into the rendezvous to join, with continue as the default policy', () => {
    expect(split(['--join', '127.0.0.1:40123', '-n', '1', '--capacity', '2G'])).toEqual({
      launcherArgv: ['--join=127.0.0.1:40123', '--n=1'],
      command: { kind: 'store', args: ['--capacity', '2G'] },
    });
    expect(toLaunchRequest({ join: '127.0.0.1:40123' }, program)).toEqual({
      graceMs: 3000,
      tagOutput: true,
      onRankFailure: 'continue',
      restarts: 0,
      join: { host: '127.0.0.1', port: 40123 },
      command: program,
    });
    expect(toLaunchRequest({ join: '[fd00::2]:7000' }, program).join).toEqual({
      host: 'fd00::2',
      port: 7000,
    });
    expect(toLaunchRequest({ join: 'node1:7000', 'on-rank-failure': 'abort' }, program)).toEqual(
      expect.objectContaining({ join: { host: 'node1', port: 7000 }, onRankFailure: 'abort' }),
    );
  });

  const bad: [Record<string, unknown>, RegExp][] = [
    [{ n: '0' }, /^-n must be an integer from 1 to 4096, got "0"$/],
    [{ n: 'abc' }, /^-n must be an integer/],
    [{ n: '2.5' }, /^-n must be an integer/],
    [{ 'root-port': '70000' }, /^--root-port must be an integer from 1 to 65535/],
    [{ 'grace-ms': '-1' }, /^--grace-ms must be an integer/],
    [{ launcher: 'rsh' }, /^--launcher must be fork or ssh, got "rsh"$/],
    [{ 'on-rank-failure': 'retry' }, /^--on-rank-failure must be abort or continue/],
    [{ hostfile: 'h', host: 'a' }, /either --hostfile or --host/],
    [{ launcher: 'fork', 'launcher-exec': 'env' }, /contradict/],
    [{ 'launcher-exec': '  ' }, /template is empty/],
    [{ 'launcher-exec': "ip 'netns" }, /unterminated '/],
    [{ restart: '-1' }, /^--restart must be an integer from 0 to 1000, got "-1"$/],
    [{ restart: '1001' }, /^--restart must be an integer from 0 to 1000/],
    [{ restart: 'two' }, /^--restart must be an integer/],
    [
      { join: '127.0.0.1' },
      /^--join must be HOST:PORT of the running world's rank 0 .*"127.0.0.1"$/,
    ],
    [{ join: '127.0.0.1:0' }, /^--join must be HOST:PORT/],
    [{ join: '127.0.0.1:70000' }, /^--join must be HOST:PORT/],
    [{ join: 'fd00::2:7000' }, /^--join must be HOST:PORT .*IPv6 as \[addr\]:PORT/],
    [{ join: ':7000' }, /^--join must be HOST:PORT/],
    [{ join: '' }, /^--join must be HOST:PORT/],
    [{ join: 'a:1', 'root-port': '7000' }, /--join and --root-port contradict/],
  ];
  it.each(bad)('refuses %o as a usage error', (values, message) => {
    try {
      toLaunchRequest(values, program);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(LaunchError);
      expect((error as LaunchError).code).toBe('LAUNCH_USAGE');
      expect((error as LaunchError).message).toMatch(message);
    }
  });
});

describe('command lines that start a rank', () => {
  const argv = guardArgs({
    guardScript: '/repo/dist/launcher/rank-guard.js',
    graceMs: 3000,
    program: 'node',
    args: ['-e', "console.log('it''s')"],
  });

  it('runs the program under the guard', () => {
    expect(argv).toEqual([
      '/repo/dist/launcher/rank-guard.js',
      '--grace-ms=3000',
      '--',
      'node',
      '-e',
      "console.log('it''s')",
    ]);
  });

  it('quotes words for a POSIX shell only when needed', () => {
    expect(shellQuote('plain-word_1.js')).toBe('plain-word_1.js');
    expect(shellQuote('')).toBe("''");
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(shellQuote('$HOME;rm -rf /')).toBe("'$HOME;rm -rf /'");
  });

  it('builds the ssh command with cd, the environment and the guard', () => {
    const remote = sshRemoteCommand(
      '/work/my repo',
      { MEMFLOW_RANK: '1', MEMFLOW_HOST_NOTE: "a 'quoted' value" },
      ['node', ...argv],
    );
    expect(remote).toBe(
      "cd '/work/my repo' && exec env MEMFLOW_RANK=1 'MEMFLOW_HOST_NOTE=a '\\''quoted'\\'' value' " +
        "node /repo/dist/launcher/rank-guard.js --grace-ms=3000 -- node -e 'console.log('\\''it'\\'''\\''s'\\'')'",
    );
    expect(sshArgv('node2', remote)).toEqual(['-o', 'BatchMode=yes', 'node2', remote]);
  });

  it('splits a template into words, substitutes {host} and appends the command', () => {
    const words = splitTemplate(`ip netns exec {host}  sudo -u "my user" a\\ b 'x{host}y'`);
    expect(words).toEqual([
      'ip',
      'netns',
      'exec',
      '{host}',
      'sudo',
      '-u',
      'my user',
      'a b',
      'x{host}y',
    ]);
    expect(execTemplateArgv(words, 'ns1', ['node', 'guard.js'])).toEqual([
      'ip',
      'netns',
      'exec',
      'ns1',
      'sudo',
      '-u',
      'my user',
      'a b',
      'xns1y',
      'node',
      'guard.js',
    ]);
  });
});

describe('guard frames', () => {
  it('reassembles frames from chunks cut anywhere', () => {
    const stream = Buffer.concat([
      ...encodeData(Buffer.from('hello')),
      encodeFrame(FRAME.stdinEof),
      encodeFrame(FRAME.terminate),
    ]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const decoder = new FrameDecoder();
      const frames = [
        ...decoder.push(stream.subarray(0, cut)),
        ...decoder.push(stream.subarray(cut)),
      ];
      expect(frames.map((f) => [f.type, f.payload.toString()])).toEqual([
        [FRAME.data, 'hello'],
        [FRAME.stdinEof, ''],
        [FRAME.terminate, ''],
      ]);
    }
  });

  it('cuts large stdin data into frames of the maximum payload', () => {
    const frames = encodeData(Buffer.alloc(MAX_FRAME_PAYLOAD_BYTES * 2 + 1));
    expect(frames.map((f) => f.length - 5)).toEqual([
      MAX_FRAME_PAYLOAD_BYTES,
      MAX_FRAME_PAYLOAD_BYTES,
      1,
    ]);
  });

  it('refuses an unknown frame type or an oversized length', () => {
    expect(() => new FrameDecoder().push(Buffer.from([9, 0, 0, 0, 0]))).toThrow(
      /unknown frame type/,
    );
    expect(() => new FrameDecoder().push(Buffer.from([1, 0xff, 0, 0, 0]))).toThrow(/too large/);
  });

  it('recognises a guard notice line and nothing else', () => {
    const notice = {
      event: 'spawn-error',
      program: 'nope',
      code: 'ENOENT',
      message: 'spawn nope ENOENT',
    } as const;
    expect(parseGuardNotice(Buffer.from(formatGuardNotice(notice)))).toEqual(notice);
    expect(parseGuardNotice(Buffer.from('memflow-guard {"event":"spawn-error"}\n'))).toBeNull();
    expect(parseGuardNotice(Buffer.from('\0memflow-guard not json\n'))).toBeNull();
  });
});

describe('output lines and exit reports', () => {
  it('holds partial lines until their newline and hands back the rest at the end', () => {
    const lines = new LineBuffer();
    expect(lines.push(Buffer.from('hel')).map(String)).toEqual([]);
    expect(lines.push(Buffer.from('lo\nwor')).map(String)).toEqual(['hello\n']);
    expect(lines.push(Buffer.from('ld\n\nlast')).map(String)).toEqual(['world\n', '\n']);
    expect(String(lines.flush())).toBe('last');
    expect(lines.flush()).toBeNull();
  });

  it('cuts a line longer than the limit into pieces', () => {
    const lines = new LineBuffer(4);
    expect(lines.push(Buffer.from('abcdefghij\n')).map(String)).toEqual(['abcd', 'efgh', 'ij\n']);
  });

  it('tags every line and ends a partial one with a newline; untagged lines pass unchanged', () => {
    const batch = [Buffer.from('a\n'), Buffer.from('b')];
    expect(String(formatLines(batch, rankTag(12)))).toBe('[12] a\n[12] b\n');
    expect(String(formatLines(batch, null))).toBe('a\nb');
  });

  it('reports statuses like a shell and names rank, host and cause', () => {
    const rank = { rank: 2, host: 'node1', mode: 'ssh' as const };
    expect(exitStatus({ kind: 'exited', code: 3 })).toBe(3);
    expect(exitStatus({ kind: 'signaled', signal: 'SIGKILL' })).toBe(137);
    expect(describeFailure(rank, { kind: 'exited', code: 3 }).text).toBe(
      'rank 2 on node1 exited with status 3',
    );
    expect(describeFailure(rank, { kind: 'exited', code: 143 }).text).toBe(
      'rank 2 on node1 exited with status 143 (SIGTERM)',
    );
    expect(describeFailure(rank, { kind: 'exited', code: 255 }).text).toMatch(
      /ssh could not run it/,
    );
    const notice = { event: 'spawn-error', program: 'prog', code: 'ENOENT', message: '' } as const;
    expect(exitStatus({ kind: 'exited', code: 127 }, notice)).toBe(127);
    expect(describeFailure({ ...rank, notice }, { kind: 'exited', code: 127 })).toEqual({
      text: 'cannot start rank 2: prog not found',
      startError: true,
    });
    const notStarted = {
      kind: 'not-started',
      command: 'ip',
      errorCode: 'ENOENT',
      message: '',
    } as const;
    expect(exitStatus(notStarted)).toBe(127);
    expect(describeFailure(rank, notStarted).text).toBe('cannot start rank 2: ip not found');
  });
});

describe('the supervisor: restarts and joining launches', () => {
  /** A rank whose end the test decides; stopping it (TERMINATE or KILL frame) ends it with 143. */
  class FakeRank {
    starts = 0;
    private finish: (end: RankEnd) => void = () => undefined;
    readonly supervised: SupervisedRank;

    constructor(rank: number, name?: string) {
      this.supervised = {
        rank,
        ...(name === undefined ? {} : { name }),
        host: 'localhost',
        mode: 'fork',
        process: this.start(),
        outputDone: Promise.resolve(),
      };
    }

    /** A new process for this rank (the first start, or a restart). */
    start(): LaunchedRank {
      this.starts++;
      const ended = new Promise<RankEnd>((resolve) => (this.finish = resolve));
      const finish = (end: RankEnd): void => this.finish(end);
      return {
        pid: undefined,
        control: new Writable({
          write(chunk: Buffer, _encoding, done) {
            if (chunk[0] === FRAME.terminate || chunk[0] === FRAME.kill) {
              finish({ kind: 'exited', code: 143 });
            }
            done();
          },
        }),
        stdout: new PassThrough(),
        stderr: new PassThrough(),
        ended,
        signal: () => undefined,
      };
    }

    end(end: RankEnd): void {
      this.finish(end);
    }

    exit(code: number): void {
      this.end({ kind: 'exited', code });
    }
  }

  function supervise(
    fakes: FakeRank[],
    options: Partial<SupervisorOptions> = {},
  ): { supervisor: Supervisor; lines: string[]; status: Promise<number> } {
    const lines: string[] = [];
    const supervisor = new Supervisor(
      fakes.map((f) => f.supervised),
      {
        graceMs: 0,
        onRankFailure: 'abort',
        report: (line) => lines.push(line),
        restart: (rank) => {
          rank.process = (fakes[rank.rank] as FakeRank).start();
          rank.outputDone = Promise.resolve();
        },
        ...options,
      },
    );
    return { supervisor, lines, status: supervisor.run() };
  }

  const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  it('restarts a failing rank up to N times, counting per rank, then applies the policy', async () => {
    const fakes = [new FakeRank(0), new FakeRank(1), new FakeRank(2)];
    const { lines, status } = supervise(fakes, { maxRestarts: 2 });
    fakes[1]!.exit(3);
    await tick();
    fakes[2]!.end({ kind: 'signaled', signal: 'SIGKILL' });
    await tick();
    fakes[1]!.exit(4);
    await tick();
    expect(lines).toEqual([
      'memflow-run: rank 1 on localhost exited with status 3; restarting it (1 of 2)',
      'memflow-run: rank 2 on localhost was killed by SIGKILL; restarting it (1 of 2)',
      'memflow-run: rank 1 on localhost exited with status 4; restarting it (2 of 2)',
    ]);
    fakes[1]!.exit(5);
    expect(await status).toBe(5);
    expect(lines.slice(3)).toEqual([
      'memflow-run: rank 1 on localhost exited with status 5; stopped the other ranks',
    ]);
    expect(fakes.map((f) => f.starts)).toEqual([1, 3, 2]);
  });

  it('never restarts rank 0, a rank that exited 0, or a program that cannot start', async () => {
    const fakes = [new FakeRank(0), new FakeRank(1), new FakeRank(2)];
    const { lines, status } = supervise(fakes, { maxRestarts: 5, onRankFailure: 'continue' });
    fakes[1]!.exit(0);
    fakes[2]!.end({ kind: 'not-started', command: 'ip', errorCode: 'ENOENT', message: '' });
    await tick();
    fakes[0]!.exit(7);
    expect(await status).toBe(7);
    expect(lines).toEqual([
      'memflow-run: cannot start rank 2: ip not found',
      'memflow-run: rank 0 on localhost exited with status 7',
    ]);
    expect(fakes.map((f) => f.starts)).toEqual([1, 1, 1]);
  });

  it('does not restart the ranks it stops itself (a signal to the launcher, the abort policy)', async () => {
    const fakes = [new FakeRank(0), new FakeRank(1), new FakeRank(2)];
    const { supervisor, lines, status } = supervise(fakes, { maxRestarts: 3 });
    supervisor.onSignal('SIGTERM');
    expect(await status).toBe(143);
    expect(lines).toEqual(['memflow-run: got SIGTERM; stopping all ranks (SIGKILL after 0 ms)']);
    expect(fakes.map((f) => f.starts)).toEqual([1, 1, 1]);

    const aborted = [new FakeRank(0), new FakeRank(1), new FakeRank(2)];
    const run = supervise(aborted, { maxRestarts: 0 });
    aborted[1]!.exit(3);
    expect(await run.status).toBe(3);
    expect(aborted.map((f) => f.starts)).toEqual([1, 1, 1]);
  });

  it('without a rank 0 (--join), index 0 is restarted, does not end the job, and the first failure is the status', async () => {
    const fakes = [new FakeRank(0, 'j0'), new FakeRank(1, 'j1'), new FakeRank(2, 'j2')];
    const { lines, status } = supervise(fakes, {
      hasRank0: false,
      onRankFailure: 'continue',
      maxRestarts: 1,
    });
    fakes[0]!.exit(3);
    await tick();
    fakes[0]!.exit(0);
    await tick();
    fakes[2]!.exit(6);
    await tick();
    fakes[2]!.exit(9);
    await tick();
    fakes[1]!.exit(0);
    expect(await status).toBe(9);
    expect(lines).toEqual([
      'memflow-run: rank j0 on localhost exited with status 3; restarting it (1 of 1)',
      'memflow-run: rank j2 on localhost exited with status 6; restarting it (1 of 1)',
      'memflow-run: rank j2 on localhost exited with status 9; the other ranks keep running',
    ]);
  });

  it('without a rank 0 and with every rank ending 0, exits 0', async () => {
    const fakes = [new FakeRank(0, 'j0'), new FakeRank(1, 'j1')];
    const { lines, status } = supervise(fakes, { hasRank0: false, onRankFailure: 'continue' });
    fakes[0]!.exit(0);
    fakes[1]!.exit(0);
    expect(await status).toBe(0);
    expect(lines).toEqual([]);
  });
});
