/**
 * agentplane's model gateway (gateway/) in its own OS process for bench/gateway.ts, serving one session in front of
 * the provider at argv[2]: the session's server listens on a TCP port (a sandbox reaches it over a Unix socket and its
 * bridge instead; bench/sandbox.ts measures that part). Every request is metered as in a worker (the usage read from
 * the answer, the record handed to `onRequest`), which here only counts them. Prints `READY <url> <token>`.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { createModelGateway } from '../../gateway/gateway';
import { createSessionTokens } from '../../gateway/tokens';
import { createEgressGuard } from '../../runtimes/kit/egress';

const upstream = process.argv[2];
if (!upstream) throw new Error('usage: gateway.ts <provider base url>');
const tokens = createSessionTokens([randomBytes(32)]);
let metered = 0;
const gateway = createModelGateway({ dispatcher: createEgressGuard({ allowPrivate: ['127.0.0.1/32'] }).dispatcher, onRequest: () => void metered++ });
gateway.register({ sessionId: 'sesn_bench', credentialId: 'cred_bench', baseUrl: `${upstream}/v1`, apiKey: 'sk-bench-provider-key', tokens: tokens.all('sesn_bench', 'cred_bench') });
const server = gateway.serverFor('sesn_bench');
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
console.log(`READY http://127.0.0.1:${(server.address() as AddressInfo).port} ${tokens.issue('sesn_bench', 'cred_bench')}`);
process.once('disconnect', () => process.exit(0));
process.once('SIGTERM', () => {
  console.error(`gateway: ${metered} requests metered`);
  process.exit(0);
});
