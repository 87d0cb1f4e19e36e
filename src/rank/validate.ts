/**
 * Checks that a client message is a well-formed Request before the coordinator (or a data rank's
 * chunk port) acts on it: a msgpack map with an integer id, a known op and fields of the right
 * types. Anything else — random bytes, wrong types, missing fields — becomes STORE_BAD_REQUEST
 * naming the problem.
 */
import { unpack } from 'msgpackr';
import type { ChunkPortRequest, Request, RequestOp } from '../protocol/client-protocol.js';
import { isRecordId, MAX_ID_LENGTH } from '../records/record-ids.js';
import { StoreError } from '../store/errors.js';

type FieldType = 'string' | 'int' | 'record-id';
const FIELDS: Record<RequestOp, Record<string, FieldType>> = {
  'put-begin': { name: 'string', sizeBytes: 'int' },
  'put-chunk': { uploadId: 'string', index: 'int', checksum: 'string' },
  'put-place': { uploadId: 'string', index: 'int', checksum: 'string' },
  'put-commit': { uploadId: 'string', sha256: 'string' },
  'put-abort': { uploadId: 'string' },
  'get-begin': { name: 'string' },
  'get-chunk': { readId: 'string', index: 'int' },
  'get-end': { readId: 'string' },
  stat: { name: 'string' },
  list: {},
  delete: { name: 'string' },
  status: {},
  rebalance: {},
  'put-whole': { name: 'string', checksum: 'string', sha256: 'string' },
  'get-whole': { name: 'string' },
  query: { name: 'string', recordId: 'record-id' },
};

const FIELD_TYPES: Record<FieldType, string> = {
  string: 'a string',
  int: 'an integer ≥ 0',
  'record-id': `a string (at most ${MAX_ID_LENGTH} characters) or a finite number`,
};

/** The id of a message, if it has a usable one (so even a bad request gets an answer it can match). */
export function requestIdOf(message: unknown): number {
  const id = (message as { id?: unknown } | null)?.id;
  return typeof id === 'number' && Number.isSafeInteger(id) ? id : -1;
}

export function decodeRequest(frame: Uint8Array | undefined): {
  id: number;
  request?: Request;
  error?: StoreError;
} {
  return decodeAgainst<Request>(frame, FIELDS);
}

/** A data rank's chunk port takes two requests: chunk-read and chunk-write (docs/PROTOCOL.md). */
const CHUNK_PORT_FIELDS = {
  'chunk-read': { chunkId: 'string' },
  'chunk-write': { chunkId: 'string', checksum: 'string' },
} as const;

export function decodeChunkPortRequest(frame: Uint8Array | undefined): {
  id: number;
  request?: ChunkPortRequest;
  error?: StoreError;
} {
  return decodeAgainst<ChunkPortRequest>(frame, CHUNK_PORT_FIELDS);
}

function decodeAgainst<T>(
  frame: Uint8Array | undefined,
  fields: Readonly<Record<string, Readonly<Record<string, FieldType>>>>,
): { id: number; request?: T; error?: StoreError } {
  let message: unknown;
  try {
    message = frame ? unpack(frame) : undefined;
  } catch {
    return { id: -1, error: new StoreError('STORE_BAD_REQUEST', 'message is not valid msgpack') };
  }
  const id = requestIdOf(message);
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    return { id, error: new StoreError('STORE_BAD_REQUEST', 'message is not a map') };
  }
  if (id < 0)
    return { id, error: new StoreError('STORE_BAD_REQUEST', 'message has no integer id ≥ 0') };
  const op = (message as { op?: unknown }).op;
  if (typeof op !== 'string' || !Object.hasOwn(fields, op)) {
    return {
      id,
      error: new StoreError('STORE_BAD_REQUEST', `unknown op ${JSON.stringify(op)?.slice(0, 40)}`),
    };
  }
  for (const [field, type] of Object.entries(fields[op]!)) {
    const value = (message as Record<string, unknown>)[field];
    const ok =
      type === 'string'
        ? typeof value === 'string' && value.length <= 4096
        : type === 'record-id'
          ? isRecordId(value)
          : Number.isSafeInteger(value) && (value as number) >= 0;
    if (!ok)
      return {
        id,
        error: new StoreError(
          'STORE_BAD_REQUEST',
          `${op}: field ${field} must be ${FIELD_TYPES[type]}`,
        ),
      };
  }
  return { id, request: message as T };
}
