/**
 * File names. A name is the key of the master index and is shown by `list`; it is never used as a
 * path on any disk (chunks are stored under chunk ids), so the rules below exist to keep names
 * printable, portable to a POSIX file name when a client downloads a file, and bounded in size.
 *
 * Names are compared byte for byte after UTF-8 encoding: no Unicode normalisation, no case
 * folding, so "é" (U+00E9) and "e" + U+0301 are two different names, as on Linux file systems.
 */
import { Buffer } from 'node:buffer';
import { StoreError } from './errors.js';

/** The largest name in UTF-8 bytes: NAME_MAX of Linux file systems, so a download can keep it. */
export const MAX_NAME_BYTES = 255;

/** How much of a refused name an error message quotes; a refused name may be megabytes long. */
const QUOTE_MAX_CHARS = 64;

// Lone surrogates: a high surrogate not followed by a low one, or a low one not preceded by a
// high one. Such a string has no UTF-8 encoding (Buffer.from would silently write U+FFFD).
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_CHAR = /[\u0000-\u001F]/;

/** The name quoted for an error message: JSON escapes make control characters visible. */
function quote(name: string): string {
  const shown = name.length > QUOTE_MAX_CHARS ? `${name.slice(0, QUOTE_MAX_CHARS)}…` : name;
  return JSON.stringify(shown);
}

function refuse(name: unknown, reason: string, message: string): never {
  throw new StoreError('STORE_BAD_NAME', message, {
    reason,
    ...(typeof name === 'string' ? { name: name.slice(0, QUOTE_MAX_CHARS) } : {}),
  });
}

/**
 * Returns `name` unchanged if the store accepts it as a file name: a string of 1 to 255 UTF-8
 * bytes (Buffer.byteLength), valid UTF-16 (no lone surrogates, so it has a UTF-8 encoding),
 * without control characters U+0000-U+001F (NUL included) or '/', and neither '.' nor '..'.
 *
 * Throws StoreError STORE_BAD_NAME otherwise, with a message that names the reason (for example
 * `name "a/b" contains '/'`) and detail { reason, name? } where reason is one of 'not-a-string',
 * 'empty', 'dot', 'lone-surrogate', 'nul', 'control-character', 'slash', 'too-long'.
 */
export function validateName(name: unknown): string {
  if (typeof name !== 'string') {
    refuse(name, 'not-a-string', `a name must be a string, got ${describeType(name)}`);
  }
  if (name === '') refuse(name, 'empty', 'a name must not be empty');
  if (name === '.' || name === '..') {
    refuse(name, 'dot', `name ${quote(name)} is refused: '.' and '..' mean directories`);
  }
  if (LONE_SURROGATE.test(name)) {
    refuse(
      name,
      'lone-surrogate',
      `name ${quote(name)} contains a lone surrogate, so it is not valid UTF-8`,
    );
  }
  if (name.includes('\u0000')) refuse(name, 'nul', `name ${quote(name)} contains NUL`);
  const control = CONTROL_CHAR.exec(name);
  if (control !== null) {
    const hex = control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    refuse(name, 'control-character', `name ${quote(name)} contains control character U+${hex}`);
  }
  if (name.includes('/')) refuse(name, 'slash', `name ${quote(name)} contains '/'`);
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_NAME_BYTES) {
    refuse(
      name,
      'too-long',
      `name ${quote(name)} is ${bytes} bytes in UTF-8, more than the limit of ${MAX_NAME_BYTES}`,
    );
  }
  return name;
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}
