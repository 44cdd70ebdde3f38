/**
 * `agents apply` makes the team's agents match agent files: each file's agent is found by name and created,
 * updated (based on the version it was compared with, so a concurrent change is refused, not overwritten) or
 * left alone. `--dry-run` prints the same plan with each agent's changes and writes nothing.
 */
import type { ApiClient } from './client';
import { flag, option, type CommandTable } from './command';
import type { AgentFile, Change } from './agent-files';
import { CliError, EXIT } from './errors';

/** The fields of an agent the CLI reads; the rest passes through to --json untouched. */
export interface Agent extends Record<string, unknown> {
  id: string;
  name: string;
  version: number;
  model: { id: string };
  runtime: { type: string };
  updated_at: string;
}

interface Result {
  name: string;
  file: string;
  action: 'create' | 'update' | 'unchanged' | 'created' | 'updated';
  id: string | null;
  version: number | null;
  changes: Change[];
}

// the API's agent schema (zod, @hono/zod-openapi) and the YAML parser take a while to load: only apply needs them
const agentFiles = () => import('./agent-files');

type Plan = { file: AgentFile; action: 'create' } | { file: AgentFile; action: 'update' | 'unchanged'; current: Agent; changes: Change[] };

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
  const { diffAgents, normalizeDefinition, withoutAssigned } = await agentFiles();
  const byName = await agentsByName(api);
  return files.map((file): Plan => {
    const live = byName.get(file.definition.name) ?? [];
    if (live.length > 1) throw new CliError(EXIT.api, `${file.path}: ${live.length} agents are named "${file.definition.name}" (${live.map((a) => a.id).join(', ')}): archive all but one`);
    const current = live[0];
    if (!current) return { file, action: 'create' };
    const changes = diffAgents(withoutAssigned(current), normalizeDefinition(file.definition));
    return { file, action: changes.length ? 'update' : 'unchanged', current, changes };
  });
}

export const agentCommands: CommandTable = {
  'agents apply': {
    usage: '-f FILE|DIR [--dry-run]',
    summary: 'create or update agents from agent files (*.yaml, *.yml, *.json)',
    options: { file: { type: 'string', short: 'f' }, 'dry-run': { type: 'boolean' } },
    async run(ctx, args) {
      const { diffAgents, formatChange, loadAgentFiles, normalizeDefinition, replacementBody, withoutAssigned } = await agentFiles();
      const files = await loadAgentFiles(option(args, 'file', { required: true }));
      const api = await ctx.api();
      const plans = await plan(api, files);
      const dryRun = flag(args, 'dry-run');
      const results: Result[] = [];
      for (const p of plans) {
        const base = { name: p.file.definition.name, file: p.file.path };
        if (dryRun || p.action === 'unchanged') {
          results.push({ ...base, action: p.action, id: p.action === 'create' ? null : p.current.id, version: p.action === 'create' ? null : p.current.version, changes: p.action === 'create' ? diffAgents({}, normalizeDefinition(p.file.definition)) : p.changes });
          continue;
        }
        const agent =
          p.action === 'create'
            ? await api.post<Agent>('/v1/agents', p.file.definition)
            : await api.post<Agent>(`/v1/agents/${p.current.id}`, { ...replacementBody(p.file.definition, withoutAssigned(p.current)), version: p.current.version });
        results.push({ ...base, action: p.action === 'create' ? 'created' : 'updated', id: agent.id, version: agent.version, changes: p.action === 'create' ? [] : p.changes });
      }

      if (ctx.out.json) return ctx.out.value({ dry_run: dryRun, results });
      if (results.every((r) => r.action === 'unchanged')) return ctx.out.line(`no changes: ${results.length} agent${results.length === 1 ? '' : 's'} unchanged`);
      if (dryRun) {
        for (const r of results) {
          ctx.out.line(`${r.action} ${r.name} (${r.file})${r.id ? ` ${r.id} v${r.version}` : ''}`);
          if (r.action !== 'unchanged') for (const change of r.changes) ctx.out.line(formatChange(change));
        }
        const count = (action: string) => results.filter((r) => r.action === action).length;
        return ctx.out.line(`dry run: ${count('create')} to create, ${count('update')} to update, ${count('unchanged')} unchanged; nothing was written`);
      }
      ctx.out.table(results.map((r) => ({ ...r, version: r.version === null ? null : `v${r.version}` })), ['name', 'action', 'id', 'version']);
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
