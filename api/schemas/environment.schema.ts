/**
 * Environments in Managed Agents' shape (`@anthropic-ai/sdk` `beta.environments`): a `cloud` config with
 * `networking` (`unrestricted`, or `limited` to `allowed_hosts`) and `packages`. The API validates what it is sent
 * here; the worker reads what was stored with the same schemas (readNetworking), so both agree on what a session may
 * reach. The meaning of each policy is governance/networking.ts.
 */
import { isIP } from 'node:net';
import { z } from '@hono/zod-openapi';
import { DEFAULT_NETWORKING, NO_NETWORK, normaliseHost, type Networking } from '../../governance/networking';
import { Metadata } from './common';

/** More entries than this is a list nobody reviews: `unrestricted`, or a wildcard, says what is meant. */
export const MAX_ALLOWED_HOSTS = 256;
const MAX_NAME_LENGTH = 253;
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * Why an `allowed_hosts` entry (already normalised) is not one, or null. Names are fully qualified ASCII names, `*.`
 * only as a whole first label over at least two more; IP literals pass here and are judged against the platform's
 * address rule by the route (it knows the operator's AGENTPLANE_EGRESS_ALLOW_PRIVATE).
 */
export function allowedHostProblem(host: string): string | null {
  if (host.length === 0) return 'an empty host';
  if (isIP(host)) return null;
  if (/[^\x21-\x7e]/.test(host)) return 'a host in ASCII: an international name in its punycode (xn--) form, and no spaces';
  if (/[/?#@]/.test(host)) return 'a host name such as example.com or *.example.com, without scheme, path or user';
  if (/^[^:]*:\d*$/.test(host)) return 'a host without a port (an allowed host is allowed on every port)';
  if (host.includes(':')) return 'not a valid IPv6 address';
  const wildcard = host.startsWith('*.');
  const name = wildcard ? host.slice(2) : host;
  if (name.includes('*')) return 'a wildcard is a whole first label followed by a name: *.example.com';
  if (name.length > MAX_NAME_LENGTH) return `a name of at most ${MAX_NAME_LENGTH} characters`;
  const labels = name.split('.');
  if (!labels.every((label) => LABEL.test(label))) return 'each label of a name is 1 to 63 letters, digits, "-" or "_", and does not start or end with "-"';
  if (labels.length < 2) {
    return wildcard
      ? 'a wildcard over a whole top-level domain: name at least two labels after "*." (*.example.com)'
      : 'a fully qualified name such as example.com: a single-label name (localhost, postgres) resolves through the platform\'s own search domains';
  }
  if (/^\d+$/.test(labels.at(-1)!)) return 'not a name (its last label is a number) and not an IPv4 address';
  if (name === 'localhost' || name.endsWith('.localhost')) return '*.localhost names are the machine itself';
  return null;
}

/** One entry: normalised (lower case, no trailing dot, IPv6 unbracketed) once it is known to be one. */
const AllowedHost = z
  .string()
  .max(300)
  .superRefine((raw, ctx) => {
    const problem = allowedHostProblem(normaliseHost(raw));
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .transform(normaliseHost)
  .openapi({ example: '*.github.com', description: 'a name (example.com), every name below one (*.example.com, not example.com itself), or a public IP address' });

const AllowedHosts = z.array(AllowedHost).max(MAX_ALLOWED_HOSTS, `at most ${MAX_ALLOWED_HOSTS} hosts: use a wildcard (*.example.com) or unrestricted`);

const UnrestrictedNetwork = z.object({ type: z.literal('unrestricted') }).strict();

export const NetworkingSchema = z
  .discriminatedUnion('type', [
    UnrestrictedNetwork,
    z
      .object({
        type: z.literal('limited'),
        allowed_hosts: AllowedHosts,
        allow_package_managers: z.boolean(),
        allow_mcp_servers: z.boolean(),
      })
      .strict(),
  ])
  .openapi('Networking', {
    description:
      'what the session\'s sandbox may reach through its egress proxy. Loopback, private, link-local and metadata addresses and the platform\'s own stay refused either way; the model endpoint is always reachable',
  });

/** On create, an omitted field takes its default; on update, it keeps the environment's value (null is omitted). */
const NetworkingParams = z.discriminatedUnion('type', [
  UnrestrictedNetwork,
  z
    .object({
      type: z.literal('limited'),
      allowed_hosts: AllowedHosts.nullish(),
      allow_package_managers: z.boolean().nullish().openapi({ description: 'also the public package registries (npm, PyPI, crates.io, Go, RubyGems, Debian, Ubuntu); default false' }),
      allow_mcp_servers: z.boolean().nullish().openapi({ description: "also the agent's MCP servers (agentplane agents have none yet); default false" }),
    })
    .strict(),
]);

const Packages = z.object({
  type: z.literal('packages'),
  apt: z.array(z.string()),
  cargo: z.array(z.string()),
  gem: z.array(z.string()),
  go: z.array(z.string()),
  npm: z.array(z.string()),
  pip: z.array(z.string()),
});

/** agentplane installs nothing into a session: a list that names a package would be a promise it does not keep. */
const NoPackages = z
  .array(z.string())
  .max(0, "agentplane does not install packages into a session: leave the list empty and put what the agent needs in its runtime's image")
  .nullish();
const PackagesParams = z
  .object({ type: z.literal('packages').optional(), apt: NoPackages, cargo: NoPackages, gem: NoPackages, go: NoPackages, npm: NoPackages, pip: NoPackages })
  .strict();

/** A pattern of files left out of the session's snapshots: relative to the workspace, never out of it. */
const IgnorePattern = z
  .string()
  .min(1)
  .max(256)
  .refine((p) => !p.startsWith('/') && !p.split('/').includes('..'), 'a pattern is relative to the workspace: no leading "/", no ".."');

/**
 * agentplane's own: what of the workspace a session's snapshots leave out (snapshots/), picomatch patterns relative to
 * it (`node_modules/**`, `**\/*.log`): what can be made again, that another worker need not be given.
 */
const Workspace = z.object({ snapshot_ignore: z.array(IgnorePattern).max(100) });
const WorkspaceParams = z.object({ snapshot_ignore: z.array(IgnorePattern).max(100).nullish() }).strict();

export const EnvironmentConfigSchema = z
  .object({ type: z.literal('cloud'), networking: NetworkingSchema, packages: Packages, workspace: Workspace })
  .openapi('EnvironmentConfig');
export type EnvironmentConfig = z.infer<typeof EnvironmentConfigSchema>;

export const EnvironmentConfigParams = z
  .object({
    type: z.literal('cloud', { error: 'the one type is "cloud": every session runs in a sandbox on agentplane\'s workers (self_hosted is not supported)' }),
    networking: NetworkingParams.nullish(),
    packages: PackagesParams.nullish(),
    workspace: WorkspaceParams.nullish(),
  })
  .strict()
  .openapi('EnvironmentConfigParams');
export type EnvironmentConfigParams = z.infer<typeof EnvironmentConfigParams>;

const EMPTY_PACKAGES = { type: 'packages' as const, apt: [], cargo: [], gem: [], go: [], npm: [], pip: [] };

/** The default environment: a session without one runs as if in this, and a new environment without a config gets it. */
export const DEFAULT_ENVIRONMENT_CONFIG: EnvironmentConfig = { type: 'cloud', networking: DEFAULT_NETWORKING, packages: EMPTY_PACKAGES, workspace: { snapshot_ignore: [] } };

/** The name `allowed_hosts` entries are reported under, by index, for the checks the route makes after parsing. */
export const allowedHostField = (index: number) => `body.config.networking.allowed_hosts.${index}`;

/**
 * The config after `params`: on create `current` is the default; on update an omitted (or null) field keeps its value,
 * and a `limited` policy keeps the current one's hosts and flags unless it names them. Hosts are listed once each.
 */
export function applyConfigParams(current: EnvironmentConfig, params: EnvironmentConfigParams | null | undefined): EnvironmentConfig {
  const ignore = params?.workspace?.snapshot_ignore;
  const config = ignore ? { ...current, workspace: { snapshot_ignore: [...new Set(ignore)] } } : current;
  return { ...config, networking: applyNetworking(config.networking, params?.networking) };
}

function applyNetworking(current: Networking, asked: EnvironmentConfigParams['networking']): Networking {
  if (!asked) return current;
  if (asked.type === 'unrestricted') return { type: 'unrestricted' };
  const was = current.type === 'limited' ? current : { allowed_hosts: [], allow_package_managers: false, allow_mcp_servers: false };
  return {
    type: 'limited',
    allowed_hosts: [...new Set(asked.allowed_hosts ?? was.allowed_hosts)],
    allow_package_managers: asked.allow_package_managers ?? was.allow_package_managers,
    allow_mcp_servers: asked.allow_mcp_servers ?? was.allow_mcp_servers,
  };
}

/** What a stored config leaves out of snapshots (none when it says nothing, or nothing readable). */
export function readSnapshotIgnore(stored: unknown): string[] {
  const workspace = stored && typeof stored === 'object' ? (stored as { workspace?: unknown }).workspace : undefined;
  const parsed = Workspace.safeParse(workspace);
  return parsed.success ? parsed.data.snapshot_ignore : [];
}

/**
 * The policy a stored config holds: the default when it names none (environments saved before policies existed), null
 * when it names one this schema refuses (saved before it was checked). The caller fails closed on null.
 */
export function readNetworking(stored: unknown): Networking | null {
  const networking = stored && typeof stored === 'object' ? (stored as { networking?: unknown }).networking : undefined;
  if (networking === undefined || networking === null) return DEFAULT_NETWORKING;
  const parsed = NetworkingSchema.safeParse(networking);
  return parsed.success ? parsed.data : null;
}

/** A stored config as the API shows it and the worker enforces it: an unreadable policy is shown as what it enforces. */
export function readEnvironmentConfig(stored: unknown): EnvironmentConfig {
  return { type: 'cloud', networking: readNetworking(stored) ?? NO_NETWORK, packages: EMPTY_PACKAGES, workspace: { snapshot_ignore: readSnapshotIgnore(stored) } };
}

export const EnvironmentSchema = z
  .object({
    id: z.string(),
    type: z.literal('environment'),
    name: z.string(),
    description: z.string().nullable(),
    config: EnvironmentConfigSchema,
    metadata: z.record(z.string(), z.string()),
    created_at: z.string(),
    updated_at: z.string(),
    archived_at: z.string().nullable(),
  })
  .openapi('Environment');

export const EnvironmentCreateSchema = z
  .object({
    name: z.string().min(1).max(256),
    description: z.string().max(2048).nullish(),
    config: EnvironmentConfigParams.nullish().openapi({ description: 'default: {"type": "cloud", "networking": {"type": "unrestricted"}}' }),
    metadata: Metadata.optional(),
  })
  .openapi('EnvironmentCreate');

/** Managed Agents' update: every field optional; null (or omitted) keeps, except `description` (null clears). */
export const EnvironmentUpdateSchema = z
  .object({
    name: z.string().min(1).max(256).nullish(),
    description: z.string().max(2048).nullish().openapi({ description: 'omit to keep; null clears' }),
    config: EnvironmentConfigParams.nullish().openapi({ description: 'omitted fields keep their value; `config.type` stays "cloud"' }),
    metadata: z
      .record(z.string().max(64), z.string().max(512).nullable())
      .optional()
      .openapi({ description: 'merged into the current metadata; a key set to null or "" is removed (at most 16 keys after the merge)' }),
  })
  .openapi('EnvironmentUpdate');
