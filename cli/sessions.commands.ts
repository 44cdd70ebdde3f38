/**
 * Sessions: start one, list them, follow one's events (pending approvals come with the command that decides
 * them), and decide a tool call.
 */
import { readSseFrames } from '../runtimes/kit/sse';
import { resolveAgent, type Agent } from './agents.commands';
import { cliErrorOf, type ApiClient } from './client';
import { flag, option, type Command, type CommandContext, type CommandTable } from './command';
import { CliError, EXIT, usageError } from './errors';
import type { Output } from './output';

interface Session extends Record<string, unknown> {
  id: string;
  status: string;
  stop_reason: { type: string } | null;
  agent: { id: string; version: number; runtime: string };
  usage: { cost_usd: number };
  created_at: string;
}

interface SessionEvent extends Record<string, unknown> {
  id: string;
  type: string;
  processed_at: string | null;
  seq?: number;
}

const STATUSES = ['idle', 'running', 'requires_action', 'terminated'];
/** how often tail reconnects in a row before it gives up (a reconnect resumes from the last event seen) */
const RECONNECTS = 5;

async function readStdin(ctx: CommandContext): Promise<string> {
  let text = '';
  for await (const chunk of ctx.stdin) text += String(chunk);
  return text;
}

/**
 * Follows a session's event stream from its first event (Last-Event-ID 0 replays the log) until the session
 * terminates. A dropped connection resumes from the last event printed, so nothing is shown twice or missed.
 */
async function tail(api: ApiClient, out: Output, sessionId: string): Promise<void> {
  let cursor = '0';
  let failures = 0;
  for (;;) {
    try {
      const res = await api.stream(`/v1/sessions/${encodeURIComponent(sessionId)}/events/stream`, { 'last-event-id': cursor });
      for await (const frame of readSseFrames(res.body!)) {
        if (frame.event === 'ping' || !frame.data) continue;
        // the API's last word before it closes the stream (the key was revoked): a problem, not a session event
        if (frame.event === 'error') {
          const problem = JSON.parse(frame.data) as { status: number; title?: string; detail?: string };
          throw cliErrorOf(problem, problem.status);
        }
        const event = JSON.parse(frame.data) as SessionEvent;
        if (frame.id) cursor = frame.id;
        failures = 0;
        if (out.json) out.value(event, { compact: true });
        else for (const line of describeEvent(sessionId, event)) out.line(line);
        if (event.type === 'session.status_terminated') return;
      }
    } catch (err) {
      // the API's own refusals (not found, bad key) do not get better by retrying
      if (err instanceof CliError && err.exitCode !== EXIT.api) throw err;
      if (++failures > RECONNECTS) throw err instanceof CliError ? err : new CliError(EXIT.api, `the event stream failed: ${(err as Error).message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** One event as a line (or two, for a tool call waiting for a person) a person can read. */
export function describeEvent(sessionId: string, event: SessionEvent): string[] {
  const time = event.processed_at ? event.processed_at.slice(11, 19) : '        ';
  const head = (text: string) => `${time}  ${event.type.padEnd(26)} ${text}`.trimEnd();
  const text = (content: unknown) => (typeof content === 'string' ? content : Array.isArray(content) ? content.map((c: { text?: string }) => c.text ?? '').join('\n') : '');
  switch (event.type) {
    case 'user.message':
    case 'agent.message':
      return [head(text(event.content))];
    case 'agent.tool_use': {
      const line = head(`${event.name} ${JSON.stringify(event.input)} → ${event.evaluated_permission}`);
      if (event.evaluated_permission !== 'ask') return [line];
      return [line, `${' '.repeat(10)}waiting for a decision: agentplane approve ${sessionId} ${event.id}   (or: agentplane deny ${sessionId} ${event.id})`];
    }
    case 'user.tool_confirmation':
      return [head(`${event.result} ${event.tool_use_id}${event.deny_message ? `: ${event.deny_message}` : ''}`)];
    case 'session.status_idle':
    case 'session.status_terminated':
      return [head((event.stop_reason as { type?: string } | null)?.type ?? '')];
    default: {
      const { id: _id, type: _type, processed_at: _at, seq: _seq, ...rest } = event;
      return [head(Object.keys(rest).length ? JSON.stringify(rest) : '')];
    }
  }
}

function decide(result: 'allow' | 'deny'): Command {
  return {
    usage: result === 'allow' ? 'SESSION_ID TOOL_USE_ID' : 'SESSION_ID TOOL_USE_ID [--message TEXT]',
    summary: result === 'allow' ? 'allow a tool call that waits for a decision' : 'deny a tool call that waits for a decision',
    options: result === 'deny' ? { message: { type: 'string', short: 'm' } } : {},
    args: [2, 2],
    async run(ctx, args) {
      const [sessionId, toolUseId] = args.positionals as [string, string];
      const message = option(args, 'message');
      const event = { type: 'user.tool_confirmation', tool_use_id: toolUseId, result, ...(message ? { deny_message: message } : {}) };
      const accepted = await (await ctx.api()).post<{ data: SessionEvent[] }>(`/v1/sessions/${encodeURIComponent(sessionId)}/events`, { events: [event] });
      if (ctx.out.json) return ctx.out.value(accepted.data[0]);
      ctx.out.line(`${result === 'allow' ? 'allowed' : 'denied'} tool call ${toolUseId} of session ${sessionId}`);
    },
  };
}

export const sessionCommands: CommandTable = {
  'sessions start': {
    usage: '--agent NAME|ID [--title TEXT] [--tail] PROMPT   (PROMPT "-" reads it from stdin)',
    summary: 'start a session of an agent with a first message',
    options: { agent: { type: 'string', short: 'a' }, title: { type: 'string' }, tail: { type: 'boolean' } },
    args: [1, Infinity],
    async run(ctx, args) {
      const api = await ctx.api();
      const prompt = args.positionals.join(' ') === '-' ? await readStdin(ctx) : args.positionals.join(' ');
      if (!prompt.trim()) throw usageError('the prompt is empty');
      const agent: Agent = await resolveAgent(api, option(args, 'agent', { required: true }));
      const title = option(args, 'title');
      const session = await api.post<Session>('/v1/sessions', { agent: agent.id, ...(title ? { title } : {}), initial_events: [{ type: 'user.message', content: prompt }] });
      if (ctx.out.json) ctx.out.value(session, { compact: flag(args, 'tail') });
      else {
        ctx.out.line(`started ${session.id} (agent ${agent.name} v${session.agent.version}, runtime ${session.agent.runtime})`);
        if (!flag(args, 'tail')) ctx.out.line(`follow it: agentplane sessions tail ${session.id}`);
      }
      if (flag(args, 'tail')) await tail(api, ctx.out, session.id);
    },
  },

  'sessions ls': {
    usage: '[--agent NAME|ID] [--status STATUS] [--limit N]',
    summary: 'list sessions, newest first',
    options: { agent: { type: 'string', short: 'a' }, status: { type: 'string' }, limit: { type: 'string' } },
    async run(ctx, args) {
      const api = await ctx.api();
      const status = option(args, 'status');
      if (status && !STATUSES.includes(status)) throw usageError(`--status: must be one of ${STATUSES.join(', ')}`);
      const limit = option(args, 'limit') ?? '20';
      if (!/^\d+$/.test(limit)) throw usageError('--limit: must be a whole number');
      const agentArg = option(args, 'agent');
      const agentId = agentArg ? (await resolveAgent(api, agentArg)).id : undefined;
      const page = await api.get<{ data: Session[] }>('/v1/sessions', { limit, status, agent_id: agentId });
      if (ctx.out.json) return ctx.out.value(page.data);
      const names = new Map((await api.list<Agent>('/v1/agents', { include_archived: 'true' })).map((a) => [a.id, a.name]));
      ctx.out.table(
        page.data.map((s) => ({
          id: s.id,
          status: s.status === 'idle' && s.stop_reason ? `idle (${s.stop_reason.type})` : s.status,
          agent: `${names.get(s.agent.id) ?? s.agent.id} v${s.agent.version}`,
          runtime: s.agent.runtime,
          cost_usd: s.usage.cost_usd.toFixed(4),
          created: s.created_at,
        })),
        ['id', 'status', 'agent', 'runtime', 'cost_usd', 'created'],
      );
    },
  },

  'sessions tail': {
    usage: 'SESSION_ID',
    summary: "print a session's events from the start and follow them until it terminates",
    args: [1, 1],
    async run(ctx, args) {
      await tail(await ctx.api(), ctx.out, args.positionals[0]!);
    },
  },

  approve: decide('allow'),
  deny: decide('deny'),
};
