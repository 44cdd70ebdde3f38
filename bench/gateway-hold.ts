/**
 * What a session's model request pays for going through the gateway daemon with its budget hold, against the provider
 * called directly, in one process:
 *   direct       the provider (test/support/model-upstream.ts) called directly
 *   gateway      the gateway alone (gateway/gateway.ts: token checked, key injected, usage metered), as bench/gateway.ts
 *   daemon       the gateway daemon (gateway/daemon.ts) asking the worker's client before each request, which admits it
 *                at once: the control socket's round trip
 *   daemon+hold  the same with the worker's meter (activities/model-meter.ts) on Postgres and a team budget: the hold
 *                taken before the request leaves (one transaction), and the charge written when it ends (off the
 *                request's path: the event, the ledger row and the budget window in one transaction, then the settle)
 * Whole (non-streamed) chat completions, 1 and 10 at once; p50 and p99, and what each adds to the direct call.
 *
 *   npx tsx bench/gateway-hold.ts [--requests 400]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { createModelMeter } from '../activities/model-meter';
import { createGatewayClient, type GatewayClient } from '../gateway/client';
import { startGatewayDaemon } from '../gateway/daemon';
import { createModelGateway } from '../gateway/gateway';
import { createSessionTokens, TOKEN_PURPOSE } from '../gateway/tokens';
import { createVault } from '../db/vault';
import { createEgressGuard } from '../runtimes/kit/egress';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { startModelUpstream } from '../test/support/model-upstream';
import { flags, ms, printMachine, printTable, startPlatform, summarize } from './support';

const opts = flags({ requests: 400 });
const LEVELS = [1, 10];
printMachine(`a model request through the gateway daemon with its budget hold (${opts.requests} requests per figure, ${LEVELS.join(' and ')} at once)`);

const platform = await startPlatform({ scripted: createScriptedAdapter() }, { worker: false });
const { stack } = platform;
const upstream = await startModelUpstream();
const dispatcher = createEgressGuard({ allowPrivate: ['127.0.0.1/32'] }).dispatcher;
const tokens = createSessionTokens(createVault(stack.masterKey).deriveKeys(TOKEN_PURPOSE));
const work = await mkdtemp(join(tmpdir(), 'agentplane-bench-hold-'));
const MODEL = 'bench-model';
await stack.price(MODEL, { input: 1, output: 1 });
const budget = await stack.call('POST', '/v1/budgets', { scope: 'team', period: 'month', limit_usd: 1_000_000 });
if (budget.status !== 200) throw new Error(`budget: ${JSON.stringify(budget.body)}`);
const agent = await stack.call('POST', '/v1/agents', { name: 'bench hold', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } });
const sessionOf = async () => (await stack.call('POST', '/v1/sessions', { agent: agent.body.id })).body.id as string;

const body = JSON.stringify({ model: MODEL, max_tokens: 16, messages: [{ role: 'user', content: 'hello' }] });

/** A way to reach the model: its base URL, the dispatcher that gets there, the key or token to present. */
interface Target {
  url: string;
  dispatcher: Agent;
  key: string;
}

async function measure(target: Target, concurrency: number): Promise<number[]> {
  const samples: number[] = [];
  let left = opts.requests;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (left-- > 0) {
        const started = performance.now();
        const res = await request(`${target.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${target.key}`, 'content-type': 'application/json' }, body, dispatcher: target.dispatcher });
        await res.body.text();
        if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
        samples.push(performance.now() - started);
      }
    }),
  );
  return samples;
}

/** The daemon and a worker's client in front of the provider, for one session served on a Unix socket. */
async function throughDaemon(name: string, onAdmit: Parameters<typeof createGatewayClient>[0]['onAdmit'], onRecord: Parameters<typeof createGatewayClient>[0]['onRecord'], sessionId: string): Promise<{ target: Target; client: GatewayClient; close(): Promise<void> }> {
  const runDir = join(work, name);
  let daemon: Awaited<ReturnType<typeof startGatewayDaemon>> | null = null;
  const client = createGatewayClient({ runDir, tokens, onAdmit, onRecord, start: async (controlPath) => void (daemon = await startGatewayDaemon({ controlPath, dispatcher })) });
  const key = client.register({ sessionId, credentialId: 'cred_bench', apiKey: 'sk-bench' });
  const socketPath = join(work, `${name}.sock`);
  await client.listen(sessionId, `${upstream.url}/v1`, { path: socketPath, uid: process.getuid!(), gid: process.getgid!() });
  return {
    target: { url: 'http://gateway', dispatcher: new Agent({ connect: { socketPath } }), key },
    client,
    async close() {
      client.close();
      await daemon?.close();
    },
  };
}

const direct: Target = { url: upstream.url, dispatcher: new Agent(), key: 'sk-bench' };

const core = createModelGateway({ dispatcher });
core.register({ sessionId: 'sesn_core', credentialId: 'cred_bench', baseUrl: `${upstream.url}/v1`, apiKey: 'sk-bench', tokens: tokens.all('sesn_core', 'cred_bench') });
const coreServer = core.serverFor('sesn_core');
await new Promise<void>((resolve) => coreServer.listen(0, '127.0.0.1', resolve));
const gateway: Target = { url: `http://127.0.0.1:${(coreServer.address() as { port: number }).port}`, dispatcher: new Agent(), key: tokens.issue('sesn_core', 'cred_bench') };

const plain = await throughDaemon('plain', async () => ({ ok: true }), async () => {}, await sessionOf());
const heldSession = await sessionOf();
const meter = createModelMeter({ db: stack.db.db });
meter.open(heldSession, { runtime: 'bench', teamId: stack.teamId, agentId: agent.body.id, agentModel: MODEL, actor: { teamId: stack.teamId, actorKeyId: 'bench', actorRole: 'admin' }, capMicros: null, holdCapMicros: 100_000, overrides: { [MODEL]: { input: 1, output: 1 } } });
const held = await throughDaemon('held', meter.admit, meter.record, heldSession);

const targets: Array<[string, Target]> = [
  ['direct', direct],
  ['gateway', gateway],
  ['daemon', plain.target],
  ['daemon+hold', held.target],
];
const rows: Array<Array<string | number>> = [];
for (const concurrency of LEVELS) {
  // warm each path, then measure them in turn
  for (const [, target] of targets) await measure(target, concurrency);
  const results = new Map<string, ReturnType<typeof summarize>>();
  for (const [name, target] of targets) results.set(name, summarize(await measure(target, concurrency)));
  const base = results.get('direct')!;
  for (const [name] of targets) {
    const r = results.get(name)!;
    const added = (x: number) => (name === 'direct' ? '' : `${x < 0 ? '−' : '+'}${ms(Math.abs(x))}`);
    rows.push([concurrency, name, ms(r.p50), ms(r.p99), added(r.p50 - base.p50), added(r.p99 - base.p99)]);
  }
}
await meter.finish(heldSession, 30_000);
printTable(['at once', 'path', 'p50', 'p99', 'added p50', 'added p99'], rows);
const ledger = await stack.call('GET', `/v1/sessions/${heldSession}`);
console.log(`daemon+hold charged ${ledger.body.usage?.cost_usd ?? '?'} USD over its requests (each held, charged and settled)`);

await plain.close();
await held.close();
await core.close();
await upstream.close();
await platform.stop();
await rm(work, { recursive: true, force: true });
