/**
 * Finds OpenClaw and its Node 24 for the tests. They are installed by `scripts/ensure-openclaw.sh` (which `.ci/run`
 * calls); when they are missing the script is run here once (idempotent, 1-2 min), and only if it fails are the
 * OpenClaw tests skipped, with the reason printed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { openclawEnv, parseEnv } from '../../config/env';

export interface OpenClawBinaries {
  nodeBin: string;
  openclawBin: string;
}

let found: { binaries: OpenClawBinaries | null; reason: string } | undefined;

export function openClawBinaries(): { binaries: OpenClawBinaries | null; reason: string } {
  if (found) return found;
  // a copy: parseEnv takes the platform's secrets out of the environment it reads, and the test process keeps its own
  const env = parseEnv(openclawEnv, { ...process.env });
  const binaries = { nodeBin: env.AGENTPLANE_NODE24_BIN, openclawBin: env.AGENTPLANE_OPENCLAW_BIN };
  const present = () => existsSync(binaries.nodeBin) && existsSync(binaries.openclawBin);
  if (!present()) {
    try {
      execFileSync('bash', ['scripts/ensure-openclaw.sh'], { stdio: ['ignore', 'ignore', 'inherit'] });
    } catch (err) {
      found = { binaries: null, reason: `scripts/ensure-openclaw.sh failed: ${(err as Error).message}` };
    }
  }
  if (!found) found = present() ? { binaries, reason: '' } : { binaries: null, reason: `OpenClaw is not installed at ${binaries.openclawBin} (run scripts/ensure-openclaw.sh)` };
  // CI installs it (.ci/run): there a missing runtime is a failure, not a skip
  if (!found.binaries && process.env.CI) throw new Error(`OpenClaw is required in CI: ${found.reason}`);
  if (!found.binaries) console.error(`[openclaw] SKIPPING the OpenClaw tests: ${found.reason}`);
  return found;
}
