// One session: its summary (status, agent, usage and cost), the tool calls waiting for a decision, and the event
// timeline, which streams live. The timeline shows the latest events first loaded from the log, then follows the
// stream from the last one (Last-Event-ID), so nothing falls in between.
import { agentLabel, get, post, streamEvents, triggerLabel } from '../api.js';
import { errorBox, h, replace, statusBadge, usd, when } from '../dom.js';
import { approvalCard } from './approvals.js';

/** how many past events the page loads; older ones stay in the API (GET …/events pages through all of them) */
const HISTORY = 500;
/** events after which the summary (status, usage, approvals) is read again */
const REFRESHING = /^(session\.status_|span\.model_request_end|agent\.tool_use|user\.tool_confirmation)/;

export function mount(root, { params: [sessionId], signal }) {
  const summary = h('section', { class: 'summary' });
  const pending = h('section', { class: 'pending' });
  const timeline = h('ol', { class: 'timeline', 'aria-live': 'polite' });
  const streamState = h('span', { class: 'stream-state' });
  root.append(
    h('p', {}, h('a', { href: '#/fleet' }, '← Fleet')),
    h('h1', {}, 'Session ', h('code', {}, sessionId)),
    summary,
    pending,
    messageForm(sessionId),
    h('h2', {}, 'Timeline ', streamState),
    timeline,
  );

  let refreshing = null;
  // the agent's name, read once: a session never changes agents
  let names = null;
  const refresh = () => {
    refreshing ??= get(`/v1/sessions/${encodeURIComponent(sessionId)}`, {}, signal)
      .then(async (session) => {
        names ??= await get(`/v1/agents/${encodeURIComponent(session.agent.id)}`, {}, signal).then(
          (agent) => new Map([[agent.id, agent.name]]),
          () => new Map(),
        );
        renderSummary(summary, session, names);
        replace(pending, session.pending_approvals.length ? [h('h2', {}, 'Waiting for a decision'), session.pending_approvals.map((a) => approvalCard({ ...a, session_id: sessionId }, refresh))] : []);
      })
      .catch((err) => signal.aborted || replace(summary, errorBox(err)))
      .finally(() => (refreshing = null));
    return refreshing;
  };

  (async () => {
    await refresh();
    try {
      const history = await get(`/v1/sessions/${encodeURIComponent(sessionId)}/events`, { order: 'desc', limit: HISTORY }, signal);
      const events = history.data.reverse();
      if (history.next_page) timeline.append(h('li', { class: 'event hint' }, `Older events are not shown (the latest ${HISTORY} are).`));
      for (const event of events) timeline.append(eventItem(event));
      root.dataset.ready = 'true';
      await streamEvents(sessionId, {
        lastEventId: events.at(-1)?.seq ?? 0,
        signal,
        onState: (state) => replace(streamState, state),
        onEvent: (event) => {
          timeline.append(eventItem(event));
          if (REFRESHING.test(event.type)) refresh();
        },
      });
    } catch (err) {
      if (!signal.aborted) timeline.append(h('li', {}, errorBox(err)));
    }
  })();
}

function renderSummary(el, session, names) {
  const u = session.usage;
  replace(
    el,
    h(
      'dl',
      {},
      field('Status', statusBadge(session.status), session.stop_reason ? ` (${session.stop_reason.type})` : ''),
      field('Title', session.title ?? '—'),
      field('Agent', `${agentLabel(names, session.agent.id)} v${session.agent.version}`),
      field('Runtime', session.agent.runtime),
      field('Cost', h('span', { class: 'cost' }, usd(u.cost_usd)), session.budget.max_cost_usd !== undefined ? ` of ${usd(session.budget.max_cost_usd)} budget` : ''),
      field('Tokens', `${u.input_tokens} in · ${u.output_tokens} out · ${u.cache_read_input_tokens} cache read · ${u.cache_creation_input_tokens} cache write`),
      field('Started by', `${session.initiator.key_id} (${triggerLabel(session.trigger)})`),
      field('Created', when(session.created_at)),
    ),
  );
}

const field = (label, ...value) => [h('dt', {}, label), h('dd', {}, ...value)];

const textOf = (content) => (typeof content === 'string' ? content : (content ?? []).map((c) => c.text ?? '').join('\n'));

/** What each event type shows; anything unknown is shown as its JSON. */
function describe(event) {
  switch (event.type) {
    case 'user.message':
    case 'agent.message':
    case 'agent.thinking':
      return h('p', { class: 'text' }, textOf(event.content));
    case 'agent.tool_use':
      return [h('p', {}, h('strong', {}, event.name), event.evaluated_permission ? ` — policy: ${event.evaluated_permission}` : ''), h('pre', {}, JSON.stringify(event.input, null, 2))];
    case 'agent.tool_result':
      return h('pre', { class: event.is_error ? 'error' : '' }, textOf(event.content));
    case 'user.tool_confirmation':
      return h('p', {}, h('strong', {}, event.result === 'allow' ? 'approved' : 'denied'), ` ${event.tool_use_id}`, event.decided_by ? ` by ${event.decided_by}` : '', event.deny_message ? ` — ${event.deny_message}` : '', event.reason ? ` (${event.reason})` : '');
    case 'span.model_request_end': {
      const m = event.model_usage ?? {};
      return h('p', { class: 'hint' }, `${event.model}: ${m.input_tokens ?? 0} in / ${m.output_tokens ?? 0} out`, event.cost_usd !== undefined ? ` · ${usd(event.cost_usd)}` : '', event.is_error ? ' · error' : '');
    }
    case 'session.error':
      return h('p', { class: 'error' }, `${event.error?.type}: ${event.error?.message}`);
    default:
      if (event.type.startsWith('session.status_')) return event.stop_reason ? h('p', { class: 'hint' }, `stop reason: ${event.stop_reason.type}`) : null;
      return h('pre', {}, JSON.stringify(event, null, 2));
  }
}

function eventItem(event) {
  return h(
    'li',
    { class: `event event-${event.type.replace(/[^\w-]/g, '_')}`, 'data-seq': event.seq, 'data-type': event.type },
    h('div', { class: 'event-head' }, h('span', { class: 'event-type' }, event.type), h('time', {}, when(event.processed_at))),
    describe(event),
  );
}

/** A message to the agent, and an interrupt for a running turn. */
function messageForm(sessionId) {
  const text = h('textarea', { name: 'message', rows: 2, placeholder: 'Message to the agent' });
  const status = h('span', { class: 'hint' });
  const send = async (events) => {
    try {
      await post(`/v1/sessions/${encodeURIComponent(sessionId)}/events`, { events });
      replace(status);
      return true;
    } catch (err) {
      replace(status, errorBox(err));
      return false;
    }
  };
  return h(
    'form',
    {
      class: 'message',
      onsubmit: async (e) => {
        e.preventDefault();
        if (text.value.trim() && (await send([{ type: 'user.message', content: text.value }]))) text.value = '';
      },
    },
    text,
    h('button', { type: 'submit' }, 'Send'),
    h('button', { type: 'button', class: 'secondary', onclick: () => send([{ type: 'user.interrupt' }]) }, 'Interrupt'),
    status,
  );
}
