/**
 * Turning token usage into money for runtimes that do not report cost themselves.
 * Prices are USD per million tokens. The table is data; admins override it per team (issue: governance).
 */
export interface ModelPrice {
  input: number;
  output: number;
  cache_read?: number;
  cache_write?: number;
}

export interface TokenUsage {
  input_tokens: number;
  output_tokens: number;
  cache_read_input_tokens: number;
  cache_creation_input_tokens: number;
}

export const DEFAULT_PRICES: Record<string, ModelPrice> = {
  'claude-sonnet-4-5': { input: 3, output: 15, cache_read: 0.3, cache_write: 3.75 },
  'claude-opus-4-1': { input: 15, output: 75, cache_read: 1.5, cache_write: 18.75 },
  'gpt-4.1': { input: 2, output: 8, cache_read: 0.5 },
};

/** Cost in micro-dollars; an unknown model costs nothing here and is flagged by the caller. */
export function priceUsageMicros(usage: TokenUsage, price: ModelPrice | undefined): number {
  if (price === undefined) return 0;
  const perToken = (usdPerMillion: number) => usdPerMillion; // USD per 1M tokens == micro-USD per token
  return Math.round(
    usage.input_tokens * perToken(price.input) +
      usage.output_tokens * perToken(price.output) +
      usage.cache_read_input_tokens * perToken(price.cache_read ?? price.input) +
      usage.cache_creation_input_tokens * perToken(price.cache_write ?? price.input),
  );
}
