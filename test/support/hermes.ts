/**
 * Finds Hermes Agent for the tests: `HERMES_BIN` when its virtualenv is one the sandboxes can use, else what
 * `scripts/ensure-hermes.sh` installs (idempotent; a minute on a cold cache). A root worker's sandboxes run as
 * unprivileged users, who cannot reach a virtualenv under /root (mode 700): such a HERMES_BIN (an older install) is
 * passed over for the script's install, with a note. The binary found is put in this process's HERMES_BIN, so that a
 * worker process a test spawns (test/support/worker-process.ts) runs the same one.
 */
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import { hermesMounts } from '../../runtimes/hermes/hermes.adapter';

let ensured: { bin: string } | { error: string } | undefined;

/** Every directory above and at each of the paths is searchable by others (what a sandbox's user needs to mount it). */
function reachable(paths: string[]): boolean {
  for (const path of paths) {
    for (let dir = path; ; dir = dirname(dir)) {
      if ((statSync(dir, { throwIfNoEntry: false })?.mode ?? 0) % 2 === 0) return false;
      if (dir === dirname(dir)) break;
    }
  }
  return true;
}

/** the `hermes` binary, installing it on first use; `{ error }` with the script's output when that failed */
export function ensureHermes(): { bin: string } | { error: string } {
  if (ensured) return ensured;
  const given = process.env.HERMES_BIN;
  if (given && (process.getuid?.() !== 0 || reachable(hermesMounts(given)))) {
    ensured = { bin: given };
  } else {
    if (given) console.error(`[hermes] HERMES_BIN=${given} is not reachable by the sandboxes' users; using scripts/ensure-hermes.sh's install`);
    try {
      const out = execFileSync('bash', ['scripts/ensure-hermes.sh'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000 }).toString().trim();
      ensured = { bin: out.split('\n').at(-1)! };
    } catch (err) {
      const e = err as { stderr?: Buffer; message: string };
      ensured = { error: `scripts/ensure-hermes.sh failed: ${e.stderr?.toString().trim() || e.message}` };
    }
  }
  // CI installs it (.ci/run): there a missing runtime is a failure, not a skip
  if ('error' in ensured && process.env.CI) throw new Error(`Hermes is required in CI: ${ensured.error}`);
  if ('bin' in ensured) process.env.HERMES_BIN = ensured.bin;
  return ensured;
}

/** the binary (ensureHermes must have found it) */
export function hermesBin(): string {
  const found = ensureHermes();
  if ('error' in found) throw new Error(found.error);
  return found.bin;
}
