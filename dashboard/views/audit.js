// The audit log: the team's rows in chain order, filtered by action, actor, target and time, a page at a time;
// and the chain check (GET /v1/audit/verify), which walks the rows appended since its last check and names the first
// that does not hold.
import { get } from '../api.js';
import { errorBox, h, replace, when } from '../dom.js';
import { go } from '../router.js';

const PAGE_SIZE = 100;
const FILTERS = ['action', 'actor', 'target', 'since', 'until'];

export function mount(root, { query, signal }) {
  const filters = Object.fromEntries(FILTERS.map((f) => [f, query[f] ?? '']));
  const inputs = FILTERS.map((f) =>
    h('label', {}, `${f} `, h('input', { name: f, value: filters[f], placeholder: f === 'since' || f === 'until' ? '2026-01-01T00:00:00Z' : '', type: 'text' })),
  );
  const form = h(
    'form',
    {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        go('audit', Object.fromEntries(FILTERS.map((f) => [f, form.elements[f].value.trim()])));
      },
    },
    inputs,
    h('button', { type: 'submit' }, 'Filter'),
  );
  const verdict = h('span', { class: 'verdict', 'aria-live': 'polite' });
  const verify = h(
    'button',
    {
      type: 'button',
      onclick: async () => {
        replace(verdict, 'Checking…');
        try {
          const v = await get('/v1/audit/verify', {}, signal);
          replace(verdict, v.ok ? h('span', { class: 'ok' }, `Chain intact: ${v.rows} new rows of this team verified since the last check.`) : h('span', { class: 'error' }, `Chain broken at row ${v.broken.seq}${v.broken.id ? ` (${v.broken.id})` : ''}: ${v.broken.why}`));
        } catch (err) {
          replace(verdict, errorBox(err));
        }
      },
    },
    'Verify chain',
  );
  const body = h('tbody');
  const more = h('div', { class: 'pager' });
  root.append(
    h('h1', {}, 'Audit log'),
    h('p', {}, verify, ' ', verdict),
    form,
    h('table', { class: 'audit' }, h('thead', {}, h('tr', {}, ['#', 'When', 'Actor', 'Action', 'Target', 'Decision', 'Reason', 'Data'].map((t) => h('th', {}, t)))), body),
    more,
  );

  const load = async (page) => {
    try {
      const res = await get('/v1/audit', { ...filters, page, limit: PAGE_SIZE }, signal);
      body.append(...res.data.map(row));
      replace(more, res.next_page ? h('button', { type: 'button', onclick: () => load(res.next_page) }, 'More') : h('span', { class: 'hint' }, res.data.length || page ? 'End of the log.' : 'No rows match.'));
    } catch (err) {
      replace(more, errorBox(err));
    }
  };
  load();
}

function row(r) {
  return h(
    'tr',
    {},
    h('td', { class: 'num' }, r.seq),
    h('td', {}, when(r.created_at)),
    h('td', {}, `${r.actor.key_id} (${r.actor.role})`),
    h('td', {}, r.action),
    h('td', {}, r.target),
    h('td', {}, r.decision),
    h('td', {}, r.reason),
    h('td', {}, h('code', {}, JSON.stringify(r.data))),
  );
}
