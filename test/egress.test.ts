/**
 * SSRF: a URL a tenant chooses (a webhook receiver, `model_provider.base_url`, a remote runtime's server) must not
 * reach the platform's own network. The rule itself (runtimes/kit/egress.ts) on addresses in every spelling, the
 * operator's allowance, and connections (redirects, IP literals) refused where they are opened.
 */
import { promises as dns, type LookupAddress } from 'node:dns';
import { createServer, type Server } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, egressEnv, parseEnv } from '../config/env';
import { createEgressGuard, describeStatus, errorToken, type Resolve } from '../runtimes/kit/egress';

// ---- a resolver the test controls -------------------------------------------------------------------------------

/** names the test answers itself; any other name (localhost) goes to the system resolver */
const names = new Map<string, string[]>();
const lookup: Resolve = async (hostname) => {
  const known = names.get(hostname);
  if (!known) return dns.lookup(hostname, { all: true, verbatim: true });
  return known.map((address): LookupAddress => ({ address, family: isIP(address) }));
};

// ---- receivers on 127.0.0.1 that count what reaches them --------------------------------------------------------

interface Receiver {
  server: Server;
  port: number;
  url: string;
  requests: string[];
}

async function startReceiver(answer: (path: string) => { status: number; type?: string; body: string; headers?: Record<string, string> } = () => ({ status: 200, body: 'ok' }), host = '127.0.0.1'): Promise<Receiver> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      requests.push(`${req.method} ${req.url}`);
      const a = answer(req.url ?? '/');
      res.writeHead(a.status, { 'content-type': a.type ?? 'text/plain', ...a.headers }).end(a.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  return { server, port, url: `http://${host}:${port}`, requests };
}

const receivers: Receiver[] = [];
async function receiver(...args: Parameters<typeof startReceiver>): Promise<Receiver> {
  const r = await startReceiver(...args);
  receivers.push(r);
  return r;
}

afterAll(async () => {
  for (const r of receivers) {
    r.server.closeAllConnections();
    await new Promise((resolve) => r.server.close(resolve));
  }
});

// ---- the rule ---------------------------------------------------------------------------------------------------

describe('the egress rule', () => {
  const guard = createEgressGuard({ allowPrivate: [], lookup });
  const refused = async (url: string) =>
    guard.checkUrl(url, 'body.url').then(
      () => null,
      (err: Error) => err.message,
    );

  it('refuses loopback, private, link-local (cloud metadata), shared, multicast and reserved addresses in every spelling a URL allows', async () => {
    const urls = [
      'http://127.0.0.1/',
      'http://127.1.2.3:8080/x',
      'http://2130706433/', // 127.0.0.1 as one number
      'http://0x7f.1/', // and in hex, short form
      'http://10.1.2.3/',
      'http://172.16.0.1/',
      'http://172.31.255.255/',
      'http://192.168.1.1/',
      'http://169.254.169.254/latest/meta-data/',
      'http://100.64.0.1/',
      'http://0.0.0.0/',
      'http://192.0.0.10/',
      'http://198.18.0.1/',
      'http://224.0.0.1/',
      'http://255.255.255.255/',
      'http://[::]/',
      'http://[::1]/',
      'http://[fc00::1]/',
      'http://[fd00:ec2::254]/', // AWS's IPv6 metadata address
      'http://[fe80::1]/',
      'http://[ff02::1]/',
    ];
    for (const url of urls) expect(await refused(url), url).toMatch(/^body\.url: the address \S+ is (an?|the) .* in \S+\/\d+, which agentplane does not connect to/);
    expect(await refused('http://169.254.169.254/')).toContain('link-local (cloud metadata) address in 169.254.0.0/16');
  });

  it('refuses an IPv6 address that carries a refused IPv4 one (IPv4-mapped, NAT64, 6to4), judged by the IPv4 address', async () => {
    for (const [url, range] of [
      ['http://[::ffff:127.0.0.1]/', '127.0.0.0/8'],
      ['http://[::ffff:a9fe:a9fe]/', '169.254.0.0/16'],
      ['http://[64:ff9b::a9fe:a9fe]/', '169.254.0.0/16'],
      ['http://[64:ff9b::10.0.0.1]/', '10.0.0.0/8'],
      ['http://[2002:7f00:1::1]/', '127.0.0.0/8'],
      ['http://[2002:c0a8:101::]/', '192.168.0.0/16'],
    ]) {
      expect(await refused(url!), url).toContain(`in ${range}`);
    }
  });

  it('lets public addresses through, including the ones right next to the refused ranges', async () => {
    for (const url of [
      'http://8.8.8.8/',
      'http://11.0.0.1/',
      'http://172.15.255.255/',
      'http://172.32.0.1/',
      'http://100.63.255.255/',
      'http://100.128.0.1/',
      'http://169.253.255.255/',
      'http://198.20.0.1/',
      'http://203.0.113.10/',
      'http://223.255.255.255/',
      'http://[2001:4860:4860::8888]/',
      'http://[::ffff:8.8.8.8]/',
      'http://[2002:808:808::1]/',
      'http://[fbff::1]/',
    ]) {
      expect(await refused(url), url).toBeNull();
    }
  });

  it('refuses a name that resolves to loopback (localhost), a name with one refused address among public ones, and a name that does not resolve', async () => {
    names.set('mixed.test', ['203.0.113.1', '10.0.0.5']);
    expect(await refused('http://localhost:8080/hook')).toBe(
      'body.url: the host localhost resolves to a loopback address in 127.0.0.0/8, which agentplane does not connect to unless the operator allows it (AGENTPLANE_EGRESS_ALLOW_PRIVATE)',
    );
    expect(await refused('https://mixed.test/hook')).toContain('the host mixed.test resolves to a private address in 10.0.0.0/8');
    // the refusal names the range, never the internal address the name resolved to
    expect(await refused('https://mixed.test/hook')).not.toContain('10.0.0.5');
    expect(await refused('https://nowhere.invalid/hook')).toBe('body.url: the host nowhere.invalid does not resolve');
    expect(await refused('file:///etc/passwd')).toBe('body.url: must be an http or https URL');
  });

  it('allows exactly the ranges the operator lists, and nothing next to them', async () => {
    const allowing = createEgressGuard({ allowPrivate: ['127.0.0.1/32', '10.20.0.0/16', 'fd00:1::/32'], lookup });
    const ok = (url: string) => allowing.checkUrl(url, 'body.url').then(() => true, () => false);
    expect(await ok('http://127.0.0.1:9/')).toBe(true);
    expect(await ok('http://[::ffff:127.0.0.1]:9/')).toBe(true);
    expect(await ok('http://localhost:9/')).toBe(true);
    expect(await ok('http://10.20.5.5/')).toBe(true);
    expect(await ok('http://[fd00:1::5]/')).toBe(true);
    expect(await ok('http://127.0.0.2/')).toBe(false);
    expect(await ok('http://10.21.0.1/')).toBe(false);
    expect(await ok('http://[fd00:2::5]/')).toBe(false);
    expect(await ok('http://169.254.169.254/')).toBe(false);
    expect(() => createEgressGuard({ allowPrivate: ['localhost'] })).toThrow('not an address range');
  });

  it('AGENTPLANE_EGRESS_ALLOW_PRIVATE is empty by default, takes comma-separated ranges, and stops the process on anything else, naming the variable', () => {
    expect(parseEnv(egressEnv, {}).AGENTPLANE_EGRESS_ALLOW_PRIVATE).toEqual([]);
    expect(parseEnv(egressEnv, { AGENTPLANE_EGRESS_ALLOW_PRIVATE: '127.0.0.1/32, 10.0.0.0/8,::1' }).AGENTPLANE_EGRESS_ALLOW_PRIVATE).toEqual(['127.0.0.1/32', '10.0.0.0/8', '::1']);
    for (const bad of ['localhost', '10.0.0.0/33', '10.0.0.0/8/1', '10.0.0.0/x', '*']) {
      expect(() => parseEnv(egressEnv, { AGENTPLANE_EGRESS_ALLOW_PRIVATE: bad }), bad).toThrow(ConfigError);
      expect(() => parseEnv(egressEnv, { AGENTPLANE_EGRESS_ALLOW_PRIVATE: bad }), bad).toThrow('AGENTPLANE_EGRESS_ALLOW_PRIVATE');
    }
  });

  it('describes a remote error by its status and at most a short token, never its words, and never a token that is the key', () => {
    expect(describeStatus(503)).toBe('503 Service Unavailable');
    expect(describeStatus(404, errorToken({ error: { type: 'not_found_error', message: 'the secret sk-123 is wrong' } }))).toBe('404 not_found_error');
    expect(errorToken({ error: { code: 'model_not_found', message: 'x' } })).toBe('model_not_found');
    expect(errorToken({ error: 'invalid_key' })).toBe('invalid_key');
    expect(errorToken({ error: { type: 'has spaces and <html>' } })).toBeNull();
    expect(errorToken({ error: { type: 'x'.repeat(65) } })).toBeNull();
    expect(errorToken({ error: { type: 'sk-the-key-itself' } }, ['sk-the-key-itself'])).toBeNull();
    expect(errorToken('not json')).toBeNull();
  });
});

// ---- connections ------------------------------------------------------------------------------------------------

describe('connections through the guard', () => {
  it('refuse a redirect from an allowed server to a refused address: the second server gets nothing', async () => {
    const inner = await receiver(() => ({ status: 200, body: 'internal' }), '127.0.0.2');
    const outer = await receiver(() => ({ status: 302, body: '', headers: { location: `${inner.url}/admin` } }));
    const guard = createEgressGuard({ allowPrivate: ['127.0.0.1/32'] });
    const err = await guard.fetch(`${outer.url}/start`).then(() => null, (e: Error) => e);
    expect(err?.cause).toMatchObject({ code: 'egress.refused', reason: 'the address 127.0.0.2 is a loopback address in 127.0.0.0/8' });
    expect(outer.requests).toEqual(['GET /start']);
    expect(inner.requests).toEqual([]);
    // the same redirect is followed where the operator allows the second address: the refusal above was the guard's
    const wider = createEgressGuard({ allowPrivate: ['127.0.0.0/8'] });
    expect(await (await wider.fetch(`${outer.url}/start`)).text()).toBe('internal');
    expect(inner.requests).toEqual(['GET /admin']);
  });

  it('refuse an IP literal at connect time, whatever was checked before', async () => {
    const target = await receiver();
    const err = await createEgressGuard({ allowPrivate: [] }).fetch(`${target.url}/`).then(() => null, (e: Error) => e);
    expect(err?.cause).toMatchObject({ code: 'egress.refused' });
    expect(target.requests).toEqual([]);
  });
});
