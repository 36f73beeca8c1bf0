/**
 * @module
 * Checking a set of plugins before any job runs, as fastify does at registration: names are unique,
 * each speaks this core's API version, and every declared dependency is present. Option validation
 * goes through the plugin's Standard Schema, so core needs no validator of its own.
 */
import { ErrorCode, JthError } from './errors.ts';
import {
  API_VERSION,
  type Plugin,
  type PluginDefinition,
  type PluginSetupContext,
  type StandardSchemaV1,
} from './types.ts';

/** Where a plugin came from, for messages: the config file and the key, e.g. `plugins[2]`. */
export interface PluginOrigin {
  file: string;
  key: string;
}

/** `Cannot load config "<file>": <key> <what>`, with a hint, as a CONFIG_INVALID error. */
export function configError(origin: PluginOrigin, what: string, hint?: string, cause?: unknown): JthError {
  return new JthError(
    ErrorCode.CONFIG_INVALID,
    `Cannot load config "${origin.file}": ${origin.key} ${what}`,
    {
      ...(hint ? { hint } : {}),
      ...(cause === undefined ? {} : { cause }),
    },
  );
}

function formatPath(path: ReadonlyArray<PropertyKey | { key: PropertyKey }> | undefined): string {
  if (!path?.length) return '';
  return path
    .map((p) => (typeof p === 'object' ? p.key : p))
    .map((k) => (typeof k === 'number' ? `[${k}]` : `.${String(k)}`))
    .join('');
}

/** Validate `value` against a Standard Schema; throws CONFIG_INVALID naming the key of the first issue. */
export async function validateOptions<O>(
  schema: StandardSchemaV1<unknown, O> | undefined,
  value: unknown,
  origin: PluginOrigin,
): Promise<O> {
  if (!schema) return value as O;
  const out = await schema['~standard'].validate(value ?? {});
  if (out.issues) {
    const issue = out.issues[0]!;
    throw configError(
      { ...origin, key: `${origin.key}.options${formatPath(issue.path)}` },
      `is invalid: ${issue.message}`,
      "Fix the option's value; the plugin's README lists its options and defaults",
    );
  }
  return out.value as O;
}

/** Check a definition's shape and API version before it is created. */
export function checkDefinition(def: unknown, origin: PluginOrigin): PluginDefinition {
  const d = def as Partial<PluginDefinition> | null;
  if (!d || typeof d !== 'object' || typeof d.create !== 'function' || typeof d.name !== 'string') {
    throw configError(
      origin,
      'does not export a plugin definition',
      'Its default export must be definePlugin({ name, apiVersion, create })',
    );
  }
  if (d.apiVersion !== API_VERSION) {
    throw configError(
      origin,
      `"${d.name}" speaks plugin API version ${String(d.apiVersion)}, but this server speaks ${API_VERSION}`,
      'Upgrade the plugin, or use a jth release that speaks its API version',
    );
  }
  return d as PluginDefinition;
}

/** Check the created set: unique names, API versions, dependencies present. */
export function checkPluginSet(entries: ReadonlyArray<{ plugin: Plugin; origin: PluginOrigin }>): void {
  const seen = new Map<string, PluginOrigin>();
  for (const { plugin, origin } of entries) {
    if (plugin.apiVersion !== API_VERSION) {
      throw configError(
        origin,
        `"${plugin.name}" created a plugin for API version ${String(plugin.apiVersion)}`,
      );
    }
    const earlier = seen.get(plugin.name);
    if (earlier) {
      throw configError(
        origin,
        `"${plugin.name}" is a duplicate of ${earlier.key}`,
        'List each plugin once; merge their options into one entry',
      );
    }
    seen.set(plugin.name, origin);
  }
  for (const { plugin, origin } of entries) {
    for (const dep of plugin.dependencies ?? []) {
      if (!seen.has(dep)) {
        throw configError(
          origin,
          `"${plugin.name}" needs plugin "${dep}", which is not in the config`,
          `Add "${dep}" to plugins`,
        );
      }
    }
  }
}

/**
 * Create a plugin from its definition as the config loader does: options validated by its schema
 * (defaults applied), then `create`. For tests, benchmarks and embedding jth without a config file.
 */
export async function createPlugin<O>(
  def: PluginDefinition<O>,
  options: unknown,
  ctx: PluginSetupContext,
): Promise<Plugin> {
  const value = await validateOptions(def.options, options, { file: '(code)', key: `plugin "${def.name}"` });
  return def.create(value, ctx);
}
