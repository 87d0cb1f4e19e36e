/**
 * The runway helpers the journal and the volume store share. Goal: zeros written ahead of a
 * file's data are found again exactly, whatever the data ends with, and the look back is
 * bounded. Method: real files in a fresh temp directory, written with known bytes.
 */
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { endOfNonZero, RUNWAY_BYTES, writeZeros } from '../../src/store/durable-fs.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function fileWith(data: Uint8Array): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'memflow-durable-fs-'));
  dirs.push(dir);
  const path = join(dir, 'file');
  const handle = await open(path, 'w');
  await handle.write(data, 0, data.byteLength, 0);
  await handle.close();
  return path;
}

async function endOf(path: string, window?: number): Promise<number> {
  const handle = await open(path, 'r');
  try {
    return await endOfNonZero(handle, (await stat(path)).size, window);
  } finally {
    await handle.close();
  }
}

describe('runway helpers', () => {
  it('writeZeros writes exactly [from, to) with zeros, across several blocks', async () => {
    const path = await fileWith(Buffer.alloc(10, 0xab));
    const handle = await open(path, 'r+');
    await writeZeros(handle, 10, 10 + 3 * 1024 * 1024 + 5);
    await handle.close();
    expect((await stat(path)).size).toBe(10 + 3 * 1024 * 1024 + 5);
    expect(await endOf(path)).toBe(10);
  });

  it('endOfNonZero finds the end of the data before the zeros, and the end of a file without any', async () => {
    const data = Buffer.alloc(5000, 7);
    expect(await endOf(await fileWith(data))).toBe(5000);
    const withZeros = Buffer.concat([data, Buffer.alloc(RUNWAY_BYTES)]);
    expect(await endOf(await fileWith(withZeros))).toBe(5000);
    // Data that itself ends in zeros: its content ends earlier, never later.
    const trailing = Buffer.concat([Buffer.alloc(100, 1), Buffer.alloc(50), Buffer.alloc(2000)]);
    expect(await endOf(await fileWith(trailing))).toBe(100);
    expect(await endOf(await fileWith(Buffer.alloc(0)))).toBe(0);
    expect(await endOf(await fileWith(Buffer.alloc(4096)))).toBe(0);
  });

  it('endOfNonZero looks back no further than its window, answering the window start', async () => {
    const data = Buffer.concat([Buffer.alloc(10, 1), Buffer.alloc(100_000)]);
    expect(await endOf(await fileWith(data), 4096)).toBe(data.byteLength - 4096);
  });
});
