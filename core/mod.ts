/**
 * @module
 * The public API of jth's core: hook types, errors, the plugin driver, the job lifecycle and config
 * validation. Plugins import from here.
 */
export * from './types.ts';
export * from './errors.ts';
export * from './launch.ts';
export * from './driver.ts';
export * from './lifecycle.ts';
export * from './job.ts';
export * from './pool.ts';
export * from './plugins.ts';
export * from './log.ts';
