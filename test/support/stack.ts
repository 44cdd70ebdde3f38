/**
 * The whole platform for a test file: a fresh Postgres database, the shared Temporal dev server, a worker on its
 * own task queue, and the API on a random port. Real components throughout.
 */
import type { AddressInfo } from 'node:net';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { inject } from 'vitest';
import { createApp, type App } from '../../api/create-app';
import { listenForNotifications, type Notifications } from '../../db/notifications';
import { openDatabase, type Database } from '../../db/client';
import { createApiKey, createTeam } from '../../db/queries/teams';
import { createVault, generateMasterKeySpec, type Vault } from '../../db/vault';
import type { Role, SandboxKind } from '../../governance/types';
import type { ApiMetrics } from '../../observability/metrics';
import { clientInterceptors, type Tracing } from '../../observability/tracing';
import { RUNTIME_CAPABILITIES } from '../../runtimes/registry';
import { parseEnv, sandboxEnv } from '../../config/env';
import { createEgressGuard, type EgressGuard, type Resolve } from '../../runtimes/kit/egress';
import { SILENT_LOGGER } from '../../runtimes/kit/log';
import { createSandboxProvider } from '../../runtimes/kit/sandbox';
import { stopModelBridges, type SessionSandboxes } from '../../runtimes/kit/session-sandbox';
import { stopHermesServers } from '../../runtimes/hermes/hermes.adapter';
import { stopOpenCodeServers } from '../../runtimes/opencode/opencode.adapter';
import type { RuntimeRegistry } from '../../runtimes/runtime-adapter';
import { createSessionWorker, type SessionWorker } from '../../worker/create-worker';
import { stopGatewayDaemons } from '../../gateway/client';
import { createWorkerSnapshots } from '../../worker/snapshots';
import { createWorkerGateway } from '../../worker/gateway';
import { startGatewayDaemon, type GatewayDaemon } from '../../gateway/daemon';
import { createWorkerSandboxes } from '../../worker/sandboxes';
import { createTestDatabase, type TestDatabase } from './postgres';

export interface Stack {
  url: string;
  adminKey: string;
  teamId: string;
  db: Database;
  databaseUrl: string;
  /** the API's LISTEN connection (event streams wake on it) */
  notifications: Notifications;
  masterKey: string;
  vault: Vault;
  temporal: Client;
  temporalAddress: string;
  taskQueue: string;
  dataDir: string;
  app: App;
  /** the API's and the worker's egress guard, and what it allows (StackOptions.allowPrivateEgress) */
  egress: EgressGuard;
  allowPrivateEgress: readonly string[];
  /** what the API and the worker are set to run sessions in (StackOptions.sandboxKind) */
  sandboxKind: SandboxKind;
  /**
   * each session's sandbox on the stack's provider (sandboxKind), its refused connections recorded as the worker
   * records them: give it to the adapters a test builds (`sandboxes: stack.sandboxes`)
   */
  sandboxes: SessionSandboxes;
  /** a key of the given role in the stack's team, or in a second team (the same one each call) */
  key(role: Role, team?: 'own' | 'other'): Promise<string>;
  /** a brand-new team, for tests that must not share budgets or policies */
  newTeam(): Promise<{ teamId: string; key(role: Role): Promise<string> }>;
  /** fetch with the admin key (or another) and JSON in and out */
  call(method: string, path: string, body?: unknown, key?: string): Promise<{ status: number; body: any; headers: Headers }>;
  /**
   * the team's price for a model (USD per million tokens), with the admin key or another team's admin key: sessions of
   * runtimes that price tokens are refused on a model that has none (made-up test models are not in the catalogue)
   */
  price(model: string, price: { input: number; output: number; cache_read?: number; cache_write?: number }, key?: string): Promise<void>;
  startWorker(runtimes: RuntimeRegistry): Promise<void>;
  stopWorker(): Promise<void>;
  stop(): Promise<void>;
}

export interface StackOptions {
  runtimes?: RuntimeRegistry;
  worker?: boolean;
  temporalAddress?: string;
  /** trace the API (and an in-process worker) with this process's registered provider */
  tracing?: Tracing;
  apiLog?: (entry: Record<string, unknown>) => void;
  apiMetrics?: ApiMetrics;
  /**
   * ranges the API and the worker may reach although private (AGENTPLANE_EGRESS_ALLOW_PRIVATE). None by default: only
   * a test with a local receiver (a model server, a runtime fake, a webhook receiver) passes LOCAL_RECEIVERS
   */
  allowPrivateEgress?: readonly string[];
  /** how the stack's guard resolves names (default: the system resolver) */
  egressLookup?: Resolve;
  /** AGENTPLANE_SANDBOX of the stack's API and worker (default bubblewrap) */
  sandboxKind?: SandboxKind;
}

/** What a test whose receivers listen on 127.0.0.1 allows, and nothing more. */
export const LOCAL_RECEIVERS: readonly string[] = ['127.0.0.1/32'];

/** The egress guard for adapters a test builds itself, talking to a fake or a model server on 127.0.0.1. */
export function localEgress(): EgressGuard {
  return createEgressGuard({ allowPrivate: LOCAL_RECEIVERS });
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const testDb: TestDatabase = await createTestDatabase();
  const db = await openDatabase({ url: testDb.url });
  // as api/main.ts and worker/main.ts: one LISTEN connection (verified keys, the live policy held in memory, event
  // streams woken when events commit)
  const notifications = listenForNotifications(db, { url: testDb.url });
  const masterKey = generateMasterKeySpec();
  const vault = createVault(masterKey);
  const team = await createTeam(db.db, { name: 'acme' });
  const admin = await createApiKey(db.db, { teamId: team.id, name: 'admin', role: 'admin' });
  const temporalAddress = opts.temporalAddress ?? inject('temporalAddress');
  const connection = await Connection.connect({ address: temporalAddress });
  const temporal = new Client({ connection, interceptors: clientInterceptors(opts.tracing ?? null) });
  const taskQueue = `test-${Math.random().toString(36).slice(2, 10)}`;
  const dataDir = await mkdtemp(join(tmpdir(), 'agentplane-test-'));
  // searchable (not listable) by others, as a worker's data dir is: a session's sandbox user must reach its directories
  await chmod(dataDir, 0o711);
  const egress = createEgressGuard({ allowPrivate: opts.allowPrivateEgress ?? [], lookup: opts.egressLookup });
  const sandboxKind = opts.sandboxKind ?? 'bubblewrap';
  // the model gateway as worker/main.ts has it, its daemon started in this process (a worker process of this stack's
  // data dir finds it there, as it would find one it had started itself)
  let daemon: GatewayDaemon | null = null;
  const { gateway, meter } = createWorkerGateway({
    db: db.db,
    vault,
    dataDir,
    allowPrivate: opts.allowPrivateEgress ?? [],
    start: async (controlPath) => void (daemon ??= await startGatewayDaemon({ controlPath, dispatcher: egress.dispatcher })),
  });
  const sandboxes = createWorkerSandboxes({ db: db.db, provider: createSandboxProvider({ ...parseEnv(sandboxEnv, {}), AGENTPLANE_SANDBOX: sandboxKind }, SILENT_LOGGER), egress, dataDir, gateway });
  const app = createApp({ db: db.db, vault, temporal, taskQueue, capabilities: RUNTIME_CAPABILITIES, egress, sandboxKind, streamPollMs: 50, log: opts.apiLog, tracer: opts.tracing?.tracer, metrics: opts.apiMetrics, notifications });
  const server: ServerType = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  let worker: SessionWorker | null = null;
  let workerRun: Promise<void> | null = null;
  let workerConnection: NativeConnection | null = null;
  const otherTeams = new Map<string, string>();

  const stack: Stack = {
    url,
    adminKey: admin.plain,
    teamId: team.id,
    db,
    databaseUrl: testDb.url,
    notifications,
    masterKey,
    vault,
    temporal,
    temporalAddress,
    taskQueue,
    dataDir,
    app,
    egress,
    allowPrivateEgress: opts.allowPrivateEgress ?? [],
    sandboxKind,
    sandboxes,
    async key(role, which = 'own') {
      let teamId = team.id;
      if (which === 'other') {
        teamId = otherTeams.get('other') ?? (await createTeam(db.db, { name: `other-${Math.random().toString(36).slice(2)}` })).id;
        otherTeams.set('other', teamId);
      }
      return (await createApiKey(db.db, { teamId, name: `${role} key`, role })).plain;
    },
    async newTeam() {
      const created = await createTeam(db.db, { name: `team-${Math.random().toString(36).slice(2)}` });
      return { teamId: created.id, key: async (role: Role) => (await createApiKey(db.db, { teamId: created.id, name: `${role} key`, role })).plain };
    },
    async call(method, path, body, key) {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { authorization: `Bearer ${key ?? admin.plain}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      return { status: res.status, body: parsed, headers: res.headers };
    },
    async price(model, price, key) {
      const res = await stack.call('PUT', `/v1/pricing/${encodeURIComponent(model)}`, price, key);
      if (res.status !== 200) throw new Error(`PUT /v1/pricing/${model}: ${res.status} ${JSON.stringify(res.body)}`);
    },
    async startWorker(runtimes) {
      workerConnection = await NativeConnection.connect({ address: temporalAddress });
      worker = await createSessionWorker({ connection: workerConnection, namespace: 'default', taskQueue, deps: { db: db.db, vault, runtimes, dataDir, publicUrl: url, egress, sandboxKind, gateway, meter, snapshots: await createWorkerSnapshots({ db: db.db, dataDir }), policyChanges: notifications }, tracing: opts.tracing });
      workerRun = worker.run();
    },
    async stopWorker() {
      if (worker) {
        worker.shutdown();
        await workerRun;
        await workerConnection?.close();
        worker = null;
      }
    },
    async stop() {
      await stack.stopWorker();
      await sandboxes.closeAll();
      gateway.close();
      await daemon?.close();
      await new Promise((resolve) => server.close(resolve));
      await connection.close();
      await notifications.close();
      await db.close();
      await testDb.drop();
      // runtimes outlive workers by design (a new worker reattaches); a test run must not leave them behind
      await stopOpenCodeServers(dataDir);
      await stopHermesServers(dataDir);
      await stopModelBridges(join(dataDir, 'run'));
      await stopGatewayDaemons(join(dataDir, 'run'));
      await rm(dataDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    },
  };
  if (opts.worker !== false && opts.runtimes) await stack.startWorker(opts.runtimes);
  return stack;
}

/** Polls until `check` returns a value (not undefined), or fails with the last value seen. */
export async function eventually<T>(check: () => Promise<T | undefined>, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? 'a condition'}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
}

/** Waits until the session has the given status and (optionally) stop reason type. */
export async function waitForStatus(stack: Stack, sessionId: string, status: string, stopReason?: string, timeoutMs = 30_000) {
  return eventually(
    async () => {
      const res = await stack.call('GET', `/v1/sessions/${sessionId}`);
      if (res.body.status === status && (stopReason === undefined || res.body.stop_reason?.type === stopReason)) return res.body;
      return undefined;
    },
    { timeoutMs, what: `session ${sessionId} to be ${status}${stopReason ? `/${stopReason}` : ''}` },
  );
}

export async function eventsOf(stack: Stack, sessionId: string): Promise<any[]> {
  const res = await stack.call('GET', `/v1/sessions/${sessionId}/events?limit=1000`);
  return res.body.data;
}
