/**
 * Editing store files the way a crash would have left them, for the journal's and the volume
 * store's recovery tests.
 */
import { open } from 'node:fs/promises';

/** Writes `data` at `position` of the file, as a write the crash interrupted would have. */
export async function writeAt(path: string, data: Uint8Array, position: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(data, 0, data.byteLength, position);
  } finally {
    await handle.close();
  }
}
