/**
 * The platform's secrets (master key, database URL, admin key, OTLP headers) leave a process's environment once its
 * config has read them: a process of the same user reading /proc/<pid>/environ, or a child process (a runtime, a
 * tool, the Temporal dev server), finds none of them. The API and the worker run as their own processes here.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminKeyEnv, ConfigError, databaseEnv, parseEnv, telemetryEnv } from '../config/env';
import { eventually, startStack, type Stack } from './support/stack';
import { spawnApi, spawnWorker, type ServiceProcess } from './support/worker-process';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const ADMIN_KEY = `ap_${'secretadminkey'.repeat(3)}${Math.random().toString(36).slice(2)}`;
const OTLP_TOKEN = `otlp-token-${Math.random().toString(36).slice(2)}`;

let stack: Stack;
const services: ServiceProcess[] = [];

beforeAll(async () => {
  stack = await startStack({ worker: false });
}, 60_000);
afterAll(async () => {
  for (const service of services) await service.stop();
  await stack?.stop();
}, 60_000);

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Every `name=value` a process was started with, as /proc shows it to any process of the same user. */
async function environOf(pid: number): Promise<string> {
  return readFile(`/proc/${pid}/environ`, 'latin1');
}

function expectNoSecrets(text: string, where: string) {
  for (const secret of [stack.masterKey, stack.databaseUrl, ADMIN_KEY, OTLP_TOKEN]) expect(text.includes(secret), `${where} holds a secret`).toBe(false);
  for (const name of ['AGENTPLANE_MASTER_KEY=', 'DATABASE_URL=', 'AGENTPLANE_ADMIN_KEY=', 'OTEL_EXPORTER_OTLP_HEADERS=']) expect(text, where).not.toContain(name);
}

describe('secrets out of the process environment', () => {
  it('a process of the same user reading /proc/<pid>/environ of the API or the worker finds no secret, and both still work with them', async () => {
    const port = await freePort();
    const secrets = { AGENTPLANE_ADMIN_KEY: ADMIN_KEY, OTEL_EXPORTER_OTLP_HEADERS: `authorization=Bearer%20${OTLP_TOKEN}` };
    const api = await spawnApi(stack, port, secrets);
    services.push(api);
    const worker = await spawnWorker(stack, { ...secrets, AGENTPLANE_RUNTIMES: 'scripted' });
    services.push(worker);

    for (const [name, service] of [['api', api], ['worker', worker]] as const) {
      const environ = await environOf(service.child.pid!);
      expectNoSecrets(environ, name);
      // the rest of the environment is untouched
      expect(environ, name).toContain(`AGENTPLANE_TASK_QUEUE=${stack.taskQueue}\0`);
      expect(environ, name).toContain('PATH=');
    }

    // the API read the database URL and the admin key before they went: the key it registered works
    const url = `http://127.0.0.1:${port}`;
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    const keys = await fetch(`${url}/v1/keys`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    expect(keys.status).toBe(200);

    // the worker read the master key: it opens a credential for a turn (and writes its audit row)
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as any };
    };
    const credential = await call('POST', '/v1/credentials', { name: 'model key', secret: `sk-${Math.random().toString(36).slice(2)}` });
    expect(credential.status).toBe(200);
    const agent = await call('POST', '/v1/agents', {
      name: 'uses a credential',
      model: 'scripted',
      runtime: { type: 'scripted' },
      tool_policy: { rules: [], default: 'allow' },
      model_provider: { base_url: 'http://203.0.113.10/v1', credential_id: credential.body.id },
    });
    expect(agent.status, JSON.stringify(agent.body)).toBe(200);
    const session = await call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'say with the key' }] });
    expect(session.status).toBe(200);
    await eventually(async () => ((await call('GET', `/v1/sessions/${session.body.id}`)).body.stop_reason?.type === 'end_turn' ? true : undefined), { timeoutMs: 60_000, what: 'the turn on the spawned worker' });
    const audit = await call('GET', `/v1/audit?action=credential.use&target=${credential.body.id}`);
    expect(audit.body.data).toHaveLength(1);
  }, 240_000);

  it('parseEnv takes the secrets out of process.env (so no child process gets them) and out of /proc/self/environ, and leaves every other variable', async () => {
    // a fresh process, so that its environment block is the one it was started with
    const script = `
      const { parseEnv, databaseEnv, masterKeyEnv, adminKeyEnv, telemetryEnv } = await import('./config/env.ts');
      const { execFileSync } = await import('node:child_process');
      const { readFileSync } = await import('node:fs');
      const env = parseEnv({ ...databaseEnv, ...masterKeyEnv, ...adminKeyEnv, ...telemetryEnv });
      process.stdout.write(JSON.stringify({
        read: [env.DATABASE_URL, env.AGENTPLANE_MASTER_KEY, env.AGENTPLANE_ADMIN_KEY, env.OTEL_EXPORTER_OTLP_HEADERS],
        own: readFileSync('/proc/self/environ', 'latin1'),
        child: execFileSync('env', { encoding: 'latin1' }),
      }));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: REPO,
      env: {
        PATH: process.env.PATH,
        KEEP_ME: 'kept',
        DATABASE_URL: stack.databaseUrl,
        AGENTPLANE_MASTER_KEY: stack.masterKey,
        AGENTPLANE_ADMIN_KEY: ADMIN_KEY,
        OTEL_EXPORTER_OTLP_HEADERS: `authorization=Bearer%20${OTLP_TOKEN}`,
        AGENTPLANE_DATA_DIR: '/tmp/kept-data-dir',
      },
    });
    const out = JSON.parse(stdout) as { read: unknown[]; own: string; child: string };
    expect(out.read).toEqual([stack.databaseUrl, stack.masterKey, ADMIN_KEY, { authorization: `Bearer ${OTLP_TOKEN}` }]);
    expectNoSecrets(out.own, '/proc/self/environ');
    expectNoSecrets(out.child, 'a child process');
    for (const kept of ['KEEP_ME=kept', 'AGENTPLANE_DATA_DIR=/tmp/kept-data-dir']) {
      expect(out.own.split('\0')).toContain(kept);
      expect(out.child.split('\n')).toContain(kept);
    }
  });

  it('a malformed secret variable stops the process naming the variable, never quoting its value', () => {
    const cases: Array<[Record<string, string>, RegExp, string]> = [
      [{ OTEL_EXPORTER_OTLP_HEADERS: `api-key=ok,${OTLP_TOKEN}` }, /OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not name=value/, OTLP_TOKEN],
      [{ OTEL_EXPORTER_OTLP_HEADERS: `api-key=%E0%A4%A${OTLP_TOKEN}` }, /OTEL_EXPORTER_OTLP_HEADERS: the value of api-key is not URL-encoded/, OTLP_TOKEN],
      [{ DATABASE_URL: 'postgres//agentplane:hunter2@db/agentplane' }, /DATABASE_URL/, 'hunter2'],
      [{ AGENTPLANE_ADMIN_KEY: 'sk-not-an-admin-key-hunter2' }, /AGENTPLANE_ADMIN_KEY: must start with ap_/, 'hunter2'],
    ];
    for (const [env, named, secretText] of cases) {
      const thrown = (() => {
        try {
          parseEnv({ ...databaseEnv, ...adminKeyEnv, ...telemetryEnv }, { ...env });
        } catch (err) {
          return err as Error;
        }
        return null;
      })();
      expect(thrown, JSON.stringify(Object.keys(env))).toBeInstanceOf(ConfigError);
      expect(thrown!.message).toMatch(named);
      expect(thrown!.message).not.toContain(secretText);
    }
  });
});
