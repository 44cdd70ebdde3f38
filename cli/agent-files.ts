/**
 * Agents as code: agent files (YAML or JSON, one agent each) are checked with the API's own schema before any
 * request, so an error names the file and the field. Comparison uses the API's own normalisation
 * (toAgentResponse), so a file that leaves a default out equals an agent that spells it out.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { AgentDefinitionSchema, toAgentResponse, type AgentDefinition } from '../api/schemas/agent.schema';
import { usageError } from './errors';

export interface AgentFile {
  path: string;
  definition: AgentDefinition;
}

/** The agent as the API returns it, less what the API assigns (id, version, timestamps). */
export type NormalizedAgent = Record<string, unknown>;

const AGENT_FILE = /\.(ya?ml|json)$/i;
const ASSIGNED_BY_API = ['id', 'type', 'version', 'mcp_servers', 'skills', 'created_at', 'updated_at', 'archived_at'];
// an unknown key is most likely a typo of a real one: refuse it rather than drop it
const StrictDefinition = AgentDefinitionSchema.strict();

/** Every agent file at `target` (a file, or each *.yaml, *.yml, *.json in a folder), validated; names unique. */
export async function loadAgentFiles(target: string): Promise<AgentFile[]> {
  let paths: string[];
  try {
    paths = (await stat(target)).isDirectory() ? (await readdir(target)).filter((n) => AGENT_FILE.test(n)).sort().map((n) => join(target, n)) : [target];
  } catch {
    throw usageError(`${target}: no such file or directory`);
  }
  if (paths.length === 0) throw usageError(`${target}: no *.yaml, *.yml or *.json files`);
  const files = await Promise.all(paths.map(loadAgentFile));
  const seen = new Map<string, string>();
  for (const file of files) {
    const other = seen.get(file.definition.name);
    if (other) throw usageError(`${file.path}: name: "${file.definition.name}" is also the name in ${other}`);
    seen.set(file.definition.name, file.path);
  }
  return files;
}

async function loadAgentFile(path: string): Promise<AgentFile> {
  const text = await readFile(path, 'utf8').catch((err: Error) => {
    throw usageError(`${path}: ${err.message}`);
  });
  let raw: unknown;
  try {
    raw = extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw usageError(`${path}: not valid ${extname(path).slice(1).toUpperCase()}: ${(err as Error).message.split('\n')[0]}`);
  }
  const parsed = StrictDefinition.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${path}: ${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`);
    throw usageError(problems.join('\n'));
  }
  return { path, definition: parsed.data };
}

/** The definition as the API would show it, defaults filled in and keys the API assigns left out. */
export function normalizeDefinition(definition: AgentDefinition): NormalizedAgent {
  const epoch = new Date(0);
  return withoutAssigned(toAgentResponse({ id: '', createdAt: epoch, updatedAt: epoch, archivedAt: null }, { version: 0, definition, createdAt: epoch }));
}

export function withoutAssigned(agent: Record<string, unknown>): NormalizedAgent {
  return Object.fromEntries(Object.entries(agent).filter(([key]) => !ASSIGNED_BY_API.includes(key)));
}

/**
 * The body of an update that makes the agent equal the file. The API merges an update into the current
 * definition, so a key the file leaves out must be sent with its default, or the old value would stay.
 */
export function replacementBody(definition: AgentDefinition, current: NormalizedAgent): Record<string, unknown> {
  const { model_provider: provider, ...rest } = normalizeDefinition(definition) as NormalizedAgent & { model_provider: { base_url: string; credential_id: string | null } | null };
  if (!provider && current.model_provider) {
    throw usageError(`agent ${definition.name}: model_provider cannot be removed by an update (the API keeps it); archive the agent and apply again`);
  }
  return { ...rest, ...(provider ? { model_provider: { base_url: provider.base_url, ...(provider.credential_id ? { credential_id: provider.credential_id } : {}) } } : {}) };
}

export interface Change {
  path: string;
  /** '+' only in the file, '-' only in the agent, '~' in both with different values */
  op: '+' | '-' | '~';
  from?: unknown;
  to?: unknown;
}

/** Field-by-field changes from `current` to `next`, by dotted path (`tool_policy.rules.0.action`). */
export function diffAgents(current: NormalizedAgent, next: NormalizedAgent): Change[] {
  const before = flatten(current);
  const after = flatten(next);
  const changes: Change[] = [];
  for (const path of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const from = before.get(path);
    const to = after.get(path);
    if (from === undefined) changes.push({ path, op: '+', to: JSON.parse(to!) });
    else if (to === undefined) changes.push({ path, op: '-', from: JSON.parse(from) });
    else if (from !== to) changes.push({ path, op: '~', from: JSON.parse(from), to: JSON.parse(to) });
  }
  return changes;
}

/** leaves as JSON text by path; an empty object or array is a leaf of its own, so `{}` → `{a: 1}` shows */
function flatten(value: unknown, prefix = '', into = new Map<string, string>()): Map<string, string> {
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : value && typeof value === 'object' ? Object.entries(value) : null;
  if (entries && entries.length > 0) {
    for (const [key, child] of entries) if (child !== undefined) flatten(child, prefix ? `${prefix}.${key}` : key, into);
  } else {
    into.set(prefix, JSON.stringify(value));
  }
  return into;
}

export function formatChange(change: Change): string {
  const show = (v: unknown) => JSON.stringify(v);
  if (change.op === '+') return `  + ${change.path}: ${show(change.to)}`;
  if (change.op === '-') return `  - ${change.path}: ${show(change.from)}`;
  return `  ~ ${change.path}: ${show(change.from)} → ${show(change.to)}`;
}
