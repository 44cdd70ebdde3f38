/**
 * A session's network policy: its environment's `config.networking`, in Managed Agents' shape. The worker reads it at
 * every turn (a change to the environment applies from the next turn) and hands it to the sandbox, whose egress proxy
 * decides each connection with `allowsHost`. Pure data and string matching: no I/O, no Node built-ins.
 *
 * What always stays true, whatever the policy says: the platform's own addresses, loopback, private, link-local and
 * metadata ranges are refused by the proxy after name resolution (runtimes/kit/egress.ts), so no entry here can open
 * them; the session's model endpoint is reached through its own bridge, not through this policy.
 */

export type Networking =
  /** everything the address rule above leaves (the default) */
  | { type: 'unrestricted' }
  /**
   * only `allowed_hosts` (names, `*.name` for every name below it but not the name itself, or public IP literals),
   * plus the public package registries when `allow_package_managers`. `allow_mcp_servers` would add the agent's MCP
   * servers: agentplane agents have none yet, so it adds nothing.
   */
  | { type: 'limited'; allowed_hosts: string[]; allow_package_managers: boolean; allow_mcp_servers: boolean };

/** The default environment's policy: what a session without an environment gets, and a new environment without one. */
export const DEFAULT_NETWORKING: Networking = { type: 'unrestricted' };

/**
 * What a session gets when its environment's stored policy cannot be read (a row written before policies were
 * checked, or a missing row): nothing, rather than everything. Fails closed; the environment shows it and an update
 * replaces it.
 */
export const NO_NETWORK: Networking = { type: 'limited', allowed_hosts: [], allow_package_managers: false, allow_mcp_servers: false };

/** The public registries `allow_package_managers` opens: npm, PyPI, crates.io, the Go module proxy, RubyGems, Debian and Ubuntu. */
export const PACKAGE_REGISTRY_HOSTS: readonly string[] = [
  'registry.npmjs.org',
  'registry.yarnpkg.com',
  'pypi.org',
  'files.pythonhosted.org',
  'crates.io',
  'index.crates.io',
  'static.crates.io',
  'proxy.golang.org',
  'sum.golang.org',
  'rubygems.org',
  'index.rubygems.org',
  'deb.debian.org',
  'security.debian.org',
  'archive.ubuntu.com',
  'security.ubuntu.com',
];

/** `example.com.` and `Example.COM` are `example.com`; `[2001:db8::1]` is `2001:db8::1`. */
export function normaliseHost(host: string): string {
  return host.toLowerCase().replace(/\.$/, '').replace(/^\[(.*)\]$/, '$1');
}

/** One `allowed_hosts` entry against a host: equal, or `*.suffix` and the host is below the suffix. */
export function hostMatches(entry: string, host: string): boolean {
  const name = normaliseHost(host);
  if (entry.startsWith('*.')) return name.endsWith(entry.slice(1)) && name.length > entry.length - 1;
  return name === entry;
}

/**
 * Whether the policy lets a connection to `host` through (a name as the client asked for it, or an IP literal). The
 * address rule is applied separately, after resolution, and refuses what it refuses whatever this answers.
 */
export function allowsHost(networking: Networking, host: string): boolean {
  if (networking.type === 'unrestricted') return true;
  if (networking.allowed_hosts.some((entry) => hostMatches(entry, host))) return true;
  return networking.allow_package_managers && PACKAGE_REGISTRY_HOSTS.includes(normaliseHost(host));
}
