/**
 * Random JSON datasets for the records unit tests, drawn from a SeededRandom so that a failing
 * property replays from its printed seed. Strings are drawn from characters that trip a naive
 * scanner (braces, brackets, quotes, backslashes, commas, control characters that JSON escapes)
 * and from multi-byte UTF-8, so byte offsets differ from character positions.
 *
 * This file is not a test file itself (vitest collects only *.test.ts).
 */
import { Buffer } from 'node:buffer';
import type { SeededRandom } from '../../src/runtime/random.js';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type DatasetRecord = { [key: string]: Json };

const PIECES = [
  'a',
  'b',
  'z',
  ' ',
  '{',
  '}',
  '[',
  ']',
  '"',
  '\\',
  ',',
  ':',
  '\n',
  '\r',
  '\t',
  '\u0001',
  'é',
  '日本',
  '🎉',
  '\\"',
  '"}',
  '\\\\"',
];

export function randomString(random: SeededRandom, maxLength = 12): string {
  let s = '';
  const n = random.int(maxLength + 1);
  for (let i = 0; i < n; i++) s += PIECES[random.int(PIECES.length)]!;
  return s;
}

export function randomJson(random: SeededRandom, depth = 0): Json {
  const kind = random.int(depth >= 3 ? 4 : 6);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return random.int(2) === 0;
    case 2:
      return random.int(2) === 0 ? random.int(100_000) - 50_000 : (random.int(2000) - 1000) / 8;
    case 3:
      return randomString(random);
    case 4:
      return Array.from({ length: random.int(4) }, () => randomJson(random, depth + 1));
    default:
      return randomObject(random, depth + 1);
  }
}

export function randomObject(random: SeededRandom, depth = 0): DatasetRecord {
  const out: DatasetRecord = {};
  const n = random.int(4);
  for (let i = 0; i < n; i++) out[`k${i}${randomString(random, 3)}`] = randomJson(random, depth);
  return out;
}

export type IdKind = 'increasing' | 'strings' | 'unsorted' | 'mixed';

/** `count` records whose `id` field follows `ids`; the other fields are random. */
export function randomRecords(random: SeededRandom, count: number, ids: IdKind): DatasetRecord[] {
  let next = random.int(100) - 50;
  return Array.from({ length: count }, (_, i) => {
    let id: number | string;
    switch (ids) {
      case 'increasing':
        next += 1 + random.int(5);
        id = next;
        break;
      case 'strings':
        id = `${randomString(random, 4)}#${i}`;
        break;
      case 'unsorted':
        id = (i * 7919) % (count + 13);
        break;
      case 'mixed':
        id = i % 2 === 0 ? i : `${i}`;
        break;
    }
    // The ID goes first or last, so its position in the record varies.
    const rest = randomObject(random);
    return random.int(2) === 0 ? { id, ...rest } : { ...rest, id };
  });
}

export type Layout = 'array' | 'array-pretty' | 'array-crlf' | 'ndjson' | 'ndjson-crlf' | 'spaces';
export const LAYOUTS: readonly Layout[] = [
  'array',
  'array-pretty',
  'array-crlf',
  'ndjson',
  'ndjson-crlf',
  'spaces',
];

/** The records written out as a document in one of the layouts a user may hand in. */
export function writeDataset(records: readonly DatasetRecord[], layout: Layout): Buffer {
  let text: string;
  switch (layout) {
    case 'array':
      text = JSON.stringify(records);
      break;
    case 'array-pretty':
      text = JSON.stringify(records, null, 2) + '\n';
      break;
    case 'array-crlf':
      // JSON.stringify escapes newlines inside strings, so every raw \n is whitespace.
      text = JSON.stringify(records, null, '\t').replace(/\n/g, '\r\n');
      break;
    case 'ndjson':
      text = records.map((r) => JSON.stringify(r) + '\n').join('');
      break;
    case 'ndjson-crlf':
      text = records.map((r) => JSON.stringify(r, null, 1).replace(/\n/g, '\r\n')).join('\r\n');
      break;
    case 'spaces':
      text = ' \t' + records.map((r) => JSON.stringify(r)).join(' \n\n\t ') + '  ';
      break;
  }
  return Buffer.from(text, 'utf8');
}
