/**
 * @module
 * A function job: the default export is called with the input (parsed JSON, or the raw text) and a
 * context; its return value is the job's result, kept apart from the logs.
 */

/** What a function receives besides its input. */
export interface JobContext {
  jobId?: string;
  user?: string;
  artifactsDir?: string;
}

export default function greet(input: { name?: string } | string | undefined, ctx?: JobContext) {
  const name = typeof input === 'string' ? input : (input?.name ?? 'world');
  console.log(`greeting ${name} for ${ctx?.user ?? 'nobody'}`);
  return { greeting: `Hello, ${name}!`, length: name.length };
}
