/**
 * Schedules: sessions started on a timetable (a cron expression or an interval, read in a time zone). List them,
 * create one, pause and unpause it, start a run now, and list the runs it started with their status and cost.
 */
import { resolveAgent, type Agent } from './agents.commands';
import { flag, option, type CommandTable, type Invocation } from './command';
import { usageError } from './errors';

interface Schedule extends Record<string, unknown> {
  id: string;
  agent: { id: string; version: number | null };
  prompt: string;
  title: string | null;
  spec: { cron?: string[]; intervals?: Array<{ every_seconds: number; offset_seconds?: number }>; time_zone: string };
  policies: { overlap: string };
  state: { paused: boolean; note: string | null };
  info?: { next_run_times: string[] };
}

interface Run extends Record<string, unknown> {
  session_id: string;
  scheduled_at: string | null;
  status: string;
  stop_reason: { type?: string } | null;
  cost_usd: number;
  created_at: string;
}

const OVERLAPS = ['skip', 'buffer_one', 'buffer_all', 'allow_all', 'cancel_other'];
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** '90s', '15m', '1h30m', '1d' → seconds; anything else is a usage error naming the flag. */
export function parseDuration(text: string): number {
  const parts = [...text.matchAll(/(\d+)([smhd])/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) throw usageError(`--every: "${text}" is not a duration (examples: 30s, 15m, 1h30m, 1d)`);
  const seconds = parts.reduce((sum, [, n, unit]) => sum + Number(n) * UNIT_SECONDS[unit!]!, 0);
  if (seconds < 1) throw usageError('--every: must be at least 1s');
  return seconds;
}

/** 5400 → '1h30m' */
export function formatDuration(seconds: number): string {
  let rest = seconds;
  let text = '';
  for (const [unit, size] of Object.entries(UNIT_SECONDS).reverse()) {
    if (rest >= size) {
      text += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return text || '0s';
}

/** what the schedule fires on, in one cell: 'cron 0 9 * * 1-5' or 'every 1h' */
export function describeSpec(spec: Schedule['spec']): string {
  return [
    ...(spec.cron ?? []).map((c) => `cron ${c}`),
    ...(spec.intervals ?? []).map((i) => `every ${formatDuration(i.every_seconds)}${i.offset_seconds ? ` +${formatDuration(i.offset_seconds)}` : ''}`),
  ].join(', ');
}

const scheduleState = (s: Schedule) => (s.state.paused ? 'paused' : 'active');
const schedulePath = (id: string, action = '') => `/v1/schedules/${encodeURIComponent(id)}${action ? `/${action}` : ''}`;

function pauseCommand(action: 'pause' | 'unpause'): CommandTable[string] {
  return {
    usage: 'SCHEDULE_ID [--note TEXT]',
    summary: action === 'pause' ? 'pause a schedule: it starts nothing until unpaused' : 'unpause a schedule: it fires again',
    options: { note: { type: 'string' } },
    args: [1, 1],
    async run(ctx, args) {
      const note = option(args, 'note');
      const schedule = await (await ctx.api()).post<Schedule>(schedulePath(args.positionals[0]!, action), note ? { note } : {});
      if (ctx.out.json) return ctx.out.value(schedule);
      ctx.out.line(`${schedule.id} is ${scheduleState(schedule)}`);
      const next = schedule.info?.next_run_times[0];
      if (!schedule.state.paused && next) ctx.out.line(`next run ${next}`);
    },
  };
}

function limitOf(args: Invocation): string {
  const limit = option(args, 'limit') ?? '20';
  if (!/^\d+$/.test(limit) || Number(limit) < 1) throw usageError('--limit: must be a whole number above 0');
  return limit;
}

export const scheduleCommands: CommandTable = {
  'schedules ls': {
    usage: '[--agent NAME|ID] [--limit N]',
    summary: 'list schedules, newest first',
    options: { agent: { type: 'string', short: 'a' }, limit: { type: 'string' } },
    async run(ctx, args) {
      const api = await ctx.api();
      const limit = limitOf(args);
      const agentArg = option(args, 'agent');
      const agentId = agentArg ? (await resolveAgent(api, agentArg)).id : undefined;
      const page = await api.get<{ data: Schedule[] }>('/v1/schedules', { limit, agent_id: agentId });
      if (ctx.out.json) return ctx.out.value(page.data);
      const names = new Map((await api.list<Agent>('/v1/agents', { include_archived: 'true' })).map((a) => [a.id, a.name]));
      ctx.out.table(
        page.data.map((s) => ({
          id: s.id,
          agent: `${names.get(s.agent.id) ?? s.agent.id}${s.agent.version ? ` v${s.agent.version}` : ''}`,
          spec: describeSpec(s.spec),
          time_zone: s.spec.time_zone,
          overlap: s.policies.overlap,
          state: scheduleState(s),
          title: s.title,
        })),
        ['id', 'agent', 'spec', 'time_zone', 'overlap', 'state', 'title'],
      );
    },
  },

  'schedules create': {
    usage: '--agent NAME|ID (--cron EXPR | --every DURATION) [--tz ZONE] [--overlap POLICY] [--title TEXT] [--paused] PROMPT',
    summary: 'start a session of an agent with PROMPT on a cron timetable or every DURATION (30s, 15m, 1h30m, 1d)',
    options: {
      agent: { type: 'string', short: 'a' },
      cron: { type: 'string', multiple: true },
      every: { type: 'string' },
      tz: { type: 'string' },
      overlap: { type: 'string' },
      title: { type: 'string' },
      paused: { type: 'boolean' },
    },
    args: [1, Infinity],
    async run(ctx, args) {
      const prompt = args.positionals.join(' ');
      if (!prompt.trim()) throw usageError('the prompt is empty');
      const cron = (args.values.cron as string[] | undefined) ?? [];
      const every = option(args, 'every');
      if (cron.length === 0 && !every) throw usageError('give --cron EXPR or --every DURATION');
      if (cron.length > 0 && every) throw usageError('give --cron or --every, not both');
      const overlap = option(args, 'overlap');
      if (overlap && !OVERLAPS.includes(overlap)) throw usageError(`--overlap: must be one of ${OVERLAPS.join(', ')}`);
      const tz = option(args, 'tz');
      const title = option(args, 'title');
      const spec = {
        ...(every ? { intervals: [{ every_seconds: parseDuration(every) }] } : { cron }),
        ...(tz ? { time_zone: tz } : {}),
      };
      const api = await ctx.api();
      const agent = await resolveAgent(api, option(args, 'agent', { required: true }));
      const schedule = await api.post<Schedule>('/v1/schedules', {
        agent: agent.id,
        prompt,
        spec,
        ...(overlap ? { policies: { overlap, catchup_window_seconds: 60 } } : {}),
        ...(title ? { title } : {}),
        paused: flag(args, 'paused'),
      });
      if (ctx.out.json) return ctx.out.value(schedule);
      ctx.out.line(`created ${schedule.id} (agent ${agent.name}, ${describeSpec(schedule.spec)} in ${schedule.spec.time_zone}, overlap ${schedule.policies.overlap}, ${scheduleState(schedule)})`);
      const next = schedule.info?.next_run_times[0];
      if (!schedule.state.paused && next) ctx.out.line(`next run ${next}`);
    },
  },

  'schedules pause': pauseCommand('pause'),
  'schedules unpause': pauseCommand('unpause'),

  'schedules trigger': {
    usage: 'SCHEDULE_ID [--overlap POLICY]',
    summary: "start one run of a schedule now (also when paused); by default it follows the schedule's overlap policy",
    options: { overlap: { type: 'string' } },
    args: [1, 1],
    async run(ctx, args) {
      const overlap = option(args, 'overlap');
      if (overlap && !OVERLAPS.includes(overlap)) throw usageError(`--overlap: must be one of ${OVERLAPS.join(', ')}`);
      const id = args.positionals[0]!;
      const res = await (await ctx.api()).post<{ schedule_id: string; triggered: true }>(schedulePath(id, 'trigger'), overlap ? { overlap } : {});
      if (ctx.out.json) return ctx.out.value(res);
      ctx.out.line(`triggered ${res.schedule_id}: its run shows in agentplane schedules runs ${res.schedule_id}`);
    },
  },

  'schedules runs': {
    usage: 'SCHEDULE_ID [--limit N]',
    summary: 'the sessions a schedule started, newest first, with status and cost',
    options: { limit: { type: 'string' } },
    args: [1, 1],
    async run(ctx, args) {
      const page = await (await ctx.api()).get<{ data: Run[] }>(schedulePath(args.positionals[0]!, 'runs'), { limit: limitOf(args) });
      if (ctx.out.json) return ctx.out.value(page.data);
      ctx.out.table(
        page.data.map((r) => ({
          session: r.session_id,
          status: r.status === 'idle' && r.stop_reason?.type ? `idle (${r.stop_reason.type})` : r.status,
          scheduled_at: r.scheduled_at,
          cost_usd: r.cost_usd.toFixed(4),
          created: r.created_at,
        })),
        ['session', 'status', 'scheduled_at', 'cost_usd', 'created'],
      );
    },
  },
};
