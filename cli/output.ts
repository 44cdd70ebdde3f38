/**
 * What a command prints: aligned tables and sentences for people, one JSON document (or one JSON line per event
 * when following a stream) with `--json` for scripts. Commands write through this, never to console directly.
 */
import type { Writable } from 'node:stream';

export interface Output {
  readonly json: boolean;
  line(text?: string): void;
  /** a JSON value on one line (tail) or pretty (everything else) */
  value(value: unknown, opts?: { compact?: boolean }): void;
  table(rows: Array<Record<string, unknown>>, columns: string[]): void;
  error(text: string): void;
}

export function createOutput(opts: { json: boolean; stdout: Writable; stderr: Writable }): Output {
  const { stdout, stderr } = opts;
  return {
    json: opts.json,
    line: (text = '') => void stdout.write(`${text}\n`),
    value: (value, { compact = false } = {}) => void stdout.write(`${compact ? JSON.stringify(value) : JSON.stringify(value, null, 2)}\n`),
    table(rows, columns) {
      const cells = rows.map((row) => columns.map((c) => cell(row[c])));
      const header = columns.map((c) => c.toUpperCase().replace(/_/g, ' '));
      const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
      for (const row of [header, ...cells]) stdout.write(`${row.map((v, i) => (i === row.length - 1 ? v : v.padEnd(widths[i]!))).join('  ')}\n`);
    },
    error: (text) => void stderr.write(`${text}\n`),
  };
}

function cell(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}
