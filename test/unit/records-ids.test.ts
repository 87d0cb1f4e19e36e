/**
 * Record IDs. Goal: the master index of a records dataset picks 'ranges' exactly when every ID is
 * a number and they strictly increase through the dataset, else 'hashed'; candidateChunks always
 * names the chunk that holds a present ID (only it, for ranges) and nothing, or only chunks with a
 * colliding hash, for an absent one; numbers and strings are different IDs (42 is not "42")
 * everywhere; IdRegistry reports the first repeated ID of an upload; idCandidates reads a
 * command-line argument as the IDs a user means; idHash never changes (indexes outlive the code).
 * Method: hand-built chunks for the rules, property tests over random datasets from a
 * SeededRandom, and golden hash values. Each property test prints its seed in its name;
 * MEMFLOW_SEED=<seed> replays it.
 */
import { describe, expect, it } from 'vitest';
import {
  buildRecordsIndex,
  candidateChunks,
  describeId,
  IdRegistry,
  idCandidates,
  idHash,
  isRecordId,
  MAX_ID_LENGTH,
  summarizeChunk,
  type RecordId,
  type RecordsIndex,
} from '../../src/records/record-ids.js';
import { SeededRandom, seedFromEnv } from '../../src/runtime/random.js';

const seed = seedFromEnv(process.env);

/** The index of a dataset given as its chunks' IDs, in order. */
function indexOf(chunks: readonly (readonly RecordId[])[], idField = 'id'): RecordsIndex {
  let first = 0;
  return buildRecordsIndex(
    idField,
    chunks.map((ids) => {
      const summary = summarizeChunk(first, ids);
      first += ids.length;
      return summary;
    }),
  );
}

/** A chunk's hashes as numbers, in the order stored (little-endian uint32). */
function hashesOf(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: bytes.byteLength / 4 }, (_, i) => view.getUint32(i * 4, true));
}

/** Splits `ids` into chunks of random sizes (1 to maxSize). */
function randomChunks<T>(random: SeededRandom, ids: readonly T[], maxSize: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < ids.length;) {
    const n = 1 + random.int(maxSize);
    out.push(ids.slice(i, i + n));
    i += n;
  }
  return out;
}

describe('summarizeChunk', () => {
  it('keeps the first and last ID of numbers in strictly increasing order', () => {
    const { ids } = summarizeChunk(10, [3, 7, 7.5, 100]);
    expect(ids).toEqual({ first: 10, count: 4, min: 3, max: 100 });
  });

  it('keeps no range for strings, unsorted, repeated or mixed IDs, or no IDs', () => {
    for (const list of [['a', 'b'], [3, 2], [1, 1], [1, '2'], ['1', 2], []] as RecordId[][]) {
      const { ids } = summarizeChunk(0, list);
      expect(ids.min, JSON.stringify(list)).toBeUndefined();
      expect(ids.max, JSON.stringify(list)).toBeUndefined();
      expect(ids.count).toBe(list.length);
    }
  });

  it('keeps the sorted hash of every ID, 4 bytes each', () => {
    const list: RecordId[] = ['b', 42, 'a', '42', -1];
    const { hashes } = summarizeChunk(0, list);
    expect(hashes.byteLength).toBe(4 * list.length);
    const stored = hashesOf(hashes);
    expect(stored).toEqual(list.map(idHash).sort((x, y) => x - y));
  });
});

describe('buildRecordsIndex: which lookup', () => {
  it("uses 'ranges' for numeric IDs increasing through the whole dataset", () => {
    const index = indexOf([[1, 2, 5], [6], [10, 20.5, 1000]], 'key');
    expect(index).toEqual({
      idField: 'key',
      count: 7,
      lookup: 'ranges',
      chunks: [
        { first: 0, count: 3, min: 1, max: 5 },
        { first: 3, count: 1, min: 6, max: 6 },
        { first: 4, count: 3, min: 10, max: 1000 },
      ],
    });
  });

  it("uses 'ranges' for negative and fractional IDs in order", () => {
    expect(indexOf([[-5, -4.5], [-0.25, 0], [0.5]]).lookup).toBe('ranges');
  });

  it.each<[string, RecordId[][]]>([
    ['string IDs', [['a', 'b'], ['c']]],
    ['numeric strings', [['1', '2'], ['3']]],
    ['unsorted numbers inside a chunk', [[1, 3, 2], [4]]],
    [
      'chunks each sorted but out of order',
      [
        [5, 6],
        [1, 2],
      ],
    ],
    [
      'chunks that overlap',
      [
        [1, 5],
        [4, 8],
      ],
    ],
    [
      'the same number ending one chunk and starting the next',
      [
        [1, 10],
        [10, 11],
      ],
    ],
    ['a repeated number inside a chunk', [[1, 1, 2]]],
    ['numbers with one string', [[1, 2], [3, '4'], [5]]],
    ['a string in the last chunk only', [[1], [2], ['3']]],
    ['mixed types', [[1, 'a', 2]]],
  ])("uses 'hashed' for %s", (_what, chunks) => {
    const index = indexOf(chunks);
    expect(index.lookup).toBe('hashed');
    expect(index.count).toBe(chunks.flat().length);
    for (const [i, c] of index.chunks.entries()) {
      expect(c.min).toBeUndefined();
      expect(c.max).toBeUndefined();
      expect(c.count).toBe(chunks[i]!.length);
      expect(hashesOf(c.hashes!)).toEqual(chunks[i]!.map(idHash).sort((x, y) => x - y));
    }
  });

  it('keeps no hashes in a ranges index (it costs 16 bytes a chunk)', () => {
    const index = indexOf([
      [1, 2],
      [3, 4],
    ]);
    for (const c of index.chunks) expect(c.hashes).toBeUndefined();
  });

  it('finds nothing in a dataset of no chunks', () => {
    const index = buildRecordsIndex('id', []);
    expect(index.count).toBe(0);
    expect(index.chunks).toEqual([]);
    expect(candidateChunks(index, 1)).toEqual([]);
    expect(candidateChunks(index, 'a')).toEqual([]);
  });
});

describe('candidateChunks', () => {
  it('finds the one chunk whose range holds a numeric ID, and nothing between or outside', () => {
    const index = indexOf([[1, 3, 5], [10, 12], [20], [30, 40]]);
    expect(index.lookup).toBe('ranges');
    const expected: [number, number[]][] = [
      [1, [0]],
      [5, [0]],
      [3, [0]],
      [4, [0]], // inside the range: the data rank says it is not there
      [10, [1]],
      [12, [1]],
      [20, [2]],
      [30, [3]],
      [40, [3]],
      [35.5, [3]],
      [0, []],
      [-1, []],
      [6, []],
      [12.5, []],
      [19, []],
      [41, []],
      [1e300, []],
    ];
    for (const [id, chunks] of expected)
      expect(candidateChunks(index, id), `id ${id}`).toEqual(chunks);
  });

  it('does not find the string "42" in a ranges index that holds the number 42', () => {
    const index = indexOf([[41, 42, 43]]);
    expect(candidateChunks(index, 42)).toEqual([0]);
    expect(candidateChunks(index, '42')).toEqual([]);
  });

  it('tells 42 from "42" in a hashed index', () => {
    expect(idHash(42)).not.toBe(idHash('42'));
    const index = indexOf([['a', 42], ['b'], ['42', 'c']]);
    expect(index.lookup).toBe('hashed');
    expect(candidateChunks(index, 42)).toEqual([0]);
    expect(candidateChunks(index, '42')).toEqual([2]);
  });

  it('still finds IDs when the hashes come back from storage at an unaligned offset', () => {
    const index = indexOf([['a', 'b'], ['c']]);
    for (const c of index.chunks) {
      const copy = new Uint8Array(c.hashes!.byteLength + 3);
      copy.set(c.hashes!, 3);
      c.hashes = copy.subarray(3);
    }
    expect(candidateChunks(index, 'a')).toEqual([0]);
    expect(candidateChunks(index, 'c')).toEqual([1]);
    expect(candidateChunks(index, 'd')).toEqual([]);
  });
});

describe(`candidateChunks over random datasets (seed ${seed}; replay with MEMFLOW_SEED=${seed})`, () => {
  it('with sorted numeric IDs: every present ID gives exactly its chunk, an absent one none', () => {
    const random = new SeededRandom(seed);
    const ids: number[] = [];
    let next = -1000;
    for (let i = 0; i < 10_000; i++) {
      next += 1 + random.int(3) + (random.int(2) === 0 ? 0.5 : 0);
      ids.push(next);
    }
    const chunks = randomChunks(random, ids, 300);
    const index = indexOf(chunks);
    expect(index.lookup, `seed ${seed}`).toBe('ranges');
    const chunkOf = new Map<number, number>();
    chunks.forEach((c, k) => c.forEach((id) => chunkOf.set(id, k)));
    for (const id of ids)
      expect(candidateChunks(index, id), `seed ${seed} id ${id}`).toEqual([chunkOf.get(id)]);
    const present = new Set(ids);
    for (let i = 0; i < 2000; i++) {
      const id = -1100 + random.int(32_000) / 4;
      if (present.has(id)) continue;
      const got = candidateChunks(index, id);
      // Absent: no chunk, or the one chunk whose range it falls in (which then says no).
      expect(got.length, `seed ${seed} id ${id}`).toBeLessThanOrEqual(1);
      for (const k of got) {
        expect(index.chunks[k]!.min!, `seed ${seed} id ${id}`).toBeLessThan(id);
        expect(index.chunks[k]!.max!, `seed ${seed} id ${id}`).toBeGreaterThan(id);
      }
      if (id < ids[0]! || id > ids[ids.length - 1]!) expect(got).toEqual([]);
      expect(candidateChunks(index, String(id))).toEqual([]);
    }
  });

  it('with string and unsorted IDs: the true chunk is always a candidate, and any other candidate shares its hash', () => {
    const random = new SeededRandom(seed);
    const ids: RecordId[] = [];
    const seen = new Set<string>();
    while (ids.length < 10_000) {
      const id: RecordId =
        random.int(2) === 0 ? random.int(1_000_000) : `user-${random.int(1_000_000).toString(36)}`;
      const key = `${typeof id}:${id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      ids.push(id);
    }
    const chunks = randomChunks(random, ids, 400);
    const index = indexOf(chunks);
    expect(index.lookup, `seed ${seed}`).toBe('hashed');
    const hashesIn = chunks.map((c) => new Set(c.map(idHash)));
    const expectedFor = (id: RecordId): number[] =>
      hashesIn.flatMap((set, k) => (set.has(idHash(id)) ? [k] : []));
    chunks.forEach((chunk, k) => {
      for (const id of chunk) {
        const got = candidateChunks(index, id);
        expect(got, `seed ${seed} id ${JSON.stringify(id)}`).toContain(k);
        expect(got, `seed ${seed} id ${JSON.stringify(id)}`).toEqual(expectedFor(id));
      }
    });
    for (let i = 0; i < 2000; i++) {
      const id: RecordId = random.int(2) === 0 ? -1 - random.int(1000) : `absent-${i}`;
      expect(candidateChunks(index, id), `seed ${seed} id ${JSON.stringify(id)}`).toEqual(
        expectedFor(id),
      );
    }
  });
});

describe('IdRegistry', () => {
  it('accepts distinct IDs across chunks', () => {
    const registry = new IdRegistry();
    expect(registry.add(0, [1, 2, 'a'])).toBeUndefined();
    expect(registry.add(3, [3, 'b', 'c'])).toBeUndefined();
  });

  it('reports a repeated ID inside a chunk with both record positions', () => {
    expect(new IdRegistry().add(10, ['a', 'b', 'a'])).toEqual({ id: 'a', record: 12, earlier: 10 });
  });

  it('reports a repeated ID across chunks', () => {
    const registry = new IdRegistry();
    expect(registry.add(0, [5, 6, 7])).toBeUndefined();
    expect(registry.add(3, [8, 6])).toEqual({ id: 6, record: 4, earlier: 1 });
  });

  it('reports the first repetition in the document when there are several', () => {
    const registry = new IdRegistry();
    expect(registry.add(0, ['x', 'y', 'z'])).toBeUndefined();
    expect(registry.add(3, ['w', 'z', 'x', 'w'])).toEqual({ id: 'z', record: 4, earlier: 2 });
  });

  it('keeps numbers and strings apart: 42 and "42" are both allowed', () => {
    const registry = new IdRegistry();
    expect(registry.add(0, [42, '42', 1, '1.0', '01'])).toBeUndefined();
    expect(registry.add(5, ['42'])).toEqual({ id: '42', record: 5, earlier: 1 });
    expect(registry.add(6, [42])).toEqual({ id: 42, record: 6, earlier: 0 });
  });

  it('treats numbers that are equal as the same ID (1 and 1.0 read alike, and so do 0 and -0)', () => {
    expect(new IdRegistry().add(0, [1, JSON.parse('1.0') as number])).toEqual({
      id: 1,
      record: 1,
      earlier: 0,
    });
    expect(new IdRegistry().add(0, [0, -0])).toMatchObject({ record: 1, earlier: 0 });
  });
});

describe(`IdRegistry over random uploads (seed ${seed}; replay with MEMFLOW_SEED=${seed})`, () => {
  /** The first repeated ID, by the definition: the first record whose ID an earlier one has. */
  function firstDuplicate(ids: readonly RecordId[]) {
    const seen = new Map<string, number>();
    for (const [record, id] of ids.entries()) {
      const key = `${typeof id}:${String(id)}`;
      const earlier = seen.get(key);
      if (earlier !== undefined) return { id, record, earlier };
      seen.set(key, record);
    }
    return undefined;
  }

  it('reports the first repeated ID of the document, in chunks of any size', () => {
    const random = new SeededRandom(seed);
    for (let trial = 0; trial < 300; trial++) {
      // A long increasing run of numbers (the common case), then anything: more numbers in or out
      // of order, numeric strings, repeats of early, late or string IDs.
      const ids: RecordId[] = [];
      let next = random.int(10) - 5;
      const run = random.int(3000);
      for (let i = 0; i < run; i++) ids.push((next += 1 + random.int(3)));
      const tail = random.int(50);
      for (let i = 0; i < tail; i++) {
        const kind = random.int(4);
        if (kind === 0 && ids.length > 0) ids.push(ids[random.int(ids.length)]!);
        else if (kind === 1) ids.push(String(random.int(next + 10)));
        else ids.push(random.int(next + 10));
      }
      const chunks = randomChunks(random, ids, 1 + random.int(700));
      const registry = new IdRegistry();
      let got: ReturnType<IdRegistry['add']>;
      let first = 0;
      for (const chunk of chunks) {
        got = registry.add(first, chunk);
        if (got) break;
        first += chunk.length;
      }
      expect(got, `seed ${seed} trial ${trial}`).toEqual(firstDuplicate(ids));
    }
  });

  it('finds a repeat of an early ID after thousands of increasing ones, at the right position', () => {
    const registry = new IdRegistry();
    const ids = Array.from({ length: 5000 }, (_, i) => 10 + i * 2);
    expect(registry.add(100, ids.slice(0, 2500))).toBeUndefined();
    expect(registry.add(2600, ids.slice(2500))).toBeUndefined();
    expect(registry.add(5100, ['12', 11, 12])).toEqual({ id: 12, record: 5102, earlier: 101 });
  });
});

describe('idCandidates', () => {
  it.each<[string, RecordId[]]>([
    ['42', [42, '42']],
    ['-3', [-3, '-3']],
    ['0', [0, '0']],
    ['1.5', [1.5, '1.5']],
    ['1.5e3', [1500, '1.5e3']],
    ['2E-2', [0.02, '2E-2']],
    ['"42"', ['42']],
    ['"hello world"', ['hello world']],
    ['"a\\"b"', ['a"b']],
    ['"\\u00e9"', ['é']],
    ['""', ['']],
    ['abc', ['abc']],
    ['user-7', ['user-7']],
    ['007', ['007']],
    ['+1', ['+1']],
    ['1.', ['1.']],
    ['.5', ['.5']],
    ['0x10', ['0x10']],
    [' 42', [' 42']],
    ['1e400', ['1e400']],
    ['"unterminated', ['"unterminated']],
    ['"bad \\x escape"', ['"bad \\x escape"']],
    ['"a"b"', ['"a"b"']],
    ['', ['']],
  ])('reads %j as %j', (text, expected) => {
    expect(idCandidates(text)).toEqual(expected);
  });

  it('reads -0 as the number zero first, then the text', () => {
    const [n, s] = idCandidates('-0');
    expect(n).toBe(-0);
    expect(s).toBe('-0');
  });
});

describe('idHash', () => {
  it('never changes: indexes written by one version are read by the next', () => {
    expect(idHash(42)).toBe(1825951255);
    expect(idHash('42')).toBe(2175638544);
    expect(idHash('')).toBe(4127999362);
    expect(idHash(0)).toBe(87416211);
    expect(idHash('abc')).toBe(2602386598);
    expect(idHash('日本🎉')).toBe(3915443188);
    expect(idHash(-1.5)).toBe(3713176386);
    expect(idHash(1e21)).toBe(3321540193);
  });

  it('is an unsigned 32-bit integer', () => {
    for (const id of [0, 1, -1, 'a', 'zzzz', 'é'.repeat(100), 123456789.125]) {
      const h = idHash(id);
      expect(Number.isInteger(h)).toBe(true);
      expect(h).toBeGreaterThanOrEqual(0);
      expect(h).toBeLessThan(2 ** 32);
    }
  });

  it('gives the same hash to numbers that are equal however they were written', () => {
    expect(idHash(JSON.parse('1.0') as number)).toBe(idHash(1));
    expect(idHash(JSON.parse('1e2') as number)).toBe(idHash(100));
    expect(idHash(-0)).toBe(idHash(0));
  });
});

describe('isRecordId and describeId', () => {
  it('accepts strings up to the longest ID and finite numbers, nothing else', () => {
    for (const ok of ['', 'a', 'x'.repeat(MAX_ID_LENGTH), 0, -1.5, Number.MAX_SAFE_INTEGER])
      expect(isRecordId(ok), JSON.stringify(ok)).toBe(true);
    for (const bad of [
      'x'.repeat(MAX_ID_LENGTH + 1),
      Number.NaN,
      Infinity,
      -Infinity,
      null,
      undefined,
      true,
      {},
      [1],
      1n,
    ])
      expect(isRecordId(bad), typeof bad).toBe(false);
  });

  it('writes an ID as JSON, cut short when long', () => {
    expect(describeId(42)).toBe('42');
    expect(describeId(-1.5)).toBe('-1.5');
    expect(describeId('42')).toBe('"42"');
    expect(describeId('say "hi"')).toBe('"say \\"hi\\""');
    const long = describeId('x'.repeat(200));
    expect(long).toBe(`"${'x'.repeat(76)}…`);
    expect(long.length).toBe(78);
    const exactly80 = `"${'y'.repeat(78)}"`;
    expect(describeId('y'.repeat(78))).toBe(exactly80);
  });
});
