/**
 * Goal: memflow-run and the ZeroMQ world work across hosts that are really separate network
 * stacks, not only over loopback: ranks bind and advertise their host's `addr=`, the rendezvous
 * runs on a non-local rank 0, and every collective is correct across hosts.
 * Method: three network namespaces on one bridge act as hosts (test/multihost/netns.ts; nothing
 * touches the machine's own network). memflow-run starts the ranks through
 * `--launcher-exec 'ip netns exec {host}'` from a hostfile with one `addr=` per namespace.
 * Needs root and iproute2; otherwise the suite is skipped with the reason printed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MEMFLOW_RUN, REPO_ROOT, runCommand, type CommandResult } from '../helpers/run-command.js';
import {
  createTestNetwork,
  destroyTestNetwork,
  hostfileFor,
  namespaceInode,
  namespacePids,
  netnsUnavailableReason,
  type TestNetwork,
} from './netns.js';

const CHECK = path.join(REPO_ROOT, 'dist', 'test', 'e2e', 'programs', 'collectives-check.js');
const PROBE = path.join(REPO_ROOT, 'dist', 'test', 'multihost', 'programs', 'netns-probe.js');
const HOSTS = 3;
const SLOTS = 2;
const RANKS = HOSTS * SLOTS;

const skipReason = netnsUnavailableReason();
if (skipReason !== undefined) console.warn(`multi-host tests skipped: ${skipReason}`);

interface ProbeReport {
  rank: number;
  host: string;
  root: string;
  localRank: number;
  netns: number;
  addresses: string[];
  world: number[];
}

describe.skipIf(skipReason !== undefined)('collectives across network-namespace hosts', () => {
  let network: TestNetwork | undefined;
  let dir = '';

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memflow-multihost-'));
    network = await createTestNetwork(HOSTS);
  });

  afterAll(() => {
    if (network !== undefined) {
      const killed = destroyTestNetwork(network);
      if (killed.length > 0) console.warn(`multi-host teardown killed: ${killed.join('; ')}`);
    }
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  const net = (): TestNetwork => {
    if (network === undefined) throw new Error('the test network was not built');
    return network;
  };

  function writeHostfile(name: string, text: string): string {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  }

  function memflowRun(hostfile: string, args: string[], timeoutMs: number): Promise<CommandResult> {
    return runCommand(
      process.execPath,
      [MEMFLOW_RUN, '--hostfile', hostfile, '--launcher-exec', 'ip netns exec {host}', ...args],
      { timeoutMs },
    );
  }

  /** Waits (bounded) until no process is left in any host namespace; returns what is left. */
  async function leftovers(timeoutMs = 5_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = net()
        .hosts.map((host) => ({ host: host.name, pids: namespacePids(host.name) }))
        .filter((entry) => entry.pids.length > 0)
        .map((entry) => `${entry.host}: ${entry.pids.join(' ')}`);
      if (left.length === 0 || Date.now() > deadline) return left;
      await delay(50);
    }
  }

  it(`all collectives are correct with ${RANKS} ranks on ${HOSTS} hosts`, async () => {
    const hostfile = writeHostfile('hosts', hostfileFor(net(), SLOTS));
    const result = await memflowRun(hostfile, ['--', process.execPath, CHECK], 90_000);
    const ok = result.stdout
      .split('\n')
      .filter((line) => /^\[\d+\] collectives ok$/.test(line))
      .sort();
    expect({ code: result.code, timedOut: result.timedOut, ok, stderr: result.stderr }).toEqual({
      code: 0,
      timedOut: false,
      ok: [...Array(RANKS).keys()].map((rank) => `[${rank}] collectives ok`),
      stderr: '',
    });
    expect(await leftovers()).toEqual([]);
  }, 120_000);

  it('every rank runs in its host namespace and binds the addr= of its host', async () => {
    const { hosts } = net();
    const inodes = hosts.map((host) => namespaceInode(host.name));
    const own = fs.statSync('/proc/self/ns/net').ino;
    expect(new Set([own, ...inodes]).size).toBe(HOSTS + 1);

    const rootPort = 7000;
    const hostfile = writeHostfile('hosts', hostfileFor(net(), SLOTS));
    const result = await memflowRun(
      hostfile,
      ['--root-port', String(rootPort), '--', process.execPath, PROBE],
      60_000,
    );
    expect({ code: result.code, timedOut: result.timedOut, stderr: result.stderr }).toEqual({
      code: 0,
      timedOut: false,
      stderr: '',
    });
    const reports = result.stdout
      .split('\n')
      .map((line) => /^\[(\d+)\] netns-probe (.*)$/.exec(line))
      .filter((match) => match !== null)
      .map((match) => ({ tag: Number(match[1]), ...(JSON.parse(match[2]!) as ProbeReport) }))
      .sort((a, b) => a.rank - b.rank);
    const rankToHost = [...Array(RANKS).keys()].map((rank) => Math.floor(rank / SLOTS));
    expect(reports).toEqual(
      rankToHost.map((h, rank) => ({
        tag: rank,
        rank,
        host: hosts[h]!.addr,
        root: `${hosts[0]!.addr}:${rootPort}`,
        localRank: rank % SLOTS,
        netns: inodes[h],
        // Only lo and eth0 exist in a host namespace: the rank sees nothing of this machine.
        addresses: ['127.0.0.1', hosts[h]!.addr],
        world: rankToHost.map((i) => inodes[i]),
      })),
    );
    expect(await leftovers()).toEqual([]);
  }, 90_000);

  it('an addr= that is not in its host namespace fails fast with COMM_WIREUP', async () => {
    const { hosts } = net();
    // The second host is given the first host's address: it exists, but in another namespace.
    const hostfile = writeHostfile(
      'wrong-addr-hosts',
      hostfileFor(net(), SLOTS, (host, i) => (i === 1 ? hosts[0]!.addr : host.addr)),
    );
    const started = Date.now();
    const result = await memflowRun(
      hostfile,
      ['--', process.execPath, PROBE, '--wireup-timeout-ms', '5000'],
      30_000,
    );
    const elapsedMs = Date.now() - started;
    const wrong = hosts[0]!.addr.replaceAll('.', '\\.');
    expect({ code: result.code, timedOut: result.timedOut }).toEqual({
      code: 1,
      timedOut: false,
    });
    expect(result.stderr).toMatch(
      new RegExp(
        `netns-probe failed on rank [23]: COMM_WIREUP: rank [23] cannot bind an endpoint on ${wrong}\\n`,
      ),
    );
    expect(result.stderr).toMatch(
      new RegExp(
        `memflow-run: rank [23] on ${hosts[1]!.name} exited with status 1; stopped the other ranks\\n`,
      ),
    );
    expect(result.stdout).not.toContain('netns-probe {');
    // The bind fails at once and the launcher stops the others (about 1 s here); without the
    // abort, the 5 s wire-up timeout would still end them. Either way the failure is bounded.
    expect(elapsedMs).toBeLessThan(15_000);
    expect(await leftovers()).toEqual([]);
  }, 60_000);
});
