/**
 * `npm run bench:comm`: runs bench/comm-bench-rank.ts under memflow-run at 4 and 8 ranks on this
 * machine, prints a table against the targets, and saves the figures as JSON in bench/results/.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const rankProgram = join(root, 'dist', 'bench', 'comm-bench-rank.js');
const launcher = join(root, 'bin', 'memflow-run.js');

/** Targets at 4 ranks (issue 2), and Open MPI over TCP on this machine for reference. */
const targetsUs: Record<string, number> = {
  barrier: 400,
  'bcast 1 MiB': 2500,
  'bcast 16 MiB': 30000,
  'gather 1 KiB/rank': 400,
};
const openMpiUs: Record<string, number> = {
  barrier: 44,
  'bcast 1 MiB': 800,
  'bcast 16 MiB': 14500,
  'gather 1 KiB/rank': 44,
};

interface OpResult {
  op: string;
  iterations: number;
  medianUs: number;
  p90Us: number;
}

function run(ranks: number): OpResult[] {
  const child = spawnSync(
    process.execPath,
    [launcher, '-n', String(ranks), '--no-tag-output', '--', process.execPath, rankProgram],
    {
      encoding: 'utf8',
      timeout: 600_000,
      killSignal: 'SIGTERM',
    },
  );
  const line = child.stdout.split('\n').find((l) => l.startsWith('BENCH '));
  if (child.status !== 0 || !line) {
    throw new Error(
      `bench at ${ranks} ranks failed (status ${child.status}): ${child.stderr.trim().slice(-2000)}`,
    );
  }
  return (JSON.parse(line.slice('BENCH '.length)) as { results: OpResult[] }).results;
}

const fmt = (us: number): string =>
  us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`;

const runs = [4, 8].map((ranks) => ({ ranks, results: run(ranks) }));
const rows = runs.flatMap(({ ranks, results }) =>
  results.map((r) => {
    const target = ranks === 4 ? targetsUs[r.op] : undefined;
    return {
      ranks,
      op: r.op,
      median: fmt(r.medianUs),
      p90: fmt(r.p90Us),
      target: target ? `≤ ${fmt(target)} ${r.medianUs <= target ? 'met' : 'MISSED'}` : '',
      openMpi: ranks === 4 && openMpiUs[r.op] ? fmt(openMpiUs[r.op]!) : '',
    };
  }),
);
const headers = ['ranks', 'op', 'median', 'p90', 'target', 'openMpi'] as const;
const widths = headers.map((h) => Math.max(h.length, ...rows.map((r) => String(r[h]).length)));
const line = (cells: string[]): string =>
  `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
console.log(line([...headers]));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const r of rows) console.log(line(headers.map((h) => String(r[h]))));

const resultsDir = join(root, 'bench', 'results');
mkdirSync(resultsDir, { recursive: true });
const out = join(resultsDir, 'comm.json');
writeFileSync(
  out,
  `${JSON.stringify({ when: new Date().toISOString(), machine: '2 cores, Node 20', runs }, null, 2)}\n`,
);
console.log(`\nsaved ${out}`);
