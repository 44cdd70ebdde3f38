// The shell: sign-in, the navigation, and a tiny router on the URL hash (#/view/param?filter=value). Each view is
// one module exporting mount(root, { params, query, signal }); the signal aborts when the user navigates away,
// which stops the view's polling and streams.
import { auth, get } from './api.js';
import { errorBox, h, replace } from './dom.js';
import { parseHash } from './router.js';
import * as agents from './views/agents.js';
import * as approvals from './views/approvals.js';
import * as audit from './views/audit.js';
import * as fleet from './views/fleet.js';
import * as schedules from './views/schedules.js';
import * as session from './views/session.js';
import * as spend from './views/spend.js';

const ROUTES = [
  { pattern: /^(fleet)?$/, view: fleet, nav: 'fleet' },
  { pattern: /^sessions\/([\w-]+)$/, view: session, nav: 'fleet' },
  { pattern: /^approvals$/, view: approvals, nav: 'approvals' },
  { pattern: /^agents$/, view: agents, nav: 'agents' },
  { pattern: /^spend$/, view: spend, nav: 'spend' },
  { pattern: /^audit$/, view: audit, nav: 'audit' },
  { pattern: /^schedules$/, view: schedules, nav: 'schedules' },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let current = null;

function render() {
  current?.abort();
  current = new AbortController();
  if (!auth.get()) return signIn();
  nav.hidden = false;
  const { path, query } = parseHash();
  const route = ROUTES.find((r) => r.pattern.test(path));
  for (const link of nav.querySelectorAll('a')) link.classList.toggle('active', link.dataset.view === route?.nav);
  if (!route) return replace(main, h('p', { class: 'error' }, `No page at #/${path}`));
  const params = path.match(route.pattern).slice(1);
  replace(main);
  delete main.dataset.ready;
  route.view.mount(main, { params, query, signal: current.signal });
}

function signIn(message) {
  nav.hidden = true;
  const input = h('input', { type: 'password', name: 'key', autocomplete: 'off', placeholder: 'ap_…', required: true, 'aria-label': 'API key' });
  const status = message ? h('p', { class: 'error', role: 'alert' }, message) : h('p', { class: 'hint' }, 'The key is kept in this tab only (sessionStorage) and sent as a Bearer token.');
  const form = h(
    'form',
    {
      class: 'sign-in',
      onsubmit: async (e) => {
        e.preventDefault();
        auth.set(input.value.trim());
        try {
          await get('/v1/teams/current');
          render();
        } catch (err) {
          auth.clear();
          replace(status, errorBox(err));
        }
      },
    },
    h('h1', {}, 'Sign in'),
    h('label', {}, 'API key ', input),
    h('button', { type: 'submit' }, 'Sign in'),
    status,
  );
  replace(main, form);
  input.focus();
}

document.getElementById('logout').addEventListener('click', () => {
  auth.clear();
  render();
});
window.addEventListener('agentplane:unauthorized', () => {
  auth.clear();
  current?.abort();
  signIn('The key was refused (unknown or revoked). Sign in again.');
});
window.addEventListener('hashchange', render);
render();
