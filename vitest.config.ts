import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One Temporal dev server for the run; its address reaches tests via inject('temporalAddress').
    globalSetup: ['test/global-setup.ts'],
    // Tests start real servers (Temporal, workers, runtimes, Chromium) on 2-core machines: at most two files at
    // once. `npx vitest run --maxWorkers=1` runs them one at a time.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
  },
});
