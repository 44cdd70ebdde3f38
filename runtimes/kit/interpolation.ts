/**
 * OpenCode expands `{env:NAME}` and `{file:PATH}` wherever they appear in its config, including in text that an
 * earlier `{env:…}` put there. Tenant strings (model ids, base URLs, `runtime.config`) written into that config, or
 * into variables it reads, must therefore never carry a `{`: one could read the worker's environment or files into a
 * request the tenant controls. The API refuses them (naming the field); the adapters check again before writing,
 * for definitions stored before the API did.
 */
import { RuntimeRefusedError } from '../runtime-adapter';

/** Where `value` first holds a `{`, in a string or an object key, as the path of keys to it; null when nowhere. */
export function braceAt(value: unknown): Array<string | number> | null {
  // iterative, each step linked to its parent: a deeply nested config must not exhaust the stack or copy its path
  type Step = { key: string | number; parent: Step | null } | null;
  const pathOf = (step: Step): Array<string | number> => {
    const path: Array<string | number> = [];
    for (let s = step; s; s = s.parent) path.push(s.key);
    return path.reverse();
  };
  const stack: Array<[unknown, Step]> = [[value, null]];
  while (stack.length > 0) {
    const [item, at] = stack.pop()!;
    if (typeof item === 'string') {
      if (item.includes('{')) return pathOf(at);
    } else if (Array.isArray(item)) {
      for (let i = item.length - 1; i >= 0; i--) stack.push([item[i], { key: i, parent: at }]);
    } else if (item !== null && typeof item === 'object') {
      const entries = Object.entries(item);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, child] = entries[i]!;
        if (key.includes('{')) return pathOf({ key, parent: at });
        stack.push([child, { key, parent: at }]);
      }
    }
  }
  return null;
}

/** Where `value` first holds a `{`, as a dotted path under `path`; null when nowhere. */
export function findBrace(value: unknown, path: string): string | null {
  const at = braceAt(value);
  return at ? [path, ...at].join('.') : null;
}

/** Throws (a refusal no retry can fix) when any of the named tenant values holds a `{`. */
export function refuseInterpolation(values: Record<string, unknown>): void {
  for (const [name, value] of Object.entries(values)) {
    const at = findBrace(value, name);
    if (at) throw new RuntimeRefusedError(`${at} contains "{", which OpenCode would expand ({env:…}, {file:…}): refused`);
  }
}
