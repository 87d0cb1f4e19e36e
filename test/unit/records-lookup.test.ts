/**
 * A data rank's record lookup. Goal: ChunkRecords finds a record of a chunk by ID (42 and "42"
 * apart), returning its line without the newline, and skips lines that no longer parse;
 * RecordLookupCache reads a chunk once however many queries ask at once, keeps chunks by least
 * recent use within its byte budget, forgets a chunk on request, and does not keep a failed read.
 * Method: hand-built chunks, and loads the test resolves or rejects itself (no timers).
 */
import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import { ChunkRecords, RecordLookupCache } from '../../src/records/chunk-lookup.js';

const ndjson = (records: readonly unknown[]): Buffer =>
  Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join(''));

const text = (bytes: Uint8Array | undefined): string | undefined =>
  bytes === undefined ? undefined : Buffer.from(bytes).toString('utf8');

describe('ChunkRecords', () => {
  const chunk = ndjson([
    { id: 1, name: 'one' },
    { id: 'a', name: 'letter a' },
    { id: 42, name: 'number 42' },
    { id: '42', name: 'string 42' },
    { name: 'no id' },
    { id: -2.5, name: 'négatif 日本' },
  ]);

  it('finds each record by its ID and returns its line without the newline', () => {
    const records = ChunkRecords.index(chunk, 'id');
    expect(text(records.find(1))).toBe('{"id":1,"name":"one"}');
    expect(text(records.find('a'))).toBe('{"id":"a","name":"letter a"}');
    expect(text(records.find(-2.5))).toBe('{"id":-2.5,"name":"négatif 日本"}');
  });

  it('tells the number 42 from the string "42"', () => {
    const records = ChunkRecords.index(chunk, 'id');
    expect(JSON.parse(text(records.find(42))!)).toEqual({ id: 42, name: 'number 42' });
    expect(JSON.parse(text(records.find('42'))!)).toEqual({ id: '42', name: 'string 42' });
    const onlyNumber = ChunkRecords.index(ndjson([{ id: 42 }]), 'id');
    expect(onlyNumber.find('42')).toBeUndefined();
    const onlyString = ChunkRecords.index(ndjson([{ id: '42' }]), 'id');
    expect(onlyString.find(42)).toBeUndefined();
  });

  it('finds nothing for an absent ID', () => {
    const records = ChunkRecords.index(chunk, 'id');
    for (const id of [2, 'b', '1', 0, 'no id', 'name']) expect(records.find(id)).toBeUndefined();
  });

  it('skips lines that do not parse, are not objects or have no usable ID, and finds the rest', () => {
    const bytes = Buffer.from(
      [
        '{"id":1}',
        '{"id":2,', // truncated
        'garbage',
        '',
        'null',
        '7',
        '"id"',
        '[{"id":3}]',
        '{"id":true}',
        '{"id":null}',
        '{"id":{"n":4}}',
        '{"other":5}',
        '{"id":6}',
      ].join('\n') + '\n',
    );
    const records = ChunkRecords.index(bytes, 'id');
    expect(text(records.find(1))).toBe('{"id":1}');
    expect(text(records.find(6))).toBe('{"id":6}');
    for (const id of [2, 3, 4, 5, 'true', 'null']) expect(records.find(id)).toBeUndefined();
  });

  it('finds the last record when the chunk does not end with a newline', () => {
    const records = ChunkRecords.index(Buffer.from('{"id":1}\n{"id":2}'), 'id');
    expect(text(records.find(2))).toBe('{"id":2}');
    expect(text(records.find(1))).toBe('{"id":1}');
  });

  it('reads the ID from the field it is told', () => {
    const records = ChunkRecords.index(
      ndjson([
        { id: 1, sku: 'X-1' },
        { id: 2, sku: 'X-2' },
      ]),
      'sku',
    );
    expect(text(records.find('X-2'))).toBe('{"id":2,"sku":"X-2"}');
    expect(records.find(2)).toBeUndefined();
  });

  it('reads a chunk handed in as a view into a larger buffer', () => {
    const inner = ndjson([{ id: 'x' }, { id: 'y' }]);
    const outer = Buffer.concat([
      Buffer.from('{"id":"junk"}\n'),
      inner,
      Buffer.from('{"id":"z"}\n'),
    ]);
    const view = new Uint8Array(outer.buffer, outer.byteOffset + 14, inner.length);
    const records = ChunkRecords.index(view, 'id');
    expect(text(records.find('y'))).toBe('{"id":"y"}');
    expect(records.find('junk')).toBeUndefined();
    expect(records.find('z')).toBeUndefined();
    expect(records.bytes.length).toBe(inner.length);
  });

  it('counts its memory as the bytes plus 64 bytes an indexed record', () => {
    const records = ChunkRecords.index(chunk, 'id');
    expect(records.costBytes).toBe(chunk.length + 64 * 5);
    expect(ChunkRecords.index(Buffer.alloc(0), 'id').costBytes).toBe(0);
  });
});

/** A load function the test drives: each call waits until the test settles it. */
class Loads {
  readonly calls: string[] = [];
  private readonly pending: {
    chunkId: string;
    resolve: (b: Uint8Array) => void;
    reject: (e: Error) => void;
  }[] = [];

  readonly load = (chunkId: string): Promise<Uint8Array> => {
    this.calls.push(chunkId);
    return new Promise((resolve, reject) => this.pending.push({ chunkId, resolve, reject }));
  };

  /** Settles every pending load of `chunkId` with its bytes, or an error. */
  settle(chunkId: string, result: Uint8Array | Error): void {
    for (let i = this.pending.length - 1; i >= 0; i--) {
      const p = this.pending[i]!;
      if (p.chunkId !== chunkId) continue;
      this.pending.splice(i, 1);
      if (result instanceof Error) p.reject(result);
      else p.resolve(result);
    }
  }

  count(chunkId: string): number {
    return this.calls.filter((c) => c === chunkId).length;
  }
}

/** A cache whose loads resolve at once from `chunks`, counting them. */
function instantCache(maxBytes: number, chunks: Record<string, Buffer>) {
  const calls: string[] = [];
  const cache = new RecordLookupCache(maxBytes, (chunkId) => {
    calls.push(chunkId);
    const bytes = chunks[chunkId];
    return bytes ? Promise.resolve(bytes) : Promise.reject(new Error(`no chunk ${chunkId}`));
  });
  const loads = (chunkId: string): number => calls.filter((c) => c === chunkId).length;
  return { cache, loads };
}

/** Three chunks of equal cost, and that cost. */
function threeChunks() {
  const chunks = {
    A: ndjson([
      { id: 1, v: 'a' },
      { id: 2, v: 'a' },
    ]),
    B: ndjson([
      { id: 1, v: 'b' },
      { id: 2, v: 'b' },
    ]),
    C: ndjson([
      { id: 1, v: 'c' },
      { id: 2, v: 'c' },
    ]),
  };
  const cost = ChunkRecords.index(chunks.A, 'id').costBytes;
  expect(ChunkRecords.index(chunks.C, 'id').costBytes).toBe(cost);
  return { chunks, cost };
}

describe('ChunkRecords.build', () => {
  it('gives the event loop a turn between slices of lines, and finds what index() finds', async () => {
    const lines = Array.from({ length: 100 }, (_, i) => JSON.stringify({ id: i, v: `r${i}` }));
    const bytes = Buffer.from(lines.join('\n') + '\n');
    let immediateRan = false;
    setImmediate(() => (immediateRan = true));
    let ranBeforeDone: boolean | undefined;
    const built = await ChunkRecords.build(bytes, 'id', 10).then((r) => {
      ranBeforeDone = immediateRan;
      return r;
    });
    expect(ranBeforeDone, 'a heartbeat timer could have run meanwhile').toBe(true);
    const direct = ChunkRecords.index(bytes, 'id');
    for (const id of [0, 42, 99, 100])
      expect(built.find(id)?.toString()).toBe(direct.find(id)?.toString());
  });
});

describe('RecordLookupCache', () => {
  it('reads a chunk once and answers later queries from memory', async () => {
    const { chunks, cost } = threeChunks();
    const { cache, loads } = instantCache(10 * cost, chunks);
    expect(text(await cache.find('A', 'id', 1))).toBe('{"id":1,"v":"a"}');
    expect(text(await cache.find('A', 'id', 2))).toBe('{"id":2,"v":"a"}');
    expect(await cache.find('A', 'id', 3)).toBeUndefined();
    expect(await cache.find('A', 'id', '1')).toBeUndefined();
    expect(loads('A')).toBe(1);
    expect(cache.size).toBe(1);
  });

  it('reads a chunk once when several first queries arrive together', async () => {
    const loads = new Loads();
    const cache = new RecordLookupCache(1 << 20, loads.load);
    const queries = [cache.find('A', 'id', 1), cache.find('A', 'id', 2), cache.find('A', 'id', 9)];
    expect(loads.calls).toEqual(['A']);
    loads.settle('A', ndjson([{ id: 1 }, { id: 2 }]));
    expect((await Promise.all(queries)).map(text)).toEqual(['{"id":1}', '{"id":2}', undefined]);
    expect(loads.calls).toEqual(['A']);
  });

  it('does not keep a failed read: every waiting query fails, and the next one reads again', async () => {
    const loads = new Loads();
    const cache = new RecordLookupCache(1 << 20, loads.load);
    const first = cache.find('A', 'id', 1);
    const second = cache.find('A', 'id', 1);
    loads.settle('A', new Error('checksum mismatch'));
    await expect(first).rejects.toThrow('checksum mismatch');
    await expect(second).rejects.toThrow('checksum mismatch');
    expect(cache.size).toBe(0);
    const retry = cache.find('A', 'id', 1);
    expect(loads.count('A')).toBe(2);
    loads.settle('A', ndjson([{ id: 1 }]));
    expect(text(await retry)).toBe('{"id":1}');
    expect(text(await cache.find('A', 'id', 1))).toBe('{"id":1}');
    expect(loads.count('A')).toBe(2);
  });

  it('retries a chunk whose read rejected, right after the rejection is seen', async () => {
    let fail = true;
    let calls = 0;
    const cache = new RecordLookupCache(1 << 20, () => {
      calls++;
      return fail ? Promise.reject(new Error('no copy')) : Promise.resolve(ndjson([{ id: 'k' }]));
    });
    await expect(cache.find('A', 'id', 'k')).rejects.toThrow('no copy');
    fail = false;
    expect(text(await cache.find('A', 'id', 'k'))).toBe('{"id":"k"}');
    expect(calls).toBe(2);
  });

  it('evicts the least recently used chunk when over its budget', async () => {
    const { chunks, cost } = threeChunks();
    const { cache, loads } = instantCache(2 * cost, chunks);
    await cache.find('A', 'id', 1);
    await cache.find('B', 'id', 1);
    await cache.find('A', 'id', 2); // A is now more recent than B
    expect(text(await cache.find('C', 'id', 1))).toBe('{"id":1,"v":"c"}');
    expect(cache.size).toBe(2);
    await cache.find('A', 'id', 1);
    await cache.find('C', 'id', 2);
    expect([loads('A'), loads('B'), loads('C')]).toEqual([1, 1, 1]);
    // B was dropped: asking it again reads it again (and drops A, now the least recent).
    expect(text(await cache.find('B', 'id', 2))).toBe('{"id":2,"v":"b"}');
    expect(loads('B')).toBe(2);
    await cache.find('C', 'id', 1);
    expect(loads('C')).toBe(1);
    await cache.find('A', 'id', 1);
    expect(loads('A')).toBe(2);
  });

  it('keeps every chunk that fits in its budget', async () => {
    const { chunks, cost } = threeChunks();
    const { cache, loads } = instantCache(3 * cost, chunks);
    for (let round = 0; round < 3; round++)
      for (const id of ['A', 'B', 'C']) await cache.find(id, 'id', 1);
    expect([loads('A'), loads('B'), loads('C')]).toEqual([1, 1, 1]);
    expect(cache.size).toBe(3);
  });

  it('keeps one chunk larger than the whole budget, so repeated queries of it are still fast', async () => {
    const { chunks, cost } = threeChunks();
    const { cache, loads } = instantCache(cost - 1, chunks);
    await cache.find('A', 'id', 1);
    await cache.find('A', 'id', 2);
    expect(loads('A')).toBe(1);
    await cache.find('B', 'id', 1);
    expect(cache.size).toBe(1);
  });

  it('forgets a chunk on request: the next query reads it again, and its memory is freed', async () => {
    const { chunks, cost } = threeChunks();
    const { cache, loads } = instantCache(2 * cost, chunks);
    await cache.find('A', 'id', 1);
    await cache.find('B', 'id', 1);
    cache.forget('A');
    cache.forget('nothing'); // unknown: no effect
    expect(cache.size).toBe(1);
    // A's cost was given back: C fits beside B without evicting it.
    await cache.find('C', 'id', 1);
    await cache.find('B', 'id', 1);
    expect(loads('B')).toBe(1);
    await cache.find('A', 'id', 1);
    expect(loads('A')).toBe(2);
  });

  it('forgetting a chunk while it loads answers the waiting query but keeps nothing', async () => {
    const { chunks, cost } = threeChunks();
    const loads = new Loads();
    const cache = new RecordLookupCache(2 * cost, loads.load);
    const waiting = cache.find('A', 'id', 1);
    cache.forget('A');
    loads.settle('A', chunks.A);
    expect(text(await waiting)).toBe('{"id":1,"v":"a"}');
    expect(cache.size).toBe(0);
    // A's cost was never counted: B and C both fit.
    const b = cache.find('B', 'id', 1);
    loads.settle('B', chunks.B);
    await b;
    const c = cache.find('C', 'id', 1);
    loads.settle('C', chunks.C);
    await c;
    expect(cache.size).toBe(2);
    const again = cache.find('A', 'id', 1);
    expect(loads.count('A')).toBe(2);
    loads.settle('A', chunks.A);
    await again;
  });

  it('indexes a chunk again when asked with another ID field', async () => {
    const chunk = ndjson([{ id: 1, sku: 'X' }]);
    const { cache, loads } = instantCache(1 << 20, { A: chunk });
    expect(text(await cache.find('A', 'id', 1))).toBe('{"id":1,"sku":"X"}');
    expect(text(await cache.find('A', 'sku', 'X'))).toBe('{"id":1,"sku":"X"}');
    expect(await cache.find('A', 'sku', 1)).toBeUndefined();
    expect(loads('A')).toBe(2);
    expect(cache.size).toBe(1);
  });
});
