/**
 * Record chunker and dataset reader. Goal: RecordChunker cuts records into chunks at record
 * boundaries (never over chunkSizeBytes, as full as the next record allows), writes each record
 * on one line with its raw CR/LF turned into spaces and every other byte as the user wrote it,
 * and reports each chunk's first record, IDs and source offsets; it refuses a record that is not
 * valid JSON or lacks a usable ID with a DatasetError at the record's offset. DatasetReader does
 * the same over a real file read in blocks. Method: hand-built records for the rules, property
 * tests over random datasets from a SeededRandom (the chunks' lines must parse back to the
 * original records), and temporary files for the reader. Each property test prints its seed in
 * its name; MEMFLOW_SEED=<seed> replays it.
 */
import { Buffer } from 'node:buffer';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DatasetReader } from '../../src/records/dataset-reader.js';
import { RecordChunker, type RecordsChunk } from '../../src/records/record-chunker.js';
import { MAX_ID_LENGTH } from '../../src/records/record-ids.js';
import {
  DatasetError,
  RecordScanner,
  type ScannedRecord,
} from '../../src/records/record-scanner.js';
import { SeededRandom, seedFromEnv } from '../../src/runtime/random.js';
import {
  LAYOUTS,
  randomRecords,
  writeDataset,
  type DatasetRecord,
  type IdKind,
} from './records-data.js';

const seed = seedFromEnv(process.env);

const rec = (text: string, index = 0, offset = 0): ScannedRecord => ({
  index,
  offset,
  bytes: Buffer.from(text, 'utf8'),
});

/** Adds the records in order; returns every chunk, the last partly filled one included. */
function chunkAll(chunker: RecordChunker, records: readonly ScannedRecord[]): RecordsChunk[] {
  const out: RecordsChunk[] = [];
  for (const r of records) {
    const full = chunker.add(r);
    if (full) out.push(full);
  }
  const last = chunker.finish();
  if (last) out.push(last);
  return out;
}

/** The lines of a chunk (each record's line, without its newline). */
function lines(chunk: RecordsChunk): string[] {
  const text = chunk.bytes.toString('utf8');
  expect(text.endsWith('\n')).toBe(true);
  return text.slice(0, -1).split('\n');
}

/** Scans a whole document and chunks it, as an upload does. */
function chunkDocument(doc: Buffer, chunkSizeBytes: number, idField = 'id') {
  const scanner = new RecordScanner(RecordChunker.maxRecordBytes(chunkSizeBytes));
  const scanned = scanner.push(doc);
  scanner.end();
  const chunks = chunkAll(new RecordChunker(chunkSizeBytes, idField), scanned);
  return { scanned, chunks };
}

function errorOf(fn: () => unknown): DatasetError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DatasetError);
    return err as DatasetError;
  }
  throw new Error('expected a DatasetError');
}

describe('RecordChunker: chunks', () => {
  it('writes records as NDJSON lines in order, with their IDs and source offsets', () => {
    const chunks = chunkAll(new RecordChunker(1024, 'id'), [
      rec('{"id":1,"a":"x"}', 0, 1),
      rec('{"a":"y","id":"two"}', 1, 18),
      rec('{"id":-3.5}', 2, 39),
    ]);
    expect(chunks).toHaveLength(1);
    expect(chunks[0]!.bytes.toString()).toBe(
      '{"id":1,"a":"x"}\n{"a":"y","id":"two"}\n{"id":-3.5}\n',
    );
    expect(chunks[0]!.firstRecord).toBe(0);
    expect(chunks[0]!.ids).toEqual([1, 'two', -3.5]);
    expect(chunks[0]!.offsets).toEqual([1, 18, 39]);
  });

  it('starts a new chunk before a record that does not fit, never inside one', () => {
    // Each line is 9 bytes: two fit in 20, the third does not.
    const chunker = new RecordChunker(20, 'id');
    expect(chunker.add(rec('{"id":1}', 0, 0))).toBeUndefined();
    expect(chunker.add(rec('{"id":2}', 1, 9))).toBeUndefined();
    const full = chunker.add(rec('{"id":3}', 2, 18));
    expect(full?.bytes.toString()).toBe('{"id":1}\n{"id":2}\n');
    expect(full).toMatchObject({ firstRecord: 0, ids: [1, 2], offsets: [0, 9] });
    const last = chunker.finish();
    expect(last?.bytes.toString()).toBe('{"id":3}\n');
    expect(last).toMatchObject({ firstRecord: 2, ids: [3], offsets: [18] });
  });

  it('fills a chunk to exactly its size, and cuts at one byte more', () => {
    const exact = chunkAll(new RecordChunker(18, 'id'), [rec('{"id":1}', 0), rec('{"id":2}', 1)]);
    expect(exact.map((c) => c.bytes.length)).toEqual([18]);
    const over = chunkAll(new RecordChunker(18, 'id'), [rec('{"id":1}', 0), rec('{"id":22}', 1)]);
    expect(over.map((c) => c.bytes.toString())).toEqual(['{"id":1}\n', '{"id":22}\n']);
  });

  it('holds a record of exactly chunkSize - 1 bytes alone in a chunk', () => {
    expect(RecordChunker.maxRecordBytes(32)).toBe(31);
    const big = `{"id":7,"pad":"${'x'.repeat(14)}"}`;
    expect(big.length).toBe(31);
    const chunks = chunkAll(new RecordChunker(32, 'id'), [
      rec('{"id":6}', 0),
      rec(big, 1, 9),
      rec('{"id":8}', 2, 41),
    ]);
    expect(chunks.map((c) => c.bytes.toString())).toEqual(['{"id":6}\n', `${big}\n`, '{"id":8}\n']);
    expect(chunks.map((c) => c.firstRecord)).toEqual([0, 1, 2]);
    expect(chunks[1]!.bytes.length).toBe(32);
  });

  it('refuses a record longer than chunkSize - 1 bytes rather than cutting it', () => {
    const chunker = new RecordChunker(20, 'id');
    expect(chunker.add(rec('{"id":1}', 0, 1))).toBeUndefined();
    const err = errorOf(() => chunker.add(rec('{"id":2,"p":"xxxxxxx"}', 1, 10)));
    expect(err.offset).toBe(10);
    expect(err.record).toBe(1);
    expect(err.message).toMatch(/record 2 \(at byte 10\) is larger than 19 bytes/);
    // Nothing of it went in: the chunk so far is intact, the next record still fits.
    expect(chunker.add(rec('{"id":3}', 2, 30))).toBeUndefined();
    expect(chunker.finish()?.bytes.toString()).toBe('{"id":1}\n{"id":3}\n');
  });

  it('has no last chunk when no record is waiting', () => {
    const chunker = new RecordChunker(20, 'id');
    expect(chunker.finish()).toBeUndefined();
    chunker.add(rec('{"id":1}', 0));
    chunker.add(rec('{"id":2}', 1));
    expect(chunker.add(rec('{"id":3,"x":12}', 2))).toBeDefined();
    expect(chunker.finish()?.ids).toEqual([3]);
    expect(chunker.finish()).toBeUndefined();
  });

  it('leaves a chunk it handed out untouched while it fills the next ones', () => {
    const chunker = new RecordChunker(20, 'id');
    const handed: { chunk: RecordsChunk; copy: Buffer }[] = [];
    for (let i = 0; i < 30; i++) {
      const full = chunker.add(rec(`{"id":${i}}`, i, i * 10));
      if (full) handed.push({ chunk: full, copy: Buffer.from(full.bytes) });
    }
    expect(handed.length).toBeGreaterThan(5);
    for (const { chunk, copy } of handed) expect(chunk.bytes.equals(copy)).toBe(true);
  });

  it('turns the raw CR and LF of a pretty-printed record into spaces; the line parses the same', () => {
    const value = { id: 5, name: 'line\nbreak', nested: { list: [1, 2, { deep: '\r\n' }] } };
    const text = JSON.stringify(value, null, 2).replace(/\n/g, '\r\n');
    const source = rec(text, 0, 0);
    const before = Buffer.from(source.bytes);
    const [chunk] = chunkAll(new RecordChunker(1024, 'id'), [source]);
    const [line] = lines(chunk!);
    expect(line).not.toMatch(/[\r\n]/);
    expect(JSON.parse(line!)).toEqual(value);
    // Same length: every raw CR and LF became one space, nothing else moved.
    expect(line).toBe(text.replace(/[\r\n]/g, ' '));
    // The escaped newlines inside strings are kept as written.
    expect(line).toContain('"line\\nbreak"');
    // The record handed in is not modified (it may be a view of the caller's buffer).
    expect(source.bytes.equals(before)).toBe(true);
  });

  it('keeps number spellings, key order, escapes and unicode exactly as written', () => {
    const text = '{"z":1.0,"id":1e2,"a":-0,"u":"\\u00e9é","big":12345678901234567890}';
    const [chunk] = chunkAll(new RecordChunker(1024, 'id'), [rec(text)]);
    expect(chunk!.bytes.toString('utf8')).toBe(`${text}\n`);
    expect(chunk!.ids).toEqual([100]);
  });

  it('reads the ID from the field it is told, and only from the top level', () => {
    const [chunk] = chunkAll(new RecordChunker(1024, 'key'), [
      rec('{"id":1,"key":"a"}', 0),
      rec('{"key":2,"id":"b"}', 1),
    ]);
    expect(chunk!.ids).toEqual(['a', 2]);
    const err = errorOf(() => new RecordChunker(1024, 'id').add(rec('{"a":{"id":1}}', 3, 70)));
    expect(err.message).toMatch(/record 4 \(at byte 70\) has no "id" field/);
  });

  it('accepts the largest IDs it can keep exactly', () => {
    const ids = [Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 0, 1.5, -2.25];
    const records = ids.map((id, i) => rec(JSON.stringify({ id }), i));
    records.push(rec(JSON.stringify({ id: 'x'.repeat(MAX_ID_LENGTH) }), ids.length));
    records.push(rec('{"id":""}', ids.length + 1));
    const [chunk] = chunkAll(new RecordChunker(1 << 16, 'id'), records);
    expect(chunk!.ids).toEqual([...ids, 'x'.repeat(MAX_ID_LENGTH), '']);
  });
});

describe('RecordChunker: refused records', () => {
  it.each([
    ['no ID field', '{"name":"x"}', /record 3 \(at byte 40\) has no "id" field/],
    [
      'a null ID',
      '{"id":null}',
      /record 3 \(at byte 40\) has a "id" that is null; an ID must be a string or a number/,
    ],
    [
      'a boolean ID',
      '{"id":true}',
      /has a "id" that is a boolean; an ID must be a string or a number/,
    ],
    [
      'an object ID',
      '{"id":{"n":1}}',
      /has a "id" that is an object; an ID must be a string or a number/,
    ],
    ['a list ID', '{"id":[1]}', /has a "id" that is a list; an ID must be a string or a number/],
    [
      'an integer just past 2^53',
      '{"id":9007199254740993}',
      /has the ID 9007199254740992, an integer beyond 2\^53 .* store such IDs as strings/,
    ],
    ['2^53 itself', '{"id":9007199254740992}', /an integer beyond 2\^53/],
    ['a negative integer past -2^53', '{"id":-9007199254740993}', /an integer beyond 2\^53/],
    ['a huge integer in exponent form', '{"id":1e300}', /an integer beyond 2\^53/],
    [
      'a number too large for a double',
      '{"id":1e400}',
      /record 3 \(at byte 40\) has a numeric "id" too large for a JSON number .* store such IDs as strings/,
    ],
    ['a too-large negative number', '{"id":-1e400}', /too large for a JSON number/],
    [
      'an ID longer than the longest',
      JSON.stringify({ id: 'x'.repeat(MAX_ID_LENGTH + 1) }),
      new RegExp(
        `record 3 \\(at byte 40\\) has a "id" of ${MAX_ID_LENGTH + 1} characters; an ID has at most ${MAX_ID_LENGTH}`,
      ),
    ],
    ['a record that is not valid JSON', '{"id":1,}', /record 3 is not valid JSON at byte 48: /],
  ])('refuses a record with %s, at the record', (_what, text, message) => {
    const err = errorOf(() => new RecordChunker(1 << 16, 'id').add(rec(text, 2, 40)));
    expect(err.message).toMatch(message);
    expect(err.record).toBe(2);
    // A record-level problem points at the record; a syntax error at its byte inside it.
    expect(err.offset).toBe(text === '{"id":1,}' ? 48 : 40);
  });

  it('names the field it was told to use', () => {
    const err = errorOf(() => new RecordChunker(1024, 'user_id').add(rec('{"id":1}', 0, 0)));
    expect(err.message).toBe('record 1 (at byte 0) has no "user_id" field');
    // A property every object inherits is not the record's own field.
    const inherited = errorOf(() => new RecordChunker(1024, 'constructor').add(rec('{"id":1}')));
    expect(inherited.message).toMatch(/has no "constructor" field/);
  });

  it('leaves the chunk being filled unchanged when it refuses a record', () => {
    const chunker = new RecordChunker(1024, 'id');
    chunker.add(rec('{"id":1}', 0, 0));
    errorOf(() => chunker.add(rec('{"id":null}', 1, 9)));
    chunker.add(rec('{"id":3}', 2, 21));
    const last = chunker.finish();
    expect(last?.bytes.toString()).toBe('{"id":1}\n{"id":3}\n');
    expect(last).toMatchObject({ firstRecord: 0, ids: [1, 3], offsets: [0, 21] });
  });
});

describe(`RecordChunker: random datasets (seed ${seed}; replay with MEMFLOW_SEED=${seed})`, () => {
  const kinds: IdKind[] = ['increasing', 'strings', 'unsorted', 'mixed'];

  it('gives back every record, in order, from its chunks, none over the chunk size, each as full as the next record allows', () => {
    const random = new SeededRandom(seed);
    for (let trial = 0; trial < 120; trial++) {
      const layout = LAYOUTS[trial % LAYOUTS.length]!;
      const kind = kinds[random.int(kinds.length)]!;
      const data = randomRecords(random, 1 + random.int(60), kind);
      const doc = writeDataset(data, layout);
      const longest = Math.max(...new RecordScanner(1 << 30).push(doc).map((r) => r.bytes.length));
      const chunkSizeBytes = longest + 1 + random.int(4 * longest);
      const context = `seed ${seed} trial ${trial} layout ${layout} ids ${kind} chunk ${chunkSizeBytes}`;
      const { scanned, chunks } = chunkDocument(doc, chunkSizeBytes);

      const all = chunks.flatMap(lines);
      expect(
        all.map((line) => JSON.parse(line) as unknown),
        context,
      ).toEqual(data);
      expect(Buffer.concat(chunks.map((c) => c.bytes)).toString('utf8'), context).toBe(
        all.map((l) => `${l}\n`).join(''),
      );
      expect(
        chunks.flatMap((c) => c.ids),
        context,
      ).toEqual(data.map((r) => r.id));
      expect(
        chunks.flatMap((c) => c.offsets),
        context,
      ).toEqual(scanned.map((r) => r.offset));

      let first = 0;
      for (const [k, chunk] of chunks.entries()) {
        const at = `${context} chunk ${k}`;
        expect(chunk.bytes.length, at).toBeLessThanOrEqual(chunkSizeBytes);
        expect(chunk.firstRecord, at).toBe(first);
        expect(chunk.ids.length, at).toBe(lines(chunk).length);
        expect(chunk.offsets.length, at).toBe(chunk.ids.length);
        expect(chunk.ids.length, at).toBeGreaterThan(0);
        for (const [i, line] of lines(chunk).entries()) {
          // Each line is its source record, byte for byte, but for CR/LF turned into spaces.
          const source = scanned[first + i]!.bytes.toString('utf8');
          expect(line, at).toBe(source.replace(/[\r\n]/g, ' '));
          expect(doc.subarray(chunk.offsets[i]).toString('utf8').startsWith(source), at).toBe(true);
        }
        const next = chunks[k + 1];
        // Greedy: the next chunk's first record would not have fitted in this one.
        if (next)
          expect(chunk.bytes.length + Buffer.byteLength(lines(next)[0]!) + 1, at).toBeGreaterThan(
            chunkSizeBytes,
          );
        first += chunk.ids.length;
      }
      expect(first, context).toBe(data.length);
    }
  });
});

describe('DatasetReader', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'memflow-records-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Writes `doc` to a file and reads it as chunks; returns them, or the error with them. */
  async function read(doc: Buffer | string, chunkSizeBytes: number, idField = 'id') {
    const path = join(dir, 'data.json');
    await writeFile(path, doc);
    const handle = await open(path, 'r');
    const chunks: RecordsChunk[] = [];
    const reader = new DatasetReader(handle, chunkSizeBytes, idField);
    try {
      for await (const chunk of reader.chunks())
        chunks.push({ ...chunk, bytes: Buffer.from(chunk.bytes) });
      return { chunks, records: reader.records };
    } catch (err) {
      if (!(err instanceof DatasetError)) throw err;
      return { chunks, records: reader.records, error: err };
    } finally {
      await handle.close();
    }
  }

  const MiB = 1024 * 1024;
  /** ~3 MiB of records, pretty-printed, with multi-byte text: several 1 MiB blocks. */
  const bigData = (): DatasetRecord[] =>
    Array.from({ length: 10_000 }, (_, i) => ({
      id: i * 2 + 1,
      name: `persön ${i} 日本`,
      tags: ['a', 'b{', '}c'].slice(0, i % 4),
      pad: 'x'.repeat(100 + (i % 97)),
    }));

  it('reads a file of several blocks as chunks in order, every record given back', async () => {
    const data = bigData();
    const doc = writeDataset(data, 'array-pretty');
    expect(doc.length).toBeGreaterThan(2 * MiB);
    const { chunks, records, error } = await read(doc, 64 * 1024);
    expect(error).toBeUndefined();
    expect(records).toBe(data.length);
    expect(chunks.length).toBeGreaterThan(doc.length / (64 * 1024));
    expect(chunks.flatMap(lines).map((l) => JSON.parse(l) as unknown)).toEqual(data);
    expect(chunks.flatMap((c) => c.ids)).toEqual(data.map((r) => r.id));
    let first = 0;
    for (const chunk of chunks) {
      expect(chunk.bytes.length).toBeLessThanOrEqual(64 * 1024);
      expect(chunk.firstRecord).toBe(first);
      first += chunk.ids.length;
    }
    // Some record straddles each block boundary, and it came through whole.
    const offsets = chunks.flatMap((c) => c.offsets);
    const lengths = chunks.flatMap(lines).map((l) => Buffer.byteLength(l));
    for (const boundary of [MiB, 2 * MiB]) {
      const straddling = offsets.findIndex((o, i) => o < boundary && o + lengths[i]! > boundary);
      expect(straddling).toBeGreaterThan(0);
      const source = doc.subarray(offsets[straddling], offsets[straddling]! + lengths[straddling]!);
      expect(JSON.parse(source.toString('utf8'))).toEqual(data[straddling]);
    }
  });

  it('reads NDJSON the same way, as the same chunks', async () => {
    const data = bigData().slice(0, 3000);
    const fromArray = await read(writeDataset(data, 'array'), 16 * 1024);
    const fromNdjson = await read(writeDataset(data, 'ndjson'), 16 * 1024);
    expect(fromNdjson.error).toBeUndefined();
    expect(fromNdjson.records).toBe(3000);
    expect(fromNdjson.chunks.map((c) => c.bytes.toString())).toEqual(
      fromArray.chunks.map((c) => c.bytes.toString()),
    );
    expect(fromNdjson.chunks.map((c) => c.ids)).toEqual(fromArray.chunks.map((c) => c.ids));
  });

  it('reads a small file as one chunk, and an empty array as none', async () => {
    const small = await read('[{"id":"a"},{"id":"b"}]', 1024);
    expect(small.chunks.map((c) => c.bytes.toString())).toEqual(['{"id":"a"}\n{"id":"b"}\n']);
    expect(small.records).toBe(2);
    const none = await read('[ ]\n', 1024);
    expect(none).toEqual({ chunks: [], records: 0 });
  });

  it('refuses an empty file', async () => {
    const { error, chunks } = await read('', 1024);
    expect(error?.message).toMatch(/the document is empty/);
    expect(error?.offset).toBe(0);
    expect(chunks).toEqual([]);
  });

  it('refuses a problem past the first block at its exact byte offset, after the chunks before it', async () => {
    const count = 7000;
    const good = writeDataset(bigData().slice(0, count), 'ndjson');
    expect(good.length).toBeGreaterThan(MiB);
    const { error, chunks } = await read(
      Buffer.concat([good, Buffer.from('{"id":"a\tb"}\n')]),
      32 * 1024,
    );
    expect(error?.offset).toBe(good.length + 8);
    expect(error?.record).toBe(count);
    expect(error?.message).toMatch(`record ${count + 1} has a control character`);
    expect(chunks.length).toBeGreaterThan(0);
  });

  it('refuses a record without an ID at its offset, and a syntax error at its byte', async () => {
    const head = '[{"id":1},\n';
    const noId = await read(`${head}{"name":"x"}]`, 1024);
    expect(noId.error?.message).toBe('record 2 (at byte 11) has no "id" field');
    expect(noId.error?.offset).toBe(11);
    const syntax = await read(`${head}{"id":2,"é":tru}]`, 1024);
    expect(syntax.error?.record).toBe(1);
    expect(syntax.error?.message).toMatch(/^record 2 is not valid JSON at byte \d+/);
    const trailing = await read(`${head}{"é":2,}]`, 1024);
    // The "}" after the comma: byte 11 + 8 (é is 2 bytes).
    expect(trailing.error?.offset).toBe(19);
  });

  it('refuses a record too large for a chunk, at the record', async () => {
    const { error } = await read(`{"id":1}\n{"id":2,"pad":"${'x'.repeat(100)}"}\n`, 64);
    expect(error?.offset).toBe(9);
    expect(error?.record).toBe(1);
    expect(error?.message).toMatch(/record 2 \(at byte 9\) is larger than 63 bytes/);
  });

  it('reports the first problem in the file, even when a later one is in the same block', async () => {
    // Record 1 has no ID; the stray "]" after record 2 is a later problem in the same block.
    const { error } = await read('{"name":"no id"}\n{"id":2}\n]\n', 1024);
    expect(error?.message).toBe('record 1 (at byte 0) has no "id" field');
    expect(error?.offset).toBe(0);
  });
});
