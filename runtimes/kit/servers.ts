/**
 * Runtime servers that outlive their worker by design (persistent, in their session's sandbox: OpenCode, Hermes). Each
 * is recorded in `<root>/<sessionId>/server.json` (`{ pid, port, … }`, mode 600), and the pid is trusted only while
 * `isOurs(pid, port)` says it still is that server (pids get reused).
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { alive, signalGroup } from './process';

export type IsOurServer = (pid: number, port: number) => boolean;

/**
 * Ends the process group `pid` leads: SIGTERM, then SIGKILL after `graceMs` (0: SIGKILL at once, for a server that
 * drains for minutes on SIGTERM); waits up to 10 s for the leader to be gone.
 */
export async function endProcessGroup(pid: number, graceMs: number): Promise<void> {
  if (graceMs > 0) {
    signalGroup(pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && alive(pid)) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (!alive(pid)) return;
  signalGroup(pid, 'SIGKILL');
  for (let waited = 0; alive(pid) && waited < 10_000; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
}

/** Ends the server's process group: SIGTERM, then SIGKILL after 5 s; nothing when the pid is no longer ours. */
export async function stopServer(pid: number, port: number, isOurs: IsOurServer): Promise<void> {
  if (isOurs(pid, port)) await endProcessGroup(pid, 5_000);
}

/**
 * Stops every server recorded under `root` but those of `keep`'s sessions (tests' teardown, a worker's orderly
 * shutdown when its sessions are not coming back, `npm run dev` clearing what a crashed run left), and removes their
 * records; answers how many were running.
 */
export async function stopRecordedServers(root: string, isOurs: IsOurServer, keep: (sessionId: string) => boolean = () => false): Promise<number> {
  const sessions = await readdir(root).catch(() => [] as string[]);
  let stopped = 0;
  for (const session of sessions.filter((id) => !keep(id))) {
    const path = join(root, session, 'server.json');
    try {
      const file = JSON.parse(await readFile(path, 'utf8')) as { pid: number; port: number };
      if (isOurs(file.pid, file.port)) {
        await stopServer(file.pid, file.port, isOurs);
        stopped++;
      }
      await rm(path, { force: true });
    } catch {
      // no server recorded for that session
    }
  }
  return stopped;
}

/** Whether a server answers on the Unix socket at `path` (a bridge, a daemon's control socket). */
export function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * SIGTERMs the process group of the pid recorded in `pidFile`, when it is still alive and its command line says it is
 * ours (`isOurs`: pids get reused). For helpers that outlive their worker by design: a model bridge, the gateway daemon.
 */
export async function stopRecordedProcess(pidFile: string, isOurs: (cmdline: string) => boolean): Promise<void> {
  const pid = Number(await readFile(pidFile, 'utf8').catch(() => ''));
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (isOurs(cmdline)) signalGroup(pid, 'SIGTERM');
}
