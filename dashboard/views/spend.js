// Spend over time from the ledger (GET /v1/usage with bucket=day), split by team, agent or model, as a stacked
// bar chart and a table of totals. The largest series get their own colour; the rest are summed as "other".
import { agentLabel, agentNames, get } from '../api.js';
import { daysBetween, stackedBars } from '../chart.js';
import { errorBox, h, replace, usd } from '../dom.js';
import { go } from '../router.js';

const GROUPS = ['agent', 'model', 'team'];
const RANGES = [7, 30, 90];
const MAX_SERIES = 7;

export function mount(root, { query, signal }) {
  const groupBy = GROUPS.includes(query.group_by) ? query.group_by : 'agent';
  const days = RANGES.includes(Number(query.days)) ? Number(query.days) : 30;
  const out = h('div', { class: 'spend' }, h('p', { class: 'hint' }, 'Loading…'));
  const choice = (name, values, current, label) =>
    h('label', {}, `${label} `, h('select', { name, onchange: (e) => go('spend', { group_by: groupBy, days, [name]: e.target.value }) }, values.map((v) => h('option', { value: v, selected: String(v) === String(current) }, String(v)))));
  root.append(h('h1', {}, 'Spend'), h('form', { class: 'filters', onsubmit: (e) => e.preventDefault() }, choice('group_by', GROUPS, groupBy, 'By'), choice('days', RANGES, days, 'Days')), out);

  const to = new Date().toISOString().slice(0, 10);
  const from = new Date(Date.now() - (days - 1) * 86_400_000).toISOString().slice(0, 10);
  // agents are named as people know them (with the id beside the name); models and teams are their own names
  const names = groupBy === 'agent' ? agentNames(signal).catch(() => new Map()) : Promise.resolve(null);
  Promise.all([get('/v1/usage', { group_by: groupBy, bucket: 'day', from: `${from}T00:00:00Z` }, signal), names]).then(
    ([res, found]) => {
      const rows = found ? res.data.map((r) => ({ ...r, key: r.key === null ? null : agentLabel(found, r.key) })) : res.data;
      const axis = daysBetween(from, to);
      const series = toSeries(rows, axis);
      replace(
        out,
        stackedBars({ days: axis, series, title: `Spend per day by ${groupBy}` }),
        h(
          'table',
          { class: 'totals' },
          h('thead', {}, h('tr', {}, [groupBy, 'Cost', 'Requests', 'Input tokens', 'Output tokens'].map((t) => h('th', {}, t)))),
          h('tbody', {}, totals(rows).map((t) => h('tr', {}, h('td', {}, t.key), h('td', { class: 'num' }, usd(t.cost_usd)), h('td', { class: 'num' }, t.requests), h('td', { class: 'num' }, t.input_tokens), h('td', { class: 'num' }, t.output_tokens)))),
        ),
      );
      root.dataset.ready = 'true';
    },
    (err) => replace(out, errorBox(err)),
  );
}

function totals(rows) {
  const byKey = new Map();
  for (const r of rows) {
    const t = byKey.get(r.key) ?? { key: r.key ?? '(none)', cost_usd: 0, requests: 0, input_tokens: 0, output_tokens: 0 };
    for (const f of ['cost_usd', 'requests', 'input_tokens', 'output_tokens']) t[f] += r[f];
    byKey.set(r.key, t);
  }
  return [...byKey.values()].sort((a, b) => b.cost_usd - a.cost_usd);
}

/** rows of (key, day, cost) → one series per key over the day axis, the smallest folded into "other" */
function toSeries(rows, axis) {
  const ranked = totals(rows);
  const named = new Set(ranked.slice(0, MAX_SERIES).map((t) => t.key));
  const index = new Map(axis.map((d, i) => [d, i]));
  const series = new Map();
  for (const r of rows) {
    const name = named.has(r.key ?? '(none)') ? (r.key ?? '(none)') : 'other';
    if (!series.has(name)) series.set(name, { name, values: axis.map(() => 0) });
    const i = index.get(r.day);
    if (i !== undefined) series.get(name).values[i] += r.cost_usd;
  }
  return [...series.values()];
}
