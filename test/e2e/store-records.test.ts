/**
 * Records datasets end to end, through the dfs-client command against a real 4-rank store:
 * distribute a JSON array or NDJSON, query one record by ID, retrieve the dataset as JSON, the
 * refusals that store nothing, a dataset larger than the client's heap, a query while a holder is
 * down, and the index after a full restart.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  MiB,
  StoreProcess,
  cleanupStores,
  describeRun,
  dfs,
  makeTempDir,
  startDfs,
  waitUntil,
  type DfsResult,
} from '../helpers/store-process.js';
import { expectClearFailure, withClient, FAST } from '../helpers/store-checks.js';

afterEach(async () => {
  await cleanupStores();
});

interface Row {
  id: number | string;
  name: string;
  tags: string[];
  score: number;
  nested: { text: string };
}

const row = (i: number, id: number | string): Row => ({
  id,
  name: `user ${i}`,
  tags: ['a', `t${i % 7}`],
  score: i * 1.5,
  // Braces, quotes and escapes inside strings must not confuse the record boundaries.
  nested: { text: `{"x": [${i}]} \\ "quoted" \n` },
});

function writeJson(dir: string, name: string, rows: unknown[], form: 'array' | 'ndjson'): string {
  const file = path.join(dir, name);
  const text =
    form === 'array'
      ? JSON.stringify(rows, null, 2)
      : rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
  fs.writeFileSync(file, text);
  return file;
}

async function ok(server: string, args: string[]): Promise<DfsResult> {
  const r = await dfs(server, args);
  expect(r.code, describeRun(args, r)).toBe(0);
  return r;
}

async function query(store: StoreProcess, name: string, id: string): Promise<unknown> {
  const r = await ok(store.server, ['query', name, id]);
  return JSON.parse(r.stdout.toString('utf8')) as unknown;
}

describe('records datasets through dfs-client', () => {
  it('a JSON array with sorted numeric IDs is distributed, queried by ID, and retrieved as the same JSON document', async () => {
    const store = await StoreProcess.start({ chunkSize: '64K' });
    const work = makeTempDir('records');
    const rows = Array.from({ length: 5000 }, (_, i) => row(i, i * 2));
    const file = writeJson(work, 'people.json', rows, 'array');

    const put = await ok(store.server, [file, '-a', '--records']);
    expect(put.stdout.toString()).toMatch(
      /^distributed people\.json: 5000 records \(.*IDs by range/,
    );
    const meta = await ok(store.server, ['people.json', '-m', '--json']);
    const metadata = JSON.parse(meta.stdout.toString()) as {
      records: unknown;
      chunks: unknown[];
    };
    expect(metadata.records).toEqual({ idField: 'id', count: 5000, lookup: 'ranges' });
    expect(metadata.chunks.length).toBeGreaterThan(10);

    for (const i of [0, 1, 2499, 4999])
      expect(await query(store, 'people.json', String(i * 2))).toEqual(rows[i]);

    const missing = ['query', 'people.json', '3'];
    const absent = await dfs(store.server, missing);
    expect(absent.code, describeRun(missing, absent)).toBe(3);
    expect(absent.stderr).toBe(
      'dfs-client: cannot query "people.json": no record with id 3 in "people.json"\n',
    );
    const noFile = await dfs(store.server, ['query', 'nobody.json', '1']);
    expect(noFile.code).toBe(3);
    expect(noFile.stderr).toMatch(/no such file in the store/);

    const back = path.join(work, 'back.json');
    await ok(store.server, ['people.json', '-r', '-o', back]);
    expect(JSON.parse(fs.readFileSync(back, 'utf8'))).toEqual(rows);
    const lines = (await ok(store.server, ['people.json', '-r', '-o', '-', '--ndjson'])).stdout
      .toString()
      .trimEnd()
      .split('\n');
    expect(lines).toHaveLength(5000);
    expect(JSON.parse(lines[1234]!)).toEqual(rows[1234]);
  });

  it('NDJSON with string IDs in another field: found by hash; an ID that looks like a number is found as a string', async () => {
    const store = await StoreProcess.start({ chunkSize: '64K' });
    const work = makeTempDir('records');
    const rows = Array.from({ length: 3000 }, (_, i) => ({
      ...row(i, i),
      key: i % 3 === 0 ? String((i * 7919) % 100_000) : `k-${(i * 7919) % 100_000}`,
    }));
    const file = writeJson(work, 'keyed.ndjson', rows, 'ndjson');
    const put = await ok(store.server, [
      file,
      '-a',
      '--records',
      '--id-field',
      'key',
      '--as',
      'keyed',
    ]);
    expect(put.stdout.toString()).toMatch(/3000 records .*IDs by hash/);
    for (const i of [0, 3, 1, 2998, 2999])
      expect(await query(store, 'keyed', rows[i]!.key)).toEqual(rows[i]);
    expect(await query(store, 'keyed', JSON.stringify(rows[3]!.key))).toEqual(rows[3]);
    const back = (await ok(store.server, ['keyed', '-r', '-o', '-'])).stdout.toString();
    expect(JSON.parse(back)).toEqual(rows);
  });

  it('a duplicate ID, a record without the ID field and a malformed document are refused with their position, and nothing is stored', async () => {
    const store = await StoreProcess.start({ chunkSize: '64K', extraArgs: FAST });
    const work = makeTempDir('records');
    const rows = Array.from({ length: 2000 }, (_, i) => row(i, i));
    const dupRows = rows.map((r, i) => (i === 1500 ? { ...r, id: 700 } : r));
    const dup = writeJson(work, 'dup.json', dupRows, 'array');
    const noId = writeJson(
      work,
      'noid.ndjson',
      rows.map((r, i) => (i === 42 ? { name: r.name } : r)),
      'ndjson',
    );
    const malformedText = '[{"id": 1}, {"id": 2, "name": "x",}]';
    const malformed = path.join(work, 'bad.json');
    fs.writeFileSync(malformed, malformedText);

    for (const [file, message] of [
      [
        dup,
        /duplicate ID 700: record 1501 has the same "id" as record 701 \(record 1501 is at byte (\d+)\)/,
      ],
      [noId, /record 43 \(at byte \d+\) has no "id" field$/],
      // The offset is that of the "}" after the trailing comma, where the parser stops.
      [
        malformed,
        new RegExp(`record 2 is not valid JSON at byte ${malformedText.indexOf(',}') + 1}: `),
      ],
    ] as const) {
      const args = [file, '-a', '--records'];
      const r = await dfs(store.server, args);
      expectClearFailure(args, r);
      expect(r.code, describeRun(args, r)).toBe(1);
      expect(r.stderr.trimEnd()).toMatch(message);
      if (file === dup) {
        // The byte offset points at the offending record (the 1501st, whose id is 700).
        const at = Number(message.exec(r.stderr.trimEnd())![1]);
        const text = fs.readFileSync(dup, 'utf8');
        expect(text.slice(at, at + 40)).toMatch(/^\{\s*"id": 700,\s*"name": "user 1500"/);
      }
    }
    expect((await ok(store.server, ['list', '--json'])).stdout.toString().trim()).toBe('[]');
    // Chunks sent before a refusal are deleted: the data ranks end up holding none.
    await waitUntil(
      'the refused uploads to leave no chunk on any data rank',
      async () => (await store.status()).ranks.every((r) => r.chunkCopies === 0),
      10_000,
      100,
    );
  });

  it('records as small as {"id":N}: a chunk\'s IDs weigh nearly as much as its records, and still go through', async () => {
    const store = await StoreProcess.start({ chunkSize: '256K' });
    const work = makeTempDir('records');
    const rows = Array.from({ length: 100_000 }, (_, i) => ({ id: 900_000 + i }));
    const file = writeJson(work, 'tiny.ndjson', rows, 'ndjson');
    const put = await ok(store.server, [file, '-a', '--records']);
    expect(put.stdout.toString()).toMatch(/100000 records/);
    expect(await query(store, 'tiny.ndjson', '987654')).toEqual({ id: 987_654 });
  });

  it('a dataset larger than the client heap limit streams through (NDJSON, 4 MiB chunks), and every record can be found', async () => {
    const store = await StoreProcess.start({});
    const work = makeTempDir('records');
    const file = path.join(work, 'big.ndjson');
    const count = 400_000;
    const pad = 'x'.repeat(150);
    const out = fs.openSync(file, 'w');
    try {
      for (let start = 0; start < count; start += 10_000) {
        const lines: string[] = [];
        for (let i = start; i < start + 10_000; i++)
          lines.push(JSON.stringify({ id: i, name: `n${i}`, pad }));
        fs.writeSync(out, lines.join('\n') + '\n');
      }
    } finally {
      fs.closeSync(out);
    }
    const heapMiB = 32;
    expect(fs.statSync(file).size).toBeGreaterThan(2 * heapMiB * MiB);
    const args = [file, '-a', '--records', '--server', store.server];
    const r = await dfsWithHeap(args, heapMiB);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(r.stdout.toString()).toMatch(new RegExp(`${count} records`));
    for (const id of [0, 123_456, count - 1])
      expect(await query(store, 'big.ndjson', String(id))).toEqual({ id, name: `n${id}`, pad });
  });

  it('a record is still found when a data rank holding its chunk is killed, and after the whole store restarts', async () => {
    const store = await StoreProcess.start({ chunkSize: '64K', extraArgs: FAST });
    const work = makeTempDir('records');
    const rows = Array.from({ length: 4000 }, (_, i) => row(i, `id-${i}`));
    const file = writeJson(work, 'rows.json', rows, 'array');
    await ok(store.server, [file, '-a', '--records']);
    const probes = [0, 999, 2000, 3001, 3999];

    store.killRank(1);
    // Every chunk has a copy on rank 1 or not; with 2 copies on 3 ranks each chunk has one
    // elsewhere, so every record is still found.
    for (const i of probes) expect(await query(store, 'rows.json', `id-${i}`)).toEqual(rows[i]);

    await store.stop();
    const again = await store.restart();
    for (const i of probes) expect(await query(again, 'rows.json', `id-${i}`)).toEqual(rows[i]);
    const meta = await withClient(again, (c) => c.stat('rows.json'));
    expect(meta.records).toEqual({ idField: 'id', count: 4000, lookup: 'hashed' });
  });
});

/** dfs-client under a heap limit (node --max-old-space-size), through `env NODE_OPTIONS=...`. */
function dfsWithHeap(args: string[], heapMiB: number): Promise<DfsResult> {
  return startDfs(args, {
    wrapper: ['env', `NODE_OPTIONS=--max-old-space-size=${heapMiB}`],
    timeoutMs: 120_000,
  }).result;
}
