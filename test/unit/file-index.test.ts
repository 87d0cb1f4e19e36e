/**
 * The master index in memory. Goal: FileIndex.apply follows its contract for every record
 * (commit replaces and returns the old version, delete removes, set-copies updates only the
 * current version, version numbers are never reused), list() is in code-point order, and
 * snapshot() rebuilds the same state. Method: small hand-built histories; validateIndexRecord is
 * checked against well-formed and malformed records.
 */
import type { RecordsIndex } from '../../src/records/record-ids.js';
import { describe, expect, it } from 'vitest';
import { isStoreError } from '../../src/store/errors.js';
import {
  FileIndex,
  compareCodePoints,
  validateIndexRecord,
  type FileVersion,
  type IndexRecord,
} from '../../src/store/file-index.js';

function version(name: string, v: number, chunkCount = 2): FileVersion {
  return {
    name,
    version: v,
    sizeBytes: chunkCount * 10,
    sha256: 'ab'.repeat(32),
    createdMs: 1_700_000_000_000,
    modifiedMs: 1_700_000_000_000 + v,
    chunkSizeBytes: 10,
    replicas: 2,
    chunks: Array.from({ length: chunkCount }, (_, index) => ({
      index,
      id: `u${name}${v}.${index}`,
      sizeBytes: 10,
      checksum: 'cd'.repeat(32),
      ranks: [1, 2],
    })),
  };
}

const commit = (file: FileVersion): IndexRecord => ({ op: 'commit', file });
const del = (name: string): IndexRecord => ({ op: 'delete', name, atMs: 5 });

/** The observable state of an index, for comparing two of them. */
function state(index: FileIndex, names: string[]): unknown {
  return {
    list: index.list(),
    size: index.size(),
    chunks: [...index.allChunks()].map(({ file, chunk }) => `${file.name}:${chunk.id}`).sort(),
    next: names.map((n) => index.nextVersion(n)),
  };
}

describe('FileIndex', () => {
  it('commits a new name: get, list, size, allChunks and nextVersion see it', () => {
    const index = new FileIndex();
    expect(index.nextVersion('a')).toBe(1);
    expect(index.apply(commit(version('a', 1)))).toEqual({});
    expect(index.get('a')?.version).toBe(1);
    expect(index.size()).toBe(1);
    expect(index.chunks()).toBe(2);
    expect([...index.allChunks()].map((c) => c.chunk.id)).toEqual(['ua1.0', 'ua1.1']);
    expect(index.nextVersion('a')).toBe(2);
    expect(index.get('b')).toBeUndefined();
  });

  it('a commit of a newer version replaces the old one and returns it', () => {
    const index = new FileIndex();
    const v1 = version('a', 1);
    index.apply(commit(v1));
    const result = index.apply(commit(version('a', 2, 3)));
    expect(result.replaced).toBe(v1);
    expect(index.get('a')?.version).toBe(2);
    expect(index.size()).toBe(1);
    expect(index.chunks()).toBe(3);
  });

  it('ignores a commit that is not newer than the current version', () => {
    const index = new FileIndex();
    index.apply(commit(version('a', 3)));
    expect(index.apply(commit(version('a', 2)))).toEqual({ ignored: true });
    expect(index.apply(commit(version('a', 3)))).toEqual({ ignored: true });
    expect(index.get('a')?.version).toBe(3);
  });

  it('delete removes the name and returns the removed version; deleting again is ignored', () => {
    const index = new FileIndex();
    const v1 = version('a', 1);
    index.apply(commit(v1));
    index.apply(commit(version('b', 1)));
    expect(index.apply(del('a'))).toEqual({ removed: v1 });
    expect(index.get('a')).toBeUndefined();
    expect(index.size()).toBe(1);
    expect(index.chunks()).toBe(2);
    expect(index.list().map((f) => f.name)).toEqual(['b']);
    expect(index.apply(del('a'))).toEqual({ ignored: true });
    expect(index.apply(del('never'))).toEqual({ ignored: true });
  });

  it('keeps counting versions across a delete', () => {
    const index = new FileIndex();
    index.apply(commit(version('a', 1)));
    index.apply(commit(version('a', 2)));
    index.apply(del('a'));
    expect(index.nextVersion('a')).toBe(3);
    index.apply(commit(version('a', 3)));
    expect(index.get('a')?.version).toBe(3);
  });

  it('set-copies updates one chunk of the current version, without mutating the old object', () => {
    const index = new FileIndex();
    const v1 = version('a', 1);
    index.apply(commit(v1));
    const ranks = [3, 4];
    expect(index.apply({ op: 'set-copies', name: 'a', version: 1, index: 1, ranks })).toEqual({});
    ranks.push(99); // the index keeps its own copy
    expect(index.get('a')?.chunks[1]?.ranks).toEqual([3, 4]);
    expect(index.get('a')?.chunks[0]?.ranks).toEqual([1, 2]);
    expect(v1.chunks[1]?.ranks).toEqual([1, 2]);
    expect([...index.allChunks()].map((c) => c.chunk.ranks)).toEqual([
      [1, 2],
      [3, 4],
    ]);
  });

  it('ignores set-copies for a stale version, a deleted name or a chunk that does not exist', () => {
    const index = new FileIndex();
    index.apply(commit(version('a', 1)));
    index.apply(commit(version('a', 2)));
    const stale: IndexRecord = { op: 'set-copies', name: 'a', version: 1, index: 0, ranks: [9] };
    expect(index.apply(stale)).toEqual({ ignored: true });
    expect(index.get('a')?.chunks[0]?.ranks).toEqual([1, 2]);
    expect(index.apply({ op: 'set-copies', name: 'a', version: 2, index: 7, ranks: [9] })).toEqual({
      ignored: true,
    });
    index.apply(del('a'));
    expect(index.apply({ op: 'set-copies', name: 'a', version: 2, index: 0, ranks: [9] })).toEqual({
      ignored: true,
    });
  });

  it('lists by name in code-point order (= UTF-8 byte order), not UTF-16 order', () => {
    const index = new FileIndex();
    // U+FF5E (one UTF-16 unit, 0xFF5E) sorts before U+1F600 (surrogates 0xD83D 0xDE00) by code
    // point, though after it by UTF-16 unit.
    const names = ['b', 'B', 'a', '😀', '～', 'é', 'a.txt', 'a b', '10', '9'];
    for (const n of names) index.apply(commit(version(n, 1)));
    const expected = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect(index.list().map((f) => f.name)).toEqual(expected);
    expect(expected.indexOf('～')).toBeLessThan(expected.indexOf('😀'));
    // The cached order follows later changes.
    index.apply(del('a'));
    index.apply(commit(version('0', 1)));
    expect(index.list().map((f) => f.name)).toEqual(['0', ...expected.filter((n) => n !== 'a')]);
  });

  it('snapshot rebuilds the same state, including version counts of deleted names', () => {
    const index = new FileIndex();
    const history: IndexRecord[] = [
      commit(version('keep', 1)),
      commit(version('keep', 2)),
      commit(version('gone', 1)),
      commit(version('gone', 4)),
      del('gone'),
      commit(version('moved', 1)),
      { op: 'set-copies', name: 'moved', version: 1, index: 0, ranks: [5, 6] },
    ];
    for (const r of history) index.apply(r);
    const snapshot = index.snapshot();
    expect(snapshot.map((r) => r.op)).toEqual(['version-floor', 'commit', 'commit']);
    const rebuilt = new FileIndex();
    for (const r of snapshot) rebuilt.apply(r);
    const names = ['keep', 'gone', 'moved', 'other'];
    expect(state(rebuilt, names)).toEqual(state(index, names));
    expect(rebuilt.nextVersion('gone')).toBe(5);
    expect(rebuilt.get('moved')?.chunks[0]?.ranks).toEqual([5, 6]);
  });

  it('replaying records whose effect is already applied changes nothing (what compaction relies on)', () => {
    const history: IndexRecord[] = [
      commit(version('a', 1)),
      commit(version('b', 1)),
      del('a'),
      commit(version('a', 2)),
      commit(version('b', 2)),
      { op: 'set-copies', name: 'b', version: 2, index: 1, ranks: [7] },
      del('b'),
      commit(version('c', 1)),
    ];
    const names = ['a', 'b', 'c'];
    const full = new FileIndex();
    for (const r of history) full.apply(r);
    for (let cut = 0; cut <= history.length; cut++) {
      for (let from = 0; from <= cut; from++) {
        // State after history[0..cut), snapshotted, then history[from..] replayed on top.
        const prefix = new FileIndex();
        for (const r of history.slice(0, cut)) prefix.apply(r);
        const replayed = new FileIndex();
        for (const r of prefix.snapshot()) replayed.apply(r);
        for (const r of history.slice(from)) replayed.apply(r);
        expect(state(replayed, names), `cut ${cut} from ${from}`).toEqual(state(full, names));
      }
    }
  });
});

describe('compareCodePoints', () => {
  it('orders like UTF-8 bytes', () => {
    const words = ['', 'a', 'ab', 'b', '\uffff', '\u{10000}', '\u{10ffff}', '\ue000', 'z'];
    const bytes = [...words].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...words].sort(compareCodePoints)).toEqual(bytes);
  });
});

const rangedRecords: RecordsIndex = {
  idField: 'id',
  count: 4,
  lookup: 'ranges',
  chunks: [
    { first: 0, count: 2, min: 1, max: 2 },
    { first: 2, count: 2, min: 5, max: 9 },
  ],
};
const hashedRecords: RecordsIndex = {
  idField: 'key',
  count: 4,
  lookup: 'hashed',
  chunks: [
    { first: 0, count: 2, hashes: new Uint8Array(8) },
    { first: 2, count: 2, hashes: new Uint8Array(8) },
  ],
};

describe('validateIndexRecord', () => {
  it('accepts every kind of well-formed record', () => {
    const good: IndexRecord[] = [
      commit(version('a', 1)),
      commit(version('empty', 1, 0)),
      del('a'),
      { op: 'set-copies', name: 'a', version: 1, index: 0, ranks: [] },
      { op: 'version-floor', name: 'a', version: 9 },
      commit({ ...version('ranged', 1), records: rangedRecords }),
      commit({ ...version('hashed', 1), records: hashedRecords }),
    ];
    for (const r of good) expect(validateIndexRecord(r)).toBe(r);
  });

  it.each([
    ['a non-object', 'commit'],
    ['an unknown op', { op: 'rename', name: 'a' }],
    ['a commit without a file', { op: 'commit' }],
    ['a negative version', { op: 'commit', file: { ...version('a', 1), version: -1 } }],
    ['a fractional size', { op: 'commit', file: { ...version('a', 1), sizeBytes: 1.5 } }],
    [
      'chunks out of order',
      { op: 'commit', file: { ...version('a', 1), chunks: [...version('a', 1).chunks].reverse() } },
    ],
    ['a delete without atMs', { op: 'delete', name: 'a' }],
    [
      'set-copies with a non-list of ranks',
      { op: 'set-copies', name: 'a', version: 1, index: 0, ranks: 'x' },
    ],
    ['version-floor without a name', { op: 'version-floor', version: 1 }],
    [
      'a records index with an entry missing',
      { op: 'commit', file: { ...version('r', 1), records: { ...rangedRecords, chunks: [] } } },
    ],
    [
      'a ranged records index without a range',
      {
        op: 'commit',
        file: {
          ...version('r', 1),
          records: { ...rangedRecords, chunks: [{ first: 0, count: 2 }, rangedRecords.chunks[1]] },
        },
      },
    ],
    [
      'hashes that do not match the record count',
      {
        op: 'commit',
        file: {
          ...version('r', 1),
          records: {
            ...hashedRecords,
            chunks: [{ first: 0, count: 3, hashes: new Uint8Array(8) }, hashedRecords.chunks[1]],
          },
        },
      },
    ],
  ])('refuses %s with STORE_BAD_REQUEST', (_what, value) => {
    try {
      validateIndexRecord(value);
      expect.unreachable();
    } catch (err) {
      expect(isStoreError(err, 'STORE_BAD_REQUEST')).toBe(true);
      expect((err as Error).message).toMatch(/^malformed index record: /);
    }
  });
});
