/** Per-team overrides of the pricing table (USD per million tokens), merged over the defaults. */
import { eq } from 'drizzle-orm';
import type { ModelPrice } from '../../governance/pricing';
import type { Db } from '../client';
import { modelPrices } from '../schema/index';

export async function loadPrices(db: Db, params: { teamId: string; defaults: Record<string, ModelPrice> }): Promise<Record<string, ModelPrice>> {
  const rows = await db.select().from(modelPrices).where(eq(modelPrices.teamId, params.teamId));
  return { ...params.defaults, ...Object.fromEntries(rows.map((r) => [r.model, r.price as ModelPrice])) };
}

export async function setPrice(db: Db, params: { teamId: string; model: string; price: ModelPrice }) {
  await db
    .insert(modelPrices)
    .values({ teamId: params.teamId, model: params.model, price: params.price })
    .onConflictDoUpdate({ target: [modelPrices.teamId, modelPrices.model], set: { price: params.price, updatedAt: new Date() } });
}

export async function listPrices(db: Db, params: { teamId: string }) {
  return db.select().from(modelPrices).where(eq(modelPrices.teamId, params.teamId));
}
