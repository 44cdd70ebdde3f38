/**
 * `agentplane login` checks a key against the API and stores the URL and key for later commands. The key is read
 * from stdin (piped, or typed at a prompt that does not echo it), never from an argument: arguments end up in
 * shell history and in every other user's `ps`.
 */
import { createClient } from './client';
import { option, type CommandContext, type CommandTable } from './command';
import { writeConfigFile } from './config';
import { CliError, EXIT, usageError } from './errors';

export const loginCommands: CommandTable = {
  login: {
    usage: '--url URL   (the API key is read from stdin, or prompted for)',
    summary: 'check an API key and store it with the URL (owner-only file)',
    options: { url: { type: 'string' } },
    async run(ctx, args) {
      const url = (option(args, 'url') ?? ctx.env.AGENTPLANE_URL)?.replace(/\/+$/, '');
      if (!url) throw usageError('--url is required');
      if (!/^https?:\/\/[^/]/.test(url)) throw usageError(`--url: not an http(s) URL: ${url}`);
      const apiKey = (await readKey(ctx)).trim();
      if (!apiKey) throw new CliError(EXIT.auth, 'no API key given on stdin');
      ctx.secret(apiKey);
      const team = await createClient({ url, apiKey }).get<{ id: string; name: string }>('/v1/teams/current');
      const path = await writeConfigFile(ctx.env, { url, api_key: apiKey });
      if (ctx.out.json) return ctx.out.value({ url, team, config: path });
      ctx.out.line(`logged in to ${url} as team ${team.name} (${team.id}); saved to ${path}`);
    },
  },
};

async function readKey(ctx: CommandContext): Promise<string> {
  const { stdin } = ctx;
  if (!stdin.isTTY) {
    let text = '';
    for await (const chunk of stdin) text += String(chunk);
    return text.split('\n')[0] ?? '';
  }
  // a terminal: raw mode, so the key is not echoed
  const tty = stdin as NodeJS.ReadStream;
  process.stderr.write('API key: ');
  tty.setRawMode(true);
  tty.resume();
  try {
    let key = '';
    for await (const chunk of tty) {
      for (const ch of String(chunk)) {
        if (ch === '\u0003') throw new CliError(EXIT.usage, 'cancelled');
        if (ch === '\r' || ch === '\n') return key;
        key = ch === '\u007f' ? key.slice(0, -1) : key + ch;
      }
    }
    return key;
  } finally {
    tty.setRawMode(false);
    tty.pause();
    process.stderr.write('\n');
  }
}
