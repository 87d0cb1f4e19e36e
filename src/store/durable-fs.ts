/**
 * Small file-system pieces the durable stores (journal, disk and volume chunk stores) share.
 */
import { open } from 'node:fs/promises';
import zlib from 'node:zlib';

/** fsync of a directory, which makes the creation, rename or removal of its entries durable. */
export async function fsyncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

let crcTable: Uint32Array | undefined;
/** Table-driven CRC32 (IEEE), for Node versions before zlib.crc32 (added in 20.15). */
function crc32Js(data: Uint8Array, value = 0): number {
  if (crcTable === undefined) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = ~value >>> 0;
  for (const byte of data) crc = (crcTable[(crc ^ byte) & 0xff] ?? 0) ^ (crc >>> 8);
  return ~crc >>> 0;
}

/** CRC32 (IEEE) of `data`, continuing from `value`: frames torn writes are recognized by. */
export const crc32: (data: Uint8Array, value?: number) => number =
  typeof zlib.crc32 === 'function' ? zlib.crc32 : crc32Js;
