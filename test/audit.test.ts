/**
 * Governance on the real stack: the hash-chained audit log (list, filters, JSON-lines export, verify, tampering by
 * a database superuser who bypasses the append-only guard), API keys and teams, and separation of duties between
 * the key that starts a session and the key that approves its tool calls.
 */
import { execFileSync } from 'node:child_process';
import { sql, type SQL } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, rowsOf } from '../db/client';
import { appendAudit, verifyAuditChain } from '../db/queries/audit';
import { hashKey } from '../db/queries/teams';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { toolConfirmationSignal } from '../workflows/definitions';
import { createTestDatabase } from './support/postgres';
import { startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;
/** a viewer of the stack's team (audit:read, nothing to write) and an admin of another team */
let viewer: string;
let otherAdmin: string;

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
  viewer = await stack.key('viewer');
  otherAdmin = await stack.key('admin', 'other');
});
afterAll(async () => {
  await stack?.stop();
});

// ---- helpers --------------------------------------------------------------------------------------------------

async function keyIdOf(plain: string): Promise<string> {
  return rowsOf<{ id: string }>(await stack.db.db.execute(sql`select id from api_keys where hash = ${hashKey(plain)}`))[0]!.id;
}

async function auditCount(): Promise<number> {
  return Number(rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from audit_log`))[0]!.n);
}

async function teamAuditCount(teamId: string): Promise<number> {
  return Number(rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from audit_log where team_id = ${teamId}`))[0]!.n);
}

/** Runs SQL as the Postgres superuser with the append-only guard switched off: what only a database owner could do. */
function asSuperuser(databaseUrl: string, statement: string): void {
  const database = new URL(databaseUrl);
  execFileSync('runuser', [
    '-u',
    'postgres',
    '--',
    'psql',
    '-v',
    'ON_ERROR_STOP=1',
    '-p',
    database.port || '5432',
    '-d',
    database.pathname.slice(1),
    '-c',
    `SET session_replication_role = replica; ${statement}`,
  ]);
}

const verify = (key: string, query = '') => stack.call('GET', `/v1/audit/verify${query}`, undefined, key);

/** Every row of the caller's team through GET /v1/audit, page by page. */
async function listAll(query = '', key = viewer, limit = 1000): Promise<any[]> {
  const rows: any[] = [];
  let cursor: string | null = null;
  for (;;) {
    const res = await stack.call('GET', `/v1/audit?limit=${limit}${query ? `&${query}` : ''}${cursor ? `&page=${cursor}` : ''}`, undefined, key);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    rows.push(...res.body.data);
    cursor = res.body.next_page;
    if (!cursor) return rows;
  }
}

async function exportRows(query = '', key = viewer): Promise<{ status: number; contentType: string | null; text: string; rows: any[] }> {
  const res = await fetch(`${stack.url}/v1/audit/export${query ? `?${query}` : ''}`, { headers: { authorization: `Bearer ${key}` } });
  const text = await res.text();
  const rows = res.status === 200 ? text.split('\n').filter((line) => line.length > 0).map((line) => JSON.parse(line)) : [];
  return { status: res.status, contentType: res.headers.get('content-type'), text, rows };
}

function scriptedAgent(extra: Record<string, unknown> = {}) {
  return { name: 'audit test agent', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [{ tool: 'write', action: 'ask' }], default: 'allow' }, ...extra };
}

async function createAgent(extra: Record<string, unknown> = {}, key?: string): Promise<string> {
  const res = await stack.call('POST', '/v1/agents', scriptedAgent(extra), key);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.id;
}

/** A session started by `key` that waits for a decision on one `write` call. */
async function waitingSession(agentId: string, key: string): Promise<{ sessionId: string; toolUseId: string }> {
  const res = await stack.call('POST', '/v1/sessions', { agent: agentId, initial_events: [{ type: 'user.message', content: `tool write /tmp/sod-${Math.random().toString(36).slice(2)}.md\nsay written` }] }, key);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  const session = await waitForStatus(stack, res.body.id, 'requires_action');
  expect(session.pending_approvals).toHaveLength(1);
  return { sessionId: res.body.id, toolUseId: session.pending_approvals[0].tool_use_id };
}

const confirm = (toolUseId: string, result: 'allow' | 'deny' = 'allow') => ({ events: [{ type: 'user.tool_confirmation', tool_use_id: toolUseId, result }] });

async function approvalStatus(sessionId: string, toolUseId: string): Promise<string | undefined> {
  return rowsOf<{ status: string }>(await stack.db.db.execute(sql`select status from approvals where session_id = ${sessionId} and tool_use_id = ${toolUseId}`))[0]?.status;
}

/** The database's refusal of a statement, message and cause together. */
async function refusal(query: SQL): Promise<string> {
  try {
    await stack.db.db.execute(query);
  } catch (err) {
    return `${(err as Error).message} ${String((err as Error).cause ?? '')}`;
  }
  throw new Error('the statement was not refused');
}

const quiet = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- keys -----------------------------------------------------------------------------------------------------

describe('API keys', () => {
  it('creates a key shown once, lists it without the key or its hash, and a revoked key gets 401 on its next call', async () => {
    const created = await stack.call('POST', '/v1/keys', { name: 'ci deploys', role: 'developer' });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const plain = created.body.key as string;
    expect(created.body).toMatchObject({ type: 'api_key', name: 'ci deploys', role: 'developer', revoked_at: null, id: expect.stringMatching(/^key_/) });
    expect(plain).toMatch(/^ap_/);
    expect(plain.startsWith(created.body.prefix)).toBe(true);
    expect((await stack.call('GET', '/v1/agents', undefined, plain)).status).toBe(200);

    const listed = await stack.call('GET', '/v1/keys?limit=1000');
    expect(listed.status).toBe(200);
    const item = listed.body.data.find((k: any) => k.id === created.body.id);
    expect(item).toEqual({ id: created.body.id, type: 'api_key', name: 'ci deploys', role: 'developer', prefix: created.body.prefix, created_at: created.body.created_at, revoked_at: null });
    const text = JSON.stringify(listed.body);
    expect(text).not.toContain(plain);
    expect(text).not.toContain(hashKey(plain));
    expect(text).not.toContain(hashKey(stack.adminKey));

    const revoked = await stack.call('POST', `/v1/keys/${created.body.id}/revoke`);
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    expect(revoked.body).toMatchObject({ id: created.body.id, revoked_at: expect.any(String) });
    const refused = await stack.call('GET', '/v1/agents', undefined, plain);
    expect(refused.status).toBe(401);
    expect(refused.body.code).toBe('auth.invalid_key');
    // listed still, as revoked; revoking twice is a conflict
    expect((await stack.call('GET', '/v1/keys?limit=1000')).body.data.find((k: any) => k.id === created.body.id).revoked_at).toBe(revoked.body.revoked_at);
    const again = await stack.call('POST', `/v1/keys/${created.body.id}/revoke`);
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('resource.conflict');

    // both changes are in the log, without the key or its hash
    const rows = (await listAll(`target=${created.body.id}`)).map((r) => [r.action, r.data]);
    expect(rows).toEqual([
      ['key.create', { name: 'ci deploys', role: 'developer' }],
      ['key.revoke', { name: 'ci deploys', role: 'developer' }],
    ]);
    const everything = JSON.stringify(rowsOf(await stack.db.db.execute(sql`select * from audit_log`)));
    expect(everything).not.toContain(plain);
    expect(everything).not.toContain(hashKey(plain));
  });

  it('refuses a key that would revoke itself with 409, and leaves it working', async () => {
    const admin = await stack.key('admin');
    const res = await stack.call('POST', `/v1/keys/${await keyIdOf(admin)}/revoke`, undefined, admin);
    expect(res.status).toBe(409);
    expect(res.body.code).toBe('resource.conflict');
    expect((await stack.call('GET', '/v1/keys', undefined, admin)).status).toBe(200);
  });

  it('enforces the role: a developer cannot create, list or revoke keys, and a new viewer key cannot write', async () => {
    const developer = await stack.key('developer');
    const target = await keyIdOf(await stack.key('service'));
    const before = await auditCount();
    for (const [method, path, body, permission] of [
      ['POST', '/v1/keys', { name: 'escalate', role: 'admin' }, 'keys:admin'],
      ['GET', '/v1/keys', undefined, 'keys:admin'],
      ['POST', `/v1/keys/${target}/revoke`, undefined, 'keys:admin'],
      ['POST', '/v1/teams', { name: 'my own kingdom' }, 'teams:create'],
    ] as const) {
      const res = await stack.call(method, path, body, developer);
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(res.body).toMatchObject({ code: 'auth.forbidden', detail: expect.stringContaining(permission) });
    }
    expect(await auditCount()).toBe(before);

    const made = await stack.call('POST', '/v1/keys', { name: 'read only', role: 'viewer' });
    const res = await stack.call('POST', '/v1/agents', scriptedAgent(), made.body.key);
    expect(res.status).toBe(403);
    expect(res.body.detail).toContain('agents:write');
  });

  it("cannot revoke another team's key: it does not exist for the caller", async () => {
    const theirs = await keyIdOf(await stack.key('viewer', 'other'));
    const res = await stack.call('POST', `/v1/keys/${theirs}/revoke`);
    expect(res.status).toBe(404);
    expect(rowsOf<{ revoked_at: string | null }>(await stack.db.db.execute(sql`select revoked_at from api_keys where id = ${theirs}`))[0]!.revoked_at).toBeNull();
  });
});

// ---- teams ----------------------------------------------------------------------------------------------------

describe('teams', () => {
  it('answers the caller its own team', async () => {
    expect((await stack.call('GET', '/v1/teams/current', undefined, viewer)).body).toMatchObject({ id: stack.teamId, type: 'team', name: 'acme' });
    const theirs = await stack.call('GET', '/v1/teams/current', undefined, otherAdmin);
    expect(theirs.status).toBe(200);
    expect(theirs.body.id).not.toBe(stack.teamId);
  });

  it("creates a team whose first admin key works in it and sees none of the first team's agents", async () => {
    const ours = await createAgent({ name: 'first team agent' });
    const name = `platform ${Math.random().toString(36).slice(2)}`;
    const platformAdmin = await stack.key('platform_admin');
    const created = await stack.call('POST', '/v1/teams', { name }, platformAdmin);
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    expect(created.body).toMatchObject({ type: 'team', name, id: expect.stringMatching(/^team_/), admin_key: { type: 'api_key', role: 'admin', revoked_at: null } });
    const key = created.body.admin_key.key as string;
    expect(key).toMatch(/^ap_/);

    expect((await stack.call('GET', '/v1/teams/current', undefined, key)).body).toMatchObject({ id: created.body.id, name });
    expect((await stack.call('GET', '/v1/agents', undefined, key)).body.data).toEqual([]);
    expect((await stack.call('GET', `/v1/agents/${ours}`, undefined, key)).status).toBe(404);
    expect((await stack.call('GET', '/v1/audit', undefined, key)).body.data).toEqual([]);
    // it administers its own team
    const theirKey = await stack.call('POST', '/v1/keys', { name: 'their developer', role: 'developer' }, key);
    expect(theirKey.status).toBe(200);
    expect((await stack.call('GET', '/v1/keys', undefined, key)).body.data.map((k: any) => k.id).sort()).toEqual([created.body.admin_key.id, theirKey.body.id].sort());
    expect((await stack.call('GET', '/v1/keys?limit=1000')).body.data.map((k: any) => k.id)).not.toContain(theirKey.body.id);

    // recorded in the creating team, naming the key by id only
    const [row] = await listAll(`action=team.create&target=${created.body.id}`);
    expect(row).toMatchObject({ actor: { key_id: await keyIdOf(platformAdmin), role: 'platform_admin' }, decision: 'ok', reason: 'teams:create', data: { name, admin_key_id: created.body.admin_key.id } });
    expect(JSON.stringify(row)).not.toContain(key);
    expect(JSON.stringify(row)).not.toContain(hashKey(key));

    const taken = await stack.call('POST', '/v1/teams', { name }, platformAdmin);
    expect(taken.status).toBe(409);
    expect(taken.body.code).toBe('resource.conflict');
  });
});

// ---- separation of duties -------------------------------------------------------------------------------------

describe('separation of duties', () => {
  it('is off unless the agent sets it, and shows on the agent', async () => {
    const plain = await stack.call('POST', '/v1/agents', scriptedAgent());
    expect(plain.body.approvals).toEqual({ separation_of_duties: false });
    const strict = await stack.call('POST', '/v1/agents', scriptedAgent({ approvals: { separation_of_duties: true } }));
    expect(strict.body.approvals).toEqual({ separation_of_duties: true });
    // an update that does not name it keeps it
    const updated = await stack.call('POST', `/v1/agents/${strict.body.id}`, { description: 'still strict' });
    expect(updated.body).toMatchObject({ version: 2, approvals: { separation_of_duties: true } });
  });

  it("refuses the initiator's approval with 403, in the API and in the workflow, until another key decides", async () => {
    const agentId = await createAgent({ name: 'four eyes', approvals: { separation_of_duties: true } });
    const initiator = await stack.key('admin');
    const { sessionId, toolUseId } = await waitingSession(agentId, initiator);

    const before = await auditCount();
    const self = await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId), initiator);
    expect(self.status, JSON.stringify(self.body)).toBe(403);
    expect(self.body).toMatchObject({ code: 'approval.self_approval', type: 'https://agentplane.dev/problems/approval.self_approval' });
    expect(await auditCount()).toBe(before);

    // past the API, straight to the workflow: the initiator's decision is ignored there too
    const initiatorKeyId = await keyIdOf(initiator);
    await stack.temporal.workflow.getHandle(sessionId).signal(toolConfirmationSignal, {
      toolUseId,
      result: 'allow',
      actor: { keyId: initiatorKeyId, role: 'admin', teamId: stack.teamId },
      eventId: 'sevt_self_approval_by_signal',
    });
    await quiet(1500);
    expect((await stack.call('GET', `/v1/sessions/${sessionId}`)).body).toMatchObject({ status: 'requires_action', pending_approvals: [{ tool_use_id: toolUseId }] });
    expect(await approvalStatus(sessionId, toolUseId)).toBe('pending');

    const approver = await stack.key('approver');
    const decided = await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId), approver);
    expect(decided.status, JSON.stringify(decided.body)).toBe(200);
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    expect(await approvalStatus(sessionId, toolUseId)).toBe('allowed');
    const [approval] = await listAll(`action=tool.approval&target=${sessionId}/${toolUseId}`);
    expect(approval).toMatchObject({ actor: { key_id: await keyIdOf(approver), role: 'approver' }, decision: 'allow' });
  });

  it('lets the initiator approve when the agent does not separate duties', async () => {
    const agentId = await createAgent({ name: 'one pair of eyes' });
    const initiator = await stack.key('admin');
    const { sessionId, toolUseId } = await waitingSession(agentId, initiator);
    const res = await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId), initiator);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    expect(await approvalStatus(sessionId, toolUseId)).toBe('allowed');
  });
});

// ---- the audit log --------------------------------------------------------------------------------------------

describe('audit log', () => {
  it('chains the rows that mutations append, and an untouched log verifies', async () => {
    const agentId = await createAgent({ name: 'chained' });
    const key = await stack.call('POST', '/v1/keys', { name: 'chained key', role: 'viewer' });
    await stack.call('POST', `/v1/keys/${key.body.id}/revoke`);
    await stack.call('POST', '/v1/credentials', { name: 'chained credential', secret: 'sk-chained-secret-value' });

    const rows = await listAll();
    const actions = rows.map((r) => r.action);
    expect(actions).toEqual(expect.arrayContaining(['agent.create', 'key.create', 'key.revoke', 'credential.create']));
    const created = rows.find((r) => r.action === 'agent.create' && r.target === agentId);
    expect(created).toMatchObject({
      seq: expect.any(Number),
      id: expect.stringMatching(/^aud_/),
      actor: { key_id: await keyIdOf(stack.adminKey), role: 'admin' },
      decision: 'ok',
      // its tool_policy is a policy of its own: the permission that let the admin set it is named too
      reason: 'agents:write, policies:write',
      request_id: expect.any(String),
      data: { version: 1, policy_fields: ['tool_policy'] },
      created_at: expect.any(String),
      prev_hash: expect.stringMatching(/^[0-9a-f]{64}$/),
      hash: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    // in chain order; each row links to the one before it in the whole chain
    const seqs = rows.map((r) => r.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    const all = rowsOf<{ seq: number; prev_hash: string; hash: string }>(await stack.db.db.execute(sql`select seq, prev_hash, hash from audit_log order by seq`));
    expect(all[0]!.prev_hash).toBe('0'.repeat(64));
    for (let i = 1; i < all.length; i++) expect(all[i]!.prev_hash, `seq ${all[i]!.seq}`).toBe(all[i - 1]!.hash);
    expect(JSON.stringify(rows)).not.toContain('sk-chained-secret-value');

    // the first walk has no checkpoint yet: it starts at the first row, and counts only this team's rows
    expect(rowsOf(await stack.db.db.execute(sql`select seq from audit_checkpoints`))).toEqual([]);
    const ownRows = await teamAuditCount(stack.teamId);
    expect(ownRows).toBeLessThan(await auditCount());
    const verdict = await verify(viewer);
    expect(verdict.status).toBe(200);
    expect(verdict.body).toEqual({ ok: true, from: 'checkpoint', rows: ownRows });
    const tip = rowsOf<{ seq: string }>(await stack.db.db.execute(sql`select max(seq) as seq from audit_log`))[0]!.seq;
    expect(rowsOf(await stack.db.db.execute(sql`select seq from audit_checkpoints`))).toEqual([{ seq: tip }]);
  });

  it('keeps one chain when writers interleave: concurrent appends, and appends to another database from the same process', async () => {
    // the process remembers the tip it wrote last; appends to a second database make that guess wrong for the first
    const other = await createTestDatabase();
    const otherDb = await openDatabase({ url: other.url });
    try {
      const entry = (i: number) => ({ teamId: stack.teamId, actorKeyId: 'test', actorRole: 'admin', action: 'test.interleave', target: `t${i}`, decision: 'ok', reason: 'test' });
      for (let i = 0; i < 6; i++) {
        await appendAudit(i % 2 === 0 ? stack.db.db : otherDb.db, entry(i));
        await Promise.all([appendAudit(stack.db.db, entry(100 + i)), appendAudit(stack.db.db, entry(200 + i))]);
      }
      for (const db of [stack.db.db, otherDb.db]) expect(await verifyAuditChain(db, { from: 'start', teamId: stack.teamId })).toMatchObject({ ok: true });
      const rows = rowsOf<{ target: string }>(await stack.db.db.execute(sql`select target from audit_log where action = 'test.interleave'`));
      expect(rows).toHaveLength(3 + 12);
    } finally {
      await otherDb.close();
      await other.drop();
    }
  });

  it('pages the list by next_page and exports the same rows as JSON lines, streamed across pages', async () => {
    // more rows than one export page (500) and one list page (1000)
    await stack.db.db.transaction(async (tx) => {
      for (let i = 0; i < 1100; i++) {
        await appendAudit(tx, { teamId: stack.teamId, actorKeyId: 'key_filler', actorRole: 'admin', action: 'test.filler', target: `filler_${i}`, decision: 'ok', reason: 'test' });
      }
    });
    const listed = await listAll('', viewer, 400);
    expect(listed.length).toBeGreaterThan(1100);
    expect(new Set(listed.map((r) => r.id)).size).toBe(listed.length);

    const exported = await exportRows();
    expect(exported.status).toBe(200);
    expect(exported.contentType).toBe('application/x-ndjson');
    expect(exported.text.endsWith('\n')).toBe(true);
    expect(exported.rows).toEqual(listed);

    const filtered = await exportRows('action=test.filler');
    expect(filtered.rows.map((r) => r.target)).toEqual(Array.from({ length: 1100 }, (_, i) => `filler_${i}`));
  });

  it('filters by action, actor, target and time, in the list and the export alike', async () => {
    const developer = await stack.key('developer');
    const developerId = await keyIdOf(developer);
    // no tool_policy: a developer's key may not set one
    const agentId = await createAgent({ name: 'filtered', tool_policy: undefined }, developer);
    await stack.call('POST', `/v1/agents/${agentId}`, { description: 'v2' }, developer);
    await stack.call('POST', `/v1/agents/${agentId}/archive`);

    const byActor = await listAll(`actor=${developerId}`);
    expect(byActor.map((r) => [r.action, r.target])).toEqual([
      ['agent.create', agentId],
      ['agent.update', agentId],
    ]);
    const byTarget = await listAll(`target=${agentId}`);
    expect(byTarget.map((r) => r.action)).toEqual(['agent.create', 'agent.update', 'agent.archive']);
    expect(byTarget.at(-1).actor.key_id).toBe(await keyIdOf(stack.adminKey));
    const byAction = await listAll('action=agent.archive');
    expect(byAction.length).toBeGreaterThan(0);
    expect(byAction.every((r) => r.action === 'agent.archive')).toBe(true);
    expect(await listAll(`action=agent.archive&actor=${developerId}`)).toEqual([]);

    // since is inclusive, until exclusive (two rows may share a millisecond: the expectation is computed)
    const [first, second, third] = byTarget;
    const at = (row: any) => Date.parse(row.created_at);
    const between = (from?: any, to?: any) => byTarget.filter((r) => (!from || at(r) >= at(from)) && (!to || at(r) < at(to))).map((r) => r.id);
    const q = (name: string, row: any) => `${name}=${encodeURIComponent(row.created_at)}`;
    expect((await listAll(`target=${agentId}&${q('since', second)}&${q('until', third)}`)).map((r) => r.id)).toEqual(between(second, third));
    expect((await listAll(`target=${agentId}&${q('since', first)}`)).map((r) => r.id)).toEqual(byTarget.map((r) => r.id));
    expect(await listAll(`target=${agentId}&${q('until', first)}`)).toEqual([]);
    // any offset names the same instant
    const shifted = new Date(at(third)).toISOString().replace('Z', '+00:00');
    expect((await listAll(`target=${agentId}&until=${encodeURIComponent(shifted)}`)).map((r) => r.id)).toEqual(between(undefined, third));

    expect((await exportRows(`actor=${developerId}`)).rows).toEqual(byActor);
    expect((await exportRows(`target=${agentId}&${q('since', second)}`)).rows.map((r) => r.id)).toEqual(between(second));
  });

  it("shows another team's key none of this team's rows, in the list or the export", async () => {
    const theirAgent = await createAgent({ name: 'theirs' }, otherAdmin);
    const ours = new Set(rowsOf<{ id: string }>(await stack.db.db.execute(sql`select id from audit_log where team_id = ${stack.teamId}`)).map((r) => r.id));
    expect(ours.size).toBeGreaterThan(0);
    const listed = await listAll('', otherAdmin);
    const exported = (await exportRows('', otherAdmin)).rows;
    for (const rows of [listed, exported]) {
      expect(rows.map((r) => r.target)).toContain(theirAgent);
      expect(rows.filter((r) => ours.has(r.id))).toEqual([]);
    }
    expect(exported).toEqual(listed);
    // nor by naming this team's things
    expect(await listAll(`target=${[...ours][0]}`, otherAdmin)).toEqual([]);
    expect(await listAll(`actor=${await keyIdOf(stack.adminKey)}`, otherAdmin)).toEqual([]);
  });

  it('cannot be changed or removed by the application role: the database refuses', async () => {
    const role = rowsOf<{ rolsuper: boolean }>(await stack.db.db.execute(sql`select rolsuper from pg_roles where rolname = current_user`))[0]!;
    expect(role.rolsuper).toBe(false);
    const [row] = await listAll('action=agent.create');
    expect(await refusal(sql`update audit_log set reason = 'rewritten' where seq = ${row.seq}`)).toContain('audit_log is append-only: UPDATE refused');
    expect(await refusal(sql`delete from audit_log where seq = ${row.seq}`)).toContain('audit_log is append-only: DELETE refused');
    expect(await refusal(sql`truncate audit_log`)).toContain('audit_log is append-only: TRUNCATE refused');
    // nor can it switch the guard off
    expect(await refusal(sql`set session_replication_role = replica`)).toContain('permission denied');
    expect((await listAll(`target=${row.target}&action=agent.create`))[0]).toEqual(row);
    expect((await stack.call('GET', '/v1/audit/verify')).body.ok).toBe(true);
  });

  it("a tenant's verify walks only what was appended since the last checkpoint, and its count never shows another team's volume", async () => {
    const theirTeam = (await stack.call('GET', '/v1/teams/current', undefined, otherAdmin)).body.id as string;
    expect((await verify(viewer)).body.ok).toBe(true);
    const [before] = rowsOf<{ seq: string }>(await stack.db.db.execute(sql`select max(seq) as seq from audit_checkpoints`));
    const ours = await teamAuditCount(stack.teamId);
    expect((await verify(viewer)).body).toEqual({ ok: true, from: 'checkpoint', rows: ours });

    const entry = (teamId: string, i: number) => ({ teamId, actorKeyId: 'key_volume', actorRole: 'admin', action: 'test.volume', target: `v${i}`, decision: 'ok', reason: 'test' });
    for (let i = 0; i < 40; i++) await appendAudit(stack.db.db, entry(theirTeam, i));
    for (let i = 0; i < 3; i++) await appendAudit(stack.db.db, entry(stack.teamId, i));
    // this team sees its own 3 new rows; the other team's 40 are walked, not counted, whoever walks first
    expect((await verify(viewer)).body).toEqual({ ok: true, from: 'checkpoint', rows: ours + 3 });
    expect((await verify(otherAdmin)).body).toEqual({ ok: true, from: 'checkpoint', rows: await teamAuditCount(theirTeam) });
    // the walk moved the checkpoint to the newest row
    const [after] = rowsOf<{ seq: string; hash: string }>(await stack.db.db.execute(sql`select seq, hash from audit_checkpoints order by seq desc limit 1`));
    const [tip] = rowsOf<{ seq: string; hash: string }>(await stack.db.db.execute(sql`select seq, hash from audit_log order by seq desc limit 1`));
    expect(after).toEqual(tip);
    expect(Number(after!.seq)).toBe(Number(before!.seq) + 43);
  });

  it('a tenant admin or viewer cannot make the API walk the whole cross-team chain: from=start is 403 naming audit:verify_full, a platform admin may', async () => {
    for (const key of [stack.adminKey, viewer, otherAdmin]) {
      const res = await verify(key, '?from=start');
      expect(res.status, JSON.stringify(res.body)).toBe(403);
      expect(res.body).toMatchObject({ code: 'auth.forbidden', detail: expect.stringContaining('audit:verify_full') });
    }
    const platform = await stack.key('platform_admin');
    expect((await verify(platform, '?from=start')).body).toEqual({ ok: true, from: 'start', rows: await teamAuditCount(stack.teamId) });
    expect((await verify(viewer, '?from=everything')).status).toBe(400);
  });

  it("a superuser's change to the checkpoint's own row is reported by the next incremental walk", async () => {
    // a database of its own: a break stays in the chain for good
    const fresh = await createTestDatabase();
    const db = await openDatabase({ url: fresh.url });
    try {
      const entry = (i: number) => ({ teamId: stack.teamId, actorKeyId: 'key_checkpoint', actorRole: 'admin', action: 'test.checkpoint', target: `c${i}`, decision: 'ok', reason: 'test' });
      for (let i = 0; i < 3; i++) await appendAudit(db.db, entry(i));
      expect(await verifyAuditChain(db.db, { from: 'checkpoint', teamId: stack.teamId })).toEqual({ ok: true, teamRows: 3 });
      const [checkpoint] = rowsOf<{ seq: string }>(await db.db.execute(sql`select seq from audit_checkpoints`));
      await appendAudit(db.db, entry(3));

      asSuperuser(fresh.url, `UPDATE audit_log SET target = 'moved' WHERE seq = ${Number(checkpoint!.seq)}`);
      expect(await verifyAuditChain(db.db, { from: 'checkpoint', teamId: stack.teamId })).toMatchObject({ ok: false, brokenSeq: Number(checkpoint!.seq), why: 'row content does not match its hash' });
      // rewriting its hash too, so the row checks out on its own, is caught by the hash the checkpoint kept
      asSuperuser(fresh.url, `UPDATE audit_log SET hash = '${'f'.repeat(64)}' WHERE seq = ${Number(checkpoint!.seq)}`);
      expect(await verifyAuditChain(db.db, { from: 'checkpoint', teamId: stack.teamId })).toMatchObject({
        ok: false,
        brokenSeq: Number(checkpoint!.seq),
        why: expect.stringContaining('no longer has the hash it was verified with'),
      });
    } finally {
      await db.close();
      await fresh.drop();
    }
  });

  // last two: they break the chain for everything after them
  it('a row a superuser changes before the checkpoint escapes the incremental walk (the known limit of a checkpoint); the full walk from the first row names it', async () => {
    const agentId = await createAgent({ name: 'tampered with before the checkpoint' });
    const [row] = await listAll(`target=${agentId}`);
    await createAgent({ name: 'written after' });
    expect((await verify(viewer)).body.ok).toBe(true);

    asSuperuser(stack.databaseUrl, `UPDATE audit_log SET reason = 'nothing to see' WHERE seq = ${Number(row.seq)}`);
    expect((await listAll(`target=${agentId}`))[0].reason).toBe('nothing to see');

    // the incremental walk starts after the row: it cannot see the change
    expect((await verify(viewer)).body).toMatchObject({ ok: true, from: 'checkpoint' });
    const platform = await stack.key('platform_admin');
    const full = await verify(platform, '?from=start');
    expect(full.status).toBe(200);
    expect(full.body).toMatchObject({ ok: false, from: 'start', broken: { seq: row.seq, id: row.id, why: expect.stringContaining('hash'), other_team: false } });
    expect(full.body.rows).toBe(rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from audit_log where team_id = ${stack.teamId} and seq < ${row.seq}`)).map((r) => Number(r.n))[0]);
  });

  it('names the row a superuser changed after the checkpoint in the incremental walk, and hides it from another team', async () => {
    const agentId = await createAgent({ name: 'tampered with after the checkpoint' });
    const [row] = await listAll(`target=${agentId}`);
    await createAgent({ name: 'written after' });
    asSuperuser(stack.databaseUrl, `UPDATE audit_log SET reason = 'nothing to see' WHERE seq = ${Number(row.seq)}`);

    const verdict = await verify(viewer);
    expect(verdict.status).toBe(200);
    expect(verdict.body).toMatchObject({ ok: false, from: 'checkpoint', broken: { seq: row.seq, id: row.id, why: expect.stringContaining('hash'), other_team: false } });

    const theirs = await verify(otherAdmin);
    expect(theirs.status).toBe(200);
    expect(theirs.body).toMatchObject({ ok: false, broken: { seq: row.seq, id: null, other_team: true } });
    const text = JSON.stringify(theirs.body);
    expect(text).not.toContain(row.id);
    expect(text).not.toContain('nothing to see');
    expect(text).not.toContain(agentId);

    // the checkpoint stays before the break, so later rows do not hide it; the full walk still names the first break
    await createAgent({ name: 'after the break' });
    expect((await verify(viewer)).body.broken).toMatchObject({ seq: row.seq, id: row.id });
    const full = await verify(await stack.key('platform_admin'), '?from=start');
    expect(full.body.broken.seq).toBeLessThan(row.seq);
  });
});
