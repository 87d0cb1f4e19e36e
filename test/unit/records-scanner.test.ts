/**
 * Record scanner. Goal: RecordScanner finds every record of a JSON array of objects or of NDJSON
 * with its 0-based index and the byte offset of its `{`, whatever the layout and however the
 * bytes are split into blocks; it refuses a malformed document with a DatasetError naming the
 * exact byte offset (and the record, when there is one); syntaxErrorAt turns JSON.parse's
 * complaint about one record into a DatasetError at the right byte of the whole document.
 * Method: hand-written documents with offsets counted by hand, then property tests over random
 * datasets from a SeededRandom, fed whole, split at every byte and in 1-byte blocks. Each property
 * test prints its seed in its name; MEMFLOW_SEED=<seed> replays it.
 */
import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import {
  DatasetError,
  RecordScanner,
  syntaxErrorAt,
  type ScannedRecord,
} from '../../src/records/record-scanner.js';
import { SeededRandom, seedFromEnv } from '../../src/runtime/random.js';
import { LAYOUTS, randomRecords, writeDataset } from './records-data.js';

const seed = seedFromEnv(process.env);
const BIG = 1 << 20;

/** A record as a test compares it: its bytes as text (a copy, not a view of a block). */
interface Found {
  index: number;
  offset: number;
  text: string;
}

const found = (r: ScannedRecord): Found => ({
  index: r.index,
  offset: r.offset,
  text: r.bytes.toString('utf8'),
});

/** Scans `doc` handed in as `blocks` (given as cut positions); returns the records or the error. */
function scan(
  doc: Buffer | string,
  { max = BIG, cuts = [] as number[] } = {},
): { records: Found[]; error?: DatasetError } {
  const bytes = typeof doc === 'string' ? Buffer.from(doc, 'utf8') : doc;
  const scanner = new RecordScanner(max);
  const records: Found[] = [];
  let from = 0;
  try {
    for (const to of [...cuts, bytes.length]) {
      // A fresh copy per block, overwritten after the push: the scanner must not keep views of
      // a block past the push that returned them (a reader reuses its block buffer).
      const block = Buffer.from(bytes.subarray(from, to));
      records.push(...scanner.push(block).map(found));
      block.fill(0x21);
      from = to;
    }
    scanner.end();
    expect(scanner.count).toBe(records.length);
  } catch (err) {
    if (!(err instanceof DatasetError)) throw err;
    return { records, error: err };
  }
  return { records };
}

/** The records of a document that must scan cleanly. */
function records(doc: Buffer | string, options: { max?: number; cuts?: number[] } = {}): Found[] {
  const result = scan(doc, options);
  if (result.error) throw result.error;
  return result.records;
}

/** The error a malformed document must raise. */
function errorOf(doc: Buffer | string, options: { max?: number; cuts?: number[] } = {}) {
  const { error } = scan(doc, options);
  if (!error) throw new Error(`expected a DatasetError for ${JSON.stringify(String(doc))}`);
  return error;
}

const oneByteCuts = (length: number): number[] => Array.from({ length }, (_, i) => i + 1);

describe('RecordScanner: well-formed documents', () => {
  it('finds the records of a JSON array with their index and the offset of their "{"', () => {
    expect(records('[{"id":1},{"id":2}]')).toEqual([
      { index: 0, offset: 1, text: '{"id":1}' },
      { index: 1, offset: 10, text: '{"id":2}' },
    ]);
  });

  it('finds the records of NDJSON, with or without a final newline, with LF or CRLF', () => {
    const expected = [
      { index: 0, offset: 0, text: '{"id":1}' },
      { index: 1, offset: 9, text: '{"id":2}' },
    ];
    expect(records('{"id":1}\n{"id":2}\n')).toEqual(expected);
    expect(records('{"id":1}\n{"id":2}')).toEqual(expected);
    expect(records('{"id":1}\r\n{"id":2}\r\n')).toEqual([
      expected[0],
      { index: 1, offset: 10, text: '{"id":2}' },
    ]);
  });

  it('accepts NDJSON records separated by any whitespace, blank lines included', () => {
    expect(records('\n\n  {"a":1}\t \n\n\r\n{"b":2} {"c":3}  \n')).toEqual([
      { index: 0, offset: 4, text: '{"a":1}' },
      { index: 1, offset: 17, text: '{"b":2}' },
      { index: 2, offset: 25, text: '{"c":3}' },
    ]);
  });

  it('accepts whitespace anywhere between the tokens of an array', () => {
    const doc = ' \r\n[ \t\n{"id":1}\n ,\r\n\t{"id":2} \n]\n\n ';
    expect(records(doc)).toEqual([
      { index: 0, offset: 7, text: '{"id":1}' },
      { index: 1, offset: 21, text: '{"id":2}' },
    ]);
  });

  it('hands out a pretty-printed record whole, its inner newlines and indentation included', () => {
    const data = [
      { id: 1, name: 'ann', tags: ['x', 'y'], address: { city: 'Oslo', zip: '0150' } },
      { id: 2, name: 'bob', tags: [], address: {} },
    ];
    const doc = JSON.stringify(data, null, 2);
    const got = records(doc);
    expect(got.map((r) => JSON.parse(r.text) as unknown)).toEqual(data);
    expect(got[0]!.text).toContain('\n');
    for (const r of got) expect(doc.slice(r.offset, r.offset + r.text.length)).toBe(r.text);
  });

  it('is not fooled by braces, brackets, commas, escaped quotes and backslashes inside strings', () => {
    const tricky = [
      { id: '}', s: '{' },
      { id: ']', s: '[[[' },
      { id: 'q', s: 'say "hi"}, {"id":9}' },
      { id: 'b', s: 'ends with a backslash \\' },
      { id: 'bq', s: '\\"}' },
      { id: 'bb', s: '\\\\' },
      { id: 'cr', s: 'line\nbreak\r\ttab\u0001' },
    ];
    const doc = JSON.stringify(tricky);
    const got = records(doc);
    expect(got.map((r) => JSON.parse(r.text) as unknown)).toEqual(tricky);
    expect(got.map((r) => r.index)).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it('keeps nested objects and arrays inside their record', () => {
    const doc = '[{"id":1,"a":{"b":{"c":[{"d":[]},[[{}]]]}}},{"id":2,"e":[{},{"f":{}}]}]';
    const got = records(doc);
    expect(got.map((r) => r.text)).toEqual([
      '{"id":1,"a":{"b":{"c":[{"d":[]},[[{}]]]}}}',
      '{"id":2,"e":[{},{"f":{}}]}',
    ]);
    expect(got[1]!.offset).toBe(1 + got[0]!.text.length + 1);
  });

  it('counts offsets in bytes of UTF-8, not in characters', () => {
    const doc = '[{"name":"héllo 日本 🎉"},{"id":"ü"}]';
    const first = '{"name":"héllo 日本 🎉"}';
    const got = records(doc);
    expect(got[0]).toEqual({ index: 0, offset: 1, text: first });
    // é, 日, 本 and 🎉 take more bytes than UTF-16 units: the next offset is past all of them.
    expect(got[1]!.offset).toBe(1 + Buffer.byteLength(first) + 1);
    expect(got[1]!.offset).not.toBe(doc.indexOf('{"id"'));
    expect(got[1]!.text).toBe('{"id":"ü"}');
  });

  it('reads an empty array, spelled in any whitespace, as zero records', () => {
    for (const doc of ['[]', '[ ]', '  [\n]\n', '\r\n[\t\r\n]']) expect(records(doc)).toEqual([]);
  });

  it('accepts a record of exactly the largest size', () => {
    const rec = '{"id":"' + 'x'.repeat(9) + '"}'; // 18 bytes
    expect(records(`[${rec}]`, { max: 18 })).toEqual([{ index: 0, offset: 1, text: rec }]);
    expect(records(`[${rec}]`, { max: 18, cuts: oneByteCuts(20) })).toHaveLength(1);
  });

  it('counts the records found so far', () => {
    const scanner = new RecordScanner(BIG);
    expect(scanner.count).toBe(0);
    scanner.push(Buffer.from('[{"id":1},{"id"'));
    expect(scanner.count).toBe(1);
    scanner.push(Buffer.from(':2}]'));
    expect(scanner.count).toBe(2);
    scanner.end();
  });

  it('keeps its own copy of a record that spans blocks, so the caller may reuse its buffer', () => {
    const scanner = new RecordScanner(BIG);
    const block = Buffer.from('[{"id":"aaaa');
    expect(scanner.push(block)).toEqual([]);
    block.fill(0x20);
    const [rec] = scanner.push(Buffer.from('bbbb"}]'));
    expect(rec!.bytes.toString()).toBe('{"id":"aaaabbbb"}');
  });
});

describe(`RecordScanner: block boundaries (seed ${seed}; replay with MEMFLOW_SEED=${seed})`, () => {
  it('finds the same records when a document is split at every byte, or fed a byte at a time', () => {
    const random = new SeededRandom(seed);
    for (const layout of LAYOUTS) {
      const doc = writeDataset(randomRecords(random, 6, 'strings'), layout);
      const context = `seed ${seed} layout ${layout}`;
      const whole = records(doc);
      expect(whole, context).toHaveLength(6);
      for (let cut = 0; cut <= doc.length; cut++)
        expect(records(doc, { cuts: [cut] }), `${context} cut at ${cut}`).toEqual(whole);
      expect(records(doc, { cuts: oneByteCuts(doc.length) }), context).toEqual(whole);
    }
  });

  it('gives back every record of a random dataset in every layout and random block splits', () => {
    const random = new SeededRandom(seed);
    for (let trial = 0; trial < 60; trial++) {
      const layout = LAYOUTS[trial % LAYOUTS.length]!;
      const data = randomRecords(random, 1 + random.int(20), 'strings');
      const doc = writeDataset(data, layout);
      const cuts = Array.from({ length: random.int(6) }, () => random.int(doc.length + 1)).sort(
        (a, b) => a - b,
      );
      const context = `seed ${seed} trial ${trial} layout ${layout} cuts ${cuts.join(',')}`;
      const got = records(doc, { cuts });
      expect(
        got.map((r) => JSON.parse(r.text) as unknown),
        context,
      ).toEqual(data);
      expect(
        got.map((r) => r.index),
        context,
      ).toEqual(data.map((_, i) => i));
      for (const r of got) {
        // The offset is where the record's bytes are in the document.
        const bytes = Buffer.from(r.text, 'utf8');
        expect(doc.subarray(r.offset, r.offset + bytes.length).equals(bytes), context).toBe(true);
      }
    }
  });

  it('reports the same error, at the same byte, however a malformed document is split', () => {
    const random = new SeededRandom(seed);
    for (const bad of MALFORMED) {
      const doc = Buffer.from(bad.doc, 'utf8');
      const whole = scan(doc, { max: bad.max ?? BIG });
      const cutsList = [
        ...Array.from({ length: doc.length + 1 }, (_, cut) => [cut]),
        oneByteCuts(doc.length),
        [random.int(doc.length + 1), random.int(doc.length + 1)].sort((a, b) => a - b),
      ];
      for (const cuts of cutsList) {
        const split = scan(doc, { max: bad.max ?? BIG, cuts });
        const context = `seed ${seed} ${JSON.stringify(bad.doc)} cuts ${cuts.join(',')}`;
        // The records before the problem are handed out too, so the caller can check them first.
        expect(split.records, context).toEqual(whole.records);
        const [err, first] = [split.error!, whole.error!];
        expect({ message: err.message, offset: err.offset, record: err.record }, context).toEqual({
          message: first.message,
          offset: first.offset,
          record: first.record,
        });
      }
    }
  });
});

interface Malformed {
  what: string;
  doc: string;
  offset: number;
  record?: number;
  message: RegExp;
  max?: number;
}

const MALFORMED: Malformed[] = [
  {
    what: 'a document starting with garbage',
    doc: 'hello',
    offset: 0,
    message: /expected a JSON array of objects or NDJSON records, found "h" at byte 0/,
  },
  {
    what: 'garbage after leading whitespace',
    doc: ' \n x[{"id":1}]',
    offset: 3,
    message: /found "x" at byte 3/,
  },
  {
    what: 'a byte-order mark or other non-ASCII first byte',
    doc: '\ufeff[]',
    offset: 0,
    message: /found byte 0xef at byte 0/,
  },
  {
    what: 'a missing comma between records',
    doc: '[{"id":1} {"id":2}]',
    offset: 10,
    record: 1,
    message: /expected "," or "]" after record 1, found "\{" at byte 10/,
  },
  {
    what: 'trailing garbage after "]"',
    doc: '[{"id":1}] x',
    offset: 11,
    message: /unexpected "x" after the end of the array at byte 11/,
  },
  {
    what: 'a second "]"',
    doc: '[{"id":1}]\n]',
    offset: 11,
    message: /after the end of the array at byte 11/,
  },
  {
    what: 'a second array after the first',
    doc: '[{"id":1}][{"id":2}]',
    offset: 10,
    message: /after the end of the array at byte 10/,
  },
  {
    what: 'a document ending inside a record',
    doc: '[{"id":1},{"id":2',
    offset: 17,
    record: 1,
    message: /the document ends inside record 2 \(which starts at byte 10\)/,
  },
  {
    what: 'NDJSON ending inside a string',
    doc: '{"id":1}\n{"id":"ab',
    offset: 18,
    record: 1,
    message: /ends inside record 2 \(which starts at byte 9\)/,
  },
  {
    what: 'an unclosed array after a record',
    doc: '[{"id":1}',
    offset: 9,
    message: /the document ends before the array is closed with "\]"/,
  },
  {
    what: 'an unclosed array after a comma',
    doc: '[{"id":1},\n',
    offset: 11,
    message: /ends before the array is closed/,
  },
  {
    what: 'a lone "["',
    doc: '[',
    offset: 1,
    message: /ends before the array is closed/,
  },
  {
    what: 'a raw newline inside a string',
    doc: '{"id":1}\n{"id":"a\nb"}\n',
    offset: 17,
    record: 1,
    message: /record 2 has a control character \(byte 0xa\) inside a string at byte 17/,
  },
  {
    what: 'a raw tab inside a string in an array',
    doc: '[{"s":"\t"}]',
    offset: 7,
    record: 0,
    message: /record 1 has a control character \(byte 0x9\) inside a string at byte 7/,
  },
  {
    what: 'a number where a record should be',
    doc: '[1,2]',
    offset: 1,
    record: 0,
    message: /record 1 is not a JSON object: found "1" at byte 1/,
  },
  {
    what: 'a later record that is not an object',
    doc: '[{"id":1}, "two"]',
    offset: 11,
    record: 1,
    message: /record 2 is not a JSON object: found """ at byte 11/,
  },
  {
    what: 'a trailing comma in the array',
    doc: '[{"id":1},]',
    offset: 10,
    record: 1,
    message: /record 2 is not a JSON object: found "\]" at byte 10/,
  },
  {
    what: 'an array inside NDJSON',
    doc: '{"id":1}\n[{"id":2}]',
    offset: 9,
    record: 1,
    message: /record 2 is not a JSON object: found "\[" at byte 9/,
  },
  {
    what: 'commas between NDJSON records',
    doc: '{"id":1},{"id":2}',
    offset: 8,
    record: 1,
    message: /record 1 ends at byte 8 with no newline before the next one/,
  },
  {
    what: 'NDJSON records with nothing between them',
    doc: '{"id":1}\n{"id":2}{"id":3}',
    offset: 17,
    record: 2,
    message:
      /record 2 ends at byte 17 with no newline before the next one: NDJSON has one record a line/,
  },
  {
    what: 'a record larger than the largest size',
    doc: '[{"id":1},{"id":"xxxxxxxxxxx"}]',
    max: 18,
    offset: 10,
    record: 1,
    message: /record 2 \(at byte 10\) is larger than 18 bytes/,
  },
  {
    what: 'an over-long record that never ends',
    doc: '{"id":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx',
    max: 18,
    offset: 0,
    record: 0,
    message: /record 1 \(at byte 0\) is larger than 18 bytes/,
  },
  {
    what: 'an over-long record with a raw newline past the limit',
    doc: '{"id":"xxxxxxxxxxxxxxxxxxxx\n"}',
    max: 18,
    offset: 0,
    record: 0,
    message: /record 1 \(at byte 0\) is larger than 18 bytes/,
  },
  {
    what: 'an empty document',
    doc: '',
    offset: 0,
    message: /the document is empty/,
  },
  {
    what: 'a whitespace-only document',
    doc: ' \n\t\r\n',
    offset: 5,
    message: /the document is empty/,
  },
  {
    what: 'an unmatched "]" inside a record',
    doc: '{"id":1]}\n',
    offset: 7,
    record: 0,
    message: /record 1 has an unmatched "\]" at byte 7/,
  },
  {
    what: 'an unmatched "]" inside a record of an array',
    doc: '[{"id":1},{"a":{"b":1]}}]',
    offset: 21,
    record: 1,
    message: /record 2 has an unmatched "\]" at byte 21/,
  },
  {
    what: 'an unmatched "}" inside a list of a record',
    doc: '[{"a":[1}]',
    offset: 8,
    record: 0,
    message: /record 1 has an unmatched "\}" at byte 8/,
  },
];

describe('RecordScanner: malformed documents', () => {
  it.each(MALFORMED)('refuses $what at its exact byte offset', (bad) => {
    const err = errorOf(bad.doc, { max: bad.max ?? BIG });
    expect(err).toBeInstanceOf(DatasetError);
    expect(err.name).toBe('DatasetError');
    expect(err.message).toMatch(bad.message);
    expect(err.offset).toBe(bad.offset);
    expect(err.record).toBe(bad.record);
  });

  it('hands out the records before the error, and none after, however the blocks split', () => {
    const doc = '{"id":1}\n{"id":2}\n{"id":"a\nb"}\n{"id":4}\n';
    for (const cuts of [[], [9, 18], [3], [30]]) {
      const { records: got, error } = scan(doc, { cuts });
      expect(got.map((r) => r.text)).toEqual(['{"id":1}', '{"id":2}']);
      expect(error?.offset).toBe(26);
      expect(error?.record).toBe(2);
    }
  });

  it('returns the records of a block before its problem, then throws it on the next call', () => {
    const scanner = new RecordScanner(BIG);
    const got = scanner.push(Buffer.from('[{"id":1},{"id":2} x'));
    // The caller checks these first: an earlier problem in one of them is the one to report.
    expect(got.map((r) => r.bytes.toString())).toEqual(['{"id":1}', '{"id":2}']);
    expect(scanner.count).toBe(2);
    const again = (): unknown => scanner.push(Buffer.from('{"id":3}]'));
    expect(again).toThrow(DatasetError);
    expect(again).toThrow(/expected "," or "\]" after record 2, found "x" at byte 19/);
    expect(() => scanner.end()).toThrow(/at byte 19/);
    expect(scanner.count).toBe(2);
  });

  it('keeps refusing after a problem, even if the next block would be fine on its own', () => {
    const scanner = new RecordScanner(BIG);
    expect(() => scanner.push(Buffer.from('[1'))).toThrow(/record 1 is not a JSON object/);
    expect(() => scanner.push(Buffer.from('{"id":1}]'))).toThrow(/record 1 is not a JSON object/);
    expect(() => scanner.end()).toThrow(/record 1 is not a JSON object/);
  });

  it('counts the offset of an error across many blocks from the start of the document', () => {
    const head = '[' + Array.from({ length: 500 }, (_, i) => `{"id":${i}}`).join(',');
    const doc = `${head} {"id":500}]`;
    const err = errorOf(doc, { cuts: [7, 100, 1000, 3000] });
    expect(err.offset).toBe(head.length + 1);
    expect(err.record).toBe(500);
    expect(doc.slice(err.offset, err.offset + 5)).toBe('{"id"');
  });
});

describe('syntaxErrorAt', () => {
  const record = (text: string, offset: number, index: number): ScannedRecord => ({
    index,
    offset,
    bytes: Buffer.from(text, 'utf8'),
  });

  function parseError(text: string): unknown {
    try {
      JSON.parse(text);
    } catch (err) {
      return err;
    }
    throw new Error(`${text} parsed`);
  }

  it('adds the position Node reports inside the record to the record offset', () => {
    const text = '{"id":1,}';
    const err = syntaxErrorAt(parseError(text), record(text, 100, 4));
    const position = Number(/position (\d+)/.exec((parseError(text) as Error).message)![1]);
    expect(position).toBe(8);
    expect(err).toBeInstanceOf(DatasetError);
    expect(err.offset).toBe(108);
    expect(err.record).toBe(4);
    expect(err.message).toMatch(/^record 5 is not valid JSON at byte 108: /);
  });

  it("keeps Node's reason but drops its position inside the record", () => {
    const err = syntaxErrorAt(parseError('{"id":1 "a":2}'), record('{"id":1 "a":2}', 10, 0));
    expect(err.offset).toBe(18);
    expect(err.message).toMatch(/^record 1 is not valid JSON at byte 18: \S/);
    expect(err.message).not.toMatch(/position/);
    expect(err.message).not.toMatch(/SyntaxError/);
  });

  it('counts the position in bytes when the record holds multi-byte characters', () => {
    const text = '{"name":"日本🎉","id":1,}';
    const offset = 50;
    const err = syntaxErrorAt(parseError(text), record(text, offset, 2));
    // The trailing comma's "}" is the byte JSON.parse stopped at.
    const expected = offset + Buffer.byteLength(text) - 1;
    expect(err.offset).toBe(expected);
    expect(err.message).toContain(`at byte ${expected}`);
  });

  it('points at the start of the record when Node names no position', () => {
    const err = syntaxErrorAt(new SyntaxError('Unexpected end of JSON input'), record('{', 7, 3));
    expect(err.offset).toBe(7);
    expect(err.record).toBe(3);
    expect(err.message).toBe('record 4 is not valid JSON at byte 7: Unexpected end of JSON input');
    expect(syntaxErrorAt('weird', record('{}', 9, 0)).message).toBe(
      'record 1 is not valid JSON at byte 9: weird',
    );
  });
});
