/**
 * A Postgres instance of our own (initdb + pg_ctl, data under a temp dir, a free port, trust auth on 127.0.0.1), for
 * runs that restart Postgres. The machine's shared cluster is never touched: other test files run on it.
 *
 *   const pg = await startPrivatePostgres();
 *   // ... pg.url (postgres://postgres@127.0.0.1:PORT/postgres)
 *   await pg.restart('immediate');   // like a crash: connections are cut, the server comes back on the same port
 *   await pg.stop();
 *
 * Debian's server binaries (/usr/lib/postgresql/<major>/bin, the highest major). Postgres refuses to run as root,
 * so when this process is root the binaries run as the `postgres` user through runuser.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findFreePort } from '../../scripts/temporal-dev-server';

const run = promisify(execFile);

export interface PrivatePostgres {
  /** superuser connection string to the `postgres` database */
  url: string;
  port: number;
  dataDir: string;
  /** `pg_ctl restart`: `fast` (clean shutdown, clients disconnected) or `immediate` (no checkpoint, like a crash) */
  restart(mode?: 'fast' | 'immediate'): Promise<void>;
  stop(): Promise<void>;
}

async function binDir(): Promise<string> {
  const versions = (await readdir('/usr/lib/postgresql').catch(() => [] as string[])).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(a) - Number(b));
  const version = versions.at(-1);
  if (!version) throw new Error('no PostgreSQL server under /usr/lib/postgresql: apt-get install -y postgresql');
  return `/usr/lib/postgresql/${version}/bin`;
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = await binDir();
  const root = await mkdtemp(join(tmpdir(), 'agentplane-pg-'));
  const dataDir = join(root, 'data');
  const logFile = join(root, 'postgres.log');
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const uid = Number(stdout.trim());
    const { stdout: gidOut } = await run('id', ['-g', 'postgres']);
    await chown(root, uid, Number(gidOut.trim()));
    await chmod(root, 0o700);
  }
  const pgCommand = (tool: string, args: string[]) => (asRoot ? run('runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]) : run(join(bin, tool), args));

  await pgCommand('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8']);
  const port = await findFreePort();
  // sockets only in the data dir (the shared /var/run/postgresql belongs to the machine's cluster); fsync off: a
  // throwaway instance, and the 2-core machine is shared
  const options = `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${dataDir} -c fsync=off -c max_connections=200`;
  const start = () => pgCommand('pg_ctl', ['-D', dataDir, '-l', logFile, '-o', options, '-w', '-t', '60', 'start']);
  await start();
  let stopped = false;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    async restart(mode = 'fast') {
      await pgCommand('pg_ctl', ['-D', dataDir, '-m', mode, '-w', '-t', '60', 'stop']);
      await start();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await pgCommand('pg_ctl', ['-D', dataDir, '-m', 'immediate', '-w', '-t', '60', 'stop']).catch(() => undefined);
      await rm(root, { recursive: true, force: true });
    },
  };
}
