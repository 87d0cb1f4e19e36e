#!/usr/bin/env node
// The dfs-client command: a shim over the compiled CLI, so the package's bin needs no build step
// of its own. Run `npm run build` first; without dist/ this says so instead of a module-not-found
// stack trace.
try {
  await import('../dist/src/cli/dfs-client.js');
} catch (err) {
  if (
    err?.code === 'ERR_MODULE_NOT_FOUND' &&
    String(err.message).includes('dist/src/cli/dfs-client.js')
  ) {
    process.stderr.write(
      'dfs-client: not built yet: run `npm run build` in the MemFlow directory\n',
    );
    process.exitCode = 1;
  } else {
    throw err;
  }
}
