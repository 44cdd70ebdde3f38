/**
 * Egress to URLs a tenant chooses: webhook receivers, `model_provider.base_url`, the remote runtimes' servers (Managed
 * Agents, Cursor, Hermes) and the model endpoints the worker calls itself (DeepAgents).
 *
 * Such a URL must not reach the platform's own network: loopback, private, link-local (cloud metadata at
 * 169.254.169.254), shared, multicast and reserved addresses are refused unless the operator allows a range
 * (`AGENTPLANE_EGRESS_ALLOW_PRIVATE`). The rule is applied to every address a name resolves to, twice:
 * - when the URL is saved (`checkUrl`), so a tenant learns at once that the URL will not be used;
 * - when a connection is opened (`fetch`), through an undici Agent that resolves the name itself, refuses the
 *   connection when any address is refused, and connects only to the addresses it checked. A name that answered a
 *   public address at save time and a private one later (DNS rebinding) is refused here, and so is a redirect to a
 *   refused address, since redirects are followed through the same Agent.
 *
 * What a remote answered is not ours to repeat: a failed request is described by its status and at most a short token
 * (`describeStatus`, `describeResponse`, `describeRequestError`), never by its body, which could be anything the
 * remote (or an internal service behind a misconfigured allowance) chose to send.
 *
 * No SDK imports: the API and the worker both use this module.
 */
import { promises as dns, type LookupAddress } from 'node:dns';
import { STATUS_CODES } from 'node:http';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { Agent, buildConnector, fetch as undiciFetch, type Dispatcher } from 'undici';

/** Every address a name resolves to; IP literals never reach it. */
export type Resolve = (hostname: string) => Promise<LookupAddress[]>;

export interface EgressOptions {
  /** ranges allowed although they are refused by default, as CIDRs (`127.0.0.1/32`, `fd00::/8`) or single addresses */
  allowPrivate: readonly string[];
  /** how names are resolved (default: the system resolver, all addresses); tests inject one */
  lookup?: Resolve;
}

export interface EgressGuard {
  /** resolves the URL's host and refuses it (EgressRefusedError naming `field`) when it is not allowed */
  checkUrl(url: string, field: string): Promise<void>;
  /** fetch whose every connection, redirects included, is checked against the same rule after resolution */
  fetch: typeof fetch;
  /** the undici dispatcher under `fetch`, for a client that streams without fetch (the model gateway) */
  dispatcher: Dispatcher;
  /**
   * Every address `host` (a name or an IP literal) resolves to, and why the rule refuses the host (null when every
   * address may be reached); rejects (ENOTFOUND) when a name does not resolve. For connections opened without fetch
   * (the sandbox's egress proxy), which then connect to these addresses only.
   */
  resolve(host: string): Promise<{ addresses: LookupAddress[]; refused: string | null }>;
}

export class EgressRefusedError extends Error {
  readonly code = 'egress.refused';
  constructor(
    /** what held the URL: `body.url`, `model_provider.base_url`, or `connection` at connect time */
    readonly field: string,
    /** why, in words a tenant can act on; never an address a name of the platform resolved to */
    readonly reason: string,
    /** the host did not resolve: nothing was refused yet, and a later try may resolve it */
    readonly unresolved = false,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'EgressRefusedError';
  }
}

/** What is refused by default, with the words a refusal uses. */
const REFUSED: ReadonlyArray<readonly [cidr: string, what: string]> = [
  ['0.0.0.0/8', 'a "this network" address'],
  ['10.0.0.0/8', 'a private address'],
  ['100.64.0.0/10', 'a shared (carrier-grade NAT) address'],
  ['127.0.0.0/8', 'a loopback address'],
  ['169.254.0.0/16', 'a link-local (cloud metadata) address'],
  ['172.16.0.0/12', 'a private address'],
  ['192.0.0.0/24', 'an IETF protocol assignment address'],
  ['192.168.0.0/16', 'a private address'],
  ['198.18.0.0/15', 'a benchmarking address'],
  ['224.0.0.0/4', 'a multicast address'],
  ['240.0.0.0/4', 'a reserved or broadcast address'],
  ['::/128', 'the unspecified address'],
  ['::1/128', 'a loopback address'],
  ['fc00::/7', 'a unique local (private) address'],
  ['fe80::/10', 'a link-local address'],
  ['ff00::/8', 'a multicast address'],
];

export interface Cidr {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

/** `10.0.0.0/8`, `::1/128`, or a single address; null when it is neither. */
export function parseCidr(text: string): Cidr | null {
  const [address = '', bits, extra] = text.trim().split('/');
  const version = isIP(address);
  if (version === 0 || extra !== undefined) return null;
  const max = version === 4 ? 32 : 128;
  if (bits !== undefined && !/^\d{1,3}$/.test(bits)) return null;
  const prefix = bits === undefined ? max : Number(bits);
  if (prefix > max) return null;
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

function blockList(cidrs: ReadonlyArray<string>): BlockList {
  const list = new BlockList();
  for (const text of cidrs) {
    const cidr = parseCidr(text);
    if (!cidr) throw new Error(`not an address range: ${JSON.stringify(text)} (expected e.g. 127.0.0.1/32 or fd00::/8)`);
    list.addSubnet(cidr.address, cidr.prefix, cidr.family);
  }
  return list;
}

const REFUSED_RANGES = REFUSED.map(([cidr, what]) => ({ cidr, what, list: blockList([cidr]) }));

/** The eight 16-bit words of an IPv6 address (zone and embedded dotted IPv4 understood). */
function ipv6Words(address: string): number[] {
  let text = address.toLowerCase().replace(/%.*$/, '');
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const front = head ? head.split(':') : [];
  const back = tail ? tail.split(':') : [];
  const zeros = tail === undefined ? [] : Array<string>(8 - front.length - back.length).fill('0');
  return [...front, ...zeros, ...back].map((word) => parseInt(word, 16));
}

/**
 * The IPv4 address an IPv6 one carries to an IPv4 host: IPv4-mapped (`::ffff:0:0/96`), NAT64 (`64:ff9b::/96`) and
 * 6to4 (`2002::/16`). Each reaches the IPv4 host, so it is judged as that host.
 */
export function embeddedIpv4(address: string): string | null {
  const w = ipv6Words(address);
  const quad = (hi: number, lo: number) => `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  if (w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff) return quad(w[6]!, w[7]!);
  if (w[0] === 0x64 && w[1] === 0xff9b && w.slice(2, 6).every((x) => x === 0)) return quad(w[6]!, w[7]!);
  if (w[0] === 0x2002) return quad(w[1]!, w[2]!);
  return null;
}

export function createEgressGuard(opts: EgressOptions): EgressGuard {
  const allowed = blockList(opts.allowPrivate);
  const resolve: Resolve = opts.lookup ?? ((hostname) => dns.lookup(hostname, { all: true, verbatim: true }));

  /** why an address is refused (the range and what it is), or null when it may be reached */
  function refusal(address: string): string | null {
    const v4 = isIP(address) === 6 ? embeddedIpv4(address) : null;
    const forms: Array<[string, 'ipv4' | 'ipv6']> = [[address, isIP(address) === 4 ? 'ipv4' : 'ipv6'], ...(v4 ? [[v4, 'ipv4'] as [string, 'ipv4']] : [])];
    if (forms.some(([a, family]) => allowed.check(a, family))) return null;
    for (const [a, family] of forms) {
      const range = REFUSED_RANGES.find((r) => r.list.check(a, family));
      if (range) return `${range.what} in ${range.cidr}`;
    }
    return null;
  }

  /** why an IP literal host is refused, said of the host, or null */
  function literalRefusal(host: string): string | null {
    const why = refusal(host);
    return why ? `the address ${host} is ${why}` : null;
  }

  /** every address of the host, or the refusal of the first one that may not be reached, said of the host */
  async function addressesOf(hostname: string): Promise<{ addresses: LookupAddress[]; refused: string | null }> {
    const bare = hostname.replace(/^\[(.*)\]$/, '$1');
    const version = isIP(bare);
    if (version) return { addresses: [{ address: bare, family: version }], refused: literalRefusal(bare) };
    const addresses = await resolve(bare);
    if (addresses.length === 0) throw Object.assign(new Error(`no address for ${bare}`), { code: 'ENOTFOUND' });
    for (const { address } of addresses) {
      const why = refusal(address);
      if (why) return { addresses, refused: `the host ${bare} resolves to ${why}` };
    }
    return { addresses, refused: null };
  }

  // net.connect calls this for names (never for IP literals: the connector below checks those itself)
  const lookup: LookupFunction = (hostname, options, callback) => {
    addressesOf(hostname).then(
      ({ addresses, refused }) => {
        if (refused) return callback(new EgressRefusedError('connection', refused), '', 0);
        const family = options.family === 4 || options.family === 6 ? options.family : 0;
        const usable = family ? addresses.filter((a) => a.family === family) : addresses;
        if (usable.length === 0) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
        if (options.all) return callback(null, usable);
        callback(null, usable[0]!.address, usable[0]!.family);
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    );
  };
  const connect = buildConnector({ lookup });
  const agent = new Agent({
    connect(options, callback) {
      const host = options.hostname.replace(/^\[(.*)\]$/, '$1');
      const refused = isIP(host) ? literalRefusal(host) : null;
      if (refused) return callback(new EgressRefusedError('connection', refused), null);
      connect(options, callback);
    },
  });

  return {
    async checkUrl(url, field) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        throw new EgressRefusedError(field, 'is not a URL');
      }
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new EgressRefusedError(field, 'must be an http or https URL');
      let found: { refused: string | null };
      try {
        found = await addressesOf(parsed.hostname);
      } catch {
        throw new EgressRefusedError(field, `the host ${parsed.hostname} does not resolve`, true);
      }
      if (found.refused) throw new EgressRefusedError(field, `${found.refused}, which agentplane does not connect to unless the operator allows it (AGENTPLANE_EGRESS_ALLOW_PRIVATE)`);
    },
    resolve: addressesOf,
    dispatcher: agent,
    // undici's own fetch, so the Agent and the fetch come from one version (Node's bundled fetch may differ)
    fetch: ((input: string | URL, init?: RequestInit) => undiciFetch(input, { ...(init as object), dispatcher: agent })) as typeof fetch,
  };
}

/**
 * The refusal behind an error, if any: fetch wraps it (`TypeError: fetch failed`, the refusal as its cause), and the
 * clients above fetch wrap that again (the OpenAI client's connection error, LangChain's middleware errors).
 */
export function egressRefusal(err: unknown): EgressRefusedError | null {
  for (let e = err, depth = 0; e && depth < 10; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof EgressRefusedError) return e;
  }
  return null;
}

const TOKEN = /^[A-Za-z0-9_.:-]{1,64}$/;

/**
 * A machine token from a remote's JSON error (`error.type`, `error.code`, or a string `error`), when it looks like
 * one (at most 64 characters of `[A-Za-z0-9_.:-]`) and carries none of `secrets`; null otherwise.
 */
export function errorToken(json: unknown, secrets: ReadonlyArray<string | undefined> = []): string | null {
  const error = (json as { error?: unknown } | null)?.error;
  const candidates = typeof error === 'string' ? [error] : [(error as { type?: unknown })?.type, (error as { code?: unknown })?.code];
  for (const candidate of candidates) {
    if (typeof candidate !== 'string' || !TOKEN.test(candidate)) continue;
    if (secrets.some((s) => s && (candidate.includes(s) || s.includes(candidate)))) continue;
    return candidate;
  }
  return null;
}

/** `404 not_found_error`, or `503 Service Unavailable` (the standard phrase for the code, never the remote's own). */
export function describeStatus(status: number, token: string | null = null): string {
  const phrase = token ?? STATUS_CODES[status] ?? '';
  return phrase ? `${status} ${phrase}` : String(status);
}

/**
 * A failed answer described without its body: the status and a token from its JSON error or the standard phrase.
 * Reads at most a few KiB of the body and drops the rest.
 */
export async function describeResponse(res: Response, secrets: ReadonlyArray<string | undefined> = []): Promise<string> {
  const text = await readPrefix(res, 4096);
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON (or longer than we read): the phrase will do
  }
  return describeStatus(res.status, errorToken(json, secrets));
}

async function readPrefix(res: Response, maxBytes: number): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < maxBytes) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } catch {
    // the answer broke off: what arrived is enough
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A request that got no answer: the egress refusal, `timeout`, or the network error's code (`ECONNREFUSED`). */
export function describeRequestError(err: unknown): string {
  const refused = egressRefusal(err);
  if (refused) return `egress refused: ${refused.reason}`;
  for (let e = err, depth = 0; e && depth < 10; e = (e as { cause?: unknown }).cause, depth++) {
    const { name, code } = e as { name?: unknown; code?: unknown };
    if (name === 'TimeoutError' || name === 'AbortError') return 'timeout';
    if (typeof code === 'string' && TOKEN.test(code)) return code;
  }
  return 'request failed';
}
