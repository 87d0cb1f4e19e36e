/**
 * The file store's everyday operations, end to end. Goal: what a user of dfs-client sees on a
 * running store — upload, list (and --json), metadata (and --json: sha256 equal to the local
 * file's, two copies of every chunk on two different data ranks), retrieve to a path and to
 * stdout, refusal to overwrite without --force, replace (version 2), delete (then "no such file",
 * exit 3); edge sizes (empty, 1 byte, exactly one chunk, one chunk plus one byte) round-trip;
 * UTF-8 names work and '.', '..', 'a/b' are refused with the reason; 32 clients at once, writing
 * and reading the same and different names, only ever read a whole version that was written; and
 * every rank runs with the malloc settings memflow-run gives the store (runtime/malloc-tuning.ts).
 *
 * Method: one real store (memflow-run -n 4, --chunk-size 64K so chunk edges are cheap to reach)
 * on a fresh temporary data dir and a free port, shared by every test of this file (each test
 * uses its own names); the dfs-client command (bin/dfs-client.js, built by npm run build) as a
 * user runs it, and for the 32 concurrent clients the DfsClient library in this process (one
 * ZeroMQ socket per client). Content is deterministic pseudo-random data, compared by sha256.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DfsClient } from '../../src/client/dfs-client.js';
import type { FileMetadata, ListEntry } from '../../src/protocol/client-protocol.js';
import { MALLOC_TUNABLES } from '../../src/runtime/malloc-tuning.js';
import {
  KiB,
  StoreProcess,
  cleanupStores,
  describeRun,
  dfs,
  makeTempDir,
  sha256File,
  sha256Of,
  writePseudoRandomFile,
  type DfsResult,
} from '../helpers/store-process.js';

const CHUNK = 64 * KiB;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

let store: StoreProcess;
let work: string;

beforeAll(async () => {
  store = await StoreProcess.start({ chunkSize: '64K' });
  work = makeTempDir('basics-work');
});

afterAll(async () => {
  try {
    if (store !== undefined) expect(await store.stop()).toEqual({ code: 143, signal: null });
  } finally {
    await cleanupStores();
  }
});

/** dfs-client ARGS against the shared store, expecting `code`; returns the run. */
async function client(args: string[], code: number, cwd?: string): Promise<DfsResult> {
  const result = await dfs(store.server, args, { timeoutMs: 30_000, ...(cwd ? { cwd } : {}) });
  expect(result.code, describeRun(args, result)).toBe(code);
  return result;
}

async function localFile(
  name: string,
  sizeBytes: number,
  seed = name,
): Promise<{ file: string; sha: string }> {
  const file = path.join(work, name);
  const sha = await writePseudoRandomFile(file, sizeBytes, seed);
  return { file, sha };
}

async function metadataOf(name: string): Promise<FileMetadata> {
  const result = await client([name, '-m', '--json'], 0);
  return JSON.parse(result.stdout.toString('utf8')) as FileMetadata;
}

async function listJson(): Promise<ListEntry[]> {
  const result = await client(['list', '--json'], 0);
  return JSON.parse(result.stdout.toString('utf8')) as ListEntry[];
}

/** A writable that only hashes what it is given. */
function hashingSink(): { sink: Writable; digest: () => string } {
  const hash = createHash('sha256');
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback();
    },
  });
  return { sink, digest: () => hash.digest('hex') };
}

/** A process's original environment block, as /proc has it. */
function rawEnviron(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
}

describe('the ranks memflow-run starts', () => {
  it('all run with the malloc settings that keep freed chunk buffers (GLIBC_TUNABLES)', () => {
    const pids = [...store.rankPids.values()];
    expect(pids).toHaveLength(4);
    // Debian's glibc parses GLIBC_TUNABLES in the process's original environment block, ending
    // each setting with a NUL as it goes (the process itself gets a copy), so /proc may show the
    // settings as separate strings.
    const asGiven = `GLIBC_TUNABLES=${MALLOC_TUNABLES}\0`;
    const asParsed = `GLIBC_TUNABLES=${MALLOC_TUNABLES.replaceAll(':', '\0')}\0`;
    for (const pid of pids) {
      const environ = rawEnviron(pid);
      expect(environ.includes(asGiven) || environ.includes(asParsed), `rank process ${pid}`).toBe(
        true,
      );
    }
  });
});

describe('upload, list, metadata, retrieve (64 KiB chunks, 4 ranks, 2 copies)', () => {
  it('a 200,000-byte file uploads, lists, shows its metadata and retrieves with the same sha256', async () => {
    const { file, sha } = await localFile('basic.bin', 200_000);
    const upload = await client([file, '-a', '--as', 'basic.bin'], 0);
    expect(upload.stdout.toString()).toMatch(/^uploaded basic\.bin \(.*4 chunks, 2 copies each\)/);

    const list = await client(['list'], 0);
    expect(list.stdout.toString()).toMatch(/^basic\.bin\s+195\.3 KiB\s+\S+ \S+\s+healthy$/m);

    const entry = (await listJson()).find((f) => f.name === 'basic.bin');
    expect(entry).toMatchObject({ name: 'basic.bin', sizeBytes: 200_000, health: 'healthy' });
    expect(entry?.modified).toMatch(ISO_TIME);

    const human = await client(['basic.bin', '-m'], 0);
    expect(human.stdout.toString()).toContain(sha);

    const meta = await metadataOf('basic.bin');
    expect(meta).toMatchObject({ name: 'basic.bin', sizeBytes: 200_000, sha256: sha, version: 1 });
    expect(meta.created).toMatch(ISO_TIME);
    expect(meta.modified).toMatch(ISO_TIME);
    expect(meta.chunks.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(meta.chunks.map((c) => c.sizeBytes)).toEqual([CHUNK, CHUNK, CHUNK, 200_000 - 3 * CHUNK]);
    for (const chunk of meta.chunks) {
      expect(chunk.checksum).toMatch(/^[0-9a-f]{64}$/);
      expect(chunk.copies).toHaveLength(2);
      const ranks = chunk.copies.map((c) => c.rank);
      expect(new Set(ranks).size, `chunk ${chunk.index} copies on ranks ${ranks.join(', ')}`).toBe(
        2,
      );
      for (const copy of chunk.copies) {
        expect([1, 2, 3]).toContain(copy.rank);
        expect(copy.host).toMatch(/\S/);
      }
    }

    const out = path.join(work, 'basic.out');
    const retrieve = await client(['basic.bin', '-r', '-o', out], 0);
    expect(retrieve.stdout.toString()).toMatch(/^retrieved basic\.bin .*version 1\) to /);
    expect(await sha256File(out)).toBe(sha);
    // --verify also recomputes the whole sha256 (each chunk's BLAKE3 is checked either way).
    const verified = path.join(work, 'basic.verified');
    await client(['basic.bin', '-r', '-o', verified, '--verify'], 0);
    expect(await sha256File(verified)).toBe(sha);
    await client(['basic.bin', '-m', '--verify'], 2);
  });

  it('-r -o - writes exactly the file to stdout and nothing else (3 chunks + 17 bytes)', async () => {
    const size = 3 * CHUNK + 17;
    const { file, sha } = await localFile('stdout.bin', size);
    await client([file, '-a'], 0);
    const result = await client(['stdout.bin', '-r', '-o', '-'], 0);
    expect(result.stdout.length).toBe(size);
    expect(sha256Of(result.stdout)).toBe(sha);
  });

  it('-r refuses to overwrite an existing local file without --force (exit 1, file untouched) and replaces it with --force', async () => {
    const { file, sha } = await localFile('keep.bin', 100_000);
    await client([file, '-a'], 0);
    const target = path.join(work, 'existing.txt');
    fs.writeFileSync(target, 'precious local content\n');

    const refused = await client(['keep.bin', '-r', '-o', target], 1);
    expect(refused.stderr).toContain('already exists');
    expect(refused.stderr).toContain('--force');
    expect(fs.readFileSync(target, 'utf8')).toBe('precious local content\n');
    // A refused download leaves no temporary file beside the target.
    expect(fs.readdirSync(work).filter((n) => n.includes('memflow-part'))).toEqual([]);

    await client(['keep.bin', '-r', '-o', target, '--force'], 0);
    expect(await sha256File(target)).toBe(sha);
  });

  it('uploading to an existing name makes version 2 with the new content; created stays, modified moves on', async () => {
    const first = await localFile('replace-v1.bin', 150_000);
    const second = await localFile('replace-v2.bin', 90_000);
    await client([first.file, '-a', '--as', 'replace.bin'], 0);
    const v1 = await metadataOf('replace.bin');
    await client([second.file, '-a', '--as', 'replace.bin'], 0);
    const v2 = await metadataOf('replace.bin');
    expect(v2).toMatchObject({ version: 2, sizeBytes: 90_000, sha256: second.sha });
    expect(v2.created).toBe(v1.created);
    expect(Date.parse(v2.modified)).toBeGreaterThanOrEqual(Date.parse(v1.modified));

    const result = await client(['replace.bin', '-r', '-o', '-'], 0);
    expect(sha256Of(result.stdout)).toBe(second.sha);
    const listed = (await listJson()).filter((f) => f.name === 'replace.bin');
    expect(listed).toHaveLength(1);
    expect(listed[0]?.sizeBytes).toBe(90_000);
  });

  it('-d deletes a file: then -m and -r exit 3 and list no longer shows it', async () => {
    const { file } = await localFile('doomed.bin', 70_000);
    await client([file, '-a'], 0);
    const deleted = await client(['doomed.bin', '-d'], 0);
    expect(deleted.stdout.toString()).toContain('deleted doomed.bin');
    const meta = await client(['doomed.bin', '-m'], 3);
    expect(meta.stderr).toContain('doomed.bin');
    await client(['doomed.bin', '-r', '-o', path.join(work, 'doomed.out')], 3);
    expect(fs.existsSync(path.join(work, 'doomed.out'))).toBe(false);
    expect((await listJson()).map((f) => f.name)).not.toContain('doomed.bin');
  });

  it.each([
    ['an empty file', 0, 0],
    ['a 1-byte file', 1, 1],
    ['a file of exactly one chunk', CHUNK, 1],
    ['a file of one chunk plus one byte', CHUNK + 1, 2],
  ])('%s (%i bytes) round-trips, stored as %i chunks', async (label, size, chunks) => {
    const name = `size-${size}.bin`;
    const { file, sha } = await localFile(name, size);
    await client([file, '-a'], 0);
    const meta = await metadataOf(name);
    expect(meta).toMatchObject({ sizeBytes: size, sha256: sha, version: 1 });
    expect(meta.chunks, label).toHaveLength(chunks);
    const out = path.join(work, `${name}.out`);
    await client([name, '-r', '-o', out], 0);
    expect(fs.statSync(out).size).toBe(size);
    expect(await sha256File(out)).toBe(sha);
  });

  it('a UTF-8 name ("résumé 2024.pdf") uploads, lists as is, and retrieves to ./NAME by default', async () => {
    const name = 'résumé 2024.pdf';
    const { file, sha } = await localFile('resume-local.pdf', 80_000);
    await client([file, '-a', '--as', name], 0);
    expect((await listJson()).map((f) => f.name)).toContain(name);
    expect((await client(['list'], 0)).stdout.toString()).toContain(name);
    expect((await metadataOf(name)).sha256).toBe(sha);
    const cwd = makeTempDir('basics-cwd');
    await client([name, '-r'], 0, cwd);
    expect(fs.readdirSync(cwd)).toEqual([name]);
    expect(await sha256File(path.join(cwd, name))).toBe(sha);
  });

  it.each([
    ['.', "'.' and '..'"],
    ['..', "'.' and '..'"],
    ['a/b', "contains '/'"],
  ])(
    'uploading as %j is refused (exit 1) with the reason, and nothing is stored',
    async (name, reason) => {
      const { file } = await localFile('bad-name-source.bin', 1000);
      const result = await client([file, '-a', '--as', name], 1);
      expect(result.stderr).toMatch(/^dfs-client: cannot upload .*\n$/);
      expect(result.stderr).toContain(JSON.stringify(name));
      expect(result.stderr).toContain(reason);
      expect((await listJson()).map((f) => f.name)).not.toContain(name);
    },
  );
});

describe('32 clients at once (DfsClient library, one socket each)', () => {
  it('16 replace one shared name and 16 write their own, 3 rounds each, reading after every write: every read is a whole written version', async () => {
    const CLIENTS = 32;
    const ROUNDS = 3;
    const initial = await localFile('shared-v0.bin', 120_000);
    await client([initial.file, '-a', '--as', 'shared.bin'], 0);

    const files = await Promise.all(
      [...Array(CLIENTS).keys()].map((i) => localFile(`client-${i}.bin`, 60_000 + i * 4099)),
    );
    // Every version shared.bin can ever have: the first one and the even clients' files.
    const sharedVersions = new Set([
      initial.sha,
      ...files.filter((_, i) => i % 2 === 0).map((f) => f.sha),
    ]);
    const clients = files.map(() => new DfsClient({ server: store.server, timeoutMs: 30_000 }));
    const badReads: string[] = [];
    let reads = 0;

    const readSha = async (c: DfsClient, name: string): Promise<string> => {
      const { sink, digest } = hashingSink();
      const meta = await c.download(name, sink);
      const got = digest();
      // The client verified the sha256 itself; the metadata must describe what came back.
      if (meta.sha256 !== got) badReads.push(`${name}: metadata ${meta.sha256} but content ${got}`);
      reads++;
      return got;
    };

    try {
      await Promise.all(
        clients.map(async (c, i) => {
          const mine = files[i]!;
          const name = i % 2 === 0 ? 'shared.bin' : `own-${i}.bin`;
          for (let round = 0; round < ROUNDS; round++) {
            await c.upload(mine.file, { name });
            const shared = await readSha(c, 'shared.bin');
            if (!sharedVersions.has(shared))
              badReads.push(`client ${i} round ${round}: shared.bin read as ${shared}`);
            if (i % 2 === 1) {
              const own = await readSha(c, name);
              if (own !== mine.sha)
                badReads.push(`client ${i} round ${round}: ${name} read as ${own}`);
            }
          }
        }),
      );
    } finally {
      clients.forEach((c) => c.close());
    }
    expect(badReads).toEqual([]);
    expect(reads).toBe(CLIENTS * ROUNDS + (CLIENTS / 2) * ROUNDS);

    const shared = await metadataOf('shared.bin');
    expect(shared.version).toBe(1 + (CLIENTS / 2) * ROUNDS);
    expect(sharedVersions.has(shared.sha256)).toBe(true);
    const listed = new Map((await listJson()).map((f) => [f.name, f]));
    for (let i = 1; i < CLIENTS; i += 2) {
      expect(listed.get(`own-${i}.bin`)?.sizeBytes).toBe(60_000 + i * 4099);
    }

    // The store keeps serving the command line afterwards.
    const after = await localFile('after-crowd.bin', 100_000);
    await client([after.file, '-a'], 0);
    const back = await client(['after-crowd.bin', '-r', '-o', '-'], 0);
    expect(sha256Of(back.stdout)).toBe(after.sha);
  });
});
