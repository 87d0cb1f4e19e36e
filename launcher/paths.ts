/**
 * Where the built pieces live. The launcher runs from dist/launcher/; tests may import it from
 * launcher/ as TypeScript, so the package root is found either way. Ranks on other hosts use the
 * same absolute paths: the repository sits at the same place on every host.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The repository root (the directory holding package.json). */
export const PACKAGE_ROOT =
  path.basename(path.dirname(here)) === 'dist'
    ? path.resolve(here, '..', '..')
    : path.resolve(here, '..');

/** The compiled rank guard, started as `node GUARD_SCRIPT ...` for every rank. */
export const GUARD_SCRIPT = path.join(PACKAGE_ROOT, 'dist', 'launcher', 'rank-guard.js');

/** The store's rank program, run in store mode (no PROGRAM on the command line). */
export const STORE_PROGRAM = path.join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'memflow-rank.js');
