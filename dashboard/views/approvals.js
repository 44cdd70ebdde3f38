// The approvals inbox: tool calls waiting for a person, across the fleet, each with approve and deny. A decision is
// a user.tool_confirmation event on the session, the same as any client sends. The list refreshes itself.
import { get, poll, post } from '../api.js';
import { errorBox, h, replace, when } from '../dom.js';

const REFRESH_MS = 3000;

export function mount(root, { signal }) {
  const list = h('div', { class: 'approvals' });
  const status = h('p', { class: 'hint', 'aria-live': 'polite' });
  root.append(h('h1', {}, 'Approvals'), list, status);
  const refresh = async () => {
    try {
      const res = await get('/v1/approvals', { limit: 200 }, signal);
      replace(list, res.data.length ? res.data.map((a) => approvalCard(a, refresh)) : h('p', { class: 'empty' }, 'Nothing is waiting for a decision.'));
      replace(status, `Updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      if (!signal.aborted) replace(status, errorBox(err));
    }
  };
  poll(REFRESH_MS, refresh, signal);
}

/** One pending tool call with its input and the two decisions; onDecided runs after the event is accepted. */
export function approvalCard(approval, onDecided) {
  const sessionId = approval.session_id;
  return h(
    'article',
    { class: 'approval', 'data-tool-use': approval.tool_use_id },
    h('header', {}, h('strong', {}, approval.tool), ' in ', h('a', { href: `#/sessions/${sessionId}` }, sessionId)),
    h('pre', {}, JSON.stringify(approval.input, null, 2)),
    h('p', { class: 'hint' }, `requested ${when(approval.requested_at)} · expires ${when(approval.expires_at)}`),
    decisionButtons(sessionId, approval.tool_use_id, onDecided),
  );
}

export function decisionButtons(sessionId, toolUseId, onDecided) {
  const reason = h('input', { name: 'deny_message', placeholder: 'Reason (sent to the agent if denied)' });
  const status = h('span', { class: 'hint' });
  const decide = async (result, button) => {
    button.disabled = true;
    try {
      const event = { type: 'user.tool_confirmation', tool_use_id: toolUseId, result };
      if (result === 'deny' && reason.value.trim()) event.deny_message = reason.value.trim();
      await post(`/v1/sessions/${encodeURIComponent(sessionId)}/events`, { events: [event] });
      replace(status, result === 'allow' ? 'Approved.' : 'Denied.');
      await onDecided?.();
    } catch (err) {
      button.disabled = false;
      replace(status, errorBox(err));
    }
  };
  return h(
    'div',
    { class: 'decide' },
    h('button', { type: 'button', class: 'approve', onclick: (e) => decide('allow', e.currentTarget) }, 'Approve'),
    h('button', { type: 'button', class: 'deny', onclick: (e) => decide('deny', e.currentTarget) }, 'Deny'),
    reason,
    status,
  );
}
