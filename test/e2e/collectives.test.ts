/**
 * Goal: every collective gives the right answer with real processes over ZeroMQ, at the world
 * sizes MPI users run (1, 2, 3, 4, 7, 8, 16), from every root. Method: memflow-run starts
 * test/e2e/programs/collectives-check.ts at each size; every rank checks every result itself
 * and prints "collectives ok", so a test passes only when all N ranks agree and the job exits 0.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MEMFLOW_RUN, REPO_ROOT, runCommand } from '../helpers/run-command.js';

const CHECK = path.join(REPO_ROOT, 'dist', 'test', 'e2e', 'programs', 'collectives-check.js');

describe('collectives over real processes', () => {
  it.each([1, 2, 3, 4, 7, 8, 16])(
    'all collectives are correct at %i ranks',
    async (ranks) => {
      const result = await runCommand(
        process.execPath,
        [MEMFLOW_RUN, '-n', String(ranks), '--', process.execPath, CHECK],
        { timeoutMs: 90_000 },
      );
      const ok = result.stdout.split('\n').filter((l) => l.endsWith('] collectives ok'));
      expect({ code: result.code, ok: ok.length, stderr: result.stderr }).toEqual({
        code: 0,
        ok: ranks,
        stderr: '',
      });
    },
    120_000,
  );
});
