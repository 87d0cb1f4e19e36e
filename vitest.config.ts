import { defineConfig } from 'vitest/config';

// Real-process tests start several Node processes each; two cores do not run many files at once.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    maxWorkers: 2,
  },
});
