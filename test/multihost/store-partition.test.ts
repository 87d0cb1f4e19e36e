/**
 * A network partition of a real store across hosts. Goal: a data rank cut off by the network
 * (its host's link down: silence, no dropped connection, no dead process) is declared dead once
 * silent for --dead-after-ms, its copies are re-made on the ranks still reachable, no
 * acknowledged file is lost and every file stays readable; when the link heals, the rank speaks
 * again, rejoins, and the copies it kept are trimmed as surplus, so every chunk ends with exactly
 * 2 copies on live ranks.
 *
 * Method: three network namespaces on one bridge act as hosts (test/multihost/netns.ts): rank 0
 * and data rank 1 on h1, data rank 2 on h2, data rank 3 on h3, started by memflow-run through
 * `--launcher-exec 'ip netns exec {host}'` with --heartbeat-ms 200 --dead-after-ms 1500; rank 0
 * serves clients on h1's address (--bind), and every client (dfs-client, and a short Node script
 * printing status and metadata through the client library) runs inside h1 with `ip netns exec`.
 * The cut is `ip -n <h3> link set eth0 down`, the heal `... up`. Outcomes are read from rank 0's
 * log lines and from status and metadata, polled with deadlines. Needs root and iproute2;
 * otherwise the suite is skipped with the reason printed. Every process is stopped and the
 * namespaces deleted in afterAll, also when the test fails.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileMetadata, RankState, StatusResult } from '../../src/protocol/client-protocol.js';
import { runCommand } from '../helpers/run-command.js';
import {
  KiB,
  MiB,
  REPO_ROOT,
  StoreProcess,
  cleanupStores,
  describeRun,
  dfs,
  liveVolumeChunksUnder,
  makeTempDir,
  sha256Of,
  waitUntil,
  writePseudoRandomFile,
} from '../helpers/store-process.js';
import {
  createTestNetwork,
  destroyTestNetwork,
  netnsUnavailableReason,
  type TestNetwork,
} from './netns.js';

const DEAD_AFTER_MS = 1500;
const FAST = ['--heartbeat-ms', '200', '--dead-after-ms', String(DEAD_AFTER_MS)];
const CLIENT_LIBRARY = pathToFileURL(
  path.join(REPO_ROOT, 'dist', 'src', 'client', 'dfs-client.js'),
).href;

const skipReason = netnsUnavailableReason();
if (skipReason !== undefined)
  console.warn(`multi-host store partition test skipped: ${skipReason}`);

describe.skipIf(skipReason !== undefined)('a store across network-namespace hosts', () => {
  let network: TestNetwork | undefined;

  beforeAll(async () => {
    network = await createTestNetwork(3);
  });

  afterAll(async () => {
    await cleanupStores();
    if (network !== undefined) {
      const killed = destroyTestNetwork(network);
      if (killed.length > 0) console.warn(`store partition teardown killed: ${killed.join('; ')}`);
    }
  });

  const net = (): TestNetwork => {
    if (network === undefined) throw new Error('the test network was not built');
    return network;
  };

  it('h3 (data rank 3) cut off by its link going down: declared dead after --dead-after-ms 1500 of silence, copies re-made on ranks 1 and 2; healed: it rejoins, its surplus is trimmed, every file reads back', async () => {
    const [h1, h2, h3] = net().hosts as [
      TestNetwork['hosts'][0],
      TestNetwork['hosts'][0],
      TestNetwork['hosts'][0],
    ];
    const work = makeTempDir('partition-work');
    const hostfile = path.join(work, 'hosts');
    fs.writeFileSync(
      hostfile,
      `${h1.name} slots=2 addr=${h1.addr}\n${h2.name} slots=1 addr=${h2.addr}\n${h3.name} slots=1 addr=${h3.addr}\n`,
    );
    const store = await StoreProcess.start({
      ranks: 4,
      chunkSize: '256K',
      extraArgs: [
        '--hostfile',
        hostfile,
        '--launcher-exec',
        'ip netns exec {host}',
        '--bind',
        h1.addr,
        ...FAST,
        '--scrub-rate',
        '0',
      ],
    });
    // StoreProcess picked the port in this namespace; h1 is empty, so it is free there too.
    const server = `${h1.addr}:${store.port}`;
    const inH1 = { wrapper: ['ip', 'netns', 'exec', h1.name], timeoutMs: 60_000 };

    /** Status and every file's metadata, through the client library run inside h1. */
    const look = async (
      names: string[],
    ): Promise<{ status: StatusResult; meta: FileMetadata[] }> => {
      const code = [
        `import { DfsClient } from ${JSON.stringify(CLIENT_LIBRARY)};`,
        `const c = new DfsClient({ server: ${JSON.stringify(server)}, timeoutMs: 10000 });`,
        'try {',
        '  const status = await c.status();',
        '  const meta = [];',
        `  for (const n of ${JSON.stringify(names)}) meta.push(await c.stat(n));`,
        '  console.log(JSON.stringify({ status, meta }));',
        '} finally { c.close(); }',
      ].join('\n');
      const r = await runCommand(
        'ip',
        ['netns', 'exec', h1.name, process.execPath, '--input-type=module', '-e', code],
        { timeoutMs: 20_000 },
      );
      if (r.code !== 0) throw new Error(`status script failed (${r.code}): ${r.stderr}`);
      return JSON.parse(r.stdout) as { status: StatusResult; meta: FileMetadata[] };
    };

    const files = new Map<string, string>();
    const waitReplicated = async (
      states: Record<number, RankState>,
      timeoutMs = 30_000,
    ): Promise<StatusResult> => {
      let problems: string[] = [];
      let last: StatusResult | undefined;
      const check = async (): Promise<boolean> => {
        const { status, meta } = await look([...files.keys()]);
        last = status;
        problems = [];
        if (status.underReplicatedChunks !== 0)
          problems.push(`status: ${status.underReplicatedChunks} under-replicated chunks`);
        for (const [rank, state] of Object.entries(states)) {
          const seen = status.ranks.find((r) => r.rank === Number(rank))?.state;
          if (seen !== state) problems.push(`rank ${rank} is ${seen}, expected ${state}`);
        }
        for (const m of meta)
          for (const chunk of m.chunks) {
            const live = chunk.copies.filter((c) => c.state === 'alive').map((c) => c.rank);
            if (chunk.copies.length !== 2 || live.length !== 2 || new Set(live).size !== 2)
              problems.push(`${m.name} chunk ${chunk.index}: ${JSON.stringify(chunk.copies)}`);
          }
        return problems.length === 0;
      };
      try {
        await waitUntil('full replication', check, timeoutMs, 200);
      } catch {
        throw new Error(
          `not fully replicated within ${timeoutMs} ms:\n${problems.slice(0, 20).join('\n')}\n` +
            `status: ${JSON.stringify(last)}\n${store.transcript()}`,
        );
      }
      return last!;
    };

    const expectAllReadBack = async (): Promise<void> => {
      const listArgs = ['list', '--json', '--server', server];
      const listed = await dfs(server, ['list', '--json'], inH1);
      expect(listed.code, describeRun(listArgs, listed)).toBe(0);
      const names = (JSON.parse(listed.stdout.toString('utf8')) as Array<{ name: string }>)
        .map((f) => f.name)
        .sort();
      expect(names).toEqual([...files.keys()].sort());
      for (const [name, sha] of files) {
        const back = await dfs(server, [name, '-r', '-o', '-'], inH1);
        expect(back.code, describeRun([name, '-r'], back)).toBe(0);
        expect(sha256Of(back.stdout), `content of ${name}`).toBe(sha);
      }
    };

    const RANK0 = '[0] memflow-rank 0: ';
    const waitLog = async (re: RegExp, from: number, timeoutMs = 20_000): Promise<string[]> => {
      let match: RegExpExecArray | null = null;
      await store.waitFor(
        `a line of rank 0 matching ${String(re)}`,
        () =>
          store.stderr
            .slice(from)
            .some((l) => l.startsWith(RANK0) && (match = re.exec(l.slice(RANK0.length))) !== null),
        timeoutMs,
      );
      return [...match!];
    };

    for (let i = 0; i < 6; i++) {
      const name = `part-${i}.bin`;
      const local = path.join(work, `${name}.src`);
      const sha = await writePseudoRandomFile(local, 1 * MiB + i * 33 * KiB, name);
      const up = await dfs(server, [local, '-a', '--as', name], inH1);
      expect(up.code, describeRun([local, '-a'], up)).toBe(0);
      files.set(name, sha);
    }
    const before = await waitReplicated({ 1: 'alive', 2: 'alive', 3: 'alive' });
    expect(before.ranks.map((r) => r.host)).toEqual([h1.addr, h2.addr, h3.addr]);
    let held = before.ranks.find((r) => r.rank === 3)!.chunkCopies;
    expect(held, 'copies on rank 3 before the cut').toBeGreaterThan(0);

    const mark = store.stderr.length;
    const cutAt = performance.now();
    let deadMs = -1;
    execFileSync('ip', ['-n', h3.name, 'link', 'set', 'eth0', 'down'], { timeout: 10_000 });
    try {
      await waitLog(/^rank 3 is suspect \(missed \d+ heartbeats\)$/, mark);
      const dead = await waitLog(/^rank 3 is dead \((.+)\)$/, mark);
      deadMs = performance.now() - cutAt;
      // A cut link is silence: no connection drops, so only --dead-after-ms declares it dead.
      expect(dead[1]).toMatch(/^silent for \d+ ms$/);
      expect(deadMs).toBeGreaterThanOrEqual(DEAD_AFTER_MS - 250);
      await waitLog(/^re-replicating \d+ chunks$/, mark);
      await waitReplicated({ 1: 'alive', 2: 'alive', 3: 'dead' });
      await expectAllReadBack();
    } finally {
      // Rank 3 is cut off: what its folder holds now is what it comes back with.
      held = liveVolumeChunksUnder(store.dataDir, 3).size;
      execFileSync('ip', ['-n', h3.name, 'link', 'set', 'eth0', 'up'], { timeout: 10_000 });
    }
    const healedAt = performance.now();
    // TCP retransmits with back-off: the first heartbeat may take a few seconds to get through.
    await waitLog(/^rank 3 is alive \(rejoined\)$/, mark, 60_000);
    const rejoin = await waitLog(
      /^rank 3 rejoined: (\d+) copies taken back, (\d+) surplus or stale copies trimmed$/,
      mark,
      30_000,
    );
    const rejoinMs = performance.now() - healedAt;
    expect(Number(rejoin[1]), 'copies taken back').toBe(0);
    expect(Number(rejoin[2]), 'surplus copies trimmed').toBe(held);
    await waitReplicated({ 1: 'alive', 2: 'alive', 3: 'alive' });
    // No surplus and nothing missing: each rank's volumes hold exactly the copies the index lists.
    const { meta } = await look([...files.keys()]);
    const expected = [1, 2, 3].map((rank) =>
      meta
        .flatMap((m) => m.chunks)
        .filter((c) => c.copies.some((x) => x.rank === rank))
        .map((c) => c.checksum)
        .sort(),
    );
    const actual = (): string[][] =>
      [1, 2, 3].map((rank) =>
        [...liveVolumeChunksUnder(store.dataDir, rank).values()].map((r) => r.checksum).sort(),
      );
    await waitUntil(
      'the copies on disk to match the index',
      () => JSON.stringify(actual()) === JSON.stringify(expected),
      10_000,
      100,
    ).catch(() => undefined);
    expect(
      actual().map((l) => l.length),
      'copies on disk on ranks 1-3',
    ).toEqual(expected.map((l) => l.length));
    expect(actual()).toEqual(expected);
    await expectAllReadBack();
    console.log(
      `partition: dead ${Math.round(deadMs)} ms after the cut; rejoined ${Math.round(rejoinMs)} ms after the heal; ${held} surplus copies trimmed`,
    );
  }, 180_000);
});
