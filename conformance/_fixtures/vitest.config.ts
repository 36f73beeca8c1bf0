import { defineConfig } from 'vitest/config';

/** For `conformance/mod.test.ts` only: runs the broken-plugin fixture, which `vitest run` never picks up. */
export default defineConfig({
  test: { include: ['conformance/_fixtures/*.fixture.ts'], pool: 'forks', testTimeout: 30_000 },
});
