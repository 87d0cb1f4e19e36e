/**
 * The journal. Goal: every acknowledged append survives a restart, in order; a crash in the
 * middle of an append (a torn or garbled tail) costs only the incomplete record and never
 * crashes open or yields a garbage record; compaction keeps the same state whether or not it
 * finished; group commit makes many concurrent appends share a few fsyncs. Method: real files
 * in a fresh temp directory per test (removed afterwards); crashes are simulated by editing the
 * files the way a crash would leave them (truncating, writing junk where the next write would
 * have gone, restoring an older log), and the state after reopening is compared with a FileIndex
 * built from the records. Small appends go inside a runway of zeros written ahead of them.
 */
import { Buffer } from 'node:buffer';
import { constants } from 'node:fs';
import {
  copyFile,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
  appendFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { pack } from 'msgpackr';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { writeAt } from '../helpers/file-writes.js';
import { isStoreError, type StoreErrorCode } from '../../src/store/errors.js';
import { FileIndex, type FileVersion, type IndexRecord } from '../../src/store/file-index.js';
import { Journal, MAX_RECORD_BYTES } from '../../src/store/journal.js';

// File handles opened through node:fs/promises obey `fault`: 'write' makes the next write store
// half its bytes and then fail with ENOSPC (a disk filling up mid-append); 'flush' makes the next
// write of a handle opened with O_DSYNC (the log's) store its bytes and then fail with EIO, as a
// failed flush inside it does. Handles opened with O_DSYNC are counted. Otherwise the real module
// is used untouched.
const fault = vi.hoisted(() => ({
  next: undefined as 'write' | 'flush' | undefined,
  dsyncOpens: [] as string[],
}));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const failure = (code: string, syscall: string): Error =>
    Object.assign(new Error(`${code}: injected, ${syscall}`), { code, syscall });
  const open: typeof real.open = async (...args) => {
    const handle = await real.open(...args);
    const flags = args[1];
    const dsync = typeof flags === 'number' && (flags & constants.O_DSYNC) !== 0;
    if (dsync) fault.dsyncOpens.push(String(args[0]));
    return new Proxy(handle, {
      get(target, prop) {
        if (prop === 'write' && fault.next === 'write') {
          fault.next = undefined;
          return async (data: Uint8Array, offset: number, length: number, position: number) => {
            await target.write(data, offset, Math.floor(length / 2), position);
            throw failure('ENOSPC', 'write');
          };
        }
        if (prop === 'write' && dsync && fault.next === 'flush') {
          fault.next = undefined;
          return async (data: Uint8Array, offset: number, length: number, position: number) => {
            await target.write(data, offset, length, position);
            throw failure('EIO', 'write');
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function'
          ? (value as (...a: unknown[]) => unknown).bind(target)
          : value;
      },
    });
  };
  return { ...real, default: { ...real, open }, open };
});

const temps: string[] = [];
const journals: Journal[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'memflow-journal-'));
  temps.push(dir);
  return dir;
}
async function openJournal(dir: string, options?: Parameters<typeof Journal.open>[1]) {
  const opened = await Journal.open(dir, options);
  journals.push(opened.journal);
  return opened;
}
afterEach(async () => {
  fault.next = undefined;
  fault.dsyncOpens = [];
  await Promise.all(journals.splice(0).map((j) => j.close().catch(() => {})));
  await Promise.all(temps.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

const LOG1 = 'journal-000000000001.log';

function file(name: string, version: number, chunkCount = 1): FileVersion {
  return {
    name,
    version,
    sizeBytes: chunkCount,
    sha256: 'ab'.repeat(32),
    createdMs: 1_700_000_000_000,
    modifiedMs: 1_700_000_000_000 + version,
    chunkSizeBytes: 4 * 1024 * 1024,
    replicas: 2,
    chunks: Array.from({ length: chunkCount }, (_, index) => ({
      index,
      id: `u${name}-${version}.${index}`,
      sizeBytes: 1,
      checksum: 'cd'.repeat(32),
      ranks: [1, 2],
    })),
  };
}
const commit = (name: string, version: number): IndexRecord => ({
  op: 'commit',
  file: file(name, version),
});

function rebuild(records: readonly IndexRecord[]): FileIndex {
  const index = new FileIndex();
  for (const r of records) index.apply(r);
  return index;
}

async function expectCode(promise: Promise<unknown>, code: StoreErrorCode): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    expect(isStoreError(err, code), String(err)).toBe(true);
    return err as Error;
  }
  throw new Error(`expected ${code}, but the call succeeded`);
}

/** Closes `journal`; resolves with where its frames end (the runway's zeros follow them). */
async function closeAt(journal: Journal): Promise<number> {
  const end = journal.stats().logBytes;
  await journal.close();
  return end;
}

/** A frame exactly as the journal writes one, around any value. */
function frame(value: unknown): Buffer {
  const payload = pack(value);
  const length = Buffer.alloc(4);
  length.writeUInt32LE(payload.byteLength);
  const crc = Buffer.alloc(4);
  crc.writeUInt32LE(crc32(payload, crc32(length)) >>> 0);
  return Buffer.concat([length, crc, payload]);
}

describe('Journal', () => {
  it('starts empty and replays every appended record, in order, after a reopen', async () => {
    const dir = await freshDir();
    const { journal, records, droppedBytes } = await openJournal(dir);
    expect(records).toEqual([]);
    expect(droppedBytes).toBe(0);
    const written: IndexRecord[] = [
      commit('a', 1),
      commit('b', 1),
      { op: 'set-copies', name: 'a', version: 1, index: 0, ranks: [3, 4] },
      { op: 'delete', name: 'b', atMs: 42 },
      commit('a', 2),
      { op: 'version-floor', name: 'c', version: 7 },
    ];
    for (const r of written) await journal.append(r);
    await journal.close();
    const reopened = await openJournal(dir);
    expect(reopened.records).toEqual(written);
    expect(reopened.droppedBytes).toBe(0);
    // And appending continues after the replayed records.
    await reopened.journal.append(commit('d', 1));
    await reopened.journal.close();
    expect((await openJournal(dir)).records).toEqual([...written, commit('d', 1)]);
  });

  it('makes 1,000 concurrent appends durable with a few group writes', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    const written = Array.from({ length: 1000 }, (_, i) => commit(`f${i}`, 1));
    await Promise.all(written.map((r) => journal.append(r)));
    expect(journal.stats().syncs).toBeLessThanOrEqual(3);
    expect(journal.stats().pendingAppends).toBe(0);
    // No close: what is acknowledged is on disk already.
    const { records } = await Journal.open(dir).then((o) => {
      journals.push(o.journal);
      return o;
    });
    expect(records).toEqual(written);
  });

  it('opens the newest log O_DSYNC, a new one and a reopened one alike: an append is durable when written', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    expect(fault.dsyncOpens).toEqual([join(dir, LOG1)]);
    await journal.append(commit('a', 1));
    expect(journal.stats().syncs).toBe(1);
    await journal.close();
    await openJournal(dir);
    expect(fault.dsyncOpens).toEqual([join(dir, LOG1), join(dir, LOG1)]);
  });

  it('groups appends that arrive while a write runs into the next write', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    const first = journal.append(commit('first', 1));
    await Promise.resolve(); // the writer starts on the first append alone
    await new Promise((resolve) => setImmediate(resolve));
    const later: Promise<void>[] = [];
    for (let wave = 0; wave < 5; wave++) {
      for (let i = 0; i < 100; i++) later.push(journal.append(commit(`w${wave}-${i}`, 1)));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all([first, ...later]);
    // 501 appends; without group commit this would be 501 durable writes.
    expect(journal.stats().syncs).toBeLessThan(60);
    await journal.close();
    expect((await openJournal(dir)).records).toHaveLength(501);
  });

  it.each([
    ['cut off (a log without a runway)', 'truncate'],
    ['its end still zeros (a write into the runway)', 'zero'],
  ])('drops a record torn in the middle, %s, and keeps all before it', async (_what, how) => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    for (let i = 1; i <= 3; i++) await journal.append(commit('a', i));
    const end = await closeAt(journal);
    const path = join(dir, LOG1);
    if (how === 'truncate') await truncate(path, end - 10);
    else await writeAt(path, Buffer.alloc(10), end - 10);
    const reopened = await openJournal(dir);
    expect(reopened.records).toEqual([commit('a', 1), commit('a', 2)]);
    expect(reopened.droppedBytes).toBeGreaterThan(0);
    // The file was cut back to the last good frame, so new appends are readable after it.
    await reopened.journal.append(commit('a', 4));
    await reopened.journal.close();
    const again = await openJournal(dir);
    expect(again.records).toEqual([commit('a', 1), commit('a', 2), commit('a', 4)]);
    expect(again.droppedBytes).toBe(0);
  });

  it.each([
    ['random garbage', Buffer.from('\x13\x00\x00\x00garbage that is not a frame')],
    ['zeros (a preallocated tail)', Buffer.alloc(4096)],
    [
      'a frame header promising more bytes than exist',
      Buffer.from([0xff, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5]),
    ],
    ['an absurd length', Buffer.from([0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0])],
    ['three bytes', Buffer.from([1, 2, 3])],
    [
      'a good frame with one payload byte flipped',
      (() => {
        const f = frame(commit('z', 1));
        f[f.length - 3]! ^= 0x40;
        return f;
      })(),
    ],
  ])('drops %s written after the last frame, and nothing else', async (_what, junk) => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    await journal.append(commit('a', 1));
    await journal.append(commit('b', 1));
    const end = await closeAt(journal);
    const path = join(dir, LOG1);
    // Inside the runway, where the next write would have gone.
    await writeAt(path, junk, end);
    const reopened = await openJournal(dir);
    expect(reopened.records).toEqual([commit('a', 1), commit('b', 1)]);
    // Zeros are the runway, never counted as dropped.
    let contentBytes = junk.byteLength;
    while (contentBytes > 0 && junk[contentBytes - 1] === 0) contentBytes--;
    expect(reopened.droppedBytes).toBe(contentBytes);
    // New appends follow the last good frame and are read back after it.
    await reopened.journal.append(commit('c', 1));
    await reopened.journal.close();
    const again = await openJournal(dir);
    expect(again.records).toEqual([commit('a', 1), commit('b', 1), commit('c', 1)]);
    expect(again.droppedBytes).toBe(0);
  });

  it('drops junk appended past the runway, and nothing else', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    await journal.append(commit('a', 1));
    const end = await closeAt(journal);
    const path = join(dir, LOG1);
    const fileBytes = (await stat(path)).size;
    expect(fileBytes).toBeGreaterThan(end);
    await appendFile(path, Buffer.from('junk'));
    const reopened = await openJournal(dir);
    expect(reopened.records).toEqual([commit('a', 1)]);
    expect(reopened.droppedBytes).toBe(fileBytes + 4 - end);
    await reopened.journal.append(commit('b', 1));
    await reopened.journal.close();
    expect((await openJournal(dir)).records).toEqual([commit('a', 1), commit('b', 1)]);
  });

  it('writes small appends inside zeros written ahead of them, and keeps those zeros on reopen', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    for (let i = 1; i <= 20; i++) await journal.append(commit('a', i));
    const end = await closeAt(journal);
    const path = join(dir, LOG1);
    const fileBytes = (await stat(path)).size;
    // One runway served all 20 appends: 4 MiB written once, ahead of the first.
    expect(fileBytes - end).toBeGreaterThan(4 * 1024 * 1024 - 64 * 1024);
    expect(fileBytes - end).toBeLessThan(4 * 1024 * 1024);
    const tail = (await readFile(path)).subarray(end);
    expect(tail.every((b) => b === 0)).toBe(true);
    const reopened = await openJournal(dir);
    expect(reopened.records).toHaveLength(20);
    expect(reopened.droppedBytes).toBe(0);
    expect((await stat(path)).size).toBe(fileBytes);
    await reopened.journal.append(commit('a', 21));
    expect(reopened.journal.stats().logBytes).toBeGreaterThan(end);
    await reopened.journal.close();
    expect((await stat(path)).size).toBe(fileBytes);
    expect((await openJournal(dir)).records).toHaveLength(21);
  });

  it('recreates a log whose header was torn while it was being created', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, LOG1), Buffer.from([0x20, 0, 0]));
    const { journal, records, droppedBytes } = await openJournal(dir);
    expect(records).toEqual([]);
    // The byte that held something; zeros are never counted as dropped.
    expect(droppedBytes).toBe(1);
    await journal.append(commit('a', 1));
    await journal.close();
    expect((await openJournal(dir)).records).toEqual([commit('a', 1)]);
  });

  it('compacts: a snapshot replaces the history, later appends follow it, old logs go away', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    const history = [
      commit('a', 1),
      commit('a', 2),
      commit('b', 1),
      { op: 'delete', name: 'b', atMs: 1 } as const,
    ];
    for (const r of history) await journal.append(r);
    const before = rebuild(history);
    await journal.compact(before.snapshot());
    expect(journal.stats().generation).toBe(2);
    await journal.append(commit('c', 1));
    await journal.append(commit('a', 3));
    await journal.close();
    expect((await readdir(dir)).sort()).toEqual(['index.snapshot', 'journal-000000000002.log']);

    const { records } = await openJournal(dir);
    expect(records).toEqual([...before.snapshot(), commit('c', 1), commit('a', 3)]);
    const after = rebuild(records);
    expect(after.list()).toEqual(rebuild([...history, commit('c', 1), commit('a', 3)]).list());
    expect(after.nextVersion('b')).toBe(2); // the deleted name's versions are not reused
  });

  it('compacts twice in a row, and again after a reopen', async () => {
    const dir = await freshDir();
    const first = await openJournal(dir);
    const all: IndexRecord[] = [];
    const add = async (j: Journal, r: IndexRecord): Promise<void> => {
      await j.append(r);
      all.push(r);
    };
    await add(first.journal, commit('a', 1));
    const c1 = first.journal.compact(rebuild(all).snapshot());
    const c2 = first.journal.compact(rebuild(all).snapshot());
    await Promise.all([c1, c2]);
    await add(first.journal, commit('b', 1));
    await first.journal.close();
    const second = await openJournal(dir);
    await second.journal.compact(rebuild(second.records).snapshot());
    await add(second.journal, commit('c', 1));
    await second.journal.close();
    const third = await openJournal(dir);
    expect(rebuild(third.records).list()).toEqual(rebuild(all).list());
    expect((await readdir(dir)).filter((n) => n.endsWith('.log'))).toHaveLength(1);
  });

  it('loses nothing when appends are in flight while compaction starts', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    // The coordinator's discipline: apply a record to the index once its append resolved.
    const index = new FileIndex();
    const all: IndexRecord[] = [];
    const appendAndApply = (r: IndexRecord): Promise<void> => {
      all.push(r);
      return journal.append(r).then(() => void index.apply(r));
    };
    await Promise.all(Array.from({ length: 100 }, (_, i) => appendAndApply(commit(`a${i}`, 1))));
    const inFlight = Array.from({ length: 100 }, (_, i) => appendAndApply(commit(`b${i}`, 1)));
    await Promise.resolve();
    await Promise.resolve(); // let the writer take the b-batch
    const compaction = journal.compact(index.snapshot()); // the b records are not applied yet
    const after = Array.from({ length: 100 }, (_, i) => appendAndApply(commit(`c${i}`, 1)));
    const deletes = Array.from({ length: 50 }, (_, i) =>
      appendAndApply({ op: 'delete', name: `a${i}`, atMs: 1 }),
    );
    await Promise.all([...inFlight, compaction, ...after, ...deletes]);
    await journal.close();
    const reopened = await openJournal(dir);
    expect(rebuild(reopened.records).list()).toEqual(rebuild(all).list());
    expect(rebuild(reopened.records).size()).toBe(250);
  });

  it('replays to the same state when a crash interrupted compaction before the snapshot landed', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    const history = [commit('a', 1), commit('b', 1), commit('a', 2)];
    for (const r of history) await journal.append(r);
    await copyFile(join(dir, LOG1), join(dir, 'saved-log-1'));
    await journal.compact(rebuild(history).snapshot());
    await journal.append(commit('c', 1));
    await journal.close();
    // Undo the snapshot and the removal of log 1: the state of a crash between steps (1) and (2).
    await rm(join(dir, 'index.snapshot'));
    await copyFile(join(dir, 'saved-log-1'), join(dir, LOG1));
    await rm(join(dir, 'saved-log-1'));
    await writeFile(join(dir, 'index.snapshot.tmp'), 'half a snapshot');
    const reopened = await openJournal(dir);
    expect(reopened.records).toEqual([...history, commit('c', 1)]);
    expect(await readdir(dir)).not.toContain('index.snapshot.tmp');
  });

  it('removes a log the snapshot already covers (crash before the old log was removed)', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    await journal.append(commit('a', 1));
    await copyFile(join(dir, LOG1), join(dir, 'saved'));
    await journal.compact(rebuild([commit('a', 1)]).snapshot());
    await journal.close();
    await copyFile(join(dir, 'saved'), join(dir, LOG1));
    await rm(join(dir, 'saved'));
    const reopened = await openJournal(dir);
    expect(reopened.records).toEqual([commit('a', 1)]);
    expect(await readdir(dir)).not.toContain(LOG1);
  });

  it('refuses a record over 16 MiB with STORE_BAD_REQUEST and writes nothing', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    const huge = commit('x'.repeat(MAX_RECORD_BYTES), 1);
    const err = await expectCode(journal.append(huge), 'STORE_BAD_REQUEST');
    expect(err.message).toMatch(/larger than the limit/);
    await journal.append(commit('small', 1));
    await journal.close();
    expect((await openJournal(dir)).records).toEqual([commit('small', 1)]);
  });

  it('refuses a malformed record with STORE_BAD_REQUEST', async () => {
    const { journal } = await openJournal(await freshDir());
    await expectCode(
      journal.append({ op: 'rename' } as unknown as IndexRecord),
      'STORE_BAD_REQUEST',
    );
  });

  it('answers STORE_BUSY when more bytes wait to be written than allowed', async () => {
    const { journal } = await openJournal(await freshDir(), {
      maxPendingBytes: MAX_RECORD_BYTES + 8,
    });
    const big: IndexRecord = {
      op: 'version-floor',
      name: 'y'.repeat(10 * 1024 * 1024),
      version: 1,
    };
    const first = journal.append(big);
    await expectCode(journal.append(big), 'STORE_BUSY');
    await first;
    await journal.append(big); // room again once the first is written
  });

  it('refuses appends and compactions after close with STORE_UNAVAILABLE, and closes twice', async () => {
    const { journal } = await openJournal(await freshDir());
    const pending = journal.append(commit('a', 1));
    await journal.close();
    await pending; // close waited for it
    await journal.close();
    await expectCode(journal.append(commit('b', 1)), 'STORE_UNAVAILABLE');
    await expectCode(journal.compact([]), 'STORE_UNAVAILABLE');
  });

  it('refuses to open on a damaged snapshot with STORE_CORRUPT', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    await journal.append(commit('a', 1));
    await journal.append(commit('b', 1));
    await journal.compact(rebuild([commit('a', 1), commit('b', 1)]).snapshot());
    await journal.close();
    const path = join(dir, 'index.snapshot');
    const bytes = await readFile(path);
    bytes[bytes.length - 5]! ^= 0x01;
    await writeFile(path, bytes);
    const err = await expectCode(Journal.open(dir), 'STORE_CORRUPT');
    expect(err.message).toMatch(/index\.snapshot is damaged/);
  });

  it('refuses to open on an intact frame that holds no index record, naming the file', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    await journal.append(commit('a', 1));
    const end = await closeAt(journal);
    await writeAt(join(dir, LOG1), frame({ op: 'commit', file: { name: 'no fields' } }), end);
    const err = await expectCode(Journal.open(dir), 'STORE_CORRUPT');
    expect(err.message).toMatch(new RegExp(`${LOG1}.*not an index record`));
  });

  it('refuses to open when a log generation is missing', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    await journal.append(commit('a', 1));
    await journal.close();
    await copyFile(join(dir, LOG1), join(dir, 'journal-000000000003.log'));
    await expectCode(Journal.open(dir), 'STORE_CORRUPT');
  });
  it('fails a batch cut short by a full disk with STORE_NO_SPACE, cuts it off, and goes on', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    await journal.append(commit('a', 1));
    fault.next = 'write';
    const err = await expectCode(journal.append(commit('lost', 1)), 'STORE_NO_SPACE');
    expect(err.cause).toBeInstanceOf(Error);
    await journal.append(commit('b', 1));
    await journal.close();
    const reopened = await openJournal(dir);
    expect(reopened.records).toEqual([commit('a', 1), commit('b', 1)]);
    expect(reopened.droppedBytes).toBe(0);
  });

  it('refuses everything with STORE_INTERNAL after a failed flush (an O_DSYNC write); a reopen recovers', async () => {
    const dir = await freshDir();
    const { journal } = await openJournal(dir);
    await journal.append(commit('a', 1));
    fault.next = 'flush';
    const err = await expectCode(journal.append(commit('unsure', 1)), 'STORE_INTERNAL');
    expect(err.message).toMatch(/restart the coordinator/);
    await expectCode(journal.append(commit('b', 1)), 'STORE_INTERNAL');
    await expectCode(journal.compact([]), 'STORE_INTERNAL');
    await journal.close();
    // The record whose flush failed may or may not be on disk; what was acknowledged is.
    const { records } = await openJournal(dir);
    expect(records[0]).toEqual(commit('a', 1));
    expect(records.map((r) => (r.op === 'commit' ? r.file.name : r.op))).not.toContain('b');
  });
});
