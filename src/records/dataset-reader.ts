/**
 * Reads a JSON dataset file (an array of objects or NDJSON) as records chunks, a block at a time:
 * memory holds one block, the record being read and the chunk being filled, whatever the size of
 * the file.
 */
import type { FileHandle } from 'node:fs/promises';
import { RecordChunker, type RecordsChunk } from './record-chunker.js';
import { RecordScanner } from './record-scanner.js';

const BLOCK_BYTES = 1024 * 1024;

export class DatasetReader {
  private readonly scanner: RecordScanner;
  private readonly chunker: RecordChunker;

  constructor(
    private readonly handle: FileHandle,
    chunkSizeBytes: number,
    idField: string,
  ) {
    this.scanner = new RecordScanner(RecordChunker.maxRecordBytes(chunkSizeBytes));
    this.chunker = new RecordChunker(chunkSizeBytes, idField);
  }

  /** Records read so far (all of them once chunks() is done). */
  get records(): number {
    return this.scanner.count;
  }

  /** The dataset's chunks in order. Throws DatasetError (with the byte offset) for bad input. */
  async *chunks(): AsyncGenerator<RecordsChunk> {
    // One block buffer, reused: the scanner copies a record that spans blocks, and the chunker
    // copies every record into its chunk before the next read.
    const block = Buffer.allocUnsafe(BLOCK_BYTES);
    for (let position = 0; ;) {
      const { bytesRead } = await this.handle.read(block, 0, BLOCK_BYTES, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      for (const record of this.scanner.push(block.subarray(0, bytesRead))) {
        const full = this.chunker.add(record);
        if (full) yield full;
      }
    }
    this.scanner.end();
    const last = this.chunker.finish();
    if (last) yield last;
  }
}
