/**
 * Cron expressions as schedules accept them: five fields (minute hour day-of-month month day-of-week) or one of the
 * @-macros. Checked before Temporal sees them so a bad expression is a 400 naming the field, not a server error.
 */
const MACROS = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly']);
const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const DAYS = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];
const FIELDS: Array<{ name: string; min: number; max: number; names?: string[]; namesFrom?: number }> = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day of month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: MONTHS, namesFrom: 1 },
  { name: 'day of week', min: 0, max: 6, names: DAYS, namesFrom: 0 },
];

/** Why the expression is not one we accept, or null when it is. */
export function cronProblem(expression: string): string | null {
  const trimmed = expression.trim();
  if (trimmed.startsWith('@')) return MACROS.has(trimmed.toLowerCase()) ? null : `unknown macro ${trimmed}`;
  const parts = trimmed.split(/\s+/);
  if (parts.length !== 5) return `expected 5 fields (minute hour day-of-month month day-of-week), got ${parts.length}`;
  for (const [i, part] of parts.entries()) {
    const field = FIELDS[i]!;
    for (const item of part.split(',')) {
      const problem = itemProblem(item, field);
      if (problem) return `${field.name}: ${problem}`;
    }
  }
  return null;
}

function itemProblem(item: string, field: (typeof FIELDS)[number]): string | null {
  const [range, step, extra] = item.split('/');
  if (extra !== undefined || range === undefined || range === '') return `"${item}" is not a value, range or step`;
  if (step !== undefined && !/^[1-9]\d*$/.test(step)) return `step "${step}" is not a positive number`;
  if (range === '*') return null;
  const bounds = range.split('-');
  if (bounds.length > 2) return `"${range}" is not a value or range`;
  const values = bounds.map((b) => valueOf(b, field));
  if (values.some((v) => v === null)) return `"${range}" is outside ${field.min}-${field.max}`;
  if (values.length === 2 && values[0]! > values[1]!) return `range "${range}" runs backwards`;
  return null;
}

function valueOf(text: string, field: (typeof FIELDS)[number]): number | null {
  const named = field.names?.indexOf(text.toUpperCase()) ?? -1;
  if (named >= 0) return named + (field.namesFrom ?? 0);
  if (!/^\d+$/.test(text)) return null;
  const n = Number(text);
  return n >= field.min && n <= field.max ? n : null;
}

/** Whether the IANA time zone is known (the runtime's tz database; Temporal uses its own, which agrees on real zones). */
export function isKnownTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}
