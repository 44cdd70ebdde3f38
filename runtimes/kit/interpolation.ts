/**
 * OpenCode expands `{env:NAME}` and `{file:PATH}` wherever they appear in its config, including in text that an
 * earlier `{env:…}` put there. Tenant strings (model ids, base URLs, `runtime.config`) written into that config, or
 * into variables it reads, must therefore never carry a `{`: one could read the worker's environment or files into a
 * request the tenant controls. The API refuses them (naming the field); the adapters check again before writing,
 * for definitions stored before the API did.
 */
import { RuntimeRefusedError } from '../runtime-adapter';

/** Where `value` first holds a `{`, in a string or an object key, as a dotted path under `path`; null when nowhere. */
export function findBrace(value: unknown, path: string): string | null {
  // iterative: a deeply nested config must not exhaust the stack
  const stack: Array<[unknown, string]> = [[value, path]];
  while (stack.length > 0) {
    const [item, at] = stack.pop()!;
    if (typeof item === 'string') {
      if (item.includes('{')) return at;
    } else if (Array.isArray(item)) {
      for (let i = item.length - 1; i >= 0; i--) stack.push([item[i], `${at}.${i}`]);
    } else if (item !== null && typeof item === 'object') {
      const entries = Object.entries(item);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, child] = entries[i]!;
        if (key.includes('{')) return `${at}.${key}`;
        stack.push([child, `${at}.${key}`]);
      }
    }
  }
  return null;
}

/** Throws (a refusal no retry can fix) when any of the named tenant values holds a `{`. */
export function refuseInterpolation(values: Record<string, unknown>): void {
  for (const [name, value] of Object.entries(values)) {
    const at = findBrace(value, name);
    if (at) throw new RuntimeRefusedError(`${at} contains "{", which OpenCode would expand ({env:…}, {file:…}): refused`);
  }
}
