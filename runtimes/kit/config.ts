/**
 * The schema of a runtime's `runtime.config` (each descriptor's `configSchema`), built one way for every runtime: the
 * keys its adapter reads, typed; a `cost` refused everywhere (prices come from the platform's table, never from the
 * agent: a developer must not price their own sessions); other keys refused or allowed, as the runtime decides. The
 * API checks an agent's config with it when the agent is saved, and names the field in the 400.
 */
import { z } from 'zod';
import { braceAt } from './interpolation';

export interface RuntimeConfigRules {
  /** `refuse`: a key the adapter does not read is an error (a typo is not silently ignored); `allow`: it is kept */
  unknownKeys: 'refuse' | 'allow';
  /**
   * no `{` in any string or key (OpenCode expands `{env:…}` and `{file:…}` in its config: kit/interpolation.ts);
   * the adapters check again before writing, for definitions stored before the API did
   */
  refuseBraces?: boolean;
}

/** `runtime.config` of the `kind` runtime: `shape` is what its adapter reads. */
export function runtimeConfig<Shape extends z.ZodRawShape>(kind: string, shape: Shape, rules: RuntimeConfigRules) {
  const known = Object.keys(shape);
  // what must never pass is checked first, on the raw object, whatever else is wrong with it
  const refusals = z.record(z.string(), z.unknown()).superRefine((config, ctx) => {
    if (Object.hasOwn(config, 'cost')) ctx.addIssue({ code: 'custom', path: ['cost'], message: 'prices are not set on an agent: an admin sets them with PUT /v1/pricing/{model}' });
    if (rules.refuseBraces) {
      const at = braceAt(config);
      if (at) ctx.addIssue({ code: 'custom', path: at, message: `"{" is not accepted for the ${kind} runtime, which would expand {env:…} and {file:…} in it` });
    }
    if (rules.unknownKeys === 'refuse') {
      for (const key of Object.keys(config)) {
        if (key === 'cost' || known.includes(key)) continue;
        ctx.addIssue({ code: 'custom', path: [key], message: known.length > 0 ? `the ${kind} runtime has no such setting (it reads ${known.join(', ')})` : `the ${kind} runtime takes no settings` });
      }
    }
  });
  return refusals.pipe(z.looseObject(shape));
}
