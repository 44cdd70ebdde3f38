/**
 * `npm run dev` brings the whole platform up on the embedded defaults (Temporal dev server with its SQLite file,
 * PGlite, worker, API) and prints the URL and an admin key; a restart on the same data folder finds everything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateMasterKeySpec } from '../db/vault';
import { alive } from '../runtimes/kit/process';

const children: ChildProcess[] = [];
const dataDirs: string[] = [];
/** process groups a test started outside dev (or that dev left behind): killed whatever happened */
const groups: number[] = [];

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const pid of groups) if (alive(pid)) process.kill(-pid, 'SIGKILL');
  for (const dir of dataDirs) await rm(dir, { recursive: true, force: true });
});

async function until(check: () => boolean, what: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function startDev(dir: string, secrets: Record<string, string> = {}): Promise<{ child: ChildProcess; url: string; key: string; output: () => string }> {
  const env: Record<string, string | undefined> = { ...process.env, AGENTPLANE_DATA_DIR: dir, PORT: '0', TEMPORAL_PORT: '0', AGENTPLANE_RUNTIMES: 'scripted' };
  delete env.DATABASE_URL; // the embedded default: PGlite
  delete env.AGENTPLANE_MASTER_KEY;
  delete env.AGENTPLANE_ADMIN_KEY;
  delete env.AGENTPLANE_EGRESS_ALLOW_PRIVATE; // dev mode's own default
  Object.assign(env, secrets);
  // as `npm run dev` runs it: node with tsx's loader, so the child is dev itself (the tsx command would be a launcher)
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/dev.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const deadline = Date.now() + 90_000;
  while (!/admin key\s+ap_/.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`dev did not come up:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const url = /API\s+(http:\/\/\S+)/.exec(out)![1]!;
  const key = /admin key\s+(ap_\S+)/.exec(out)![1]!;
  return { child, url, key, output: () => out };
}

async function stopDev(child: ChildProcess) {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGINT');
  const stopped = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 30_000))]);
  expect(stopped, 'dev stops cleanly on SIGINT').toBe(true);
}

async function call(url: string, key: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${url}${path}`, { method, headers: { 'x-api-key': key, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  return { status: res.status, body: (await res.json()) as any };
}

describe('npm run dev', () => {
  it('starts everything on the embedded defaults (which refuse a webhook to 127.0.0.1, as production does), runs a session, and comes back with its data after a restart', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'agentplane-dev-'));
    dataDirs.push(dataDir);
    const first = await startDev(dataDir);
    expect(first.output()).toContain('PGlite');
    expect((await fetch(`${first.url}/readyz`)).status).toBe(200);
    // the bootstrap key is the installation's platform admin
    expect((await call(first.url, first.key, 'GET', '/v1/keys')).body.data.map((k: any) => k.role)).toEqual(['platform_admin']);

    const agent = await call(first.url, first.key, 'POST', '/v1/agents', { name: 'dev', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } });
    expect(agent.status).toBe(200);
    // dev mode refuses private addresses like production does: a local receiver is allowed only by the developer
    expect(first.output()).toContain('egress     private and loopback addresses refused');
    const local = await call(first.url, first.key, 'POST', '/v1/webhooks', { url: 'http://127.0.0.1:9/hook' });
    expect(local.status).toBe(400);
    expect(local.body.invalid_params.map((p: { name: string }) => p.name)).toEqual(['body.url']);
    const session = await call(first.url, first.key, 'POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'say up and running' }] });
    expect(session.status).toBe(200);
    let status = '';
    for (let i = 0; i < 100 && status !== 'idle'; i++) {
      await new Promise((r) => setTimeout(r, 200));
      status = (await call(first.url, first.key, 'GET', `/v1/sessions/${session.body.id}`)).body.stop_reason?.type === 'end_turn' ? 'idle' : '';
    }
    expect(status).toBe('idle');
    await stopDev(first.child);

    const second = await startDev(dataDir);
    expect(second.key).toBe(first.key);
    const again = await call(second.url, second.key, 'GET', `/v1/sessions/${session.body.id}`);
    expect(again.body).toMatchObject({ id: session.body.id, stop_reason: { type: 'end_turn' } });
    // the workflow survived in the dev server's SQLite file: the session still takes messages
    const more = await call(second.url, second.key, 'POST', `/v1/sessions/${session.body.id}/events`, { events: [{ type: 'user.message', content: 'say still here' }] });
    expect(more.status).toBe(200);
    await stopDev(second.child);
  }, 240_000);

  it('after a crash, the next start adopts the Temporal dev server the crashed run left (never a second one on its file) and stops the OpenCode servers no session owns', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'agentplane-dev-'));
    dataDirs.push(dataDir);
    const first = await startDev(dataDir);
    const agent = await call(first.url, first.key, 'POST', '/v1/agents', { name: 'dev', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } });
    const session = await call(first.url, first.key, 'POST', '/v1/sessions', { agent: agent.body.id });
    expect(session.status).toBe(200);
    const temporal = JSON.parse(await readFile(join(dataDir, 'temporal.json'), 'utf8')) as { pid: number; address: string };
    groups.push(temporal.pid);

    // the crash: no shutdown runs, so the Temporal dev server (its own process group) keeps running
    first.child.kill('SIGKILL');
    await until(() => first.child.exitCode !== null || first.child.signalCode !== null, 'dev to die');
    expect(alive(temporal.pid)).toBe(true);

    // an OpenCode server of a session that does not exist, as a crashed worker leaves it: a process whose command line
    // is `… serve … <port>`, recorded in the session's server.json (the pid and port are what the adapter checks)
    const port = 40_000 + Math.floor(Math.random() * 20_000);
    const orphan = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)', 'serve', '--port', String(port)], { detached: true, stdio: 'ignore' });
    groups.push(orphan.pid!);
    await mkdir(join(dataDir, 'opencode', 'sesn_nobody'), { recursive: true });
    await writeFile(join(dataDir, 'opencode', 'sesn_nobody', 'server.json'), JSON.stringify({ pid: orphan.pid, port, password: 'x', keyFingerprint: 'x', startedAt: new Date().toISOString() }));

    const second = await startDev(dataDir);
    expect(second.output()).toContain(`adopted: pid ${temporal.pid}`);
    expect(second.output()).toMatch(/stopped 1 OpenCode server/);
    await until(() => !alive(orphan.pid!), 'the orphan to be stopped');
    // the adopted server still holds the session: it takes a message
    const more = await call(second.url, second.key, 'POST', `/v1/sessions/${session.body.id}/events`, { events: [{ type: 'user.message', content: 'say after the crash' }] });
    expect(more.status).toBe(200);

    // adopting means owning: a clean stop ends it
    await stopDev(second.child);
    await until(() => !alive(temporal.pid), 'the adopted Temporal dev server to stop', 20_000);
  }, 240_000);

  it('given the master and admin keys in its environment, dev keeps them from /proc/<pid>/environ and from the Temporal dev server it starts, and works with them', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'agentplane-dev-'));
    dataDirs.push(dataDir);
    const secrets = { AGENTPLANE_MASTER_KEY: generateMasterKeySpec(), AGENTPLANE_ADMIN_KEY: `ap_dev${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}` };
    const dev = await startDev(dataDir, secrets);
    expect(dev.key).toBe(secrets.AGENTPLANE_ADMIN_KEY);
    const temporal = JSON.parse(await readFile(join(dataDir, 'temporal.json'), 'utf8')) as { pid: number };
    groups.push(temporal.pid);
    for (const [what, pid] of [['dev', dev.child.pid!], ['its Temporal dev server', temporal.pid]] as const) {
      const environ = await readFile(`/proc/${pid}/environ`, 'latin1');
      for (const [name, value] of Object.entries(secrets)) {
        expect(environ.includes(value), `${what} shows ${name}`).toBe(false);
        expect(environ, what).not.toContain(`${name}=`);
      }
    }
    // the admin key was read before it went: it works; the master key seals a credential
    expect((await call(dev.url, dev.key, 'POST', '/v1/credentials', { name: 'sealed', secret: 'sk-dev' })).status).toBe(200);
    await stopDev(dev.child);
  }, 240_000);
});
