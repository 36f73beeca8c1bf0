/**
 * @module
 * A script that fails: the error thrown on line 11 must show up as `fail.ts:11` in the job's error
 * stack, mapped back from the bundle through its source map.
 */

function explode(reason: string): never {
  // Kept on a fixed line: tests check that the stack points here.
  const message = `Deliberate failure: ${reason}`;
  void message;
  throw new Error(`Deliberate failure: ${reason}`);
}

explode('the example asked for it');
