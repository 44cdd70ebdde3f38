/**
 * The vault against the attacks on its storage: a sealed secret moved to another record or team, a master key
 * dropped after rotation while webhook secrets were still sealed under it, and records written before sealed values
 * were bound to their record. Real Postgres; no worker.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../db/client';
import { createCredential, openCredential } from '../db/queries/credentials';
import { createWebhook, rewrapWebhookSecrets } from '../db/queries/webhooks';
import { createVault, generateMasterKeySpec, parseMasterKeys, sealContext } from '../db/vault';
import { startStack, type Stack } from './support/stack';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

const query = async <T>(q: ReturnType<typeof sql>) => rowsOf<T>(await stack.db.db.execute(q));

/** How secrets were sealed before they were bound to their record: AES-256-GCM with no additional data. */
function legacySeal(masterKeySpec: string, plaintext: string) {
  const [[kid, masterKey]] = [...parseMasterKeys(masterKeySpec).entries()] as [[string, Buffer]];
  const encrypt = (key: Buffer, data: Buffer) => {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    const body = Buffer.concat([cipher.update(data), cipher.final()]);
    return [iv, cipher.getAuthTag(), body].map((b) => b.toString('base64')).join('.');
  };
  const dataKey = randomBytes(32);
  return { masterKeyId: kid, wrappedKey: encrypt(masterKey, dataKey), ciphertext: encrypt(dataKey, Buffer.from(plaintext)) };
}

describe('sealed values are bound to their record', () => {
  it("a credential's sealed secret copied onto another credential of the team does not open there", async () => {
    const { teamId } = await stack.newTeam();
    const victim = await createCredential(stack.db.db, stack.vault, { teamId, name: 'prod key', kind: 'api_key', secret: 'sk-prod-victim-secret' });
    const decoy = await createCredential(stack.db.db, stack.vault, { teamId, name: 'dev key', kind: 'api_key', secret: 'sk-dev-decoy' });
    // someone with write access to the table (not to the master key) moves the sealed columns across
    await stack.db.db.execute(sql`
      update credentials d set master_key_id = v.master_key_id, wrapped_key = v.wrapped_key, ciphertext = v.ciphertext
      from credentials v where v.id = ${victim.id} and d.id = ${decoy.id}`);
    await expect(openCredential(stack.db.db, stack.vault, { teamId, credentialId: decoy.id })).rejects.toThrow(/does not open/);
    expect(await openCredential(stack.db.db, stack.vault, { teamId, credentialId: victim.id })).toBe('sk-prod-victim-secret');
  });

  it("a credential's sealed secret moved into another team, under the same id, does not open there", async () => {
    const a = await stack.newTeam();
    const b = await stack.newTeam();
    const victim = await createCredential(stack.db.db, stack.vault, { teamId: a.teamId, name: 'theirs', kind: 'api_key', secret: 'sk-team-a-only' });
    await stack.db.db.execute(sql`update credentials set team_id = ${b.teamId} where id = ${victim.id}`);
    await expect(openCredential(stack.db.db, stack.vault, { teamId: b.teamId, credentialId: victim.id })).rejects.toThrow(/does not open/);
  });

  it("a webhook's signing secret copied onto another webhook does not open there", async () => {
    const { teamId } = await stack.newTeam();
    const one = await createWebhook(stack.db.db, stack.vault, { teamId, url: 'https://hooks.example/one', events: [], secret: 'whsec_one' });
    const two = await createWebhook(stack.db.db, stack.vault, { teamId, url: 'https://hooks.example/two', events: [], secret: 'whsec_two' });
    const [sealed] = await query<{ master_key_id: string; wrapped_key: string; ciphertext: string }>(sql`select master_key_id, wrapped_key, ciphertext from webhooks where id = ${one.id}`);
    const moved = { masterKeyId: sealed!.master_key_id, wrappedKey: sealed!.wrapped_key, ciphertext: sealed!.ciphertext };
    expect(stack.vault.open(moved, sealContext.webhook(teamId, one.id))).toBe('whsec_one');
    expect(() => stack.vault.open(moved, sealContext.webhook(teamId, two.id))).toThrow(/does not open/);
  });
});

describe('master-key rotation', () => {
  it('rewrap re-seals webhook signing secrets too, so dropping the old master key keeps every webhook signing', async () => {
    const oldSpec = generateMasterKeySpec('old');
    const newSpec = generateMasterKeySpec('new');
    const { teamId } = await stack.newTeam();
    const webhook = await createWebhook(stack.db.db, createVault(oldSpec), { teamId, url: 'https://hooks.example/rotate', events: [], secret: 'whsec_rotated' });
    const both = createVault(`${newSpec},${oldSpec}`);
    expect(await rewrapWebhookSecrets(stack.db.db, both, { teamId })).toEqual({ rewrapped: 1, unreadable: [] });
    const [row] = await query<{ master_key_id: string; wrapped_key: string; ciphertext: string }>(sql`select master_key_id, wrapped_key, ciphertext from webhooks where id = ${webhook.id}`);
    const sealed = { masterKeyId: row!.master_key_id, wrappedKey: row!.wrapped_key, ciphertext: row!.ciphertext };
    expect(sealed.masterKeyId).toBe('new');
    // the old key is gone from the configuration: the secret still opens, so deliveries can still be signed
    expect(createVault(newSpec).open(sealed, sealContext.webhook(teamId, webhook.id))).toBe('whsec_rotated');
    expect(() => createVault(oldSpec).open(sealed, sealContext.webhook(teamId, webhook.id))).toThrow();
    expect(await rewrapWebhookSecrets(stack.db.db, both, { teamId })).toEqual({ rewrapped: 0, unreadable: [] });
  });

  it('POST /v1/credentials/rewrap binds secrets sealed before binding existed, credentials and webhook secrets alike, and they still open', async () => {
    const team = await stack.newTeam();
    const admin = await team.key('admin');
    const legacyCredential = legacySeal(stack.masterKey, 'sk-sealed-before-binding');
    const legacyWebhook = legacySeal(stack.masterKey, 'whsec_sealed_before_binding');
    await stack.db.db.execute(sql`insert into credentials (id, team_id, name, kind, master_key_id, wrapped_key, ciphertext)
      values ('cred_legacy_1', ${team.teamId}, 'legacy', 'api_key', ${legacyCredential.masterKeyId}, ${legacyCredential.wrappedKey}, ${legacyCredential.ciphertext})`);
    await stack.db.db.execute(sql`insert into webhooks (id, team_id, url, events, master_key_id, wrapped_key, ciphertext)
      values ('whk_legacy_1', ${team.teamId}, 'https://hooks.example/legacy', '[]'::jsonb, ${legacyWebhook.masterKeyId}, ${legacyWebhook.wrappedKey}, ${legacyWebhook.ciphertext})`);
    // a record from before the upgrade keeps working until it is re-sealed
    expect(await openCredential(stack.db.db, stack.vault, { teamId: team.teamId, credentialId: 'cred_legacy_1' })).toBe('sk-sealed-before-binding');

    const res = await stack.call('POST', '/v1/credentials/rewrap', undefined, admin);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toEqual({ rewrapped: 2, master_key_id: stack.vault.currentKeyId });
    const rows = await query<{ wrapped_key: string; ciphertext: string }>(sql`
      select wrapped_key, ciphertext from credentials where id = 'cred_legacy_1'
      union all select wrapped_key, ciphertext from webhooks where id = 'whk_legacy_1'`);
    for (const row of rows) {
      expect(row.wrapped_key).toMatch(/^v2\./);
      expect(row.ciphertext).toMatch(/^v2\./);
    }
    expect(await openCredential(stack.db.db, stack.vault, { teamId: team.teamId, credentialId: 'cred_legacy_1' })).toBe('sk-sealed-before-binding');
    const [webhook] = await query<{ master_key_id: string; wrapped_key: string; ciphertext: string }>(sql`select master_key_id, wrapped_key, ciphertext from webhooks where id = 'whk_legacy_1'`);
    expect(stack.vault.open({ masterKeyId: webhook!.master_key_id, wrappedKey: webhook!.wrapped_key, ciphertext: webhook!.ciphertext }, sealContext.webhook(team.teamId, 'whk_legacy_1'))).toBe(
      'whsec_sealed_before_binding',
    );
    expect((await stack.call('POST', '/v1/credentials/rewrap', undefined, admin)).body.rewrapped).toBe(0);
  });

  it("a team admin's rewrap re-seals only its own team; a platform admin's re-seals every team's", async () => {
    const one = await stack.newTeam();
    const two = await stack.newTeam();
    for (const [team, id] of [
      [one, 'cred_scope_one'],
      [two, 'cred_scope_two'],
    ] as const) {
      const legacy = legacySeal(stack.masterKey, `sk-${id}`);
      await stack.db.db.execute(sql`insert into credentials (id, team_id, name, kind, master_key_id, wrapped_key, ciphertext)
        values (${id}, ${team.teamId}, 'legacy', 'api_key', ${legacy.masterKeyId}, ${legacy.wrappedKey}, ${legacy.ciphertext})`);
    }
    // sealed by a master key this installation no longer has: nothing can re-seal it
    const lost = legacySeal(generateMasterKeySpec('dropped'), 'sk-lost');
    await stack.db.db.execute(sql`insert into credentials (id, team_id, name, kind, master_key_id, wrapped_key, ciphertext)
      values ('cred_scope_lost', ${two.teamId}, 'lost', 'api_key', ${lost.masterKeyId}, ${lost.wrappedKey}, ${lost.ciphertext})`);
    const stale = async () => (await query<{ id: string }>(sql`select id from credentials where id like 'cred_scope_%' and ciphertext not like 'v2.%' order by id`)).map((r) => r.id);
    expect((await stack.call('POST', '/v1/credentials/rewrap', undefined, await one.key('admin'))).status).toBe(200);
    expect(await stale()).toEqual(['cred_scope_lost', 'cred_scope_two']);
    const platform = await one.key('platform_admin');
    const all = await stack.call('POST', '/v1/credentials/rewrap', undefined, platform);
    expect(all.status, JSON.stringify(all.body)).toBe(200);
    expect(all.body.rewrapped).toBeGreaterThanOrEqual(1);
    // the record no configured key opens is named and left as it is, and does not stop the others
    expect(await stale()).toEqual(['cred_scope_lost']);
    expect(all.body.unreadable).toEqual(expect.arrayContaining(['cred_scope_lost']));
  });
});
