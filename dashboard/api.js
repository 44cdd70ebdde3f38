// The one API client. The key is entered once and kept in sessionStorage (gone when the tab closes), and sent as
// `Authorization: Bearer …` exactly like any other client. The event stream is read with fetch rather than
// EventSource, because EventSource cannot send that header; the alternative, a short-lived token in the URL,
// would put a credential in logs and history, and add a second way to authenticate.

import { createParser } from './lib/eventsource-parser.js';

const KEY = 'agentplane.apiKey';

export const auth = {
  get: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code;
  }
}

function headers(extra = {}) {
  return { authorization: `Bearer ${auth.get() ?? ''}`, ...extra };
}

/** GET/POST JSON; query values that are empty are left out */
export async function api(method, path, { query, body, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const res = await fetch(url, {
    method,
    signal,
    headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const parsed = await res.json().catch(() => null);
  // a view that was left while its request was in flight gets an abort, never a half-read body
  signal?.throwIfAborted();
  if (!res.ok) {
    if (res.status === 401) window.dispatchEvent(new CustomEvent('agentplane:unauthorized'));
    throw new ApiError(res.status, parsed);
  }
  if (parsed === null) throw new ApiError(res.status, { detail: 'the API answered with something that is not JSON' });
  return parsed;
}

export const get = (path, query, signal) => api('GET', path, { query, signal });
export const post = (path, body) => api('POST', path, { body });

/**
 * The team's agents by id (archived ones too, so old sessions and spend still get a name): people look for an agent
 * by its name; the id stays beside it to tell two agents of one name apart. An id missing here shows as itself.
 */
export async function agentNames(signal) {
  const res = await get('/v1/agents', { limit: 1000, include_archived: 'true' }, signal);
  return new Map(res.data.map((a) => [a.id, a.name]));
}

/** `name (agent_…)`, or the id alone when the name is not known. */
export const agentLabel = (names, id) => (names?.get(id) ? `${names.get(id)} (${id})` : id);

/** How a session was started: `api`, `cli`, or `schedule sched_…` (the trigger is an object, not a string). */
export const triggerLabel = (trigger) => (typeof trigger === 'string' ? trigger : [trigger?.type ?? 'api', trigger?.schedule_id].filter(Boolean).join(' '));

/**
 * Follows a session's event stream until `signal` aborts or the session terminates, calling onEvent for each event.
 * A dropped connection is resumed from the last event seen (Last-Event-ID), so nothing is missed or repeated.
 */
export async function streamEvents(sessionId, { lastEventId, onEvent, onState, signal }) {
  let cursor = lastEventId;
  while (!signal.aborted) {
    try {
      onState?.('live');
      const res = await fetch(`/v1/sessions/${encodeURIComponent(sessionId)}/events/stream`, {
        signal,
        headers: headers({ accept: 'text/event-stream', ...(cursor !== undefined ? { 'last-event-id': String(cursor) } : {}) }),
      });
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
      for await (const frame of sseFrames(res.body)) {
        if (frame.id !== undefined) cursor = frame.id;
        if (frame.event === 'ping') continue;
        // the API's last word before it closes the stream (the key was revoked): a problem, not a session event
        if (frame.event === 'error') {
          const problem = JSON.parse(frame.data);
          if (problem.status === 401) window.dispatchEvent(new CustomEvent('agentplane:unauthorized'));
          throw new ApiError(problem.status, problem);
        }
        const event = JSON.parse(frame.data);
        onEvent(event);
        if (event.type === 'session.status_terminated') {
          onState?.('ended');
          return;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status < 500) {
        onState?.(`stopped: ${err.message}`);
        return;
      }
    }
    onState?.('reconnecting');
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** A text/event-stream body as events ({ id, event, data }), parsed by eventsource-parser as everywhere else. */
async function* sseFrames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const ready = [];
  const parser = createParser({ onEvent: (event) => ready.push(event) });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.feed(value);
      while (ready.length > 0) yield ready.shift();
    }
  } finally {
    // leaving early (a view closed) closes the connection
    await reader.cancel().catch(() => {});
  }
}

/** Runs fn now and then every `ms` until signal aborts; a slow run is never overlapped by the next one. */
export async function poll(ms, fn, signal) {
  while (!signal.aborted) {
    await fn().catch(() => undefined);
    await new Promise((resolve) => {
      const stop = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', stop);
        resolve();
      }, ms);
      signal.addEventListener('abort', stop, { once: true });
    });
  }
}
