/**
 * Records datasets in simulation: upload with IDs, query by ID through the master index and the
 * data ranks' local lookups, the other copy when a holder is down or bad, refusals that leave
 * nothing behind, and an index that survives the journal.
 */
import { pack, unpack } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { candidateChunks } from '../../src/records/record-ids.js';
import { FileIndex, type IndexRecord } from '../../src/store/file-index.js';
import { ProtocolError, StoreWorld } from './store-world.js';

let world: StoreWorld | undefined;

afterEach(async () => {
  await world?.stop();
  world = undefined;
});

async function start(dataRanks = 3, chunkSizeBytes = 1024): Promise<StoreWorld> {
  world = new StoreWorld({ dataRanks, chunkSizeBytes });
  await world.start();
  return world;
}

interface Person {
  id: number | string;
  name: string;
  n: number;
}

const people = (count: number, id: (i: number) => number | string = (i) => i * 3): Person[] =>
  Array.from({ length: count }, (_, i) => ({ id: id(i), name: `person ${i}`, n: i }));

const asArray = (records: unknown[]): Buffer => Buffer.from(JSON.stringify(records, null, 2));

async function refusal(p: Promise<unknown>): Promise<ProtocolError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProtocolError);
  return err as ProtocolError;
}

describe('records datasets', () => {
  it('sorted numeric IDs are indexed by range; every record is found, by the data rank holding its chunk', async () => {
    const w = await start();
    const client = w.client();
    const records = people(400);
    const meta = await client.uploadRecords('people.json', asArray(records));
    expect(meta.records).toEqual({ idField: 'id', count: 400, lookup: 'ranges' });
    expect(meta.chunks.length).toBeGreaterThan(10);
    for (const i of [0, 1, 57, 199, 398, 399]) {
      const found = await client.query('people.json', records[i]!.id);
      expect(found.record).toEqual(records[i]);
      expect(meta.chunks[found.chunk]!.copies.map((c) => c.rank)).toContain(found.rank);
    }
    // Between two IDs, below the first and above the last: not there.
    for (const absent of [1, -5, 3 * 400, 1.5]) {
      const err = await refusal(client.query('people.json', absent));
      expect(err.wire.code).toBe('STORE_NOT_FOUND');
      expect(err.wire.detail?.recordId).toBe(absent);
      expect(err.wire.message).toContain(`no record with id ${absent} in "people.json"`);
    }
  });

  it('string and unsorted IDs are indexed by hash; 42 and "42" are different IDs', async () => {
    const w = await start();
    const client = w.client();
    const records = people(300, (i) =>
      i % 2 === 0 ? `user-${(i * 7919) % 1000}` : (i * 37) % 1000,
    );
    records.push({ id: '42', name: 'string forty-two', n: -1 });
    const ndjson = Buffer.from(records.map((r) => JSON.stringify(r)).join('\n'));
    const meta = await client.uploadRecords('mixed.ndjson', ndjson);
    expect(meta.records?.lookup).toBe('hashed');
    for (const r of records) expect((await client.query('mixed.ndjson', r.id)).record).toEqual(r);
    const numeric = records.find((r) => r.id === 42);
    if (numeric) expect((await client.query('mixed.ndjson', 42)).record).toEqual(numeric);
    else
      expect((await refusal(client.query('mixed.ndjson', 42))).wire.code).toBe('STORE_NOT_FOUND');
    expect((await refusal(client.query('mixed.ndjson', 'user-nobody'))).wire.code).toBe(
      'STORE_NOT_FOUND',
    );
  });

  it('a record whose first holder crashed comes from the other copy', async () => {
    const w = await start();
    const client = w.client();
    const records = people(200);
    const meta = await client.uploadRecords('people.json', asArray(records));
    const target = records[120]!;
    const { chunk } = await client.query('people.json', target.id);
    const [first] = meta.chunks[chunk]!.copies.map((c) => c.rank);
    w.crash(first!);
    const query = client.query('people.json', target.id);
    expect(await w.runUntil(query, 30_000)).toBe(true);
    const answer = await query;
    expect(answer.record).toEqual(target);
    expect(answer.rank).not.toBe(first);
  });

  it('a holder whose copy went bad is passed over for the good copy', async () => {
    const w = await start();
    const client = w.client();
    const records = people(200);
    const meta = await client.uploadRecords('people.json', asArray(records));
    const { chunk, rank } = await client.query('people.json', records[199]!.id);
    expect(chunk).toBeGreaterThan(0);
    expect(meta.chunks[chunk]!.copies.map((c) => c.rank)).toContain(rank);
    // A different chunk, not yet indexed on its data rank: its copy is read (and checked) now.
    w.corruptCopies(meta.chunks[0]!.copies[0]!.rank);
    const query = client.query('people.json', records[0]!.id);
    expect(await w.runUntil(query, 30_000)).toBe(true);
    const answer = await query;
    expect(answer.record).toEqual(records[0]);
    expect(answer.rank).toBe(meta.chunks[0]!.copies[1]!.rank);
  });

  it('a duplicate ID is refused naming both records, and nothing of the dataset is stored', async () => {
    const w = await start();
    const client = w.client();
    const records = people(300);
    records[250] = { ...records[250]!, id: records[7]!.id };
    const err = await refusal(client.uploadRecords('dup.json', asArray(records)));
    expect(err.wire.code).toBe('STORE_BAD_REQUEST');
    expect(err.wire.message).toBe(
      `duplicate ID ${records[7]!.id}: record 251 has the same "id" as record 8`,
    );
    expect(err.wire.detail).toMatchObject({ record: 251, earlierRecord: 8 });
    await w.elapse(1000);
    expect(w.stores.slice(1).map((s) => s.chunkCount())).toEqual([0, 0, 0]);
    expect((await refusal(client.query('dup.json', 0))).wire.code).toBe('STORE_NOT_FOUND');
  });

  it('chunks of a records upload must come in order, each with its IDs', async () => {
    const w = await start();
    const client = w.client();
    const { reply } = await client.call<{ uploadId: string }>({
      op: 'put-begin',
      name: 'r.json',
      sizeBytes: 100,
      records: { idField: 'id' },
    });
    const line = Buffer.from('{"id":1}\n');
    const put = (index: number, records: unknown) =>
      client.call(
        { op: 'put-chunk', uploadId: reply.uploadId, index, checksum: 'x', records },
        line,
      );
    expect((await refusal(put(1, { first: 0, ids: [1] }))).wire.message).toMatch(/in order/);
    expect((await refusal(put(0, { first: 0, ids: [] }))).wire.code).toBe('STORE_BAD_REQUEST');
    expect((await refusal(put(0, { first: 0, ids: [{}] }))).wire.message).toMatch(
      /neither a string nor a number/,
    );
    expect((await refusal(put(0, undefined))).wire.code).toBe('STORE_BAD_REQUEST');
  });

  it('querying a plain file is refused as not a records dataset', async () => {
    const w = await start();
    const client = w.client();
    await client.upload('plain.bin', Buffer.from('{"id":1}\n'));
    const err = await refusal(client.query('plain.bin', 1));
    expect(err.wire.code).toBe('STORE_BAD_REQUEST');
    expect(err.wire.message).toMatch(/plain file, not a records dataset/);
  });

  it('the ID index survives the journal: replayed (msgpack) it finds the same chunks', async () => {
    const w = await start();
    const client = w.client();
    const sorted = people(300);
    const strings = people(300, (i) => `k${(i * 13) % 997}`);
    await client.uploadRecords('sorted.json', asArray(sorted));
    await client.uploadRecords('strings.json', asArray(strings));
    const replayed = new FileIndex();
    for (const r of w.journal.records) replayed.apply(unpack(pack(r)) as IndexRecord);
    for (const [name, records] of [
      ['sorted.json', sorted],
      ['strings.json', strings],
    ] as const) {
      const index = replayed.get(name)!.records!;
      expect(index.count).toBe(300);
      for (const r of records) {
        const { chunk } = await client.query(name, r.id);
        expect(candidateChunks(index, r.id)).toContain(chunk);
      }
    }
  });
});
