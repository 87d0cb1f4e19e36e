/**
 * Goal: MemFlow ranks run under another launcher, as the env contract (docs/LAUNCHER.md)
 * promises: `mpirun -n 4 memflow-rank` with MEMFLOW_ROOT set serves the store, and the collective
 * check passes with Open MPI's OMPI_COMM_WORLD_RANK/SIZE. Method: Debian's Open MPI (CI installs
 * openmpi-bin; without mpirun the suite skips and says why), ranks on loopback, the store reached
 * through the client library; mpirun runs in its own process group, which afterEach kills.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DfsClient } from '../../src/client/dfs-client.js';
import { REPO_ROOT, runCommand } from '../helpers/run-command.js';
import { freePort } from '../helpers/store-process.js';

const hasMpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
if (!hasMpirun)
  console.warn('mpirun tests skipped: mpirun is not installed (apt-get install openmpi-bin)');

// Open MPI refuses root without these, and must stay on loopback here.
const MPIRUN_FLAGS = [
  '--allow-run-as-root',
  '--oversubscribe',
  '--mca',
  'oob_tcp_if_include',
  'lo',
  '--mca',
  'btl_tcp_if_include',
  'lo',
];

const started: ChildProcess[] = [];
const dirs: string[] = [];

/** Resolves when `child` has exited, or after `ms`. */
function exited(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

afterEach(async () => {
  for (const child of started.splice(0)) {
    // SIGTERM lets mpirun stop its ranks (a SIGKILLed mpirun leaves them running); then make sure.
    child.kill('SIGTERM');
    await exited(child, 10_000);
    if (child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // the group is gone
      }
    }
  }
  // Whatever still runs with this test's data dir on its command line is ours: no orphans.
  for (const dir of dirs.splice(0)) {
    spawnSync('pkill', ['-KILL', '-f', dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});

describe.skipIf(!hasMpirun)('ranks started by Open MPI', () => {
  it('mpirun -n 4 runs the collectives check (rank and size from OMPI_COMM_WORLD_*)', async () => {
    const port = await freePort();
    const result = await runCommand(
      'mpirun',
      [
        ...MPIRUN_FLAGS,
        '-n',
        '4',
        '-x',
        `MEMFLOW_ROOT=127.0.0.1:${port}`,
        process.execPath,
        path.join(REPO_ROOT, 'dist', 'test', 'e2e', 'programs', 'collectives-check.js'),
      ],
      { timeoutMs: 90_000 },
    );
    expect(result.stdout.split('\n').filter((l) => l.includes('collectives ok'))).toHaveLength(4);
    expect(result.code).toBe(0);
  }, 120_000);

  it('mpirun -n 4 memflow-rank with MEMFLOW_ROOT serves the store: a file uploads and reads back', async () => {
    const rootPort = await freePort();
    const clientPort = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), 'memflow-mpirun-'));
    dirs.push(dir);
    const child = spawn(
      'mpirun',
      [
        ...MPIRUN_FLAGS,
        '-n',
        '4',
        '-x',
        `MEMFLOW_ROOT=127.0.0.1:${rootPort}`,
        process.execPath,
        path.join(REPO_ROOT, 'bin', 'memflow-rank.js'),
        '--data-dir',
        path.join(dir, 'data'),
        '--port',
        String(clientPort),
      ],
      { detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    started.push(child);
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ready line within 60 s:\n${output}`)),
        60_000,
      );
      const onData = (d: Buffer): void => {
        output += d.toString();
        if (output.includes('MemFlow store ready')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('exit', (code) =>
        reject(new Error(`mpirun exited (${code}) before the store was ready:\n${output}`)),
      );
    });
    expect(output).toContain('(3 data ranks, 2 copies');

    const local = path.join(dir, 'payload.bin');
    const data = randomBytes(5 * 1024 * 1024 + 3);
    writeFileSync(local, data);
    const client = new DfsClient({ server: `127.0.0.1:${clientPort}`, timeoutMs: 30_000 });
    try {
      const meta = await client.upload(local);
      expect(meta.sha256).toBe(createHash('sha256').update(data).digest('hex'));
      const out = path.join(dir, 'back.bin');
      await client.download('payload.bin', out);
      expect(createHash('sha256').update(readFileSync(out)).digest('hex')).toBe(meta.sha256);
    } finally {
      client.close();
    }
  }, 120_000);
});
