/**
 * The glibc malloc settings for processes that move chunk data. Goal: one definition of them;
 * `npm run bench` gives its client the same settings memflow-run gives the ranks (a script
 * cannot import the constant, so this test holds the two together). Method: read package.json.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MALLOC_TUNABLES } from '../../src/runtime/malloc-tuning.js';

describe('malloc settings', () => {
  it('npm run bench starts its client with MALLOC_TUNABLES', () => {
    const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8')) as {
      scripts: Record<string, string>;
    };
    expect(pkg.scripts.bench).toMatch(/^GLIBC_TUNABLES=(\S+) node dist\/bench\/store-bench\.js$/);
    expect(pkg.scripts.bench!.split(' ')[0]).toBe(`GLIBC_TUNABLES=${MALLOC_TUNABLES}`);
  });
});
