/**
 * The gateway daemon's process (./daemon.ts), started detached by the first worker of a data dir that needs it
 * (./client.ts) and left running when that worker goes: `node --import tsx gateway/main.ts <control socket>`.
 *
 * Its environment holds no secret (keys arrive over the control socket); AGENTPLANE_EGRESS_ALLOW_PRIVATE is the
 * workers' address rule. It writes its pid next to the control socket, logs JSON lines to stdout (the worker points
 * it at `<socket>.log`), and exits once no worker has been connected and no request has been in flight for
 * AGENTPLANE_GATEWAY_IDLE_EXIT_MS (default 10 minutes): a later turn starts a new one, and a runtime's token stays
 * valid across that (tokens are derived, not stored).
 */
import { rm, writeFile } from 'node:fs/promises';
import { z } from 'zod';
import { egressEnv, parseEnv } from '../config/env';
import { createJsonLog } from '../observability/logger';
import { createEgressGuard } from '../runtimes/kit/egress';
import { GatewayDaemonRunning, startGatewayDaemon, type GatewayDaemon } from './daemon';

const env = parseEnv({
  ...egressEnv,
  AGENTPLANE_GATEWAY_IDLE_EXIT_MS: z.coerce.number().int().min(1000).default(600_000),
});
if (!process.argv[2]) throw new Error('usage: gateway/main.ts <control socket path>');
const controlPath = process.argv[2];

const writeLog = createJsonLog();
const log = (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => writeLog({ level: level === 'info' ? 'INFO' : 'WARN', msg, ...fields });

let daemon: GatewayDaemon;
try {
  daemon = await startGatewayDaemon({ controlPath, dispatcher: createEgressGuard({ allowPrivate: env.AGENTPLANE_EGRESS_ALLOW_PRIVATE }).dispatcher, log });
} catch (err) {
  // another worker's daemon won the start: it serves this data dir
  if (err instanceof GatewayDaemonRunning) process.exit(0);
  throw err;
}
const pidFile = `${controlPath}.pid`;
await writeFile(pidFile, String(process.pid));

let idleSince = Date.now();
const timer = setInterval(
  () => {
    if (daemon.connections() > 0 || daemon.gateway.active() > 0) idleSince = Date.now();
    else if (Date.now() - idleSince >= env.AGENTPLANE_GATEWAY_IDLE_EXIT_MS) void stop('idle');
  },
  Math.min(10_000, env.AGENTPLANE_GATEWAY_IDLE_EXIT_MS),
);

async function stop(reason: string): Promise<void> {
  clearInterval(timer);
  // records no worker took (their sessions' workers never came back) are lost with this process: say how many
  log('info', 'gateway daemon exiting', { reason, unacknowledgedRecords: daemon.pending() });
  await daemon.close();
  await rm(pidFile, { force: true });
  await rm(controlPath, { force: true });
  process.exit(0);
}
process.once('SIGTERM', () => void stop('SIGTERM'));
process.once('SIGINT', () => void stop('SIGINT'));
