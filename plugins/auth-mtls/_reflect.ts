/**
 * @module
 * The few `Reflect` metadata functions that tsyringe (a dependency of @peculiar/x509) checks for when
 * it loads. It refuses to load without a polyfill, and `reflect-metadata` is not a dependency of jth.
 * tsyringe reads `design:paramtypes`, which nothing here emits, so a small WeakMap store is enough.
 * Import this module before `@peculiar/x509`. A real polyfill already loaded is left alone.
 */

type Key = string | symbol | undefined;
type MetaReflect = typeof Reflect & {
  getMetadata?: (key: unknown, target: object, prop?: Key) => unknown;
  getOwnMetadata?: (key: unknown, target: object, prop?: Key) => unknown;
  defineMetadata?: (key: unknown, value: unknown, target: object, prop?: Key) => void;
  hasMetadata?: (key: unknown, target: object, prop?: Key) => boolean;
};

const R = Reflect as MetaReflect;

if (typeof R.getMetadata !== 'function') {
  const store = new WeakMap<object, Map<Key, Map<unknown, unknown>>>();
  const own = (target: object, prop: Key, create: boolean): Map<unknown, unknown> | undefined => {
    let byProp = store.get(target);
    if (!byProp && create) {
      byProp = new Map();
      store.set(target, byProp);
    }
    let meta = byProp?.get(prop);
    if (!meta && create && byProp) {
      meta = new Map();
      byProp.set(prop, meta);
    }
    return meta;
  };
  const find = (key: unknown, target: object, prop: Key): { found: boolean; value?: unknown } => {
    for (let t: object | null = target; t; t = Object.getPrototypeOf(t)) {
      const meta = own(t, prop, false);
      if (meta?.has(key)) return { found: true, value: meta.get(key) };
    }
    return { found: false };
  };
  R.defineMetadata = (key, value, target, prop) => {
    own(target, prop, true)!.set(key, value);
  };
  R.getOwnMetadata = (key, target, prop) => own(target, prop, false)?.get(key);
  R.getMetadata = (key, target, prop) => find(key, target, prop).value;
  R.hasMetadata = (key, target, prop) => find(key, target, prop).found;
}

export {};
