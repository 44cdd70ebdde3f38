/**
 * The `agentplane` command: finds the command by its words in one table, parses its options with util.parseArgs,
 * runs it, and turns every failure into a message on stderr and a documented exit code (errors.ts). The API key
 * is masked in anything printed.
 */
import type { Readable, Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { agentCommands } from './agents.commands';
import { createClient, type ApiClient } from './client';
import type { Command, CommandContext, CommandTable } from './command';
import { resolveCredentials, type Env } from './config';
import { CliError, EXIT, usageError, type ExitCode } from './errors';
import { loginCommands } from './login.command';
import { createOutput } from './output';
import { scheduleCommands } from './schedules.commands';
import { sessionCommands } from './sessions.commands';
import { usageCommands } from './usage.command';

// one line per command group; a new group is one more spread here
const COMMANDS: CommandTable = {
  ...loginCommands,
  ...agentCommands,
  ...sessionCommands,
  ...scheduleCommands,
  ...usageCommands,
};

const GLOBAL_OPTIONS = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;
const GLOBAL_FLAGS = { '--json': true, '--help': true, '-h': true };

export interface Io {
  env: Env;
  stdin: Readable & { isTTY?: boolean };
  stdout: Writable;
  stderr: Writable;
}

export async function main(argv: string[], io: Io): Promise<ExitCode> {
  const secrets = new Set<string>();
  const mask = (text: string) => [...secrets].reduce((t, s) => t.split(s).join('***'), text);
  const wantsJson = argv.includes('--json');
  const out = createOutput({ json: wantsJson, stdout: io.stdout, stderr: io.stderr });
  try {
    const found = findCommand(argv);
    if (!found) {
      const unknown = argv.find((a) => !a.startsWith('-'));
      if (unknown && unknown !== 'help') throw usageError(`unknown command "${argv.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ')}" (agentplane help lists them)`);
      out.line(help());
      return EXIT.ok;
    }
    const { name, command, rest } = found;
    const parsed = parseCommandArgs(name, command, rest);
    if (parsed.values.help) {
      out.line(`usage: agentplane ${name} ${command.usage}\n\n${command.summary}`);
      return EXIT.ok;
    }
    let client: ApiClient | undefined;
    const ctx: CommandContext = {
      out,
      env: io.env,
      stdin: io.stdin,
      secret: (value) => void (value && secrets.add(value)),
      async api() {
        if (!client) {
          const credentials = await resolveCredentials(io.env);
          secrets.add(credentials.apiKey);
          client = createClient(credentials);
        }
        return client;
      },
    };
    return (await command.run(ctx, parsed)) ?? EXIT.ok;
  } catch (err) {
    const code = err instanceof CliError ? err.exitCode : EXIT.api;
    out.error(mask(`agentplane: ${(err as Error).message}`));
    return code;
  }
}

/** The command whose words come first (global flags may precede them); the rest is its arguments. */
function findCommand(argv: string[]): { name: string; command: Command; rest: string[] } | null {
  const wordAt = argv.map((a, i) => [a, i] as const).filter(([a]) => !(a in GLOBAL_FLAGS));
  for (const length of [2, 1]) {
    const words = wordAt.slice(0, length);
    const command = COMMANDS[words.map(([w]) => w).join(' ')];
    if (command && words.length === length && words.every(([w]) => !w.startsWith('-'))) {
      const taken = new Set(words.map(([, i]) => i));
      return { name: words.map(([w]) => w).join(' '), command, rest: argv.filter((_, i) => !taken.has(i)) };
    }
  }
  return null;
}

function parseCommandArgs(name: string, command: Command, rest: string[]) {
  const usage = `usage: agentplane ${name} ${command.usage}`;
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: { ...command.options, ...GLOBAL_OPTIONS }, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError(`${(err as Error).message}\n${usage}`);
  }
  if (parsed.values.help) return parsed;
  const [min, max] = command.args ?? [0, 0];
  const count = parsed.positionals.length;
  if (count < min || count > max) throw usageError(`${count < min ? 'missing arguments' : `unexpected argument "${parsed.positionals[max]}"`}\n${usage}`);
  return parsed;
}

function help(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length));
  return [
    'usage: agentplane COMMAND [options] [--json]',
    '',
    'commands (agentplane COMMAND --help shows its options):',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    '--json prints JSON for scripts (one JSON line per event for tail).',
    'AGENTPLANE_URL and AGENTPLANE_API_KEY override the stored login; AGENTPLANE_CONFIG moves the file',
    '(default ~/.config/agentplane/config.json).',
    '',
    'exit codes: 0 ok, 1 API or server error, 2 usage error (bad arguments, agent file or request),',
    '            3 not found, 4 no key or key refused',
  ].join('\n');
}
