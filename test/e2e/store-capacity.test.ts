/**
 * Heterogeneous capacities end to end: capacity= per host in the hostfile (the Hydra "host:N"
 * form and the Open MPI "host slots=N" form on one file), placement by fraction of capacity used,
 * and the up-front refusal of an upload that cannot fit with all its copies.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MiB, StoreProcess, cleanupStores, makeTempDir } from '../helpers/store-process.js';
import {
  expectAllReadBack,
  expectRefusedForSpace,
  putFiles,
  waitReplicated,
  allAlive,
  type Files,
} from '../helpers/store-checks.js';

afterEach(async () => {
  await cleanupStores();
});

describe('capacities from the hostfile', () => {
  it('"localhost:2 capacity=8M" and "127.0.0.1 slots=2 capacity=32M": rank 1 offers 8 MiB, ranks 2 and 3 32 MiB; uploads fill them by fraction used; one that cannot fit is refused before anything is written (exit 5)', async () => {
    const work = makeTempDir('capacity');
    const hostfile = path.join(work, 'hosts');
    fs.writeFileSync(
      hostfile,
      '# rank 0 and data rank 1 on the small device, ranks 2 and 3 on the large one\nlocalhost:2 capacity=8M\n127.0.0.1 slots=2 capacity=32M\n',
    );
    const store = await StoreProcess.start({
      chunkSize: '1M',
      extraArgs: ['--hostfile', hostfile, '--scrub-rate', '0'],
    });
    const before = await store.status();
    expect(before.ranks.map((r) => [r.rank, r.capacityBytes])).toEqual([
      [1, 8 * MiB],
      [2, 32 * MiB],
      [3, 32 * MiB],
    ]);

    // 30 MiB of files, 60 MiB with their copies, in a 72 MiB store.
    const files: Files = new Map();
    for (let i = 0; i < 15; i++) await putFiles(store, work, [[`part-${i}.bin`, 2 * MiB]], files);
    const status = await waitReplicated(store, files, allAlive());
    const fractions = status.ranks.map((r) => r.usedBytes / r.capacityBytes);
    // The seed's rule by fraction used: the small rank holds a quarter of what a large one does.
    expect(Math.max(...fractions) - Math.min(...fractions)).toBeLessThan(0.15);
    expect(status.ranks[0]!.usedBytes).toBeLessThan(status.ranks[1]!.usedBytes / 2);

    await expectRefusedForSpace(
      store,
      work,
      'too-big.bin',
      8 * MiB,
      /not enough space in the store \(16\.0 MiB needed for all copies, \d+(\.\d+)? MiB available\)/,
    );
    const after = await store.status();
    expect(after.ranks.map((r) => r.usedBytes)).toEqual(status.ranks.map((r) => r.usedBytes));
    await expectAllReadBack(store, files);
  });
});
