/**
 * Who may do what. The matrix is data so the API enforces it, the docs print it and the tests walk it.
 * Everything is also scoped by team: a key never sees another team's resources (they answer 404).
 */
import type { Role } from './types';

export const PERMISSIONS = [
  'agents:read',
  'agents:write',
  'environments:read',
  'environments:write',
  'credentials:read',
  'credentials:write',
  'sessions:read',
  'sessions:write',
  'approvals:read',
  'approvals:decide',
  'audit:read',
  /** create, list and revoke API keys of the team */
  'keys:admin',
  /** register, list and delete webhooks and read their deliveries */
  'webhooks:admin',
  /** see budgets, spend and prices */
  'budgets:read',
  /** set budgets and price overrides */
  'budgets:write',
  /** change team tool rules and agents' policies */
  'policies:write',
  /** list schedules and their run history */
  'schedules:read',
  /** create, change, pause, trigger and delete schedules (runs start as the key that created or last changed one) */
  'schedules:write',
  /** create teams (platform-wide: a team's own admins cannot) */
  'teams:create',
  /** walk the whole audit chain, every team's rows, from its first row (platform-wide) */
  'audit:verify_full',
  /** re-seal every team's secrets under the current master key (platform-wide; a team admin re-seals its own team's) */
  'vault:rewrap_all',
] as const;
export type Permission = (typeof PERMISSIONS)[number];

const READS: Permission[] = ['agents:read', 'environments:read', 'credentials:read', 'sessions:read', 'approvals:read', 'budgets:read', 'schedules:read'];

/** what only the platform's own administrators may do: it reaches across teams */
const PLATFORM: Permission[] = ['teams:create', 'audit:verify_full', 'vault:rewrap_all'];

export const ROLE_PERMISSIONS: Record<Role, ReadonlySet<Permission>> = {
  platform_admin: new Set(PERMISSIONS),
  admin: new Set(PERMISSIONS.filter((p) => !PLATFORM.includes(p))),
  developer: new Set<Permission>([...READS, 'agents:write', 'environments:write', 'sessions:write', 'schedules:write']),
  approver: new Set<Permission>(['agents:read', 'sessions:read', 'approvals:read', 'approvals:decide']),
  viewer: new Set<Permission>([...READS, 'audit:read']),
  service: new Set<Permission>(['agents:read', 'environments:read', 'sessions:read', 'sessions:write']),
};

export function can(role: Role, permission: Permission): boolean {
  return ROLE_PERMISSIONS[role].has(permission);
}
