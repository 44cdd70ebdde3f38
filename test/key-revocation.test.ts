/**
 * Verified API keys are held in memory by each API process (db/queries/teams.ts `findActiveKey`), so a revocation
 * must reach every replica: two API processes of one platform, a key verified on both, revoked through one, refused
 * by the other within a second. Real processes (api/main.ts), real Postgres.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../runtimes/kit/ports';
import { eventually, startStack, type Stack } from './support/stack';
import { spawnApi, type ServiceProcess } from './support/worker-process';

let stack: Stack;
const apis: ServiceProcess[] = [];

beforeAll(async () => {
  stack = await startStack({ worker: false });
}, 120_000);
afterAll(async () => {
  for (const api of apis) await api.stop();
  await stack?.stop();
});

async function api(): Promise<(path: string, key: string, init?: RequestInit) => Promise<Response>> {
  const port = await freePort();
  apis.push(await spawnApi(stack, port));
  return (path, key, init) => fetch(`http://127.0.0.1:${port}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...init?.headers } });
}

describe('API keys held in memory by every API process', () => {
  it('a key revoked through one API process is refused by another within a second', async () => {
    const one = await api();
    const two = await api();
    const admin = await stack.key('admin');
    const key = await stack.key('viewer');
    // both processes have verified the key (and hold it)
    expect((await one('/v1/agents', key)).status).toBe(200);
    expect((await two('/v1/agents', key)).status).toBe(200);
    expect((await two('/v1/agents', key)).status).toBe(200);

    const keys = (await (await one('/v1/keys?limit=100', admin)).json()) as { data: Array<{ id: string; role: string }> };
    const keyId = keys.data.find((k) => k.role === 'viewer')!.id;
    expect((await one(`/v1/keys/${keyId}/revoke`, admin, { method: 'POST' })).status).toBe(200);
    // the process that revoked it refuses it at once
    expect((await one('/v1/agents', key)).status).toBe(401);
    // the other one, within a second (polled)
    const refused = await eventually(async () => ((await two('/v1/agents', key)).status === 401 ? true : undefined), { timeoutMs: 1_000, intervalMs: 25, what: 'the other API process to refuse the revoked key' });
    expect(refused).toBe(true);
    // and a key it never saw before still works there
    expect((await two('/v1/agents', admin)).status).toBe(200);
  }, 300_000);
});
