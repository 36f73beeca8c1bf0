/**
 * @module
 * The conformance suite for `authenticate` plugins: "not mine" for a request it cannot judge, principals
 * well formed, and every refusal a `JthError` with a 4xx status, whether the hook throws synchronously
 * or rejects.
 */
import { describe, expect, it } from 'vitest';
import { JthError } from '../core/errors.ts';
import { silentLogger } from '../core/log.ts';
import type { AuthInput } from '../core/types.ts';
import { callHook, type SuiteOptions } from './_job.ts';

export interface AuthSuiteOptions extends SuiteOptions {
  /** An input the plugin accepts. */
  valid: () => AuthInput | Promise<AuthInput>;
  /** Inputs the plugin must refuse (not answer null for). */
  invalid: () => AuthInput[] | Promise<AuthInput[]>;
}

/** Suite for `authenticate` plugins: null when not theirs, principals well formed, refusals typed. */
export function testAuthPlugin(o: AuthSuiteOptions): void {
  describe.skipIf(!!o.skip)(`auth conformance: ${o.name}${o.skip ? ` (skipped: ${o.skip})` : ''}`, () => {
    it('declares a name, API version 1 and an authenticate hook', async () => {
      const p = await o.create();
      expect(p.name).toMatch(/^[a-z0-9@/._-]+$/);
      expect(p.apiVersion).toBe(1);
      expect(typeof p.authenticate).toBe('function');
    });

    it('answers null for a request it cannot judge', async () => {
      const p = await o.create();
      expect(await callHook(p, 'authenticate', { headers: {} }, { log: silentLogger })).toBeNull();
    });

    it('maps a valid input to a well-formed principal', async () => {
      const p = await o.create();
      const who = await callHook(p, 'authenticate', await o.valid(), { log: silentLogger });
      expect(who?.user).toMatch(/^[a-z0-9][a-z0-9._-]*$/);
      expect(['user', 'admin']).toContain(who?.role);
    });

    it('refuses each invalid input with a JthError carrying a 4xx status', async () => {
      const p = await o.create();
      const inputs = await o.invalid();
      expect(inputs.length).toBeGreaterThan(0);
      for (const [i, input] of inputs.entries()) {
        const outcome = await callHook(p, 'authenticate', input, { log: silentLogger }).then(
          (value) => ({ value }),
          (error: unknown) => ({ error }),
        );
        expect('error' in outcome, `invalid input [${i}] was not refused`).toBe(true);
        const err = (outcome as { error: unknown }).error;
        expect(err, `invalid input [${i}]`).toBeInstanceOf(JthError);
        expect((err as JthError).status, `invalid input [${i}]`).toBeGreaterThanOrEqual(400);
        expect((err as JthError).status, `invalid input [${i}]`).toBeLessThan(500);
      }
    });
  });
}
