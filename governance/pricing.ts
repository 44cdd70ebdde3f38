/**
 * What a model request costs, and what is charged for it. Prices are USD per million tokens; charges are integer
 * micro-dollars (one USD per million tokens is one micro-dollar per token).
 *
 * One lookup serves the session-start check, the ledger and `GET /v1/pricing`: the team's override for the model
 * wins (admins set it with `PUT /v1/pricing/{model}`; 0 is a price), else the catalogue of `@pydantic/genai-prices`
 * (its bundled data, pinned with the package: `updatePrices` is never called, so prices change only with an upgrade),
 * else the model is unpriced (null) and the caller decides. Prices never come from a runtime or an agent definition.
 *
 * The catalogue is about 800 kB of data. It would bundle into the workflow sandbox (plain JS, no I/O), but no workflow
 * imports this module: charges are decided in activities, and the workflow bundle stays small.
 */
import { calcPrice, findProvider, type PriceCalculation, type Usage } from '@pydantic/genai-prices';
import { usdToMicros } from './budget';

export interface ModelPrice {
  input: number;
  output: number;
  cache_read?: number;
  cache_write?: number;
}

/** Anthropic's meaning: `input_tokens` are the uncached ones; cache reads and writes are counted apart. */
export interface TokenUsage {
  input_tokens: number;
  output_tokens: number;
  cache_read_input_tokens: number;
  cache_creation_input_tokens: number;
}

/** A team's overrides by model id, exactly as the agent or the runtime names the model. */
export type PriceTable = Record<string, ModelPrice>;

export interface ResolvedPrice {
  /** the name the price was found under (the request's model, or the agent's) */
  model: string;
  source: 'override' | 'catalogue';
  /** USD per million tokens; for a tiered catalogue price, the base rates */
  price: ModelPrice;
  /** where in the catalogue, when it came from there */
  catalogue: { provider: string; model: string; tiered: boolean } | null;
}

/**
 * The price of the first of `models` that has one, overrides before the catalogue: a runtime may report a request
 * under a dated or provider-specific name for the agent's model, and an admin's price for the agent's model is meant
 * for those requests too.
 */
export function resolvePrice(models: string | readonly string[], overrides: PriceTable): ResolvedPrice | null {
  const names = typeof models === 'string' ? [models] : models;
  for (const model of names) {
    const price = Object.hasOwn(overrides, model) ? overrides[model] : undefined;
    if (price) return { model, source: 'override', price, catalogue: null };
  }
  for (const model of names) {
    const found = fromCatalogue(model, { input_tokens: 0, output_tokens: 0 });
    if (found) return { model, source: 'catalogue', price: baseRates(found), catalogue: { provider: found.provider.id, model: found.model.id, tiered: isTiered(found) } };
  }
  return null;
}

export function priceFor(model: string, overrides: PriceTable): ModelPrice | null {
  return resolvePrice(model, overrides)?.price ?? null;
}

/** Micro-dollars for one request's usage; null when none of `models` has a price. */
export function priceUsageMicros(usage: TokenUsage, models: string | readonly string[], overrides: PriceTable): number | null {
  const resolved = resolvePrice(models, overrides);
  if (!resolved) return null;
  const input = tokens(usage.input_tokens);
  const output = tokens(usage.output_tokens);
  const cacheRead = tokens(usage.cache_read_input_tokens);
  const cacheWrite = tokens(usage.cache_creation_input_tokens);
  if (resolved.source === 'override') {
    const { price } = resolved;
    return Math.round(input * price.input + output * price.output + cacheRead * (price.cache_read ?? price.input) + cacheWrite * (price.cache_write ?? price.input));
  }
  // the library's input_tokens is the whole prompt, cache reads and writes included (its tiers are by prompt size)
  const found = fromCatalogue(resolved.model, { input_tokens: input + cacheRead + cacheWrite, output_tokens: output, cache_read_tokens: cacheRead, cache_write_tokens: cacheWrite });
  return found ? Math.round(found.total_price * 1_000_000) : null;
}

export type CostSource = 'reported' | 'priced' | 'none';

/** Why a charge is $0 rather than what the runtime said or what its tokens would cost. */
export type ChargeRefusal = 'negative_cost' | 'invalid_cost' | 'unpriced_model';

export interface ChargeDecision {
  /** what the ledger records: never negative */
  amountMicros: number;
  costSource: 'reported' | 'priced';
  /** the runtime's own figure, when it gave one */
  reportedMicros: number | null;
  refusal: ChargeRefusal | null;
  /** a priced charge and the runtime's own figure differ by more than a cent and 1 % (a cross-check, not charged) */
  mismatch: boolean;
}

/** the largest figure a ledger row holds exactly; a report beyond it is not a cost */
const MAX_CHARGE_MICROS = Number.MAX_SAFE_INTEGER;
const CROSS_CHECK_MICROS = 10_000;

/**
 * The charge for one model request. A runtime whose capability says `priced` is charged from its tokens and the
 * price table, whatever cost it reports (its figure can come from prices a tenant gave it). A `reported` runtime (a
 * remote service's own bill) is charged its figure, or its tokens when it gave none. Either way the amount is at
 * least 0: a negative or non-numeric report is charged 0 and says so (`refusal`), so a remote cannot free budget.
 */
export function decideCharge(params: { costSource: CostSource; usage: TokenUsage; models: readonly string[]; reportedUsd?: number; overrides: PriceTable }): ChargeDecision {
  const reportedUsd = params.reportedUsd;
  const reportedMicros = reportedUsd === undefined ? null : usdToMicros(reportedUsd);
  const validReport = reportedMicros !== null && Number.isFinite(reportedMicros) && Math.abs(reportedMicros) <= MAX_CHARGE_MICROS;
  if (params.costSource === 'reported' && reportedMicros !== null) {
    if (!validReport) return { amountMicros: 0, costSource: 'reported', reportedMicros: null, refusal: 'invalid_cost', mismatch: false };
    if (reportedMicros < 0) return { amountMicros: 0, costSource: 'reported', reportedMicros, refusal: 'negative_cost', mismatch: false };
    return { amountMicros: reportedMicros, costSource: 'reported', reportedMicros, refusal: null, mismatch: false };
  }
  const priced = priceUsageMicros(params.usage, params.models, params.overrides);
  const report = validReport ? reportedMicros : null;
  if (priced === null) {
    // a priced runtime's session was refused at start without a price; only a price removed since gets here
    return { amountMicros: 0, costSource: 'priced', reportedMicros: report, refusal: params.costSource === 'priced' ? 'unpriced_model' : null, mismatch: false };
  }
  const amountMicros = Math.min(Math.max(0, priced), MAX_CHARGE_MICROS);
  const mismatch = report !== null && Math.abs(report - amountMicros) > Math.max(CROSS_CHECK_MICROS, amountMicros / 100);
  return { amountMicros, costSource: 'priced', reportedMicros: report, refusal: null, mismatch };
}

/** A token count as the pricing reads it: a negative or non-numeric count (a hostile model server) is none. */
function tokens(n: number): number {
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/**
 * The catalogue's answer for a model id, bare (`gpt-4.1`: the library finds the provider) or `provider:model`
 * (`anthropic:claude-sonnet-4-5`, where the prefix is a provider the catalogue knows).
 */
function fromCatalogue(model: string, usage: Usage): PriceCalculation | null {
  const colon = model.indexOf(':');
  const providerId = colon > 0 ? model.slice(0, colon) : undefined;
  const prefixed = providerId !== undefined && findProvider({ providerId }) !== undefined;
  try {
    return calcPrice(usage, prefixed ? model.slice(colon + 1) : model, prefixed ? { providerId } : undefined);
  } catch {
    // usage the model's prices cannot take (the library throws rather than guess): no price
    return null;
  }
}

function rate(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (value && typeof value === 'object' && typeof (value as { base?: unknown }).base === 'number') return (value as { base: number }).base;
  return undefined;
}

function baseRates(found: PriceCalculation): ModelPrice {
  const p = found.model_price;
  const cacheRead = rate(p.cache_read_mtok);
  const cacheWrite = rate(p.cache_write_mtok);
  return { input: rate(p.input_mtok) ?? 0, output: rate(p.output_mtok) ?? 0, ...(cacheRead === undefined ? {} : { cache_read: cacheRead }), ...(cacheWrite === undefined ? {} : { cache_write: cacheWrite }) };
}

function isTiered(found: PriceCalculation): boolean {
  return ['input_mtok', 'output_mtok', 'cache_read_mtok', 'cache_write_mtok'].some((key) => typeof found.model_price[key] === 'object');
}
