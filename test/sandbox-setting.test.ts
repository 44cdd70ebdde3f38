/**
 * AGENTPLANE_SANDBOX: `bubblewrap` by default, `none` only when set, and then visible: /readyz reports it, and every
 * session started or run without a sandbox says `sandbox: none` for good.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../api/create-app';
import { ConfigError, parseEnv, sandboxEnv } from '../config/env';
import { RUNTIME_CAPABILITIES } from '../runtimes/registry';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { startStack, waitForStatus, type Stack } from './support/stack';

/** the API and the worker set to no sandbox */
let unsandboxed: Stack;

beforeAll(async () => {
  unsandboxed = await startStack({ runtimes: { scripted: createScriptedAdapter() }, sandboxKind: 'none' });
});
afterAll(async () => {
  await unsandboxed?.stop();
});

/** Another API on the same database and Temporal, set to the given sandbox (the worker stays the stack's). */
function apiSetTo(sandboxKind: 'bubblewrap' | 'none') {
  const s = unsandboxed;
  const app = createApp({ db: s.db.db, vault: s.vault, temporal: s.temporal, taskQueue: s.taskQueue, capabilities: RUNTIME_CAPABILITIES, egress: s.egress, sandboxKind });
  return async (method: string, path: string, body?: unknown) => {
    const res = await app.request(path, { method, headers: { authorization: `Bearer ${s.adminKey}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as any };
  };
}

async function agentId(): Promise<string> {
  const res = await unsandboxed.call('POST', '/v1/agents', { name: 'sandboxed?', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } });
  expect(res.status).toBe(200);
  return res.body.id;
}

describe('the sandbox setting', () => {
  it('/readyz tells whoever probes that sessions run without a sandbox (AGENTPLANE_SANDBOX=none), and still answers ready', async () => {
    const none = await apiSetTo('none')('GET', '/readyz');
    expect(none.status).toBe(200);
    expect(none.body).toEqual({ status: 'ready', checks: { database: 'ok', temporal: 'ok', sandbox: 'none' }, warning: expect.stringContaining('AGENTPLANE_SANDBOX=none') });
    const sandboxed = await apiSetTo('bubblewrap')('GET', '/readyz');
    expect(sandboxed.body).toEqual({ status: 'ready', checks: { database: 'ok', temporal: 'ok', sandbox: 'bubblewrap' } });
  });

  it('a session started by an API set to none says sandbox: none; one started by a sandboxed API says bubblewrap until a turn runs', async () => {
    const agent = await agentId();
    const marked = await apiSetTo('none')('POST', '/v1/sessions', { agent });
    expect(marked.status).toBe(200);
    expect(marked.body.sandbox).toBe('none');
    expect((await unsandboxed.call('GET', `/v1/sessions/${marked.body.id}`)).body.sandbox).toBe('none');
    const sandboxed = await apiSetTo('bubblewrap')('POST', '/v1/sessions', { agent });
    expect(sandboxed.body.sandbox).toBe('bubblewrap');
    expect((await unsandboxed.call('GET', '/v1/sessions?limit=1000')).body.data.find((s: any) => s.id === sandboxed.body.id).sandbox).toBe('bubblewrap');
  });

  it('a session started by a sandboxed API but run by a worker without a sandbox is marked none from its first turn', async () => {
    const started = await apiSetTo('bubblewrap')('POST', '/v1/sessions', { agent: await agentId(), initial_events: [{ type: 'user.message', content: 'say ran bare' }] });
    expect(started.body.sandbox).toBe('bubblewrap');
    const done = await waitForStatus(unsandboxed, started.body.id, 'idle', 'end_turn');
    expect(done.sandbox).toBe('none');
  });

  it('AGENTPLANE_SANDBOX is bubblewrap unless set; a value that is neither bubblewrap nor none stops the process naming the variable, never runs unsandboxed', () => {
    expect(parseEnv(sandboxEnv, {}).AGENTPLANE_SANDBOX).toBe('bubblewrap');
    expect(parseEnv(sandboxEnv, { AGENTPLANE_SANDBOX: 'none' }).AGENTPLANE_SANDBOX).toBe('none');
    for (const bad of ['None', 'off', 'false', '']) {
      expect(() => parseEnv(sandboxEnv, { AGENTPLANE_SANDBOX: bad }), bad).toThrow(ConfigError);
      expect(() => parseEnv(sandboxEnv, { AGENTPLANE_SANDBOX: bad }), bad).toThrow(/AGENTPLANE_SANDBOX: must be bubblewrap/);
    }
  });
});
