// The fleet: every session across runtimes, newest first, one page at a time (the API pages by a cursor, so a
// fleet of any size costs one indexed query per page), filtered by status, runtime and agent, refreshed every
// few seconds so statuses stay live. The filters and the cursor live in the URL hash.
import { agentLabel, agentNames, get, poll, post } from '../api.js';
import { go } from '../router.js';
import { errorBox, h, replace, statusBadge, usd, when } from '../dom.js';

const PAGE_SIZE = 50;
const REFRESH_MS = 3000;
const STATUSES = ['idle', 'running', 'requires_action', 'terminated'];

export function mount(root, { query, signal }) {
  const filters = { status: query.status ?? '', runtime: query.runtime ?? '', agent_id: query.agent_id ?? '' };
  // the cursors of the pages before this one, so "Previous" can go back
  const trail = query.trail ? query.trail.split(',') : [];
  const apply = (changes) => go('fleet', { ...filters, ...changes });

  const select = (name, options, label) =>
    h(
      'label',
      {},
      `${label} `,
      h(
        'select',
        { name, onchange: (e) => apply({ [name]: e.target.value, page: '', trail: '' }) },
        h('option', { value: '' }, 'any'),
        options.map((o) => h('option', { value: o.value, selected: o.value === filters[name] }, o.label)),
      ),
    );

  const runtimeSlot = h('span');
  const agentSlot = h('span');
  const body = h('tbody');
  const pager = h('div', { class: 'pager' });
  const status = h('p', { class: 'hint', 'aria-live': 'polite' });

  root.append(
    h('h1', {}, 'Fleet'),
    startForm(signal),
    h('form', { class: 'filters', onsubmit: (e) => e.preventDefault() }, select('status', STATUSES.map((s) => ({ value: s, label: s })), 'Status'), runtimeSlot, agentSlot),
    h(
      'table',
      { class: 'sessions' },
      h('thead', {}, h('tr', {}, ['Session', 'Title', 'Agent', 'Runtime', 'Status', 'Cost', 'Created'].map((t) => h('th', {}, t)))),
      body,
    ),
    pager,
    status,
  );

  get('/v1/runtimes', {}, signal).then((r) => replace(runtimeSlot, select('runtime', r.data.map((x) => ({ value: x.type, label: x.type })), 'Runtime')), () => undefined);
  // names for the filter and the rows; the fleet shows ids until they arrive (or if they cannot be read)
  let names = new Map();
  const named = agentNames(signal).then(
    (found) => {
      names = found;
      replace(agentSlot, select('agent_id', [...found].map(([id, name]) => ({ value: id, label: name || id })), 'Agent'));
    },
    () => undefined,
  );

  let first = true;
  poll(
    REFRESH_MS,
    async () => {
      try {
        const res = await get('/v1/sessions', { ...filters, page: query.page, limit: PAGE_SIZE }, signal);
        if (first) await named;
        replace(body, res.data.length ? res.data.map((session) => row(session, names)) : h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No sessions match.')));
        renderPager(res.next_page);
        replace(status, `Updated ${new Date().toLocaleTimeString()}`);
        if (first) root.dataset.ready = 'true';
        first = false;
      } catch (err) {
        if (!signal.aborted) replace(status, errorBox(err));
      }
    },
    signal,
  );

  function renderPager(next) {
    replace(
      pager,
      h('button', { type: 'button', disabled: trail.length === 0 && !query.page, onclick: () => apply({ page: trail.at(-1) ?? '', trail: trail.slice(0, -1).join(',') }) }, 'Previous'),
      h('button', { type: 'button', disabled: !next, onclick: () => apply({ page: next, trail: [...trail, query.page ?? ''].join(',') }) }, 'Next'),
    );
  }
}

function row(session, names) {
  return h(
    'tr',
    { 'data-session': session.id },
    h('td', {}, h('a', { href: `#/sessions/${session.id}` }, session.id)),
    h('td', {}, session.title ?? ''),
    h('td', { 'data-agent': session.agent.id }, `${agentLabel(names, session.agent.id)} v${session.agent.version}`),
    h('td', {}, session.agent.runtime),
    h('td', {}, statusBadge(session.status)),
    h('td', { class: 'num' }, usd(session.usage.cost_usd)),
    h('td', {}, when(session.created_at)),
  );
}

/** Starts a session of an agent with a first message, then opens it. */
function startForm(signal) {
  const agent = h('select', { name: 'agent', required: true });
  const message = h('textarea', { name: 'message', rows: 2, placeholder: 'First message (optional)' });
  const title = h('input', { name: 'title', placeholder: 'Title (optional)' });
  const status = h('span', { class: 'hint' });
  get('/v1/agents', { limit: 100 }, signal).then((r) => replace(agent, r.data.map((a) => h('option', { value: a.id }, `${a.name ?? a.id} (${a.runtime?.type ?? ''})`))), () => undefined);
  return h(
    'details',
    { class: 'start' },
    h('summary', {}, 'Start a session'),
    h(
      'form',
      {
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            const body = { agent: agent.value, title: title.value || undefined };
            if (message.value.trim()) body.initial_events = [{ type: 'user.message', content: message.value }];
            const session = await post('/v1/sessions', body);
            location.hash = `#/sessions/${session.id}`;
          } catch (err) {
            replace(status, errorBox(err));
          }
        },
      },
      h('label', {}, 'Agent ', agent),
      title,
      message,
      h('button', { type: 'submit' }, 'Start'),
      status,
    ),
  );
}
