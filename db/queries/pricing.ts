/** A team's price overrides (USD per million tokens); governance/pricing.ts puts them before the catalogue. */
import { and, eq, inArray } from 'drizzle-orm';
import type { ModelPrice, PriceTable } from '../../governance/pricing';
import type { Db } from '../client';
import { modelPrices } from '../schema/index';

/** The team's overrides, all of them or only those for `models`. */
export async function loadPriceOverrides(db: Db, params: { teamId: string; models?: string[] }): Promise<PriceTable> {
  const where = params.models ? and(eq(modelPrices.teamId, params.teamId), inArray(modelPrices.model, params.models)) : eq(modelPrices.teamId, params.teamId);
  const rows = await db.select().from(modelPrices).where(where);
  return Object.fromEntries(rows.map((r) => [r.model, r.price as ModelPrice]));
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
