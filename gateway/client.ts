/**
 * A worker's side of the gateway daemon (./daemon.ts): what the activities and the session sandboxes call.
 *
 * - `register` (the activity, before each turn): the session's credential and decrypted key, kept here until the
 *   session's sandbox asks for its model endpoint; answers the token the runtime is given in place of the key.
 * - `listen` (runtimes/kit/session-sandbox.ts, when it opens the session's sandbox): serves the session there, on the
 *   socket the sandbox's model bridge reaches; `unlisten` when the sandbox closes; `revoke` when the session ends.
 *
 * The daemon is found at `<runDir>/gateway-<version>.sock`, where the version is a hash of the gateway's code: a
 * redeployed worker with a changed gateway starts a daemon of its own, and the old one serves the streams it has
 * until it goes idle. When none answers, `start` is called (spawnGatewayDaemon: a detached process; tests start one in
 * process) and the connection is retried. When the daemon goes (killed, idle), every session this worker serves is
 * served again on the next call, so the daemon holds what the workers hold.
 *
 * Before each metered request the daemon asks `onAdmit` (the budget hold); each record of one arrives at `onRecord`,
 * and is acknowledged once that settles. When it throws, or this worker goes first, the daemon sends the record again
 * when the session is next served, here or on another worker.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, readdir } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Admission, ModelRequestAsked, ModelRequestRecord } from './gateway';
import type { ControlRequest, FromDaemon, ListenAt, ToDaemon } from './daemon';
import type { SessionTokens } from './tokens';
import { startProcess } from '../runtimes/kit/process';
import { stopRecordedProcess } from '../runtimes/kit/servers';

export interface GatewayClientOptions {
  /** the worker's run dir (`<data dir>/run`): the control socket is there */
  runDir: string;
  tokens: SessionTokens;
  /** starts a daemon at `controlPath` when none answers */
  start(controlPath: string): Promise<void>;
  /** may this metered request go (a budget hold); without it every request may */
  onAdmit?(request: ModelRequestAsked): Promise<Admission>;
  /** a metered request's record; acknowledged to the daemon once this settles without throwing */
  onRecord?(record: ModelRequestRecord): Promise<void>;
}

export interface GatewayRegistration {
  sessionId: string;
  /** the credential whose key is injected ('' when the agent has none) */
  credentialId: string;
  /** decrypted ('' when the agent's provider takes no key) */
  apiKey: string;
}

export interface GatewayClient {
  /** the session's credential and key, for its next `listen`; answers the token its runtime is given instead */
  register(session: GatewayRegistration): string;
  /**
   * Serves the registered session for `baseUrl` (its provider's base URL) at `at`; answers the loopback port when
   * `at` asks for one, else null.
   */
  listen(sessionId: string, baseUrl: string, at: ListenAt): Promise<number | null>;
  unlisten(sessionId: string): Promise<void>;
  /** the session ended: its tokens are refused from now on */
  revoke(sessionId: string): Promise<void>;
  close(): void;
}

const HERE = fileURLToPath(new URL('.', import.meta.url));
const REPO = fileURLToPath(new URL('..', import.meta.url));

/** A hash of the code the daemon runs: a daemon of other code is another daemon. */
export const GATEWAY_VERSION = createHash('sha256')
  .update(['daemon.ts', 'gateway.ts', 'usage.ts', 'main.ts'].map((f) => readFileSync(join(HERE, f), 'utf8')).join('\0'))
  .digest('hex')
  .slice(0, 12);

export function controlPathIn(runDir: string): string {
  return join(runDir, `gateway-${GATEWAY_VERSION}.sock`);
}

interface Served {
  registration: GatewayRegistration & { tokens: string[] };
  listen?: { baseUrl: string; at: ListenAt };
}

export function createGatewayClient(opts: GatewayClientOptions): GatewayClient {
  const controlPath = controlPathIn(opts.runDir);
  const served = new Map<string, Served>();
  const waiting = new Map<number, { resolve(m: Extract<FromDaemon, { type: 'done' }>): void; reject(e: Error): void }>();
  let nextId = 0;
  let connection: Promise<Socket> | null = null;
  let live: Socket | null = null;
  let closed = false;

  function attach(socket: Socket): void {
    // (the socket's errors are re-emitted on the reader: the socket's own handler deals with them)
    createInterface({ input: socket, crlfDelay: Infinity }).on('error', () => {}).on('line', (line) => {
      const message = JSON.parse(line) as FromDaemon;
      if (message.type === 'done') {
        waiting.get(message.id)?.resolve(message);
        waiting.delete(message.id);
        return;
      }
      if (message.type === 'admit') {
        // a failure to decide is a refusal the runtime may retry: nothing goes out unheld
        Promise.resolve(opts.onAdmit?.(message.request) ?? { ok: true as const })
          .catch((err: Error): Admission => ({ ok: false, status: 429, message: `the budget could not be checked (${err.message}); try again shortly` }))
          .then((admission) => write(socket, { type: 'admission', ask: message.ask, admission }));
        return;
      }
      const record: ModelRequestRecord = { ...message.record, startedAt: new Date(message.record.startedAt) };
      Promise.resolve(opts.onRecord?.(record)).then(
        () => write(socket, { type: 'ack', seq: message.seq }),
        // not taken: the daemon sends it again when the session is next served
        () => write(socket, { type: 'nack', seq: message.seq }),
      );
    });
    socket.on('error', () => socket.destroy());
    socket.once('close', () => {
      if (live === socket) {
        live = null;
        connection = null;
      }
      for (const [id, w] of waiting) {
        w.reject(new ConnectionLost('the gateway daemon closed the connection'));
        waiting.delete(id);
      }
    });
  }

  function write(socket: Socket, message: ToDaemon): void {
    if (!socket.destroyed) socket.write(`${JSON.stringify(message)}\n`);
  }

  function request(socket: Socket, message: ControlRequest): Promise<Extract<FromDaemon, { type: 'done' }>> {
    const id = ++nextId;
    return new Promise((resolve, reject) => {
      waiting.set(id, {
        resolve: (m) => (m.error ? reject(new Error(`gateway daemon: ${m.error}`)) : resolve(m)),
        reject,
      });
      write(socket, { ...message, id } as ToDaemon);
    });
  }

  /** `start`: start a daemon when none answers (a revoke never does: nothing serves the session then) */
  async function dial(start: boolean): Promise<Socket | null> {
    const tryConnect = () =>
      new Promise<Socket | null>((resolve) => {
        const socket = connect(controlPath);
        socket.once('connect', () => resolve(socket));
        socket.once('error', () => resolve(null));
      });
    let socket = await tryConnect();
    if (!socket && !start) return null;
    if (!socket) {
      await opts.start(controlPath);
      for (let i = 0; i < 300 && !socket; i++) {
        socket = await tryConnect();
        if (!socket) await sleep(50);
      }
    }
    if (!socket) throw new Error(`the gateway daemon did not answer on ${controlPath} (its log: ${controlPath}.log)`);
    live = socket;
    attach(socket);
    // a new daemon (or the same, after a lost connection) gets every session this worker serves
    for (const entry of served.values()) {
      if (entry.listen) await request(socket, serveMessage(entry));
    }
    return socket;
  }

  async function socket(start = true): Promise<Socket | null> {
    if (closed) throw new Error('the gateway client is closed');
    if (connection) return connection;
    const dialled = dial(start);
    connection = dialled.then((s) => s ?? Promise.reject(new Error('no gateway daemon')));
    connection.catch(() => (connection = null));
    return dialled;
  }
  class ConnectionLost extends Error {}
  /**
   * A request to the daemon, sent again once on a new connection when the one it went on was lost (the daemon was
   * stopped or replaced between two calls; requests are idempotent)
   */
  async function call(message: ControlRequest, start = true): Promise<Extract<FromDaemon, { type: 'done' }> | null> {
    for (let attempt = 0; ; attempt++) {
      const s = await socket(start);
      if (!s) return null;
      try {
        return await request(s, message);
      } catch (err) {
        if (!(err instanceof ConnectionLost) || attempt > 0) throw err;
      }
    }
  }

  const serveMessage = (entry: Served) => ({ type: 'serve' as const, session: { ...entry.registration, baseUrl: entry.listen!.baseUrl }, at: entry.listen!.at });

  return {
    register(session) {
      const tokens = opts.tokens.all(session.sessionId, session.credentialId);
      const previous = served.get(session.sessionId);
      served.set(session.sessionId, { registration: { ...session, tokens }, listen: previous?.listen });
      // a key rotated since the sandbox was opened: the daemon gets the new one before the runtime's next request
      if (previous?.listen && (previous.registration.apiKey !== session.apiKey || previous.registration.credentialId !== session.credentialId)) {
        void call(serveMessage(served.get(session.sessionId)!)).catch(() => {});
      }
      return tokens[0]!;
    },
    async listen(sessionId, baseUrl, at) {
      const entry = served.get(sessionId);
      if (!entry) throw new Error(`session ${sessionId} is not registered with the model gateway`);
      // connected first: a new connection serves again what was served before, not this session twice
      await socket();
      entry.listen = { baseUrl, at };
      return (await call(serveMessage(entry)))?.port ?? null;
    },
    async unlisten(sessionId) {
      const entry = served.get(sessionId);
      if (!entry?.listen) return;
      entry.listen = undefined;
      await call({ type: 'unlisten', sessionId });
    },
    async revoke(sessionId) {
      served.delete(sessionId);
      await call({ type: 'revoke', sessionId }, false);
    },
    close() {
      closed = true;
      void connection?.then((s) => s.destroy()).catch(() => {});
      connection = null;
    },
  };
}

/**
 * Starts the daemon as a detached process (it outlives this worker), logging to `<controlPath>.log`, with no secret
 * in its environment: the address rule (`allowPrivate`) is all it is told.
 */
export async function spawnGatewayDaemon(controlPath: string, allowPrivate: readonly string[]): Promise<void> {
  await mkdir(join(controlPath, '..'), { recursive: true, mode: 0o700 });
  const log = await open(`${controlPath}.log`, 'a', 0o600);
  try {
    const child = startProcess(process.execPath, ['--import', 'tsx', join(HERE, 'main.ts'), controlPath], {
      cwd: REPO,
      detached: true,
      stdout: log.fd,
      stderr: log.fd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', AGENTPLANE_EGRESS_ALLOW_PRIVATE: allowPrivate.join(',') },
    });
    child.unref();
    child.catch(() => undefined);
  } finally {
    await log.close();
  }
}

/**
 * Stops the gateway daemons of a data dir's run dir (a test's teardown, `npm run dev` clearing what a crashed run
 * left): they outlive workers by design.
 */
export async function stopGatewayDaemons(runDir: string): Promise<void> {
  const files = (await readdir(runDir).catch(() => [] as string[])).filter((f) => /^gateway-[0-9a-f]+\.sock\.pid$/.test(f));
  await Promise.all(
    // only a daemon of this run dir is ours (pids get reused)
    files.map((file) => stopRecordedProcess(join(runDir, file), (cmdline) => cmdline.includes(join(runDir, file.replace(/\.pid$/, ''))))),
  );
}
