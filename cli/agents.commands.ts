/**
 * `agents apply` makes the team's agents match agent files: each file's agent is found by name and created,
 * updated (based on the version it was compared with, so a concurrent change is refused, not overwritten) or
 * left alone. `--dry-run` prints the same plan with each agent's changes and writes nothing.
 */
import type { ApiClient } from './client';
import { flag, option, type CommandTable } from './command';
import type { AgentFile, Change } from './agent-files';
import { CliError, EXIT } from './errors';
import type { Output } from './output';

/** The fields of an agent the CLI reads; the rest passes through to --json untouched. */
export interface Agent extends Record<string, unknown> {
  id: string;
  name: string;
  version: number;
  model: { id: string };
  runtime: { type: string };
  updated_at: string;
}

// the API's agent schema (zod, @hono/zod-openapi) and the YAML parser take a while to load: only apply needs them
const agentFiles = () => import('./agent-files');

/** What apply does with one file's agent; everything is decided (and checked) before the first write. */
interface Plan {
  file: AgentFile;
  action: 'create' | 'update' | 'unchanged';
  current: Agent | null;
  changes: Change[];
  /** the request that makes the agent equal the file (none when unchanged) */
  body: Record<string, unknown> | null;
}

interface Result {
  name: string;
  file: string;
  action: Plan['action'] | 'created' | 'updated';
  id: string | null;
  version: number | null;
  changes: Change[];
}

/** The team's live agents by name; two live agents with one name make the name ambiguous, which apply refuses. */
export async function agentsByName(api: ApiClient): Promise<Map<string, Agent[]>> {
  const byName = new Map<string, Agent[]>();
  for (const agent of await api.list<Agent>('/v1/agents')) byName.set(agent.name, [...(byName.get(agent.name) ?? []), agent]);
  return byName;
}

/** An agent id as given, or the id of the one live agent with that name. */
export async function resolveAgent(api: ApiClient, nameOrId: string): Promise<Agent> {
  if (nameOrId.startsWith('agent_')) return api.get<Agent>(`/v1/agents/${encodeURIComponent(nameOrId)}`);
  const found = (await agentsByName(api)).get(nameOrId) ?? [];
  if (found.length === 0) throw new CliError(EXIT.notFound, `no agent named "${nameOrId}"`);
  if (found.length > 1) throw new CliError(EXIT.usage, `${found.length} agents are named "${nameOrId}" (${found.map((a) => a.id).join(', ')}): give the id`);
  return found[0]!;
}

async function plan(api: ApiClient, files: AgentFile[]): Promise<Plan[]> {
  const { diffAgents, normalizeDefinition, replacementBody, withoutAssigned } = await agentFiles();
  const byName = await agentsByName(api);
  return files.map((file): Plan => {
    const live = byName.get(file.definition.name) ?? [];
    if (live.length > 1) throw new CliError(EXIT.api, `${file.path}: ${live.length} agents are named "${file.definition.name}" (${live.map((a) => a.id).join(', ')}): archive all but one`);
    const current = live[0] ?? null;
    const wanted = normalizeDefinition(file.definition);
    if (!current) return { file, action: 'create', current, changes: diffAgents({}, wanted), body: file.definition };
    const changes = diffAgents(withoutAssigned(current), wanted);
    if (changes.length === 0) return { file, action: 'unchanged', current, changes, body: null };
    // based on the version compared against: a change made since then is refused (409), not overwritten
    return { file, action: 'update', current, changes, body: { ...replacementBody(file.definition, withoutAssigned(current)), version: current.version } };
  });
}

async function execute(api: ApiClient, plans: Plan[], dryRun: boolean): Promise<Result[]> {
  const results: Result[] = [];
  for (const p of plans) {
    const result: Result = { name: p.file.definition.name, file: p.file.path, action: p.action, id: p.current?.id ?? null, version: p.current?.version ?? null, changes: p.changes };
    if (dryRun || !p.body) {
      results.push(result);
      continue;
    }
    const agent = await api.post<Agent>(p.current ? `/v1/agents/${p.current.id}` : '/v1/agents', p.body);
    results.push({ ...result, action: p.current ? 'updated' : 'created', id: agent.id, version: agent.version });
  }
  return results;
}

function report(out: Output, results: Result[], dryRun: boolean, formatChange: (change: Change) => string): void {
  if (out.json) return out.value({ dry_run: dryRun, results });
  if (results.every((r) => r.action === 'unchanged')) return out.line(`no changes: ${results.length} agent${results.length === 1 ? '' : 's'} unchanged`);
  if (!dryRun) return out.table(results.map((r) => ({ ...r, version: r.version === null ? null : `v${r.version}` })), ['name', 'action', 'id', 'version']);
  for (const r of results) {
    out.line(`${r.action} ${r.name} (${r.file})${r.id ? ` ${r.id} v${r.version}` : ''}`);
    if (r.action !== 'unchanged') for (const change of r.changes) out.line(formatChange(change));
  }
  const count = (action: Result['action']) => results.filter((r) => r.action === action).length;
  out.line(`dry run: ${count('create')} to create, ${count('update')} to update, ${count('unchanged')} unchanged; nothing was written`);
}

export const agentCommands: CommandTable = {
  'agents apply': {
    usage: '-f FILE|DIR [--dry-run]',
    summary: 'create or update agents from agent files (*.yaml, *.yml, *.json)',
    options: { file: { type: 'string', short: 'f' }, 'dry-run': { type: 'boolean' } },
    async run(ctx, args) {
      const { formatChange, loadAgentFiles } = await agentFiles();
      // every file is read and checked before the first request
      const files = await loadAgentFiles(option(args, 'file', { required: true }));
      const api = await ctx.api();
      const dryRun = flag(args, 'dry-run');
      report(ctx.out, await execute(api, await plan(api, files), dryRun), dryRun, formatChange);
    },
  },

  'agents ls': {
    usage: '',
    summary: "list the team's agents",
    async run(ctx) {
      const agents = await (await ctx.api()).list<Agent>('/v1/agents');
      if (ctx.out.json) return ctx.out.value(agents);
      ctx.out.table(
        agents.map((a) => ({ name: a.name, id: a.id, version: `v${a.version}`, runtime: a.runtime.type, model: a.model.id, updated: a.updated_at })),
        ['name', 'id', 'version', 'runtime', 'model', 'updated'],
      );
    },
  },
};
