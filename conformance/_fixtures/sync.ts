/**
 * @module
 * Plugins whose hooks are plain synchronous functions, as an author may well write them: the kits must
 * judge them exactly as core's driver runs them. The `broken*` ones each break one rule, so a kit run
 * against them must fail that rule's case and no other (see `conformance/mod.test.ts`).
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { ErrorCode, JthError } from '../../core/errors.ts';
import type { AuthInput, Plugin } from '../../core/types.ts';

/** Accepts `x-user: <name>`, refuses a malformed name by throwing synchronously, ignores the rest. */
export function syncAuth(): Plugin {
  return {
    name: 'sync-auth',
    apiVersion: 1,
    authenticate(input) {
      const user = input.headers['x-user'];
      if (user === undefined) return null;
      if (!/^[a-z]+$/.test(user)) {
        throw new JthError(ErrorCode.UNAUTHENTICATED, `Cannot authenticate "${user}": not a user name`, {
          status: 401,
        });
      }
      return { user, role: 'user' };
    },
  };
}

export const authInputs = {
  valid: (): AuthInput => ({ headers: { 'x-user': 'alice' } }),
  invalid: (): AuthInput[] => [{ headers: { 'x-user': 'Mallory!' } }, { headers: { 'x-user': '' } }],
};

/** Refuses with a plain Error instead of a JthError: no status, so the API could only answer 500. */
export function brokenAuth(): Plugin {
  const inner = syncAuth();
  return {
    ...inner,
    name: 'broken-auth',
    authenticate(input, ctx) {
      try {
        return inner.authenticate!(input, ctx);
      } catch (err) {
        throw new Error((err as Error).message);
      }
    },
  };
}

/** A synchronous isolate step that wraps the command with env(1) and registers a synchronous undo. */
export function syncIsolate(): Plugin {
  return {
    name: 'sync-isolate',
    apiVersion: 1,
    isolate(ctx) {
      ctx.plan.wrappers.push((inner) => ({ ...inner, argv: ['/usr/bin/env', ...inner.argv] }));
      ctx.defer(() => undefined);
    },
  };
}

/** A synchronous collector listing the artifacts dir. */
export function syncCollect(): Plugin {
  return {
    name: 'sync-collect',
    apiVersion: 1,
    collect(ctx) {
      const dir = ctx.plan.hostPaths.artifacts;
      return {
        artifacts: readdirSync(dir).map((name) => ({ name, size: statSync(path.join(dir, name)).size })),
      };
    },
  };
}

/** An isolate step that hands the server's whole environment to the job. */
export function brokenIsolate(): Plugin {
  return {
    name: 'broken-isolate',
    apiVersion: 1,
    isolate(ctx) {
      ctx.plan.wrappers.push((inner) => ({ ...inner, env: { ...process.env, ...inner.env } as never }));
    },
  };
}
