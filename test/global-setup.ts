// Starts ONE Temporal dev server for the whole test run and hands its address to the tests:
//
//   import { inject } from 'vitest';
//   const connection = await Connection.connect({ address: inject('temporalAddress') });
//
// Test files share it, so each uses its own task queue and workflow ids. A test that needs to restart or kill the
// server (durability) starts its own with startTemporalDevServer() instead of touching this one.
// Set AGENTPLANE_TEST_TEMPORAL_ADDRESS to use a server you already run instead of starting one.
import { execFileSync } from 'node:child_process';
import type { TestProject } from 'vitest/node';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTemporalDevServer } from '../scripts/temporal-dev-server';
import { bundleWorkflows } from '../worker/create-worker';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // `npm test` on a fresh machine: without DATABASE_URL, set up the local Debian PostgreSQL (needs root and apt)
  if (!process.env.DATABASE_URL) {
    const out = execFileSync('bash', ['scripts/ensure-postgres.sh'], { stdio: ['ignore', 'pipe', 'inherit'] }).toString().trim();
    process.env.DATABASE_URL = out.split('\n').at(-1);
    console.error(`[global-setup] DATABASE_URL not set: using the local PostgreSQL (${process.env.DATABASE_URL?.replace(/:[^:@]*@/, ':***@')})`);
  }
  project.provide('databaseUrl', process.env.DATABASE_URL as string);
  const external = process.env.AGENTPLANE_TEST_TEMPORAL_ADDRESS;
  if (external) {
    project.provide('temporalAddress', external);
    return async () => {};
  }

  // Worker processes that tests spawn (and SIGKILL) start from one bundle instead of bundling the workflows each time
  if (!process.env.AGENTPLANE_WORKFLOW_BUNDLE) {
    const bundle = await bundleWorkflows();
    const dir = await mkdtemp(join(tmpdir(), 'agentplane-bundle-'));
    process.env.AGENTPLANE_WORKFLOW_BUNDLE = join(dir, 'workflow-bundle.js');
    await writeFile(process.env.AGENTPLANE_WORKFLOW_BUNDLE, bundle.code);
  }

  const started = Date.now();
  const server = await startTemporalDevServer();
  console.error(`[global-setup] Temporal dev server on ${server.address} (ready in ${Date.now() - started} ms)`);
  project.provide('temporalAddress', server.address);
  return () => server.stop();
}
