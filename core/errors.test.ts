/**
 * @module
 * JthError: wrapping keeps the cause, and `instanceof` holds across copies of the module.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode, isJthError, JthError, wrapPluginError } from './errors.ts';

describe('JthError', () => {
  it('is recognised across module copies by its brand', async () => {
    // A second copy of the module, as a plugin loaded from source holds next to a server from dist/.
    // @ts-expect-error: the query makes vite load a distinct module instance; TypeScript knows no such file
    const other = (await import('./errors.ts?copy=1')) as typeof import('./errors.ts');
    expect(other.JthError).not.toBe(JthError);
    const foreign = new other.JthError(ErrorCode.LIMIT_EXCEEDED, 'Too many', { status: 429 });
    expect(foreign instanceof JthError).toBe(true);
    expect(isJthError(foreign, ErrorCode.LIMIT_EXCEEDED)).toBe(true);
    expect(new Error('plain') instanceof JthError).toBe(false);
  });

  it('keeps the ordinary instanceof for subclasses', () => {
    class Sub extends JthError {}
    expect(new Sub(ErrorCode.BAD_REQUEST, 'x') instanceof Sub).toBe(true);
    expect(new Sub(ErrorCode.BAD_REQUEST, 'x') instanceof JthError).toBe(true);
    expect(new JthError(ErrorCode.BAD_REQUEST, 'x') instanceof Sub).toBe(false);
  });

  it('wraps a plugin error with code, plugin, hook and cause, keeping status and hint', () => {
    const inner = new JthError(ErrorCode.UNAUTHENTICATED, 'Revoked', {
      status: 403,
      hint: 'Ask for a new cert',
    });
    const wrapped = wrapPluginError(new Error('boom'), 'p', 'isolate');
    expect(wrapped).toMatchObject({
      code: ErrorCode.PLUGIN_ERROR,
      plugin: 'p',
      hook: 'isolate',
      message: '[p] isolate: boom',
    });
    const kept = wrapPluginError(inner, 'auth', 'authenticate');
    expect(kept).toMatchObject({
      code: ErrorCode.UNAUTHENTICATED,
      status: 403,
      hint: 'Ask for a new cert',
      cause: inner,
    });
  });
});
