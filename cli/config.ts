/**
 * Where the CLI finds the API and its key: AGENTPLANE_URL / AGENTPLANE_API_KEY, else the file `agentplane login`
 * wrote ($AGENTPLANE_CONFIG, else ~/.config/agentplane/config.json). The file holds a secret, so it is written
 * owner-only (0600) in an owner-only directory, and re-tightened if it already existed with looser bits.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CliError, EXIT } from './errors';

export type Env = Record<string, string | undefined>;

export interface ConfigFile {
  url: string;
  api_key: string;
}

export interface Credentials {
  url: string;
  apiKey: string;
}

export function configPath(env: Env): string {
  if (env.AGENTPLANE_CONFIG) return env.AGENTPLANE_CONFIG;
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'agentplane', 'config.json');
}

export async function readConfigFile(env: Env): Promise<Partial<ConfigFile>> {
  const path = configPath(env);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new CliError(EXIT.usage, `cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as Partial<ConfigFile>;
  } catch {
    throw new CliError(EXIT.usage, `${path} is not JSON: run agentplane login again`);
  }
}

export async function writeConfigFile(env: Env, config: ConfigFile): Promise<string> {
  const path = configPath(env);
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFile(path, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  // `mode` applies only when the file is created: an existing file keeps its bits unless we set them
  await chmod(path, 0o600);
  return path;
}

/** The URL and key every command but `login` uses; environment variables win over the file. */
export async function resolveCredentials(env: Env): Promise<Credentials> {
  const file = await readConfigFile(env);
  const url = env.AGENTPLANE_URL || file.url;
  const apiKey = env.AGENTPLANE_API_KEY || file.api_key;
  if (!apiKey) throw new CliError(EXIT.auth, 'no API key: run `agentplane login --url URL` or set AGENTPLANE_API_KEY');
  if (!url) throw new CliError(EXIT.usage, 'no API URL: run `agentplane login --url URL` or set AGENTPLANE_URL');
  return { url: url.replace(/\/+$/, ''), apiKey };
}
