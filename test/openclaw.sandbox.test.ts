/**
 * OpenClaw sessions (their gateway and every tool it runs) attacked from inside their sandboxes: see
 * test/support/sandbox-suite.ts. Then OpenClaw's own: the gateway outlives a killed worker in its sandbox and the next
 * worker reattaches to it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive } from '../runtimes/kit/process';
import { createOpenClawAdapter, stopOpenClawGateways } from '../runtimes/openclaw/openclaw.adapter';
import { openClawBinaries } from './support/openclaw';
import { describeSandboxAttacks } from './support/sandbox-suite';
import { createGate, startScriptedModel, type ScriptedModel } from './support/scripted-model';
import { eventsOf, LOCAL_RECEIVERS, startStack, waitForStatus, type Stack } from './support/stack';
import { spawnWorker, type WorkerProcess } from './support/worker-process';

const { binaries } = openClawBinaries();

describe.skipIf(!binaries)('OpenClaw in its sandbox', () => {
  describeSandboxAttacks({
    kind: 'openclaw',
    model: 'scripted-model',
    adapter: (stack) => ({ openclaw: createOpenClawAdapter({ ...binaries!, dataDir: stack.dataDir, sandboxes: stack.sandboxes }) }),
    // OpenClaw's shell tool; it moves a command still running after `yieldMs` (10 s by default) to the background and
    // answers without its output, and the attack list takes longer than that on a loaded machine
    shell: { tool: ['exec'], input: (command) => ({ command, yieldMs: 120_000 }) },
    // each session starts its own gateway: one to five minutes on a loaded machine
    turnMs: 600_000,
    // its gateways are persistent (a new worker reattaches to them), so a stopped worker process leaves them running
    cleanup: (stack) => stopOpenClawGateways(stack.dataDir),
  });

  describe('a worker killed mid-turn', () => {
    let stack: Stack;
    let model: ScriptedModel;
    const workers: WorkerProcess[] = [];

    beforeAll(async () => {
      stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
      model = await startScriptedModel();
      await stack.price('scripted-model', { input: 3, output: 15 });
    }, 180_000);

    afterAll(async () => {
      for (const w of workers) await w.stop();
      if (stack) await stopOpenClawGateways(stack.dataDir);
      await stack?.stop();
      await model?.close();
    }, 60_000);

    it('leaves its gateway running in the session\'s sandbox, and the next worker reattaches to that gateway through the sandbox\'s bridge and finishes the turn without sending the prompt again', { timeout: 600_000 }, async () => {
      const credential = await stack.call('POST', '/v1/credentials', { name: 'model key', secret: 'sk-openclaw-reattach' });
      const agent = await stack.call('POST', '/v1/agents', {
        name: 'reattached',
        model: 'scripted-model',
        runtime: { type: 'openclaw', config: {} },
        model_provider: { base_url: model.openaiBaseUrl, credential_id: credential.body.id },
        tool_policy: { rules: [], default: 'allow' },
      });
      expect(agent.status, JSON.stringify(agent.body)).toBe(200);
      const gate = createGate();
      model.setScript([{ match: 'survive the worker', steps: [{ text: 'the answer, after a crash', waitFor: gate.promise }] }]);
      const spawn = async () => {
        const w = await spawnWorker(stack, { AGENTPLANE_RUNTIMES: 'openclaw' });
        workers.push(w);
        return w;
      };
      const first = await spawn();
      const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'survive the worker' }] });
      expect(session.status).toBe(200);
      const id = session.body.id as string;
      await model.waitForRequest((r) => r.prompt?.includes('survive the worker') === true, 300_000);
      const gateway = Number(await readFile(join(stack.dataDir, 'openclaw', id, 'gateway.pid'), 'utf8'));
      await first.kill();
      expect(alive(gateway)).toBe(true);

      await spawn();
      gate.release();
      await waitForStatus(stack, id, 'idle', 'end_turn', 300_000);
      const said = (await eventsOf(stack, id)).filter((e) => e.type === 'agent.message').map((e) => e.content[0].text);
      expect(said).toEqual(['the answer, after a crash']);
      expect(model.requests.filter((r) => r.prompt?.includes('survive the worker') === true && r.stepIndex === 0)).toHaveLength(1);
      // the same gateway: reached again, not started again
      expect(Number(await readFile(join(stack.dataDir, 'openclaw', id, 'gateway.pid'), 'utf8'))).toBe(gateway);
      expect(alive(gateway)).toBe(true);
    });
  });
});
