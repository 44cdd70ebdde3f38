// Agents with their current version and tool policy; opening one lists every version (policies change by new
// versions, so the history is the policy history).
import { get } from '../api.js';
import { errorBox, h, replace, when } from '../dom.js';

export function mount(root, { signal }) {
  const list = h('div', { class: 'agents' });
  root.append(h('h1', {}, 'Agents'), list);
  get('/v1/agents', { limit: 100 }, signal).then(
    (res) => replace(list, res.data.length ? res.data.map((a) => agentCard(a, signal)) : h('p', { class: 'empty' }, 'No agents yet.')),
    (err) => replace(list, errorBox(err)),
  );
}

function agentCard(agent, signal) {
  const versions = h('div', { class: 'versions' });
  let loaded = false;
  return h(
    'details',
    {
      class: 'agent',
      'data-agent': agent.id,
      ontoggle: (e) => {
        if (!e.currentTarget.open || loaded) return;
        loaded = true;
        get(`/v1/agents/${encodeURIComponent(agent.id)}/versions`, {}, signal).then(
          (res) => replace(versions, h('table', {}, h('thead', {}, h('tr', {}, ['Version', 'Model', 'Policy', 'Created'].map((t) => h('th', {}, t)))), h('tbody', {}, res.data.reverse().map(versionRow)))),
          (err) => replace(versions, errorBox(err)),
        );
      },
    },
    h('summary', {}, h('strong', {}, agent.name), ` ${agent.id} · v${agent.version} · ${agent.runtime.type} · ${agent.model.id}`),
    h('h3', {}, 'Current policy'),
    policyView(agent.tool_policy),
    h('p', { class: 'hint' }, `budget ${agent.budget.max_cost_usd ?? 'none'} · approvals time out after ${agent.approval_timeout_seconds}s${agent.approvals.separation_of_duties ? ' · separation of duties' : ''}`),
    h('h3', {}, 'Versions'),
    versions,
  );
}

function versionRow(version) {
  return h('tr', {}, h('td', {}, `v${version.version}`), h('td', {}, version.model.id), h('td', {}, policyView(version.tool_policy)), h('td', {}, when(version.updated_at)));
}

function policyView(policy) {
  return h(
    'ul',
    { class: 'policy' },
    (policy.rules ?? []).map((r) => h('li', {}, h('span', { class: `action action-${r.action}` }, r.action), ` ${r.tool}${r.pattern ? ` ${r.pattern}` : ''}`)),
    h('li', {}, h('span', { class: `action action-${policy.default}` }, policy.default), ' anything else'),
  );
}
