/** `agentplane usage`: spend from the ledger, grouped as the API's /v1/usage groups it. */
import { flag, option, type CommandTable } from './command';
import { usageError } from './errors';

interface UsageRow {
  key: string | null;
  day: string | null;
  cost_usd: number;
  input_tokens: number;
  output_tokens: number;
  requests: number;
}

const GROUPS = ['team', 'agent', 'session', 'model'];

export const usageCommands: CommandTable = {
  usage: {
    usage: '[--group-by agent|team|session|model] [--from ISO_TIME] [--to ISO_TIME] [--by-day]',
    summary: 'spend and tokens, by agent (or team, session, model)',
    options: { 'group-by': { type: 'string' }, from: { type: 'string' }, to: { type: 'string' }, 'by-day': { type: 'boolean' } },
    async run(ctx, args) {
      const groupBy = option(args, 'group-by') ?? 'agent';
      if (!GROUPS.includes(groupBy)) throw usageError(`--group-by: must be one of ${GROUPS.join(', ')}`);
      const res = await (await ctx.api()).get<{ data: UsageRow[] }>('/v1/usage', {
        group_by: groupBy,
        from: option(args, 'from'),
        to: option(args, 'to'),
        bucket: flag(args, 'by-day') ? 'day' : 'none',
      });
      if (ctx.out.json) return ctx.out.value(res);
      const columns = [groupBy, ...(flag(args, 'by-day') ? ['day'] : []), 'cost_usd', 'requests', 'input_tokens', 'output_tokens'];
      ctx.out.table(
        res.data.map((r) => ({ ...r, [groupBy]: r.key, cost_usd: r.cost_usd.toFixed(4) })),
        columns,
      );
      const total = res.data.reduce((sum, r) => sum + r.cost_usd, 0);
      ctx.out.line(`total ${total.toFixed(4)} USD`);
    },
  },
};
