/**
 * File names. Goal: validateName accepts exactly the names of its contract (any UTF-8 string of
 * 1-255 bytes without NUL, control characters or '/', other than '.' and '..') and refuses every
 * other input with STORE_BAD_NAME and a message that says why. Method: one case per rule, with
 * the byte limit probed at 255 and 256 bytes using 1-, 2-, 3- and 4-byte characters.
 */
import { describe, expect, it } from 'vitest';
import { StoreError } from '../../src/store/errors.js';
import { MAX_NAME_BYTES, validateName } from '../../src/store/names.js';

/** The StoreError validateName throws for `name` (fails the test if it does not throw one). */
function refusal(name: unknown): StoreError {
  try {
    validateName(name);
  } catch (err) {
    expect(err).toBeInstanceOf(StoreError);
    return err as StoreError;
  }
  throw new Error(`validateName accepted ${JSON.stringify(name)}`);
}

describe('validateName accepts', () => {
  it.each([
    ['a plain ASCII name', 'report.csv'],
    ['a name with spaces and punctuation', 'my file (v2) — final!.tar.gz'],
    ['a name starting with a dot', '.hidden'],
    ['three dots', '...'],
    ['a backslash (only / separates paths on POSIX)', 'a\\b'],
    ['DEL (U+007F is not in U+0000-U+001F)', 'a\u007fb'],
    ['Unicode letters in NFD form, unchanged', 'e\u0301te\u0301'],
    ['an emoji (a surrogate pair)', 'data-😀.json'],
  ])('%s', (_what, name) => {
    expect(validateName(name)).toBe(name);
  });

  it.each([
    ['1-byte', 'a'],
    ['2-byte', 'é'],
    ['3-byte', '€'],
    ['4-byte', '😀'],
  ])('a name of exactly 255 bytes made of %s characters', (_what, ch) => {
    const bytes = Buffer.byteLength(ch);
    const count = Math.floor(MAX_NAME_BYTES / bytes);
    const name = ch.repeat(count) + 'x'.repeat(MAX_NAME_BYTES - count * bytes);
    expect(Buffer.byteLength(name)).toBe(255);
    expect(validateName(name)).toBe(name);
  });
});

describe('validateName refuses with STORE_BAD_NAME', () => {
  it.each([
    ['a number', 42, 'not-a-string', /must be a string, got number/],
    ['undefined', undefined, 'not-a-string', /got undefined/],
    ['null', null, 'not-a-string', /got null/],
    ['an array', ['a'], 'not-a-string', /got an array/],
    ['a Buffer', Buffer.from('a'), 'not-a-string', /got object/],
  ])('%s', (_what, name, reason, message) => {
    const err = refusal(name);
    expect(err.code).toBe('STORE_BAD_NAME');
    expect(err.detail.reason).toBe(reason);
    expect(err.message).toMatch(message);
  });

  it.each([
    ['the empty name', '', 'empty', /must not be empty/],
    ['"."', '.', 'dot', /name "\." is refused/],
    ['".."', '..', 'dot', /name "\.\." is refused/],
    ['a name containing /', 'a/b', 'slash', /^name "a\/b" contains '\/'$/],
    ['a name that is just /', '/', 'slash', /contains '\/'/],
    ['a name containing NUL', 'a\u0000b', 'nul', /contains NUL/],
    ['a name containing a newline', 'a\nb', 'control-character', /control character U\+000A/],
    ['a name containing a tab', 'a\tb', 'control-character', /U\+0009/],
    ['a name containing U+001F', 'a\u001fb', 'control-character', /U\+001F/],
    ['a lone high surrogate', 'a\ud800b', 'lone-surrogate', /lone surrogate.*not valid UTF-8/],
    ['a lone low surrogate', 'a\udc00', 'lone-surrogate', /lone surrogate/],
    ['a reversed surrogate pair', '\ude00\ud83d', 'lone-surrogate', /lone surrogate/],
  ])('%s', (_what, name, reason, message) => {
    const err = refusal(name);
    expect(err.code).toBe('STORE_BAD_NAME');
    expect(err.detail.reason).toBe(reason);
    expect(err.message).toMatch(message);
  });

  it.each([
    ['1-byte', 'a'],
    ['2-byte', 'é'],
    ['3-byte', '€'],
    ['4-byte', '😀'],
  ])('a name of 256 bytes made of %s characters', (_what, ch) => {
    const bytes = Buffer.byteLength(ch);
    const count = Math.floor(256 / bytes);
    const name = ch.repeat(count) + 'x'.repeat(256 - count * bytes);
    expect(Buffer.byteLength(name)).toBe(256);
    const err = refusal(name);
    expect(err.code).toBe('STORE_BAD_NAME');
    expect(err.detail.reason).toBe('too-long');
    expect(err.message).toMatch(/is 256 bytes in UTF-8, more than the limit of 255/);
  });

  it('a name of 128 two-byte characters (128 characters, but 256 bytes)', () => {
    const name = 'é'.repeat(128);
    expect(name.length).toBe(128);
    expect(refusal(name).detail.reason).toBe('too-long');
  });

  it('a megabyte-long name, quoting only its start in the message', () => {
    const err = refusal('x'.repeat(1 << 20));
    expect(err.detail.reason).toBe('too-long');
    expect(err.message.length).toBeLessThan(200);
  });
});
