/**
 * One command = one entry in a table keyed by its words ("agents apply"). A command group is a file exporting
 * such a table; main.ts merges them. Adding a group (schedules, say) is a new file and one line in main.ts.
 */
import type { Readable } from 'node:stream';
import type { ParseArgsConfig } from 'node:util';
import type { ApiClient } from './client';
import type { Env } from './config';
import type { ExitCode } from './errors';
import type { Output } from './output';
import { usageError } from './errors';

export interface CommandContext {
  out: Output;
  env: Env;
  stdin: Readable & { isTTY?: boolean };
  /** the API client; credentials are resolved on first use, so `login` and `help` need none */
  api(): Promise<ApiClient>;
  /** a value never to print: error messages have it masked */
  secret(value: string): void;
}

export interface Invocation {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

export interface Command {
  /** the arguments after the command words, for help and usage errors: '-f FILE|DIR [--dry-run]' */
  usage: string;
  summary: string;
  options?: NonNullable<ParseArgsConfig['options']>;
  /** how many positional arguments it takes, [min, max] */
  args?: [number, number];
  run(ctx: CommandContext, args: Invocation): Promise<ExitCode | void>;
}

export type CommandTable = Record<string, Command>;

/** A string option's value, or undefined; `required` turns absence into a usage error naming the flag. */
export function option(args: Invocation, name: string, opts: { required: true }): string;
export function option(args: Invocation, name: string, opts?: { required?: false }): string | undefined;
export function option(args: Invocation, name: string, opts: { required?: boolean } = {}): string | undefined {
  const value = args.values[name];
  if (typeof value === 'string') return value;
  if (opts.required) throw usageError(`--${name} is required`);
  return undefined;
}

export const flag = (args: Invocation, name: string): boolean => args.values[name] === true;
