/**
 * @module
 * Vitest config of the cgroup v2 lane (`npm run test:vm`): only `test/vm/**\/*.vm.test.ts`, in band. In the
 * QEMU guest userland runs 15–35× slower than on the host, so timeouts are the defaults ×30.
 */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/vm/**/*.vm.test.ts'],
    exclude: ['**/node_modules/**', 'dist/**'],
    // vitest's 5 s default ×30: the guest is emulated (TCG) and much slower than the host
    testTimeout: 150_000,
    hookTimeout: 150_000,
    pool: 'forks',
    // One worker, files one after another: the tests measure CPU and IO rates, so they must not overlap
    maxWorkers: 1,
    fileParallelism: false,
  },
});
