/**
 * Human-readable sizes for options and output ("--chunk-size 4MiB", "used 1.5 GiB"). Every
 * suffix is binary (K = 1024): people who write "4MB" for a chunk size mean 4 MiB, and a single
 * meaning is better than guessing.
 */

const UNIT_POWERS: Record<string, number> = { '': 0, K: 1, M: 2, G: 3, T: 4 };
/** Longest text parseSize looks at; a size option is never longer, so anything longer is junk. */
const MAX_SIZE_TEXT = 64;
const SIZE_PATTERN = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])I?)?B?$/;

/**
 * The number of bytes a size names: a non-negative decimal number, optionally followed by a unit
 * K, M, G or T (powers of 1024, any case, with an optional "i" and an optional "B"), or by just
 * "B". Examples: "100", "100B", "512K", "4M", "4m", "4MB", "4MiB", "1.5G". Spaces around the text
 * and between number and unit are allowed. A number (not text) is accepted if it is already a
 * non-negative safe integer.
 *
 * Throws a plain Error naming the problem for anything else: empty text, a sign, an unknown unit,
 * a result that is not a whole number of bytes ("1.5B", "0.1K"), or one above
 * Number.MAX_SAFE_INTEGER. (Not a StoreError: sizes come from options and config, not requests.)
 */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (Number.isSafeInteger(text) && text >= 0) return text;
    throw new Error(`a size must be a non-negative whole number of bytes, got ${text}`);
  }
  if (typeof text !== 'string')
    throw new Error(`a size must be text like "4MiB", got ${typeof text}`);
  const shown = JSON.stringify(
    text.length > MAX_SIZE_TEXT ? `${text.slice(0, MAX_SIZE_TEXT)}…` : text,
  );
  if (text.length > MAX_SIZE_TEXT) {
    throw new Error(
      `size ${shown} is too long to be a size (more than ${MAX_SIZE_TEXT} characters)`,
    );
  }
  const trimmed = text.trim();
  if (trimmed === '') throw new Error('a size must not be empty; write for example "4MiB"');
  if (/^[-+]/.test(trimmed)) {
    throw new Error(`size ${shown} has a sign; a size is a non-negative number like "4MiB"`);
  }
  const match = SIZE_PATTERN.exec(trimmed.toUpperCase());
  if (match === null) {
    throw new Error(
      `size ${shown} is not understood; write a number with an optional unit K, M, G or T ` +
        `(1024-based, optionally followed by "iB" or "B"), for example "512K", "4MiB" or "1.5G"`,
    );
  }
  // "iB" without K, M, G or T is refused by the pattern: the "i" belongs to a unit.
  const [, digits = '', unit = ''] = match;
  const power = UNIT_POWERS[unit] ?? 0;
  const bytes = Number(digits) * 1024 ** power;
  if (!Number.isInteger(bytes)) {
    throw new Error(`size ${shown} is ${bytes} bytes, not a whole number of bytes`);
  }
  if (!Number.isSafeInteger(bytes)) {
    throw new Error(`size ${shown} is larger than ${Number.MAX_SAFE_INTEGER} bytes`);
  }
  return bytes;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/**
 * A short human form of a byte count: whole bytes below 1 KiB ("100 B"), otherwise one decimal
 * and a binary unit ("4.0 MiB", "1.5 GiB"). Fractions of a byte (averages, rates) are rounded.
 * Throws RangeError for negative or non-finite input (a programmer error).
 */
export function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) {
    throw new RangeError(`formatSize needs a non-negative finite number, got ${bytes}`);
  }
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  let unit = 0;
  let value = bytes;
  // Stop at a unit where the value, rounded to one decimal, stays below 1024 ("1024.0 KiB" would
  // be a strange way to write 1.0 MiB).
  while (unit < UNITS.length - 1 && value >= 1023.95) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${UNITS[unit]}`;
}
