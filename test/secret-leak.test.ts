/**
 * A credential's secret reaches the model (the scripted model sees it as the bearer token) and nowhere else:
 * not in workflow history, the event log, the audit log or any other table, not in the API's or the worker's logs,
 * not in any API response, and not in the runtime's files on disk. API and worker run as real processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openDatabase, rowsOf, type Database } from '../db/client';
import { generateMasterKeySpec } from '../db/vault';
import { stopOpenCodeServers } from '../runtimes/opencode/opencode.adapter';
import { stopGatewayDaemons } from '../gateway/client';
import { Agent as UndiciAgent, fetch as undiciFetch } from 'undici';
import { verifySignature } from '../worker/notifier';
import { createServer, type Server } from 'node:http';
import { createTestDatabase, type TestDatabase } from './support/postgres';
import { readFilesUnder } from './support/files';
import { decodeChunk } from '../snapshots/snapshotter';
import { startScriptedModel, type ScriptedModel } from './support/scripted-model';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const SECRET = `sk-leakcheck-${Math.random().toString(36).slice(2)}-DO-NOT-LEAK`;
const OLD_SECRET = `sk-leakcheck-old-${Math.random().toString(36).slice(2)}-DO-NOT-LEAK`;
const WEBHOOK_SECRET = `whsec_leakcheck_${Math.random().toString(36).slice(2)}`;
const ADMIN_KEY = `ap_leakcheck_admin_${Math.random().toString(36).slice(2)}`;
const MASTER_KEY = generateMasterKeySpec();
/** every secret this run uses; none may show up anywhere but where it is meant to go */
const SECRETS = [SECRET, OLD_SECRET, WEBHOOK_SECRET, ADMIN_KEY, MASTER_KEY, MASTER_KEY.slice(MASTER_KEY.indexOf(':') + 1)];

let testDb: TestDatabase;
let db: Database;
let model: ScriptedModel;
let dataDir: string;
const processes: Array<{ child: ChildProcess; output: () => string }> = [];
const responses: Array<{ method: string; path: string; text: string }> = [];
let apiUrl = '';
let receiver: Server;
const deliveries: Array<{ headers: Record<string, string | string[] | undefined>; body: string }> = [];

function run(script: string, env: Record<string, string>, ready: RegExp) {
  const child = spawn(`${REPO}/node_modules/.bin/tsx`, [script], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  processes.push({ child, output: () => out });
  return (async () => {
    const deadline = Date.now() + 60_000;
    while (!ready.test(out)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${script} did not start:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return out;
  })();
}

async function call(method: string, path: string, body?: unknown) {
  const res = await fetch(`${apiUrl}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  responses.push({ method, path, text });
  return { status: res.status, body: JSON.parse(text) };
}

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = await openDatabase({ url: testDb.url });
  model = await startScriptedModel();
  dataDir = await mkdtemp(join(tmpdir(), 'agentplane-leak-'));
  const env = {
    DATABASE_URL: testDb.url,
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    AGENTPLANE_TASK_QUEUE: `leak-${Math.random().toString(36).slice(2, 8)}`,
    AGENTPLANE_MASTER_KEY: MASTER_KEY,
    AGENTPLANE_ADMIN_KEY: ADMIN_KEY,
    AGENTPLANE_DATA_DIR: dataDir,
    AGENTPLANE_RUNTIMES: 'opencode',
    PORT: '0',
    HOST: '127.0.0.1',
    AGENTPLANE_LOG_LEVEL: 'DEBUG',
    // the scripted model and the webhook receiver listen on 127.0.0.1
    AGENTPLANE_EGRESS_ALLOW_PRIVATE: '127.0.0.1/32',
  };
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      deliveries.push({ headers: req.headers, body });
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const apiOut = await run('api/main.ts', env, /"api listening"/);
  apiUrl = `http://127.0.0.1:${/"port":(\d+)/.exec(apiOut)![1]}`;
  await run('worker/main.ts', env, /worker started/);
}, 120_000);

afterAll(async () => {
  for (const p of processes) p.child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1000));
  for (const p of processes) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  await db?.close();
  await testDb?.drop();
  await model?.close();
  await new Promise((r) => receiver?.close(r));
  await stopOpenCodeServers(dataDir);
  await stopGatewayDaemons(join(dataDir, 'run'));
  await rm(dataDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
}, 60_000);

describe('secrets', () => {
  it('a credential secret is used for the model call and appears nowhere else', async () => {
    model.setScript([{ match: 'use the key', steps: [{ tool: 'bash', input: { command: 'echo hello', description: 'greet' } }, { text: 'done with the key' }] }]);
    // the scripted model is in no catalogue: the team prices it (OpenCode's sessions are priced from their tokens)
    expect((await call('PUT', '/v1/pricing/scripted-model', { input: 3, output: 15 })).status).toBe(200);
    const credential = await call('POST', '/v1/credentials', { name: 'provider key', secret: OLD_SECRET });
    expect(credential.status).toBe(200);
    expect((await call('POST', `/v1/credentials/${credential.body.id}/rotate`, { secret: SECRET })).status).toBe(200);
    const port = (receiver.address() as { port: number }).port;
    expect((await call('POST', '/v1/webhooks', { url: `http://127.0.0.1:${port}/hook`, secret: WEBHOOK_SECRET })).status).toBe(200);
    const agent = await call('POST', '/v1/agents', {
      name: 'leak check',
      model: 'scripted-model',
      runtime: { type: 'opencode', config: {} },
      model_provider: { base_url: model.openaiBaseUrl, credential_id: credential.body.id },
      tool_policy: { rules: [{ tool: 'bash', action: 'ask' }], default: 'allow' },
    });
    const session = await call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'use the key' }] });
    const id = session.body.id as string;
    let current = session.body;
    for (let i = 0; i < 300 && current.status !== 'requires_action'; i++) {
      await new Promise((r) => setTimeout(r, 200));
      current = (await call('GET', `/v1/sessions/${id}`)).body;
    }
    expect(current.status).toBe('requires_action');
    // the approvers' webhook arrives signed with the webhook secret
    for (let i = 0; i < 150 && deliveries.length === 0; i++) await new Promise((r) => setTimeout(r, 200));
    expect(deliveries).toHaveLength(1);
    expect(verifySignature(WEBHOOK_SECRET, deliveries[0]!.headers, deliveries[0]!.body)).toMatchObject({ ok: true });
    expect(JSON.parse(deliveries[0]!.body)).toMatchObject({ type: 'approval.requested', session_id: session.body.id });
    await call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: current.pending_approvals[0].tool_use_id, result: 'allow' }] });
    for (let i = 0; i < 300 && current.stop_reason?.type !== 'end_turn'; i++) {
      await new Promise((r) => setTimeout(r, 200));
      current = (await call('GET', `/v1/sessions/${id}`)).body;
    }
    expect(current.stop_reason?.type).toBe('end_turn');
    // the model gateway's own way out: its errors (a token on another session's socket, a path that is not a model
    // endpoint) and its log, which the files below include
    const socketOf = (sessionId: string) => join(dataDir, 'run', sessionId, 'model.sock');
    for (const [path, auth] of [['/v1/chat/completions', 'Bearer apgw_not-this-sessions-token'], ['/v1/files', `Bearer ${SECRET}`]] as const) {
      const res = await undiciFetch(`http://model${path}`, { method: 'POST', headers: { authorization: auth }, body: '{}', dispatcher: new UndiciAgent({ connect: { socketPath: socketOf(id) } }) });
      const text = await res.text();
      expect(res.status).toBeGreaterThanOrEqual(400);
      for (const secret of SECRETS) expect(text, path).not.toContain(secret);
    }
    await call('GET', `/v1/sessions/${id}/events?limit=1000`);
    await call('GET', '/v1/credentials');
    await call('GET', `/v1/credentials/${credential.body.id}`);
    await call('GET', `/v1/agents/${agent.body.id}`);
    await call('GET', '/v1/sessions');
    // the session's snapshots (its runtime's state and its workspace, written when the turn parked and when it ended):
    // every chunk decoded (they are deflated, so the dump below could not see into them), and the manifests
    const chunks = rowsOf<{ data: Uint8Array }>(await db.db.execute(sql`select data from snapshot_chunks where session_id = ${id}`));
    expect(chunks.length).toBeGreaterThan(0);
    const manifests = JSON.stringify(rowsOf(await db.db.execute(sql`select manifest from session_snapshots where session_id = ${id}`)));
    for (const secret of SECRETS) {
      expect(manifests).not.toContain(secret);
      for (const chunk of chunks) expect((await decodeChunk(chunk.data)).includes(secret), 'a snapshot chunk').toBe(false);
    }
    await call('POST', `/v1/sessions/${id}/archive`);

    // the secret really was used: the model server saw it as the bearer token
    const modelCalls = model.requests.filter((r) => r.prompt === 'use the key');
    expect(modelCalls.length).toBeGreaterThan(0);
    expect(modelCalls.every((r) => r.headers.authorization === `Bearer ${SECRET}`)).toBe(true);

    // ... and nowhere else
    const temporal = new Client({ connection: await Connection.connect({ address: inject('temporalAddress') }) });
    await temporal.workflow.getHandle(id).result();
    const history = JSON.stringify(await temporal.workflow.getHandle(id).fetchHistory(), (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : v));
    await temporal.connection.close();
    expect(history.length).toBeGreaterThan(1000);
    for (const secret of SECRETS) expect(history).not.toContain(secret);

    const tables = ['sessions', 'session_events', 'audit_log', 'runtime_sessions', 'agent_versions', 'approvals', 'ledger', 'credentials', 'environments', 'api_keys', 'webhooks', 'webhook_deliveries', 'budgets', 'reservations', 'session_snapshots', 'snapshot_chunks'];
    for (const table of tables) {
      const dump = JSON.stringify(rowsOf(await db.db.execute(sql.raw(`select * from ${table}`))));
      for (const secret of SECRETS) expect(dump, `table ${table}`).not.toContain(secret);
    }
    for (const delivery of deliveries) for (const secret of SECRETS) expect(delivery.body).not.toContain(secret);
    const events = rowsOf(await db.db.execute(sql`select count(*)::int as n from session_events where session_id = ${id}`));
    expect((events[0] as { n: number }).n).toBeGreaterThan(5);

    // the webhook secret is shown once, at creation (that response is the one place it may appear)
    const shownOnce = responses.filter((r) => r.method === 'POST' && r.path === '/v1/webhooks');
    expect(shownOnce.map((r) => JSON.parse(r.text).secret)).toEqual([WEBHOOK_SECRET]);
    for (const r of responses.filter((x) => !shownOnce.includes(x))) for (const secret of SECRETS) expect(r.text, `${r.method} ${r.path}`).not.toContain(secret);
    for (const p of processes) {
      expect(p.output().length).toBeGreaterThan(100);
      for (const secret of SECRETS) expect(p.output()).not.toContain(secret);
    }
    const files = await readFilesUnder(dataDir);
    expect(files.length).toBeGreaterThan(0);
    expect(files.filter((f) => /\/run\/gateway-[0-9a-f]+\.sock\.log$/.test(f.path)).map((f) => f.content.toString('utf8'))).toEqual([expect.stringContaining('gateway daemon listening')]);
    for (const file of files) for (const secret of SECRETS) expect(file.content.includes(secret), file.path).toBe(false);
  }, 180_000);
});
