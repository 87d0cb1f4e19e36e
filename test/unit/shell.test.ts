/**
 * `dfs-client shell` (src/cli/shell.ts). Goal: a shell line splits into words as a POSIX shell
 * would (quotes, escapes, comments) and into exactly the command it names, with one clear message
 * for anything else; query IDs are read as `dfs-client query` reads them (an unquoted JSON number
 * is tried as a number, then as text; a quoted "42" is only text); the history file is bounded and
 * survives junk; a piped session runs every line in order over one client, prints one line per
 * failure, and exits 0 when all succeeded, else with the status of the last failure.
 *
 * Method: the pure parsers directly; runShell over PassThrough streams (not a terminal) and a
 * fake client that records its calls. The real terminal (prompt, Ctrl-C, Ctrl-D, history recall)
 * is driven through a pty in test/e2e/metrics-shell.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DfsError } from '../../src/client/errors.js';
import {
  HISTORY_LIMIT,
  ShellSyntaxError,
  appendHistory,
  describeShellError,
  historyPath,
  loadHistory,
  parseShellCommand,
  recordIdCandidates,
  runShell,
  splitShellLine,
  type ShellClient,
} from '../../src/cli/shell.js';
import type { FileMetadata, StatusResult } from '../../src/protocol/client-protocol.js';

const words = (line: string): string[] => splitShellLine(line).map((w) => w.text);

describe('splitShellLine', () => {
  it('splits on blanks and keeps quoted blanks', () => {
    expect(words('  put   a.json  as  x ')).toEqual(['put', 'a.json', 'as', 'x']);
    expect(words(`put 'my file.json' as "my data"`)).toEqual([
      'put',
      'my file.json',
      'as',
      'my data',
    ]);
    expect(words('get a\\ b')).toEqual(['get', 'a b']);
    expect(words('x"a b"\'c d\'e')).toEqual(['xa bc de']);
    expect(words('')).toEqual([]);
    expect(words('\t ')).toEqual([]);
  });

  it('keeps backslashes in single quotes; in double quotes only \\" and \\\\ are escapes', () => {
    expect(words(`'a\\b'`)).toEqual(['a\\b']);
    expect(words(`"say \\"hi\\" \\\\ \\n"`)).toEqual(['say "hi" \\ \\n']);
  });

  it('empty quotes are an empty word; a # starting a word begins a comment', () => {
    expect(words(`get "" x`)).toEqual(['get', '', 'x']);
    expect(words('list # all of them')).toEqual(['list']);
    expect(words('# just a comment')).toEqual([]);
    expect(words('get a#b')).toEqual(['get', 'a#b']);
    expect(words('get "#x"')).toEqual(['get', '#x']);
  });

  it('marks quoted or escaped words', () => {
    expect(splitShellLine(`42 "42" '42' 4\\2 4"2"`).map((w) => w.quoted)).toEqual([
      false,
      true,
      true,
      true,
      true,
    ]);
  });

  it('refuses an unclosed quote and a trailing backslash', () => {
    expect(() => splitShellLine('put "a b')).toThrow(/unclosed " in: put "a b/);
    expect(() => splitShellLine("put 'a b")).toThrow(/unclosed ' in/);
    expect(() => splitShellLine('put a\\')).toThrow(/a \\ at the end of the line/);
    expect(() => splitShellLine('put "a b')).toThrow(ShellSyntaxError);
  });
});

describe('recordIdCandidates (as dfs-client query)', () => {
  const ids = (line: string): Array<string | number> =>
    recordIdCandidates(splitShellLine(line)[0]!);

  it('an unquoted JSON number: the number, then the same text', () => {
    expect(ids('42')).toEqual([42, '42']);
    expect(ids('-3')).toEqual([-3, '-3']);
    expect(ids('1.5e3')).toEqual([1500, '1.5e3']);
    expect(ids('0')).toEqual([0, '0']);
  });

  it('quoted, escaped, or not a JSON number: only the text', () => {
    expect(ids('"42"')).toEqual(['42']);
    expect(ids("'42'")).toEqual(['42']);
    expect(ids('4\\2')).toEqual(['42']);
    expect(ids('007')).toEqual(['007']);
    expect(ids('0x1F')).toEqual(['0x1F']);
    expect(ids('+5')).toEqual(['+5']);
    expect(ids('1.')).toEqual(['1.']);
    expect(ids('abc')).toEqual(['abc']);
    expect(ids('"two words"')).toEqual(['two words']);
  });
});

describe('parseShellCommand', () => {
  it('reads every command', () => {
    expect(parseShellCommand('')).toEqual({ kind: 'empty' });
    expect(parseShellCommand('  # nothing')).toEqual({ kind: 'empty' });
    expect(parseShellCommand('help')).toEqual({ kind: 'help' });
    expect(parseShellCommand('exit')).toEqual({ kind: 'exit' });
    expect(parseShellCommand('quit')).toEqual({ kind: 'exit' });
    expect(parseShellCommand('list')).toEqual({ kind: 'list', json: false });
    expect(parseShellCommand('list --json')).toEqual({ kind: 'list', json: true });
    expect(parseShellCommand('metrics')).toEqual({ kind: 'metrics', json: false });
    expect(parseShellCommand('metrics --json')).toEqual({ kind: 'metrics', json: true });
    expect(parseShellCommand('query people 42')).toEqual({
      kind: 'query',
      name: 'people',
      ids: [42, '42'],
    });
    expect(parseShellCommand('query "my data" "42"')).toEqual({
      kind: 'query',
      name: 'my data',
      ids: ['42'],
    });
    expect(parseShellCommand('query d -3')).toEqual({ kind: 'query', name: 'd', ids: [-3, '-3'] });
    expect(parseShellCommand('query d --x')).toEqual({ kind: 'query', name: 'd', ids: ['--x'] });
  });

  it('distribute: NAME defaults to the base name; "as" and --id-field in any order', () => {
    expect(parseShellCommand('distribute data/people.json')).toEqual({
      kind: 'distribute',
      file: 'data/people.json',
      name: 'people.json',
      idField: undefined,
    });
    expect(parseShellCommand('distribute p.json as people --id-field uid')).toEqual({
      kind: 'distribute',
      file: 'p.json',
      name: 'people',
      idField: 'uid',
    });
    expect(parseShellCommand("distribute --id-field=key 'my people.json' as 'the people'")).toEqual(
      {
        kind: 'distribute',
        file: 'my people.json',
        name: 'the people',
        idField: 'key',
      },
    );
    // A quoted "as" is a name, not the keyword.
    expect(parseShellCommand('distribute "as"')).toMatchObject({ file: 'as', name: 'as' });
  });

  it('put and get', () => {
    expect(parseShellCommand('put /tmp/a.bin')).toEqual({
      kind: 'put',
      file: '/tmp/a.bin',
      name: 'a.bin',
    });
    expect(parseShellCommand('put a.bin as "b c"')).toEqual({
      kind: 'put',
      file: 'a.bin',
      name: 'b c',
    });
    expect(parseShellCommand('get x')).toEqual({
      kind: 'get',
      name: 'x',
      output: './x',
      force: false,
    });
    expect(parseShellCommand('get x /tmp/y --force')).toEqual({
      kind: 'get',
      name: 'x',
      output: '/tmp/y',
      force: true,
    });
    expect(parseShellCommand('get x -')).toEqual({
      kind: 'get',
      name: 'x',
      output: '-',
      force: false,
    });
  });

  it('refuses bad lines with one message naming the problem', () => {
    const cases: Array<[string, RegExp]> = [
      ['frobnicate x', /^unknown command "frobnicate" \(try help\)$/],
      ['query people', /^query: missing arguments; usage: query <name> <id>$/],
      ['query a b c', /^query: too many arguments/],
      [
        'distribute',
        /^distribute: missing arguments; usage: distribute <file.json> \[as NAME\] \[--id-field F\]$/,
      ],
      ['distribute a.json as', /^distribute: "as" needs a name$/],
      ['distribute a.json as x as y', /^distribute: "as" given twice$/],
      ['distribute a.json --id-field', /^distribute: --id-field needs a value$/],
      ['distribute a.json --bogus', /^distribute: unknown option --bogus$/],
      ['put', /^put: missing arguments/],
      ['put a b', /^put: too many arguments/],
      ['get', /^get: missing arguments/],
      ['get a/b', /^get: "a\/b" cannot be used as a local file name; give a PATH$/],
      ['get ..', /cannot be used as a local file name/],
      ['list extra', /^list: too many arguments/],
      ['list --json=1', /^list: unknown option --json=1$/],
      ['exit now', /^exit: too many arguments/],
      ['put "a', /^unclosed "/],
    ];
    for (const [line, message] of cases) {
      expect(() => parseShellCommand(line), line).toThrow(message);
    }
  });
});

describe('history file', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memflow-shell-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('$MEMFLOW_HISTORY, else ~/.memflow_history; empty turns it off', () => {
    expect(historyPath({ MEMFLOW_HISTORY: '/x/h' }, '/home/u')).toBe('/x/h');
    expect(historyPath({}, '/home/u')).toBe('/home/u/.memflow_history');
    expect(historyPath({ MEMFLOW_HISTORY: '' }, '/home/u')).toBeUndefined();
  });

  it('loads nothing from a missing file; appends; skips blank lines', () => {
    const file = path.join(dir, 'h');
    expect(loadHistory(file)).toEqual([]);
    expect(appendHistory(file, 'list')).toBe(true);
    expect(appendHistory(file, 'query a 1')).toBe(true);
    fs.appendFileSync(file, '\n   \n');
    expect(loadHistory(file)).toEqual(['list', 'query a 1']);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it(`keeps the last ${HISTORY_LIMIT} lines and cuts the file back to them`, () => {
    const file = path.join(dir, 'h');
    fs.writeFileSync(
      file,
      Array.from({ length: HISTORY_LIMIT + 250 }, (_, i) => `cmd ${i}\n`).join(''),
    );
    const loaded = loadHistory(file);
    expect(loaded).toHaveLength(HISTORY_LIMIT);
    expect(loaded[0]).toBe('cmd 250');
    expect(loaded.at(-1)).toBe(`cmd ${HISTORY_LIMIT + 249}`);
    expect(fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)).toEqual(loaded);
    expect(fs.readdirSync(dir)).toEqual(['h']);
  });

  it('appendHistory reports a file it cannot write instead of throwing', () => {
    expect(appendHistory(path.join(dir, 'missing', 'h'), 'list')).toBe(false);
  });
});

// ---- a piped session ------------------------------------------------------------------------

const STATUS: StatusResult = {
  ranks: [
    {
      rank: 1,
      host: 'h1',
      state: 'alive',
      heartbeatAgeMs: 200,
      usedBytes: 10,
      capacityBytes: 100,
      chunkCopies: 1,
      primaryCopies: 1,
      replicaCopies: 0,
    },
  ],
  replicas: 2,
  chunkSizeBytes: 64,
  files: 1,
  chunks: 1,
  underReplicatedChunks: 0,
  uptimeMs: 5000,
};

function metadata(name: string, extra: Partial<FileMetadata> = {}): FileMetadata {
  return {
    name,
    sizeBytes: 10,
    sha256: '0'.repeat(64),
    version: 1,
    created: '2026-01-01T00:00:00.000Z',
    modified: '2026-01-01T00:00:00.000Z',
    replicas: 2,
    chunkSizeBytes: 64,
    chunks: [],
    underReplicatedChunks: 0,
    ...extra,
  };
}

class FakeClient {
  readonly server = '127.0.0.1:1';
  readonly calls: string[] = [];
  records = new Map<string, Map<string | number, unknown>>([
    [
      'people',
      new Map<string | number, unknown>([
        [42, { id: 42, n: 'num' }],
        ['7', { id: '7' }],
      ]),
    ],
  ]);

  async list(): Promise<Array<Record<string, unknown>>> {
    this.calls.push('list');
    return [
      {
        name: 'a.bin',
        sizeBytes: 2048,
        modified: '2026-01-01T00:00:00.000Z',
        chunks: 1,
        health: 'healthy',
      },
    ];
  }
  async status(): Promise<StatusResult> {
    this.calls.push('status');
    return STATUS;
  }
  async upload(file: string, options: { name?: string }): Promise<FileMetadata> {
    this.calls.push(`upload ${file} ${options.name}`);
    if (file === 'missing')
      throw new DfsError('CLIENT_LOCAL_PATH', 'cannot read missing: no such file');
    return metadata(options.name ?? file);
  }
  async download(name: string): Promise<FileMetadata> {
    this.calls.push(`download ${name}`);
    throw new DfsError('STORE_NOT_FOUND', `no file named "${name}" in the store`, { name });
  }
  async putRecords(
    file: string,
    name: string,
    options: { idField?: string },
  ): Promise<FileMetadata> {
    this.calls.push(`putRecords ${file} ${name} ${options.idField}`);
    return metadata(name, {
      records: { idField: options.idField ?? 'id', count: 3, lookup: 'hashed' },
    });
  }
  async queryRecord(name: string, id: string | number): Promise<unknown> {
    this.calls.push(`queryRecord ${name} ${typeof id}:${id}`);
    const dataset = this.records.get(name);
    if (dataset === undefined)
      throw new DfsError('STORE_NOT_FOUND', `no file named "${name}" in the store`, { name });
    if (!dataset.has(id))
      throw new DfsError(
        'STORE_NOT_FOUND',
        `no record with ID ${JSON.stringify(id)} in "${name}"`,
        { name, recordId: id },
      );
    return dataset.get(id);
  }
}

async function session(
  lines: string,
  client = new FakeClient(),
): Promise<{ status: number; stdout: string; stderr: string; client: FakeClient }> {
  const input = new PassThrough();
  const output = new PassThrough();
  const errors = new PassThrough();
  let stdout = '';
  let stderr = '';
  output.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  errors.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  input.end(lines);
  const status = await runShell(client as unknown as ShellClient, {
    signal: new AbortController().signal,
    input,
    output,
    errors,
    env: { MEMFLOW_HISTORY: path.join(os.tmpdir(), 'never-written-by-a-piped-session') },
  });
  return { status, stdout, stderr, client };
}

describe('runShell, commands piped in', () => {
  it('runs every line in order over one client, no prompt; exit 0 when all succeed', async () => {
    const r = await session(
      'list\nmetrics\n\n# note\nput a.bin as b\ndistribute p.json as people --id-field uid\n',
    );
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.client.calls).toEqual([
      'list',
      'status',
      'upload a.bin b',
      'putRecords p.json people uid',
    ]);
    expect(r.stdout).not.toContain('memflow>');
    expect(r.stdout).toContain('a.bin  2.0 KiB  ');
    expect(r.stdout).toMatch(/^ RANK +HOST +STATE +HEARTBEAT/m);
    expect(r.stdout).toContain('uploaded b (10 B, 0 chunks, version 1)');
    expect(r.stdout).toContain('distributed people: 3 records (10 B, 0 chunks, version 1)');
    expect(fs.existsSync(path.join(os.tmpdir(), 'never-written-by-a-piped-session'))).toBe(false);
  });

  it('query: 42 finds the number; "7" the string; 7 falls back to the string; output is JSON', async () => {
    const r = await session('query people 42\nquery people "7"\nquery people 7\n');
    expect(r.status).toBe(0);
    expect(r.client.calls).toEqual([
      'queryRecord people number:42',
      'queryRecord people string:7',
      'queryRecord people number:7',
      'queryRecord people string:7',
    ]);
    expect(r.stdout).toBe(
      `${JSON.stringify({ id: 42, n: 'num' }, null, 2)}\n${JSON.stringify({ id: '7' }, null, 2)}\n${JSON.stringify({ id: '7' }, null, 2)}\n`,
    );
  });

  it('a failure prints one line on stderr and the session goes on; the status is the last failure', async () => {
    const r = await session('bogus\nlist\nquery people 99\nget nothing /tmp/x\nmetrics\n');
    expect(r.stderr.split('\n')).toEqual([
      'unknown command "bogus" (try help)',
      'query: no record with ID 99 in "people"',
      'get: no file named "nothing" in the store',
      '',
    ]);
    expect(r.client.calls).toContain('status');
    expect(r.status).toBe(3);
  });

  it('exit stops reading: later lines are not run', async () => {
    const r = await session('put missing\nexit\nlist\n');
    expect(r.client.calls).toEqual(['upload missing missing']);
    expect(r.stderr).toBe('put: cannot read missing: no such file\n');
    expect(r.status).toBe(1);
  });

  it('a syntax error is status 2; help prints the commands', async () => {
    const r = await session('help\nput "a\n');
    expect(r.stdout).toContain('distribute <file.json> [as NAME] [--id-field F]');
    expect(r.stderr).toBe('unclosed " in: put "a\n');
    expect(r.status).toBe(2);
  });

  it('an unreachable store: one line per command, status 4', async () => {
    const client = new FakeClient();
    client.list = () =>
      Promise.reject(
        new DfsError(
          'CLIENT_UNREACHABLE',
          'cannot reach the store at 127.0.0.1:1: connection refused',
        ),
      );
    const r = await session('list', client);
    expect(r.stderr).toBe('list: cannot reach the store at 127.0.0.1:1: connection refused\n');
    expect(r.status).toBe(4);
  });

  it('the session signal ends it with 130', async () => {
    const input = new PassThrough();
    const controller = new AbortController();
    const client = new FakeClient();
    client.status = () => {
      controller.abort();
      return new Promise<StatusResult>(() => undefined);
    };
    input.write('metrics\nlist\n');
    const status = await runShell(client as unknown as ShellClient, {
      signal: controller.signal,
      input,
      output: new PassThrough(),
      errors: new PassThrough(),
    });
    expect(status).toBe(130);
    expect(client.calls).toEqual([]);
  });
});

describe('describeShellError', () => {
  it('maps errors to one line and a status', () => {
    expect(describeShellError('get', new DfsError('CLIENT_ABORTED', 'aborted'))).toEqual({
      line: 'get: interrupted',
      status: 130,
    });
    expect(describeShellError('x', new ShellSyntaxError('bad'))).toEqual({
      line: 'bad',
      status: 2,
    });
    expect(describeShellError('put', new Error('boom'))).toEqual({ line: 'put: boom', status: 1 });
  });
});
