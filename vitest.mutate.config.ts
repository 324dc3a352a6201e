// Vitest config for mutation runs only (`npm run mutate`, see stryker.config.json); `npm test` uses vitest.config.ts.
// It runs the fast, deterministic tests that drive src/core and src/stores in this process. Left out: test/e2e
// (the real `s` CLI), and crash, crash-matrix and bounded-memory (they spawn mirrors as child processes, which never
// run the active mutant).
// writes.test.ts stays for its in-process tests; its one streaming test also spawns a mirror (about 2 s).
// No globalSetup: the credential check is a whole-suite property, and its log folder would grow with every
// mutant run. No summary reporter.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/contract/**/*.test.ts', 'test/integration/*.test.ts'],
    exclude: ['test/integration/crash.test.ts', 'test/integration/crash-matrix.test.ts', 'test/integration/bounded-memory.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
  },
});
