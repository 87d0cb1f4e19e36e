/**
 * Finds the records of a JSON dataset as its bytes stream in: a JSON array of objects
 * (`[{...}, {...}]`) or NDJSON (objects separated by newlines — or by any whitespace). It never
 * holds more than the record being read plus the block it was handed, so a dataset of any size
 * goes through in bounded memory.
 *
 * The scanner checks the document's shape (brackets, commas, strings, nesting) byte by byte and
 * hands out each record's bytes; the caller parses the record (JSON.parse) for its fields, and a
 * syntax error inside a record is reported at its byte offset through `syntaxErrorAt`. Every
 * error names the byte offset in the whole document (0-based), so a user can find it with
 * `head -c` or an editor's go-to-offset.
 */

/** A record found by the scanner: its bytes (the object, from `{` to `}`) and where it was. */
export interface ScannedRecord {
  /** 0-based position of the record in the dataset. */
  index: number;
  /** Byte offset of its `{` in the document. */
  offset: number;
  bytes: Buffer;
}

/** A malformed dataset: `offset` is where in the document the problem is (0-based bytes). */
export class DatasetError extends Error {
  constructor(
    message: string,
    readonly offset: number,
    readonly record?: number,
  ) {
    super(message);
    this.name = 'DatasetError';
  }
}

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;

const isSpace = (b: number): boolean => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

/** What the scanner expects next outside a record. */
type Outside =
  | 'start' // nothing seen yet: `[` (array) or `{` (NDJSON)
  | 'array-first' // after `[`: a record or `]`
  | 'array-next' // after a record in an array: `,` or `]`
  | 'array-record' // after `,`: a record
  | 'ndjson' // between NDJSON records: a record or the end
  // Right after an NDJSON record: whitespace (a newline, in NDJSON) must come before the next.
  // Besides being what NDJSON is, it bounds the stored form (a line a record) by the source's
  // size plus one byte, which the space check at put-begin relies on.
  | 'ndjson-next'
  | 'done'; // after the array's `]`: only whitespace

function describeByte(b: number): string {
  return b >= 0x20 && b < 0x7f ? `"${String.fromCharCode(b)}"` : `byte 0x${b.toString(16)}`;
}

export class RecordScanner {
  private state: Outside = 'start';
  /** Bytes consumed before the current block. */
  private base = 0;
  private nextIndex = 0;
  /** The record being read: its parts so far (it may span blocks). */
  private parts: Buffer[] = [];
  private partBytes = 0;
  private recordOffset = -1;
  /**
   * The record's open `{` and `[` bytes, innermost last. A count of both kinds together would let
   * `{"a":1]` end the record at its `]`, and `{"a":[1}` swallow the next records, so the kinds are
   * matched (the stack is as deep as the record's nesting, bounded by maxRecordBytes).
   */
  private openers: number[] = [];
  private inString = false;
  private escaped = false;
  /** The problem found, once there is one: every later push() or end() throws it again. */
  private failure: DatasetError | undefined;

  /** `maxRecordBytes`: a longer record is refused (it could never fit in a chunk). */
  constructor(private readonly maxRecordBytes: number) {}

  /**
   * Scans the next block; returns the records that ended in it. Throws DatasetError.
   *
   * Records the block holds before a problem are returned, and the DatasetError is thrown by the
   * next push() or end() instead: the caller checks those records first (JSON.parse, their ID),
   * so the problem reported is the first one in the document, wherever the blocks split it.
   * (Throwing at once would drop them, and with them an earlier problem in the same block.)
   */
  push(block: Buffer): ScannedRecord[] {
    if (this.failure) throw this.failure;
    const out: ScannedRecord[] = [];
    try {
      this.scan(block, out);
    } catch (err) {
      if (!(err instanceof DatasetError)) throw err;
      this.failure = err;
      if (out.length === 0) throw err;
    }
    return out;
  }

  private scan(block: Buffer, out: ScannedRecord[]): void {
    let i = 0;
    const n = block.length;
    while (i < n) {
      if (this.recordOffset >= 0) {
        i = this.scanRecord(block, i, out);
        continue;
      }
      const b = block[i]!;
      if (isSpace(b)) {
        if (this.state === 'ndjson-next') this.state = 'ndjson';
        i++;
        continue;
      }
      const at = this.base + i;
      switch (this.state) {
        case 'start':
          if (b === OPEN_BRACKET) this.state = 'array-first';
          else if (b === OPEN_BRACE) {
            this.state = 'ndjson';
            this.beginRecord(at);
            continue; // the brace is part of the record
          } else
            throw new DatasetError(
              `expected a JSON array of objects or NDJSON records, found ${describeByte(b)} at byte ${at}`,
              at,
            );
          i++;
          break;
        case 'array-first':
        case 'array-record':
          if (b === OPEN_BRACE) {
            this.beginRecord(at);
            continue;
          }
          if (b === CLOSE_BRACKET && this.state === 'array-first') {
            this.state = 'done';
            i++;
            break;
          }
          throw this.notARecord(b, at);
        case 'array-next':
          if (b === COMMA) this.state = 'array-record';
          else if (b === CLOSE_BRACKET) this.state = 'done';
          else
            throw new DatasetError(
              `expected "," or "]" after record ${this.nextIndex}, found ${describeByte(b)} at byte ${at}`,
              at,
              this.nextIndex,
            );
          i++;
          break;
        case 'ndjson':
          if (b === OPEN_BRACE) {
            this.beginRecord(at);
            continue;
          }
          throw this.notARecord(b, at);
        case 'ndjson-next':
          throw new DatasetError(
            `record ${this.nextIndex} ends at byte ${at} with no newline before the next one: NDJSON has one record a line`,
            at,
            this.nextIndex,
          );
        case 'done':
          throw new DatasetError(
            `unexpected ${describeByte(b)} after the end of the array at byte ${at}`,
            at,
          );
      }
    }
    this.base += n;
  }

  /** The document ended: throws DatasetError if it ended inside a record or an open array. */
  end(): void {
    if (this.failure) throw this.failure;
    const at = this.base;
    if (this.recordOffset >= 0)
      throw new DatasetError(
        `the document ends inside record ${this.nextIndex + 1} (which starts at byte ${this.recordOffset})`,
        at,
        this.nextIndex,
      );
    if (this.state === 'start') throw new DatasetError('the document is empty', at);
    if (this.state !== 'done' && this.state !== 'ndjson' && this.state !== 'ndjson-next')
      throw new DatasetError(`the document ends before the array is closed with "]"`, at);
  }

  /** Records found so far. */
  get count(): number {
    return this.nextIndex;
  }

  private notARecord(b: number, at: number): DatasetError {
    return new DatasetError(
      `record ${this.nextIndex + 1} is not a JSON object: found ${describeByte(b)} at byte ${at}`,
      at,
      this.nextIndex,
    );
  }

  private tooLarge(): DatasetError {
    return new DatasetError(
      `record ${this.nextIndex + 1} (at byte ${this.recordOffset}) is larger than ${this.maxRecordBytes} bytes, the most one chunk holds`,
      this.recordOffset,
      this.nextIndex,
    );
  }

  private beginRecord(at: number): void {
    this.recordOffset = at;
    this.openers = [];
    this.inString = false;
    this.escaped = false;
    this.parts = [];
    this.partBytes = 0;
  }

  /** Scans record bytes from `start`; returns where scanning stopped (the record's end or n). */
  private scanRecord(block: Buffer, start: number, out: ScannedRecord[]): number {
    const n = block.length;
    let i = start;
    const openers = this.openers;
    let inString = this.inString;
    let escaped = this.escaped;
    // Block index of the record's first byte past maxRecordBytes. Checked byte by byte rather
    // than once per block, so that an over-long record is refused at the same point (before any
    // later problem in it) wherever the blocks happen to split the document.
    const limit = this.recordOffset + this.maxRecordBytes - this.base;
    for (; i < n; i++) {
      if (i >= limit) throw this.tooLarge();
      const b = block[i]!;
      if (inString) {
        if (escaped) escaped = false;
        else if (b === BACKSLASH) escaped = true;
        else if (b === QUOTE) inString = false;
        else if (b < 0x20) {
          // JSON.parse would say the same, but only once the whole record is read: a raw
          // newline in a string is where NDJSON goes wrong, so say where it is.
          const at = this.base + i;
          throw new DatasetError(
            `record ${this.nextIndex + 1} has a control character (${describeByte(b)}) inside a string at byte ${at}`,
            at,
            this.nextIndex,
          );
        }
        continue;
      }
      if (b === QUOTE) inString = true;
      else if (b === OPEN_BRACE || b === OPEN_BRACKET) openers.push(b);
      else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
        const opener = openers.pop();
        if (opener !== (b === CLOSE_BRACE ? OPEN_BRACE : OPEN_BRACKET)) {
          const at = this.base + i;
          throw new DatasetError(
            `record ${this.nextIndex + 1} has an unmatched ${describeByte(b)} at byte ${at}`,
            at,
            this.nextIndex,
          );
        }
        if (openers.length === 0) {
          i++;
          this.finishRecord(block, start, i, out);
          return i;
        }
      }
    }
    this.inString = inString;
    this.escaped = escaped;
    this.addPart(block.subarray(start, n));
    return n;
  }

  private addPart(part: Buffer): void {
    this.partBytes += part.length;
    if (this.partBytes > this.maxRecordBytes) throw this.tooLarge();
    // The block is the caller's: a record spanning blocks keeps a copy of its part.
    this.parts.push(Buffer.from(part));
  }

  private finishRecord(block: Buffer, start: number, end: number, out: ScannedRecord[]): void {
    let bytes: Buffer;
    if (this.parts.length === 0) {
      if (end - start > this.maxRecordBytes) this.addPart(block.subarray(start, end));
      bytes = block.subarray(start, end);
    } else {
      this.addPart(block.subarray(start, end));
      bytes = Buffer.concat(this.parts, this.partBytes);
    }
    out.push({ index: this.nextIndex, offset: this.recordOffset, bytes });
    this.nextIndex++;
    this.recordOffset = -1;
    this.parts = [];
    this.partBytes = 0;
    if (this.state === 'array-first' || this.state === 'array-record') this.state = 'array-next';
    else if (this.state === 'ndjson') this.state = 'ndjson-next';
  }
}

/**
 * The DatasetError for a record JSON.parse refused: Node names the position inside the record
 * in its message ("... in JSON at position 12"); add the record's offset to it (in bytes).
 */
export function syntaxErrorAt(err: unknown, record: ScannedRecord): DatasetError {
  const message = err instanceof Error ? err.message : String(err);
  const position = /position (\d+)/.exec(message);
  // Node's position counts UTF-16 code units of the decoded text, not bytes: convert it, or an
  // error after any non-ASCII character (é, 日, 🎉) would point too early in the document.
  const at =
    record.offset +
    (position ? Buffer.byteLength(record.bytes.toString('utf8').slice(0, Number(position[1]))) : 0);
  const reason = message.replace(/\s*in JSON at position \d+.*$/, '').replace(/^SyntaxError: /, '');
  return new DatasetError(
    `record ${record.index + 1} is not valid JSON at byte ${at}: ${reason}`,
    at,
    record.index,
  );
}
