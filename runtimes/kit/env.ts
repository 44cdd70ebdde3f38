/**
 * The environment of a runtime process, built from an allowlist. A runtime never inherits the worker's `process.env`:
 * it holds the master key, the database URL, the admin key and every operator setting, and anything a runtime gets,
 * the agent it runs can read (`env`, `/proc/self/environ`). From the worker it gets only the few variables that make
 * a program behave as the operator's machine expects (`INHERITED`, or the shorter or longer list an adapter names);
 * everything else, HOME first, the adapter sets explicitly.
 */

/** What a runtime process takes from the worker unless its adapter names another list: nothing secret. */
export const INHERITED = ['PATH', 'LANG', 'LC_ALL', 'TZ', 'TERM'] as const;

/** PATH for a worker that has none (a bare container, a service manager) */
const FALLBACK_PATH = '/usr/local/bin:/usr/bin:/bin';

export interface RuntimeEnvOptions {
  /** the worker's variables to pass on, instead of `INHERITED` (e.g. `[...INHERITED, 'TMPDIR']`, or `['PATH']`) */
  inherit?: readonly string[];
}

/**
 * `vars` (unset ones dropped) over the inherited ones. HOME is required: a runtime keeps its state in a folder of its
 * session, never in the worker's home.
 */
export function runtimeEnv(vars: { HOME: string } & Record<string, string | undefined>, opts: RuntimeEnvOptions = {}): Record<string, string> {
  const env: Record<string, string> = {};
  // the one read of the worker's environment for runtimes: by name, from the allowlist
  for (const name of opts.inherit ?? INHERITED) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  env.PATH ??= FALLBACK_PATH;
  for (const [name, value] of Object.entries(vars)) if (value !== undefined) env[name] = value;
  return env;
}
