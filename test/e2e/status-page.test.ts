/**
 * Rank 0's HTTP status server on a real store. Goal: with `--http-port 0` rank 0 serves on a port
 * the kernel picks and says where in one stdout line before the ready line; `/metrics` (text
 * format 0.0.4) and `/status.json` say what `status` says (each rank's used bytes, capacity,
 * copies and state; files, chunks, under-replicated chunks); the request counters and latency
 * histograms counted exactly the requests the uploads made (and an error by its code); unknown
 * paths get 404, other methods 405; a port already in use stops the launch with one clear line
 * and a non-zero exit, no stack trace, no process left.
 *
 * Method: a real store (memflow-run -n 4, 64 KiB chunks, test/helpers/store-process.ts); files
 * uploaded through the DfsClient library (a 300 KiB file: put-begin, 5 put-chunk, put-commit; a
 * 10 KiB one: put-whole); HTTP with fetch() to loopback; /metrics read back by a strict parser
 * (test/helpers/prometheus-text.ts). Usage reports arrive with heartbeats, so "the same values" is
 * polled with a deadline until status, /status.json and /metrics agree in one round. Every store
 * is stopped in afterEach, also when a test fails.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { StatusResult } from '../../src/protocol/client-protocol.js';
import type { StatusSnapshot } from '../../src/rank/status-page/snapshot.js';
import {
  KiB,
  MEMFLOW_RUN,
  REPO_ROOT,
  StoreProcess,
  cleanupStores,
  freePort,
  makeTempDir,
  processesOfDataDir,
  requireBuild,
  waitUntil,
} from '../helpers/store-process.js';
import { putFiles, withClient } from '../helpers/store-checks.js';
import { httpGet } from '../helpers/http-get.js';
import { parseExposition, sampleOf, type ParsedExposition } from '../helpers/prometheus-text.js';

afterEach(async () => {
  await cleanupStores();
});

function statusUrl(store: StoreProcess): string {
  return store.statusUrl();
}

async function getMetrics(base: string): Promise<ParsedExposition> {
  const res = await httpGet(`${base}metrics`);
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
  return parseExposition(res.text);
}

async function getSnapshot(base: string): Promise<StatusSnapshot> {
  const res = await httpGet(`${base}status.json`);
  expect(res.status).toBe(200);
  return JSON.parse(res.text) as StatusSnapshot;
}

/** Where status, /status.json and /metrics disagree (empty: they agree). */
function disagreements(
  status: StatusResult,
  snap: StatusSnapshot,
  metrics: ParsedExposition,
): string[] {
  const out: string[] = [];
  const same = (what: string, a: unknown, b: unknown): void => {
    if (a !== b) out.push(`${what}: ${String(a)} vs ${String(b)}`);
  };
  same('rank count', snap.status.ranks.length, status.ranks.length);
  for (const r of status.ranks) {
    const s = snap.status.ranks.find((x) => x.rank === r.rank);
    const labels = { rank: String(r.rank), host: r.host };
    same(`rank ${r.rank} used (json)`, s?.usedBytes, r.usedBytes);
    same(`rank ${r.rank} capacity (json)`, s?.capacityBytes, r.capacityBytes);
    same(`rank ${r.rank} state (json)`, s?.state, r.state);
    same(`rank ${r.rank} copies (json)`, s?.chunkCopies, r.chunkCopies);
    same(`rank ${r.rank} primaries (json)`, s?.primaryCopies, r.primaryCopies);
    same(`rank ${r.rank} replicas (json)`, s?.replicaCopies, r.replicaCopies);
    same(`rank ${r.rank} used`, sampleOf(metrics, 'memflow_rank_used_bytes', labels), r.usedBytes);
    same(
      `rank ${r.rank} capacity`,
      sampleOf(metrics, 'memflow_rank_capacity_bytes', labels),
      r.capacityBytes,
    );
    same(
      `rank ${r.rank} copies`,
      sampleOf(metrics, 'memflow_rank_chunk_copies', labels),
      r.chunkCopies,
    );
    for (const role of ['primary', 'replica'] as const)
      same(
        `rank ${r.rank} ${role} copies`,
        sampleOf(metrics, 'memflow_rank_index_copies', { ...labels, role }),
        role === 'primary' ? r.primaryCopies : r.replicaCopies,
      );
    for (const state of ['alive', 'suspect', 'dead'])
      same(
        `rank ${r.rank} state ${state}`,
        sampleOf(metrics, 'memflow_rank_state', { ...labels, state }),
        r.state === state ? 1 : 0,
      );
  }
  same('files', sampleOf(metrics, 'memflow_files'), status.files);
  same('chunks', sampleOf(metrics, 'memflow_chunks'), status.chunks);
  same(
    'under-replicated',
    sampleOf(metrics, 'memflow_under_replicated_chunks'),
    status.underReplicatedChunks,
  );
  same('files (json)', snap.status.files, status.files);
  same('chunks (json)', snap.status.chunks, status.chunks);
  return out;
}

describe('status page over HTTP (a real 4-rank store, --http-port 0)', () => {
  it('serves /metrics and /status.json that match status, and counts the requests of the uploads', async () => {
    const store = await StoreProcess.start({ chunkSize: '64K', extraArgs: ['--http-port', '0'] });
    const base = statusUrl(store);
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(base).not.toBe('http://127.0.0.1:0/');
    // The line comes before the ready line, so whoever waits for that can read it.
    const ready = store.stdout.findIndex((l) => l.includes('MemFlow store ready'));
    expect(store.stdout.findIndex((l) => l.startsWith('[0] status page: '))).toBeLessThan(ready);

    const work = makeTempDir('status-page-work');
    const files = await putFiles(store, work, [
      ['big.bin', 300 * KiB],
      ['small.bin', 10 * KiB],
    ]);
    expect(files.size).toBe(2);
    await withClient(store, async (client) => {
      await expect(client.stat('missing.bin')).rejects.toThrow();
    });

    let last: string[] = [];
    await waitUntil(
      'status, /status.json and /metrics to agree',
      async () => {
        const status = await withClient(store, (c) => c.status());
        const [snap, metrics] = [await getSnapshot(base), await getMetrics(base)];
        last = disagreements(status, snap, metrics);
        return (
          last.length === 0 &&
          status.files === 2 &&
          status.ranks.every((r) => r.state === 'alive' && r.usedBytes > 0)
        );
      },
      15_000,
      100,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${last.join('\n')}`);
    });

    const snap = await getSnapshot(base);
    expect(snap.status.ranks.map((r) => r.rank)).toEqual([1, 2, 3]);
    expect(snap.files.total).toBe(2);
    expect(snap.files.shown.map((f) => f.name).sort()).toEqual(['big.bin', 'small.bin']);
    expect(snap.status.chunks).toBe(6); // 5 chunks of 64 KiB + 1
    // Two copies of every chunk: the ranks' primaries and replicas add up.
    const sum = (f: (r: StatusResult['ranks'][number]) => number): number =>
      snap.status.ranks.reduce((n, r) => n + f(r), 0);
    expect(sum((r) => r.primaryCopies)).toBe(6);
    expect(sum((r) => r.replicaCopies)).toBe(6);

    // The requests the uploads made, each counted once with its outcome and timed.
    const metrics = await getMetrics(base);
    const total = (op: string, outcome = 'ok'): number =>
      sampleOf(metrics, 'memflow_requests_total', { op, outcome });
    expect(total('put-begin')).toBe(1);
    expect(total('put-chunk')).toBe(5);
    expect(total('put-commit')).toBe(1);
    expect(total('put-whole')).toBe(1);
    expect(total('stat', 'STORE_NOT_FOUND')).toBe(1);
    expect(total('status')).toBeGreaterThanOrEqual(1);
    for (const [op, n] of [
      ['put-chunk', 5],
      ['put-whole', 1],
      ['put-commit', 1],
    ] as const) {
      expect(sampleOf(metrics, 'memflow_request_duration_seconds_count', { op }), op).toBe(n);
      expect(
        sampleOf(metrics, 'memflow_request_duration_seconds_bucket', { op, le: '+Inf' }),
        op,
      ).toBe(n);
      const seconds = sampleOf(metrics, 'memflow_request_duration_seconds_sum', { op });
      expect(seconds, op).toBeGreaterThan(0);
      expect(seconds, op).toBeLessThan(60);
    }

    // The page itself, and what is not there.
    const page = await fetch(base);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await page.text()).toContain('<title>MemFlow status</title>');
    for (const path of ['nope', 'metrics/extra', 'status']) {
      const res = await fetch(`${base}${path}`);
      expect(res.status, path).toBe(404);
      await res.text();
    }
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const res = await fetch(`${base}metrics`, { method });
      expect(res.status, method).toBe(405);
      expect(res.headers.get('allow')).toBe('GET, HEAD');
      await res.text();
    }
    const head = await fetch(`${base}metrics`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');

    expect(await store.stop()).toEqual({ code: 143, signal: null });
    // Stopped with the store: nothing listens on the port any more.
    await expect(fetch(`${base}metrics`)).rejects.toThrow();
  });

  it('without --http-port there is no status page', async () => {
    const store = await StoreProcess.start({ ranks: 2 });
    expect(store.stdout.some((l) => l.includes('status page'))).toBe(false);
    expect(await store.stop()).toEqual({ code: 143, signal: null });
  });

  it('a port in use stops the launch with one clear line and a non-zero exit', async () => {
    requireBuild();
    // Hold a port on the address the store binds.
    const holder = net.createServer();
    await new Promise<void>((resolve, reject) => {
      holder.once('error', reject);
      holder.listen({ port: 0, host: '127.0.0.1', exclusive: true }, resolve);
    });
    const taken = (holder.address() as net.AddressInfo).port;
    const dataDir = makeTempDir('status-page-busy');
    let stderr = '';
    // Without MEMFLOW_DEBUG, as a user runs it: no stack trace.
    const env = { ...process.env };
    delete env.MEMFLOW_DEBUG;
    const args = [MEMFLOW_RUN, '-n', '2', '--data-dir', dataDir, '--port'];
    args.push(String(await freePort()), '--http-port', String(taken));
    const child = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.stdout.resume();
    try {
      const exit = await new Promise<number | null>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no exit within 20 s\n${stderr}`)), 20_000);
        child.once('close', (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
      expect(exit, stderr).not.toBe(0);
      expect(exit, stderr).not.toBeNull();
      const lines = stderr.split('\n').filter((l) => l.includes('status page'));
      expect(lines, stderr).toEqual([
        `[0] memflow-rank 0: cannot serve the status page on 127.0.0.1:${taken} (--http-port): the port is already in use`,
      ]);
      expect(stderr).not.toMatch(/\n\s+at /);
      await waitUntil(
        'no process of the launch left',
        () => processesOfDataDir(dataDir).length === 0,
        10_000,
      );
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      for (const p of processesOfDataDir(dataDir)) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // Gone meanwhile.
        }
      }
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  });
});
