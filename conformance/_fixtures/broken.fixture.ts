/**
 * @module
 * Run by `conformance/mod.test.ts` in a vitest of its own: kits against plugins that each break one
 * rule. Not a test of this repo on its own (the name keeps it out of `vitest run`).
 */
import { testAuthPlugin, testIsolationPlugin } from '../mod.ts';
import { authInputs, brokenAuth, brokenIsolate } from './sync.ts';

testAuthPlugin({ name: 'broken-auth', create: brokenAuth, ...authInputs });
testIsolationPlugin({ name: 'broken-isolate', create: brokenIsolate });
