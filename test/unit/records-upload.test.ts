/**
 * Rank 0's checks on a records upload, chunk by chunk: IDs that match the chunk's lines, the size
 * given at put-begin, the first duplicate, and the limit of the hashed index — refused when the
 * chunk that crosses it arrives, not after the whole dataset was written.
 */
import { describe, expect, it } from 'vitest';
import { RecordsUpload } from '../../src/rank/records-upload.js';
import type { RecordId } from '../../src/records/record-ids.js';
import { StoreError } from '../../src/store/errors.js';

const chunkOf = (ids: RecordId[]): Buffer =>
  Buffer.from(ids.map((id) => `${JSON.stringify({ id })}\n`).join(''));

function refusal(fn: () => void): StoreError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('STORE_BAD_REQUEST');
    return err as StoreError;
  }
  throw new Error('expected a refusal');
}

describe('RecordsUpload', () => {
  it('indexes increasing numeric IDs by range, keeping no hashes', () => {
    const u = new RecordsUpload('id', 'd', 1e9);
    u.accept(0, { first: 0, ids: [1, 2, 3] }, chunkOf([1, 2, 3]));
    u.accept(1, { first: 3, ids: [10, 20] }, chunkOf([10, 20]));
    const index = u.finish({ chunks: 2, count: 5 }, 2);
    expect(index.lookup).toBe('ranges');
    expect(index.chunks).toEqual([
      { first: 0, count: 3, min: 1, max: 3 },
      { first: 3, count: 2, min: 10, max: 20 },
    ]);
  });

  it('when the order breaks, earlier chunks get their hashes too, and a repeat of an early ID is caught', () => {
    const u = new RecordsUpload('id', 'd', 1e9);
    u.accept(0, { first: 0, ids: [1, 2, 3] }, chunkOf([1, 2, 3]));
    u.accept(1, { first: 3, ids: [9, 5] }, chunkOf([9, 5]));
    const err = refusal(() => u.accept(2, { first: 5, ids: [7, 2] }, chunkOf([7, 2])));
    expect(err.message).toBe('duplicate ID 2: record 7 has the same "id" as record 2');
    const v = new RecordsUpload('id', 'd', 1e9);
    v.accept(0, { first: 0, ids: [1, 2, 3] }, chunkOf([1, 2, 3]));
    v.accept(1, { first: 3, ids: [9, 5] }, chunkOf([9, 5]));
    const index = v.finish({ chunks: 2, count: 5 }, 2);
    expect(index.lookup).toBe('hashed');
    expect(index.chunks.map((c) => c.hashes?.byteLength)).toEqual([12, 8]);
  });

  it('refuses IDs that do not match the chunk: more IDs than lines, or a chunk not ending in a newline', () => {
    const u = new RecordsUpload('id', 'd', 1e9);
    expect(
      refusal(() => u.accept(0, { first: 0, ids: [1, 2, 3] }, chunkOf([1, 2]))).message,
    ).toMatch(/holds 2 whole lines but carries 3 IDs/);
    expect(
      refusal(() => u.accept(0, { first: 0, ids: [1] }, Buffer.from('{"id":1}'))).message,
    ).toMatch(/holds 0 whole lines but carries 1 IDs/);
  });

  it('refuses chunks that together pass the size given at put-begin', () => {
    const u = new RecordsUpload('id', 'd', 20);
    u.accept(0, { first: 0, ids: [1] }, chunkOf([1]));
    expect(refusal(() => u.accept(1, { first: 1, ids: [2, 3] }, chunkOf([2, 3]))).message).toMatch(
      /larger than the 20 bytes given at put-begin/,
    );
  });

  it('refuses string IDs past the hashed limit at the chunk that crosses it', () => {
    const u = new RecordsUpload('id', 'd', 1e9, 5);
    u.accept(0, { first: 0, ids: ['a', 'b', 'c'] }, chunkOf(['a', 'b', 'c']));
    expect(
      refusal(() => u.accept(1, { first: 3, ids: ['d', 'e', 'f'] }, chunkOf(['d', 'e', 'f'])))
        .message,
    ).toMatch(/more than 5 records with string or unsorted IDs.*split the dataset/);
  });

  it('lets sorted numeric IDs go past the limit, and refuses them when the order breaks beyond it', () => {
    const u = new RecordsUpload('id', 'd', 1e9, 5);
    const ids = [1, 2, 3, 4, 5, 6, 7, 8];
    u.accept(0, { first: 0, ids }, chunkOf(ids));
    expect(refusal(() => u.accept(1, { first: 8, ids: [3] }, chunkOf([3]))).message).toMatch(
      /more than 5 records with string or unsorted IDs/,
    );
    const v = new RecordsUpload('id', 'd', 1e9, 5);
    v.accept(0, { first: 0, ids }, chunkOf(ids));
    v.accept(1, { first: 8, ids: [100] }, chunkOf([100]));
    expect(v.finish({ chunks: 2, count: 9 }, 2).lookup).toBe('ranges');
  });
});
