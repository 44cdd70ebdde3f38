/**
 * The gateway daemon: the model gateway (./gateway.ts) in a process of its own, one per worker host and data dir,
 * which the workers there drive over a control socket (./client.ts).
 *
 * Why a process of its own: a session's runtime server outlives a crashed or redeployed worker (its sandbox is kept,
 * and the next worker reattaches), and so must the model request it is in the middle of. A gateway inside the worker
 * would cut that request, and the runtime would send it again: the provider paid twice, the prompt sent twice.
 *
 * What it holds: each served session's provider, credential, decrypted key and accepted tokens, in memory only (a
 * worker sends them over the control socket, which only the worker's user can open: mode 600, in the worker's run dir,
 * which no sandbox mounts). It never reads the database or the master key.
 *
 * The control protocol: one JSON object per line, both ways.
 * - worker → daemon: `serve` {id, session, at} (register the session and listen for it at `at`: the Unix socket its
 *   sandbox's model bridge reaches, given to the sandbox's user, or a loopback port for a provider without host
 *   sockets; idempotent), `unlisten` {id, sessionId}, `revoke` {id, sessionId} (its tokens are refused from now on),
 *   `ack` {seq} (charged) or `nack` {seq} (not now: sent again at the session's next `serve`).
 * - daemon → worker: `done` {id, port?, error?}; `admit` {ask, request}: may this request go (the worker holds its
 *   estimate on the budgets), answered by `admission` {ask, admission}; `record` {seq, record}: a metered request's
 *   record, sent to the connection that last served its session, again to the next one until a worker acknowledges
 *   it. A request whose session no connected worker serves (its worker was killed, the next one has not reattached
 *   yet) waits for one, up to `admitWaitMs`, then is refused with a 429 the runtime may retry.
 */
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Server } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import type { Dispatcher } from 'undici';
import { socketAnswers } from '../runtimes/kit/servers';
import { createModelGateway, type Admission, type GatewaySession, type ModelGateway, type ModelRequestAsked, type ModelRequestRecord } from './gateway';

/** Where a session's server listens: the sandbox's bridge socket (owned by the sandbox's user), or a loopback port. */
export type ListenAt = { path: string; uid: number; gid: number } | { port: 0 };

/** A record as it crosses the socket (dates as ISO strings). */
export type WireRecord = Omit<ModelRequestRecord, 'startedAt'> & { startedAt: string };

export type ToDaemon =
  | { type: 'serve'; id: number; session: GatewaySession; at: ListenAt }
  | { type: 'unlisten'; id: number; sessionId: string }
  | { type: 'revoke'; id: number; sessionId: string }
  | { type: 'ack'; seq: number }
  | { type: 'nack'; seq: number }
  | { type: 'admission'; ask: number; admission: Admission };

/** A request that is answered (`done`), without the id the client gives it. */
export type ControlRequest<T = Extract<ToDaemon, { id: number }>> = T extends unknown ? Omit<T, 'id'> : never;

export type FromDaemon =
  | { type: 'done'; id: number; port?: number; error?: string }
  | { type: 'record'; seq: number; record: WireRecord }
  | { type: 'admit'; ask: number; request: ModelRequestAsked };

export interface GatewayDaemonOptions {
  /** the control socket's path */
  controlPath: string;
  /** how the gateway reaches providers: the egress guard's checked dispatcher */
  dispatcher: Dispatcher;
  log?(level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>): void;
  /** how long a request waits for a worker to serve its session (default 60 s) */
  admitWaitMs?: number;
}

export interface GatewayDaemon {
  readonly gateway: ModelGateway;
  /** worker connections now open */
  connections(): number;
  /** records no worker has acknowledged yet */
  pending(): number;
  close(): Promise<void>;
}

interface Listening {
  /** `path` or `port` as a key: a serve to the same place keeps the listener, and the streams on it */
  where: string;
  server: Server;
  port: number | null;
}

export async function startGatewayDaemon(opts: GatewayDaemonOptions): Promise<GatewayDaemon> {
  const log = opts.log ?? (() => {});
  const listening = new Map<string, Listening>();
  /** the connection that last served each session: its records go there */
  const owners = new Map<string, Socket>();
  /** records no worker has acknowledged, with the connection each was last sent to */
  const pending = new Map<number, { record: WireRecord; sentTo: Socket | null }>();
  let seq = 0;
  const connections = new Set<Socket>();
  /** admissions asked of a worker, by ask number: answered, or null when that worker's connection went */
  const asks = new Map<number, { socket: Socket; answer(a: Admission | null): void }>();
  let askSeq = 0;
  /** requests waiting for a worker to serve their session */
  const awaitingOwner = new Map<string, Set<() => void>>();
  const admitWaitMs = opts.admitWaitMs ?? 60_000;

  function ownerServed(sessionId: string): void {
    for (const wake of awaitingOwner.get(sessionId) ?? []) wake();
    awaitingOwner.delete(sessionId);
  }

  async function admit(request: ModelRequestAsked): Promise<Admission> {
    const deadline = Date.now() + admitWaitMs;
    for (;;) {
      const owner = owners.get(request.sessionId);
      if (owner) {
        const n = ++askSeq;
        const answer = await new Promise<Admission | null>((resolve) => {
          asks.set(n, { socket: owner, answer: resolve });
          send(owner, { type: 'admit', ask: n, request });
        });
        asks.delete(n);
        if (answer) return answer;
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) return { ok: false, status: 429, message: 'no worker serves this session right now (it is being moved); try again shortly' };
      await new Promise<void>((resolve) => {
        let set = awaitingOwner.get(request.sessionId);
        if (!set) awaitingOwner.set(request.sessionId, (set = new Set()));
        const wake = () => {
          clearTimeout(timer);
          set!.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        set.add(wake);
      });
    }
  }

  const send = (socket: Socket, message: FromDaemon) => {
    if (!socket.destroyed) socket.write(`${JSON.stringify(message)}\n`);
  };

  const gateway = createModelGateway({
    dispatcher: opts.dispatcher,
    admit,
    onRequest(record) {
      const wire: WireRecord = { ...record, startedAt: record.startedAt.toISOString() };
      const n = ++seq;
      const owner = owners.get(record.sessionId) ?? null;
      pending.set(n, { record: wire, sentTo: owner });
      if (owner) send(owner, { type: 'record', seq: n, record: wire });
    },
  });

  async function listen(sessionId: string, at: ListenAt): Promise<number | null> {
    const where = 'path' in at ? at.path : 'loopback';
    const current = listening.get(sessionId);
    // the same place, still there (a sandbox made afresh empties its run dir, and the socket with it)
    if (current?.where === where && current.server.listening && ('port' in at || existsSync(at.path))) return current.port;
    // another place (a sandbox made again elsewhere): the old listener takes no new connections; its streams go on
    current?.server.close();
    const server = gateway.serverFor(sessionId);
    if ('path' in at) {
      await rm(at.path, { force: true });
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(at.path, () => resolve()));
      await chmod(at.path, 0o600);
      if (process.getuid?.() === 0) await chown(at.path, at.uid, at.gid);
      listening.set(sessionId, { where, server, port: null });
      return null;
    }
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', () => resolve()));
    const port = (server.address() as { port: number }).port;
    listening.set(sessionId, { where, server, port });
    return port;
  }

  function unlisten(sessionId: string): void {
    listening.get(sessionId)?.server.close();
    listening.delete(sessionId);
  }

  async function handle(socket: Socket, message: ToDaemon): Promise<void> {
    switch (message.type) {
      case 'ack':
        pending.delete(message.seq);
        return;
      case 'nack': {
        // the worker could not take it now: sent again when a worker next serves the session, this one included
        const entry = pending.get(message.seq);
        if (entry) entry.sentTo = null;
        return;
      }
      case 'admission':
        asks.get(message.ask)?.answer(message.admission);
        return;
      case 'serve': {
        gateway.register(message.session);
        const port = await listen(message.session.sessionId, message.at);
        owners.set(message.session.sessionId, socket);
        send(socket, { type: 'done', id: message.id, ...(port === null ? {} : { port }) });
        ownerServed(message.session.sessionId);
        // what the previous worker did not acknowledge goes to this one
        for (const [n, entry] of pending) {
          if (entry.record.sessionId !== message.session.sessionId || entry.sentTo === socket) continue;
          entry.sentTo = socket;
          send(socket, { type: 'record', seq: n, record: entry.record });
        }
        return;
      }
      case 'unlisten':
        unlisten(message.sessionId);
        send(socket, { type: 'done', id: message.id });
        return;
      case 'revoke':
        gateway.revoke(message.sessionId);
        listening.delete(message.sessionId);
        send(socket, { type: 'done', id: message.id });
        return;
    }
  }

  const control: NetServer = createNetServer((socket) => {
    connections.add(socket);
    socket.on('error', () => socket.destroy());
    socket.once('close', () => {
      connections.delete(socket);
      for (const [sessionId, owner] of owners) if (owner === socket) owners.delete(sessionId);
      // what it was asked and did not answer waits for the session's next worker
      for (const ask of asks.values()) if (ask.socket === socket) ask.answer(null);
    });
    // (the socket's errors are re-emitted on the reader: the socket's own handler deals with them)
    createInterface({ input: socket, crlfDelay: Infinity }).on('error', () => {}).on('line', (line) => {
      let message: ToDaemon;
      try {
        message = JSON.parse(line) as ToDaemon;
      } catch {
        return socket.destroy();
      }
      handle(socket, message).catch((err: Error) => {
        if ('id' in message) send(socket, { type: 'done', id: message.id, error: err.message });
        log('warn', 'a control request failed', { type: message.type, error: err.message });
      });
    });
  });

  await listenControl(control, opts.controlPath);
  log('info', 'gateway daemon listening', { control: opts.controlPath, pid: process.pid });

  return {
    gateway,
    connections: () => connections.size,
    pending: () => pending.size,
    async close() {
      for (const socket of connections) socket.destroy();
      await new Promise<void>((resolve) => control.close(() => resolve()));
      await gateway.close();
      listening.clear();
    },
  };
}

/**
 * Listens on the control socket, mode 600. A socket file left by a daemon that is gone is replaced; one that answers
 * belongs to a daemon that is running (another worker started it first): `GatewayDaemonRunning`.
 */
async function listenControl(server: NetServer, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const attempt = () => new Promise<void>((resolve, reject) => server.once('error', reject).listen(path, () => resolve()));
  try {
    await attempt();
  } catch (err) {
    if ((err as { code?: string }).code !== 'EADDRINUSE') throw err;
    if (await socketAnswers(path)) throw new GatewayDaemonRunning(path);
    await rm(path, { force: true });
    await attempt();
  }
  await chmod(path, 0o600);
}

export class GatewayDaemonRunning extends Error {
  constructor(path: string) {
    super(`a gateway daemon already listens on ${path}`);
  }
}
