// Schedules: each with what it fires on (cron or interval, in its time zone), its overlap policy, whether it is
// paused and when it runs next, the buttons to pause, unpause and run it now, and the sessions it started with
// their status and cost. The page refreshes itself; each schedule's card is kept and updated in place, so a
// button is never swapped out from under a click.
import { get, poll, post } from '../api.js';
import { errorBox, h, replace, statusBadge, usd, when } from '../dom.js';

const REFRESH_MS = 3000;
const RUNS_SHOWN = 10;
const UNITS = [
  ['d', 86_400],
  ['h', 3600],
  ['m', 60],
  ['s', 1],
];

export function mount(root, { signal }) {
  const list = h('div', { class: 'schedules' });
  const status = h('p', { class: 'hint', 'aria-live': 'polite' });
  root.append(h('h1', {}, 'Schedules'), list, status);
  const cards = new Map();
  // agents by id, for their names (a failure leaves the ids showing)
  const agents = get('/v1/agents', { limit: 100, include_archived: true }, signal).then(
    (r) => new Map(r.data.map((a) => [a.id, a.name])),
    () => new Map(),
  );

  let first = true;
  poll(
    REFRESH_MS,
    async () => {
      try {
        const [res, agentNames] = await Promise.all([get('/v1/schedules', { limit: 100 }, signal), agents]);
        const ids = new Set(res.data.map((s) => s.id));
        for (const id of cards.keys()) if (!ids.has(id)) cards.delete(id);
        for (const schedule of res.data) {
          if (!cards.has(schedule.id)) cards.set(schedule.id, scheduleCard(schedule, signal));
          cards.get(schedule.id).show(schedule, agentNames);
        }
        await Promise.all(res.data.map((s) => cards.get(s.id).refresh()));
        const wanted = res.data.map((s) => cards.get(s.id).el);
        // the same cards in the same order stay where they are
        if (wanted.length !== list.children.length || wanted.some((el, i) => list.children[i] !== el)) {
          replace(list, wanted.length ? wanted : h('p', { class: 'empty' }, 'No schedules yet (POST /v1/schedules, or agentplane schedules create).'));
        }
        replace(status, `Updated ${new Date().toLocaleTimeString()}`);
        if (first) root.dataset.ready = 'true';
        first = false;
      } catch (err) {
        if (!signal.aborted) replace(status, errorBox(err));
      }
    },
    signal,
  );
}

/** One schedule's card; show() fills it from a schedule, refresh() re-reads its state, next runs and run history. */
function scheduleCard(initial, signal) {
  const path = `/v1/schedules/${encodeURIComponent(initial.id)}`;
  const heading = h('header');
  const facts = h('dl');
  const runs = h('tbody');
  const message = h('span', { class: 'hint', 'aria-live': 'polite' });
  const pause = h('button', { type: 'button', class: 'pause', onclick: () => act(pause, current.state.paused ? 'unpause' : 'pause') });
  const trigger = h('button', { type: 'button', class: 'trigger', onclick: () => act(trigger, 'trigger') }, 'Run now');
  const el = h(
    'article',
    { class: 'schedule', 'data-schedule': initial.id },
    heading,
    facts,
    h('div', { class: 'decide' }, pause, trigger, message),
    h('h3', {}, 'Runs'),
    h('table', { class: 'runs' }, h('thead', {}, h('tr', {}, ['Session', 'Status', 'Scheduled for', 'Cost', 'Started'].map((t) => h('th', {}, t)))), runs),
  );
  let current = initial;
  let names = new Map();

  function show(schedule, agentNames = names) {
    current = schedule;
    names = agentNames;
    const state = schedule.state.paused ? 'paused' : 'active';
    el.dataset.state = state;
    replace(
      heading,
      h('strong', {}, schedule.title ?? schedule.id),
      ` ${schedule.title ? `${schedule.id} · ` : ''}agent ${names.get(schedule.agent.id) ?? schedule.agent.id}${schedule.agent.version ? ` v${schedule.agent.version}` : ''} `,
      h('span', { class: `badge state-${state}`, 'data-state': state }, state),
    );
    const next = schedule.info?.next_run_times ?? [];
    replace(
      facts,
      fact('Runs on', specText(schedule.spec)),
      fact('Time zone', schedule.spec.time_zone),
      fact('Overlap', schedule.policies.overlap),
      fact('Next runs', schedule.state.paused ? 'none while paused' : next.length ? next.slice(0, 3).map(when).join(' · ') : '…'),
      fact('Prompt', h('span', { class: 'text' }, schedule.prompt)),
      schedule.state.note ? fact('Note', schedule.state.note) : null,
    );
    replace(pause, schedule.state.paused ? 'Unpause' : 'Pause');
  }

  async function refresh() {
    const [schedule, history] = await Promise.all([get(path, {}, signal), get(`${path}/runs`, { limit: RUNS_SHOWN }, signal)]);
    show(schedule);
    replace(runs, history.data.length ? history.data.map(runRow) : h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No runs yet.')));
  }

  async function act(button, action) {
    button.disabled = true;
    try {
      const res = await post(`${path}/${action}`, {});
      if (action === 'trigger') replace(message, 'Run started.');
      else {
        show(res);
        replace(message, action === 'pause' ? 'Paused.' : 'Unpaused.');
      }
      await refresh();
    } catch (err) {
      if (!signal.aborted) replace(message, errorBox(err));
    } finally {
      button.disabled = false;
    }
  }

  show(initial);
  return { el, show, refresh };
}

const fact = (term, value) => [h('dt', {}, term), h('dd', {}, value)];

function runRow(run) {
  return h(
    'tr',
    { 'data-session': run.session_id },
    h('td', {}, h('a', { href: `#/sessions/${run.session_id}` }, run.session_id)),
    h('td', {}, statusBadge(run.status), run.status === 'idle' && run.stop_reason?.type ? ` ${run.stop_reason.type}` : ''),
    h('td', {}, when(run.scheduled_at)),
    h('td', { class: 'num' }, usd(run.cost_usd)),
    h('td', {}, when(run.created_at)),
  );
}

/** 'cron 0 9 * * 1-5' or 'every 1h30m', one per line of the spec */
function specText(spec) {
  return [
    ...(spec.cron ?? []).map((c) => `cron ${c}`),
    ...(spec.intervals ?? []).map((i) => `every ${duration(i.every_seconds)}${i.offset_seconds ? ` (offset ${duration(i.offset_seconds)})` : ''}`),
  ].join(', ');
}

function duration(seconds) {
  let rest = seconds;
  let text = '';
  for (const [unit, size] of UNITS) {
    if (rest >= size) {
      text += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return text || '0s';
}
