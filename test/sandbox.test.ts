/**
 * The session sandbox (runtimes/kit/sandbox/) with the real bwrap, socat and prlimit: the attack list run as
 * shell commands inside a sandbox, each command's output base64-encoded inside before the test reads it (so that no
 * redaction on the way could hide a leak), and each must find nothing. Then the limits (fork bomb, memory, /tmp,
 * file size, CPU), the egress proxy and the model bridge with a local receiver, the bridge into a server inside, and
 * the `none` provider.
 *
 * A loopback receiver stands for "an allowed host" without any test-only hook: the test's egress guard is built the
 * way the operator's is, with 127.0.0.1/32 allowed (AGENTPLANE_EGRESS_ALLOW_PRIVATE), and names the test resolves
 * itself; the same proxy with no allowance refuses loopback.
 *
 * CI runs these as root, which is what the per-session uid checks need; as another user they are skipped.
 */
import { spawn as spawnChild, type ChildProcess } from 'node:child_process';
import { promises as dns, type LookupAddress } from 'node:dns';
import { chmodSync, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, isIP, type AddressInfo, type Server as NetServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, execaSync } from 'execa';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseEnv, sandboxEnv } from '../config/env';
import { createEgressGuard, type Resolve } from '../runtimes/kit/egress';
import { createBubblewrapProvider, sandboxUid } from '../runtimes/kit/sandbox/bubblewrap';
import { createEgressProxy, createModelBridge, proxyEnv, type EgressDenial } from '../runtimes/kit/sandbox/egress-proxy';
import { createSandboxProvider } from '../runtimes/kit/sandbox/index';
import { createNoneProvider } from '../runtimes/kit/sandbox/none';
import { sandboxDispatcher, type Sandbox, type SandboxProvider, type SandboxSpawnOptions } from '../runtimes/kit/sandbox/provider';
import { refusedNumbers } from '../runtimes/kit/sandbox/seccomp';

const isRoot = process.getuid?.() === 0;
const quiet = { info() {}, warn() {} };

/** Random markers; a probe never carries one whole on its command line, only its two halves. */
function marker(label: string): { value: string; a: string; b: string } {
  const value = `${label}_${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
  const half = Math.floor(value.length / 2);
  return { value, a: value.slice(0, half), b: value.slice(half) };
}

let root: string;
let provider: SandboxProvider;
let attacker: Sandbox;
let victim: Sandbox;
let dataDir: string;
const MASTER = marker('MASTERKEY');
const ADMIN = marker('ADMINKEY');
const VICTIM = marker('VICTIMWORKSPACE');
const HOSTENV = marker('HOSTENV');
let hostProcess: ChildProcess;

function sessionDirs(id: string) {
  return { sessionId: id, workspace: join(dataDir, 'sessions', id, 'workspace'), state: join(dataDir, 'sessions', id, 'state'), run: join(dataDir, 'run', id) };
}

/** Runs `script` inside with sh; its whole output (stdout and stderr) comes back base64-encoded and is decoded here. */
async function probe(sandbox: Sandbox, script: string, opts: SandboxSpawnOptions = {}): Promise<string> {
  const exit = await sandbox.spawn('/bin/sh', ['-c', `(\n${script}\n) 2>&1 | base64 -w0`], { capture: true, timeoutMs: 60_000, ...opts }).exited;
  expect(exit.exitCode, exit.tail).toBe(0);
  return Buffer.from(exit.stdout, 'base64').toString('utf8');
}

/** Processes on this host whose real uid is `uid`. */
function processesOf(uid: number): number {
  let count = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const uidLine = readFileSync(`/proc/${entry}/status`, 'utf8').split('\n').find((l) => l.startsWith('Uid:'));
      if (uidLine && Number(uidLine.split(/\s+/)[1]) === uid) count++;
    } catch {
      // gone meanwhile
    }
  }
  return count;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'agentplane-sandbox-'));
  // the sandbox's user must be able to reach what it mounts, as it would a real data dir's sessions
  chmodSync(root, 0o711);
  dataDir = join(root, 'data');
  provider = createBubblewrapProvider({ logger: quiet });
  attacker = await provider.prepare(sessionDirs('sesn_attacker'));
  victim = await provider.prepare(sessionDirs('sesn_victim'));
  // what a data dir holds that no session may read: stand-ins for the master and admin key files
  await writeFile(join(dataDir, 'master.key'), `${MASTER.value}\n`, { mode: 0o600 });
  await writeFile(join(dataDir, 'admin.key'), `${ADMIN.value}\n`, { mode: 0o600 });
  // another session writes a marker into its own workspace, from inside its sandbox
  const wrote = await victim.spawn('/bin/sh', ['-c', `printf '%s%s\\n' "$A" "$B" > /workspace/notes.txt`], { env: { A: VICTIM.a, B: VICTIM.b } }).exited;
  expect(wrote.exitCode, wrote.tail).toBe(0);
  // a host process with a secret in its environment, as the worker has
  hostProcess = spawnChild('sleep', ['600'], { env: { PATH: '/usr/bin:/bin', AGENTPLANE_MASTER_KEY: HOSTENV.value }, stdio: 'ignore' });
});

afterAll(async () => {
  hostProcess?.kill('SIGKILL');
  await attacker?.teardown();
  await victim?.teardown();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('the attack list, run inside a session sandbox (bubblewrap)', () => {
  it('a tool call cannot read another process\'s environment, nor see the worker\'s processes in /proc', async () => {
    const out = await probe(
      attacker,
      `for p in /proc/[0-9]*; do echo "== $p $(tr '\\0' ' ' < $p/cmdline)"; tr '\\0' '\\n' < $p/environ; done; echo "pids: $(ls -d /proc/[0-9]* | wc -l)"; env`,
    );
    expect(out).toContain('HOME=/state'); // the probe read environments: its own
    expect(out).not.toContain(HOSTENV.value);
    expect(out).not.toContain('AGENTPLANE_MASTER_KEY');
    expect(out).not.toContain('DATABASE_URL');
    expect(out).not.toMatch(/vitest|node |sleep 600/);
    // its own few processes only (bwrap's init, the shell, the pipeline), not the host's hundreds
    const pids = Number(/pids: (\d+)/.exec(out)?.[1]);
    expect(pids).toBeGreaterThan(0);
    expect(pids).toBeLessThan(10);
    expect(hostProcess.pid).toBeGreaterThan(0);
  });

  it('the data dir\'s master and admin key files cannot be found or read from a session', async () => {
    const out = await probe(
      attacker,
      `M1=${MASTER.a}; M2=${MASTER.b}; A1=${ADMIN.a}; A2=${ADMIN.b};
       cat ${join(dataDir, 'master.key')} ${join(dataDir, 'admin.key')};
       ls -la ${dataDir} /run /run/agentplane /root /var /home /opt;
       grep -rIl -e "$M1$M2" -e "$A1$A2" / --exclude-dir=proc --exclude-dir=usr --exclude-dir=sys --exclude-dir=dev; echo "grep done $?"`,
    );
    expect(out).toContain('grep done 1'); // grep searched and found nothing
    expect(out).toContain('No such file or directory');
    expect(out).toContain(`cat: ${join(dataDir, 'master.key')}: No such file or directory`);
    expect(out).not.toContain(MASTER.value);
    expect(out).not.toContain(ADMIN.value);
  });

  it('another session\'s workspace, located by the marker that session wrote, is out of reach', async () => {
    const victimWorkspace = sessionDirs('sesn_victim').workspace;
    expect(readFileSync(join(victimWorkspace, 'notes.txt'), 'utf8')).toBe(`${VICTIM.value}\n`); // the marker is there
    const out = await probe(
      attacker,
      `V1=${VICTIM.a}; V2=${VICTIM.b}; cat ${victimWorkspace}/notes.txt; ls -la /workspace ${join(dataDir, 'sessions')};
       grep -rIl -e "$V1$V2" / --exclude-dir=proc --exclude-dir=usr --exclude-dir=sys --exclude-dir=dev; echo "grep done $?"`,
    );
    expect(out).toContain('grep done 1');
    expect(out).toContain(`cat: ${victimWorkspace}/notes.txt: No such file or directory`);
    expect(out).not.toContain(VICTIM.value);
  });

  it('the platform\'s checkout is invisible from a session', async () => {
    const checkout = process.cwd();
    const description = JSON.parse(readFileSync(join(checkout, 'package.json'), 'utf8')).description as string;
    const half = Math.floor(description.length / 2);
    const out = await probe(
      attacker,
      `D1='${description.slice(0, half)}'; D2='${description.slice(half)}'; ls -la ${checkout} /work; cat ${checkout}/package.json ${checkout}/.env;
       grep -rIl -e "$D1$D2" / --exclude-dir=proc --exclude-dir=usr --exclude-dir=sys --exclude-dir=dev; echo "grep done $?"`,
    );
    expect(out).toContain('grep done 1');
    expect(out).toContain('No such file or directory');
    expect(out).not.toContain(description);
    expect(out).not.toContain('"name": "agentplane"');
  });

  it('TCP to Postgres, Temporal, a metrics port and 169.254.169.254 fails: a session has no network', async () => {
    // a listener on every interface stands for the API's metrics port; reachable from the host, as the check shows
    const metrics = createNetServer((s) => s.end('metrics\n'));
    await new Promise<void>((resolve) => metrics.listen(0, '0.0.0.0', resolve));
    const metricsPort = (metrics.address() as AddressInfo).port;
    const external = Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    const temporal = process.env.AGENTPLANE_TEST_TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
    const targets: Array<[string, number]> = [
      ['127.0.0.1', 5432],
      [temporal.split(':')[0]!, Number(temporal.split(':')[1])],
      ['127.0.0.1', metricsPort],
      ...(external ? ([[external, metricsPort], [external, 5432]] as Array<[string, number]>) : []),
      ['169.254.169.254', 80],
    ];
    try {
      const out = await probe(
        attacker,
        `python3 - <<'PY'
import socket
for host, port in ${JSON.stringify(targets)}:
    try:
        socket.create_connection((host, port), timeout=3).close()
        print("CONNECTED", host, port)
    except OSError as e:
        print("refused", host, port, e.__class__.__name__)
PY`,
      );
      expect(out.match(/refused/g)?.length).toBe(targets.length);
      expect(out).not.toContain('CONNECTED');
    } finally {
      metrics.close();
    }
  });

  it('a write outside /workspace, /state and /tmp fails, and what it writes inside lands in its own session\'s directories', async () => {
    const out = await probe(
      attacker,
      `for f in /x /etc/x /usr/x /usr/local/bin/x /bin/x /dev/x /run/x /run/agentplane/x /proc/x /root/x /var/x /opt/x; do
         if ( : > $f ) 2>/dev/null; then echo "WROTE $f"; else echo "refused $f"; fi
       done
       for f in /workspace/ok /state/ok /tmp/ok /dev/shm/ok; do ( : > $f ) && echo "wrote $f"; done`,
    );
    expect(out).not.toContain('WROTE');
    expect(out.match(/refused/g)?.length).toBe(12);
    expect(out.match(/wrote /g)?.length).toBe(4);
    const written = await stat(join(sessionDirs('sesn_attacker').workspace, 'ok'));
    if (isRoot) expect(written.uid).toBe(sandboxUid('sesn_attacker'));
  });

  it('ptrace, mount, keyctl and new namespaces are refused by the seccomp filter, and /proc/1/mem cannot be read', async () => {
    const out = await probe(
      attacker,
      `python3 - <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
calls = [
    ("ptrace_attach_init", 101, (16, 1, 0, 0)),
    ("ptrace_traceme", 101, (0, 0, 0, 0)),
    ("process_vm_readv", 310, (1, 0, 0, 0)),
    ("mount", 165, (0, 0, 0, 0)),
    ("keyctl", 250, (0, -3, 0, 0)),
    ("add_key", 248, (0, 0, 0, 0)),
    ("unshare_user", 272, (0x10000000, 0, 0, 0)),
    ("clone_newuser", 56, (0x10000000 | 17, 0, 0, 0)),
    ("bpf", 321, (0, 0, 0, 0)),
    ("clone3", 435, (0, 0, 0, 0)),
]
for name, nr, args in calls:
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    print(name, r, os.strerror(ctypes.get_errno()) if r < 0 else "ALLOWED")
PY
       cat /proc/1/mem > /dev/null && echo "READ MEM" || echo "mem refused"; unshare -U true && echo "UNSHARED" || echo "unshare refused"`,
    );
    for (const name of ['ptrace_attach_init', 'ptrace_traceme', 'process_vm_readv', 'mount', 'keyctl', 'add_key', 'unshare_user', 'clone_newuser', 'bpf']) {
      expect(out).toContain(`${name} -1 Operation not permitted`);
    }
    expect(out).toContain('clone3 -1 Function not implemented');
    expect(out).toContain('mem refused');
    expect(out).toContain('unshare refused');
    expect(out).not.toMatch(/ALLOWED|READ MEM|UNSHARED/);
  });

  it('a session runs as a non-root user with no capabilities, and on the host as its own unprivileged uid', async () => {
    const out = await probe(attacker, 'id -u; id -g; grep -E "^(Cap|NoNewPrivs|Seccomp:)" /proc/self/status');
    expect(out).toMatch(/^1000\n1000\n/);
    for (const line of ['CapInh:\t0000000000000000', 'CapPrm:\t0000000000000000', 'CapEff:\t0000000000000000', 'CapBnd:\t0000000000000000', 'CapAmb:\t0000000000000000', 'NoNewPrivs:\t1', 'Seccomp:\t2']) {
      expect(out).toContain(line);
    }
    if (!isRoot) return;
    const running = attacker.spawn('sleep', ['30']);
    try {
      await sleep(300);
      const hostUid = statSync(`/proc/${running.pid}`).uid;
      expect(hostUid).toBe(sandboxUid('sesn_attacker'));
      expect(hostUid).not.toBe(0);
      expect(sandboxUid('sesn_attacker')).not.toBe(sandboxUid('sesn_victim'));
    } finally {
      running.kill();
      await running.exited;
    }
  });

  it('a secret given to a sandboxed process is on no host command line, and not in the environment of the host-side bwrap', async () => {
    const KEY = marker('MODELKEY');
    const running = attacker.spawn('sleep', ['30'], { env: { MODEL_API_KEY: KEY.value } });
    try {
      await sleep(300);
      const inside = await probe(attacker, 'echo ready'); // the sandbox is up
      expect(inside).toBe('ready\n');
      const onCommandLines = readdirSync('/proc')
        .filter((entry) => /^\d+$/.test(entry))
        .filter((entry) => {
          try {
            return readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(KEY.value);
          } catch {
            return false;
          }
        });
      expect(onCommandLines).toEqual([]);
      const outer = readFileSync(`/proc/${running.pid}/environ`, 'utf8');
      expect(outer).toContain('PATH=');
      expect(outer).not.toContain(KEY.value);
    } finally {
      running.kill();
      await running.exited;
    }
  });

  it('a fork bomb stops at the process limit and is killed whole, while the worker and another session keep working', async () => {
    const limit = 64;
    // every copy forks again and again, and retries when the kernel says no: the population climbs to the limit and
    // stays there until the sandbox is killed
    const bomb = attacker.spawn(
      'python3',
      ['-c', 'import os, time\nwhile True:\n    try: os.fork()\n    except OSError as e: print("fork refused:", e.strerror, flush=True); time.sleep(0.2)'],
      { limits: { processes: limit }, timeoutMs: 6000 },
    );
    let during = 0;
    for (let i = 0; i < 25; i++) {
      await sleep(100);
      if (isRoot) during = Math.max(during, processesOf(sandboxUid('sesn_attacker')));
    }
    const other = await victim.spawn('echo', ['still serving'], { capture: true }).exited;
    const host = await execa('echo', ['worker fine']);
    const exit = await bomb.exited;
    expect(other.stdout).toBe('still serving\n');
    expect(host.stdout).toBe('worker fine');
    expect(exit.timedOut).toBe(true);
    expect(exit.tail).toContain('fork refused: Resource temporarily unavailable');
    if (isRoot) {
      expect(during).toBeGreaterThan(limit / 2); // it did grow…
      expect(during).toBeLessThanOrEqual(limit); // …up to the limit, no further
      const left = execaSync('sh', ['-c', `ps -o pid,ppid,stat,etimes,args -u ${sandboxUid('sesn_attacker')} || true`]).stdout;
      expect(processesOf(sandboxUid('sesn_attacker')), left).toBe(0); // and nothing of it outlived the kill
    }
  });

  it('a memory hog, a /tmp filler, a /dev/shm filler and a huge file each stop at their limit', async () => {
    const mib = 1024 ** 2;
    const memory = await probe(
      attacker,
      `python3 -c '
a = []
try:
    while True: a.append(bytearray(16 << 20))
except MemoryError: print("stopped at", len(a) * 16, "MiB")'`,
      { limits: { memoryBytes: 256 * mib } },
    );
    const stopped = Number(/stopped at (\d+) MiB/.exec(memory)?.[1]);
    expect(stopped).toBeGreaterThan(0);
    expect(stopped).toBeLessThan(256);

    const tmp = await probe(attacker, 'head -c 200M /dev/zero > /tmp/fill; echo "tmp exit $?"; head -c 200M /dev/zero > /dev/shm/fill; echo "shm exit $?"; du -m /tmp/fill /dev/shm/fill', {
      limits: { tmpBytes: 64 * mib },
    });
    expect(tmp).toContain('No space left on device');
    expect(tmp).toMatch(/tmp exit [1-9]/);
    expect(tmp).toMatch(/shm exit [1-9]/);

    const big = await attacker.spawn('/bin/sh', ['-c', 'head -c 50M /dev/zero > /workspace/big'], { limits: { fileSizeBytes: 8 * mib } }).exited;
    expect(big.exitCode).not.toBe(0);
    expect((await stat(join(sessionDirs('sesn_attacker').workspace, 'big'))).size).toBeLessThanOrEqual(8 * mib);
  });

  it('a process that spins forever is killed at its CPU-time limit', async () => {
    const spin = await attacker.spawn('/bin/sh', ['-c', 'while :; do :; done'], { limits: { cpuSeconds: 1 }, timeoutMs: 60_000 }).exited;
    expect(spin.timedOut).toBe(false);
    // SIGXCPU (24) at the soft limit, SIGKILL (9) at the hard one: bwrap reports 128 + the signal
    expect([128 + 24, 128 + 9]).toContain(spin.exitCode);
  });
});

describe('egress: the per-session proxy and the model bridge', () => {
  let receiver: HttpServer;
  let receiverPort: number;
  const received: string[] = [];
  /** names this test resolves itself (everything else: the system resolver) */
  const names: Record<string, string> = { 'allowed.test': '127.0.0.1', 'other.test': '127.0.0.1', 'sub.allowed.test': '127.0.0.1' };
  const lookup: Resolve = async (hostname) => {
    const known = names[hostname];
    if (!known) return dns.lookup(hostname, { all: true, verbatim: true });
    return [{ address: known, family: isIP(known) } as LookupAddress];
  };
  // the operator's setting, as a test receiver on loopback needs it; production's default is empty
  const operatorAllowsLoopback = createEgressGuard({ allowPrivate: ['127.0.0.1/32'], lookup });
  const operatorDefault = createEgressGuard({ allowPrivate: [], lookup });

  beforeAll(async () => {
    receiver = createHttpServer((req, res) => {
      received.push(`${req.method} ${req.headers.host} ${req.url}`);
      res.end('hello from the receiver\n');
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverPort = (receiver.address() as AddressInfo).port;
  });
  afterAll(() => receiver?.close());

  async function sandboxWith(id: string, servers: Record<string, NetServer>): Promise<{ sandbox: Sandbox; ports: Record<string, number> }> {
    const sandbox = await provider.prepare(sessionDirs(id));
    const ports: Record<string, number> = {};
    for (const [name, server] of Object.entries(servers)) ports[name] = await sandbox.expose(name, server);
    return { sandbox, ports };
  }

  it('limited networking: an allowed host is reached through the proxy, another is refused with 403 and an egress_denied callback naming its host and port', async () => {
    const denials: EgressDenial[] = [];
    const proxy = createEgressProxy({ policy: { type: 'limited', allowed_hosts: ['allowed.test'], allow_package_managers: false, allow_mcp_servers: false }, egress: operatorAllowsLoopback, onDenied: (d) => denials.push(d) });
    const { sandbox, ports } = await sandboxWith('sesn_limited', { egress: proxy.server });
    try {
      const env = proxyEnv(ports.egress!);
      const out = await probe(
        sandbox,
        `curl -sS --max-time 20 http://allowed.test:${receiverPort}/plain; echo "--";
         curl -sS --max-time 20 --proxytunnel http://allowed.test:${receiverPort}/tunnel; echo "--";
         curl -sS --max-time 20 -o /dev/null -w "other %{http_code}\\n" http://other.test:${receiverPort}/x;
         curl -sS --max-time 20 https://other.test:443/ ; echo "tls exit $?";
         curl -sS --max-time 20 -o /dev/null -w "sub %{http_code}\\n" http://sub.allowed.test:${receiverPort}/x;
         curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:${receiverPort}/direct; echo "direct exit $?"`,
        { env },
      );
      expect(out.match(/hello from the receiver/g)?.length).toBe(2);
      expect(received).toEqual(expect.arrayContaining([`GET allowed.test:${receiverPort} /plain`, `GET allowed.test:${receiverPort} /tunnel`]));
      expect(out).toContain('other 403');
      expect(out).toContain('sub 403'); // an exact entry is not a wildcard
      expect(out).toMatch(/CONNECT tunnel failed, response 403/);
      expect(out).toMatch(/direct exit [1-9]/); // no way around the proxy
      expect(received.some((r) => r.includes('/direct') || r.includes('other.test') || r.includes('sub.allowed'))).toBe(false);
      expect(denials).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ host: 'other.test', port: receiverPort }),
          expect.objectContaining({ host: 'other.test', port: 443 }),
          expect.objectContaining({ host: 'sub.allowed.test', port: receiverPort }),
        ]),
      );
      expect(denials).toHaveLength(3);
    } finally {
      await sandbox.teardown();
      await proxy.close();
    }
  });

  it('unrestricted networking still refuses 169.254.169.254, loopback and a name that resolves to loopback, with a callback for each', async () => {
    names['rebound.test'] = '127.0.0.1';
    const denials: EgressDenial[] = [];
    const proxy = createEgressProxy({ policy: { type: 'unrestricted' }, egress: operatorDefault, onDenied: (d) => denials.push(d) });
    const { sandbox, ports } = await sandboxWith('sesn_open', { egress: proxy.server });
    try {
      const via = `-x http://127.0.0.1:${ports.egress} --noproxy ''`;
      const out = await probe(
        sandbox,
        `curl -sS --max-time 20 ${via} -o /dev/null -w "metadata %{http_code}\\n" http://169.254.169.254/latest/meta-data/;
         curl -sS --max-time 20 ${via} -o /dev/null -w "loopback %{http_code}\\n" http://127.0.0.1:${receiverPort}/;
         curl -sS --max-time 20 ${via} -o /dev/null -w "rebound %{http_code}\\n" http://rebound.test:${receiverPort}/;
         curl -sS --max-time 20 ${via} -p http://127.0.0.1:${receiverPort}/ ; echo "tunnel exit $?"`,
      );
      expect(out).toContain('metadata 403');
      expect(out).toContain('loopback 403');
      expect(out).toContain('rebound 403');
      expect(out).toMatch(/CONNECT tunnel failed, response 403/);
      expect(received.some((r) => r.includes('rebound') || r === `GET 127.0.0.1:${receiverPort} /`)).toBe(false);
      expect(denials.map((d) => `${d.host}:${d.port}`)).toEqual(['169.254.169.254:80', `127.0.0.1:${receiverPort}`, `rebound.test:${receiverPort}`, `127.0.0.1:${receiverPort}`]);
      expect(denials[0]!.reason).toContain('link-local');
    } finally {
      await sandbox.teardown();
      await proxy.close();
    }
  });

  it('the model bridge carries the session\'s model endpoint into the sandbox at 127.0.0.1:<port>, and refuses it at connect time when the address rule does', async () => {
    const bridge = createModelBridge({ host: '127.0.0.1', port: receiverPort, egress: operatorAllowsLoopback });
    const denials: EgressDenial[] = [];
    const refusing = createModelBridge({ host: 'rebound.test', port: receiverPort, egress: operatorDefault, onDenied: (d) => denials.push(d) });
    names['rebound.test'] = '127.0.0.1';
    const { sandbox, ports } = await sandboxWith('sesn_model', { model: bridge.server, refused: refusing.server });
    try {
      const out = await probe(
        sandbox,
        `curl -sS --max-time 20 http://127.0.0.1:${ports.model}/v1/models; curl -sS --max-time 20 http://127.0.0.1:${ports.refused}/v1/refused; echo "refused exit $?"`,
      );
      expect(out).toContain('hello from the receiver');
      expect(out).toMatch(/refused exit [1-9]/);
      expect(received).toContain(`GET 127.0.0.1:${ports.model} /v1/models`);
      expect(received.some((r) => r.includes('/v1/refused'))).toBe(false);
      expect(denials).toEqual([expect.objectContaining({ host: 'rebound.test', port: receiverPort })]);
    } finally {
      await sandbox.teardown();
      await bridge.close();
      await refusing.close();
    }
  });

  it('a tunnel carries bytes as they come (an echo answers before either side ends), and a close or an idle tunnel closes both sides', async () => {
    const upstreamClosed: Array<() => void> = [];
    const echo = createNetServer((s) => {
      s.on('data', (d) => s.write(d));
      s.on('close', () => upstreamClosed.shift()?.());
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    const echoPort = (echo.address() as AddressInfo).port;
    const proxy = createEgressProxy({ policy: { type: 'limited', allowed_hosts: ['allowed.test'], allow_package_managers: false, allow_mcp_servers: false }, egress: operatorAllowsLoopback, onDenied: () => {}, idleTimeoutMs: 500 });
    const socketPath = join(root, 'proxy.sock');
    await new Promise<void>((resolve) => proxy.server.listen(socketPath, resolve));
    const { connect } = await import('node:net');
    async function tunnel() {
      const client = connect(socketPath);
      let received = '';
      client.on('data', (d) => (received += d.toString()));
      client.write(`CONNECT allowed.test:${echoPort} HTTP/1.1\r\nHost: allowed.test:${echoPort}\r\n\r\n`);
      const until = async (text: string) => {
        for (let i = 0; i < 100 && !received.includes(text); i++) await sleep(50);
        expect(received).toContain(text);
      };
      await until('200 Connection Established');
      return { client, until };
    }
    try {
      const first = await tunnel();
      const closed = new Promise<void>((resolve) => upstreamClosed.push(resolve));
      first.client.write('ping-1');
      await first.until('ping-1'); // echoed while both sides are open: nothing waits for an end
      first.client.end();
      await closed; // the client's close reached the destination

      const second = await tunnel();
      const idleUpstream = new Promise<void>((resolve) => upstreamClosed.push(resolve));
      const idleClient = new Promise<void>((resolve) => second.client.once('close', () => resolve()));
      await Promise.all([idleUpstream, idleClient]); // nobody sends: both sides are closed after the idle timeout
    } finally {
      await proxy.close();
      echo.close();
    }
  });

});

describe('bridges into the sandbox and the sandbox\'s shape', () => {
  it('the worker reaches a server inside (python3 -m http.server) through the Unix-socket bridge, and nothing else can', async () => {
    const port = await attacker.port();
    const server = attacker.spawn('python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', '/workspace'], { serve: [port] });
    const dispatcher = sandboxDispatcher(attacker, port);
    try {
      await writeFile(join(sessionDirs('sesn_attacker').workspace, 'served.txt'), 'served from inside\n');
      await server.ready(async () => (await request(`http://127.0.0.1:${port}/`, { dispatcher, headersTimeout: 2000 })).statusCode === 200, { timeoutMs: 30_000 });
      const res = await request(`http://127.0.0.1:${port}/served.txt`, { dispatcher });
      expect(await res.body.text()).toBe('served from inside\n');
      // the port is on the sandbox's own loopback, not the host's
      const direct = await request(`http://127.0.0.1:${port}/served.txt`, { headersTimeout: 2000 }).then(
        (r) => r.statusCode,
        () => 'unreachable',
      );
      expect(direct).not.toBe(200);
    } finally {
      await dispatcher.close();
      server.kill();
      await server.exited;
    }
  });

  it('a runtime that speaks over stdio (ACP, the Claude Code binary) talks to the worker through the sandboxed process\'s stdin and stdout', async () => {
    const proc = attacker.spawn('/bin/sh', ['-c', 'while read -r line; do echo "inside got: $line"; done; echo bye >&2'], { interactive: true });
    const chunks: Buffer[] = [];
    proc.stdout!.on('data', (c: Buffer) => chunks.push(c));
    proc.stdin!.write('{"jsonrpc":"2.0","id":1}\n');
    proc.stdin!.end('second\n');
    const exit = await proc.exited;
    expect(exit.exitCode).toBe(0);
    expect(Buffer.concat(chunks).toString()).toBe('inside got: {"jsonrpc":"2.0","id":1}\ninside got: second\n');
    expect(exit.tail).toBe('bye\n');
  });

  it('a symlink a sandbox puts where its server\'s socket should be is not followed by the worker', async () => {
    // a host socket the sandbox must not make the worker connect to
    const hostSocket = join(root, 'host-only.sock');
    let reached = false;
    const hostServer = createNetServer((s) => {
      reached = true;
      s.end();
    });
    await new Promise<void>((resolve) => hostServer.listen(hostSocket, resolve));
    try {
      const port = await attacker.port();
      const planted = await attacker.spawn('ln', ['-s', hostSocket, `/run/agentplane/in/${port}.sock`]).exited;
      expect(planted.exitCode).toBe(0);
      const err = await attacker.connect(port).then(
        () => null,
        (e: NodeJS.ErrnoException) => e,
      );
      // O_PATH | O_NOFOLLOW opens the link itself, which is no socket: refused before any connect
      expect(err?.code).toBe('ENOTSOCK');
      expect(reached).toBe(false);
    } finally {
      hostServer.close();
    }
  });

  it('hostPath maps the workspace and state only, and no path climbs out of them', () => {
    const dirs = sessionDirs('sesn_attacker');
    expect(attacker.hostPath('/workspace/src/a.ts')).toBe(join(dirs.workspace, 'src/a.ts'));
    expect(attacker.hostPath('/state')).toBe(dirs.state);
    expect(attacker.hostPath('/workspace/../etc/passwd')).toBeNull();
    expect(attacker.hostPath('/tmp/x')).toBeNull();
    expect(attacker.hostPath('workspace/x')).toBeNull();
  });

  it('prepare refuses a directory the sandbox\'s user could not reach, naming it, rather than failing inside bwrap', async () => {
    if (!isRoot) return;
    const closed = join(root, 'closed');
    await rm(closed, { recursive: true, force: true });
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(closed, 'inner'), { recursive: true });
    await chmod(closed, 0o700);
    await expect(provider.prepare({ ...sessionDirs('sesn_closed'), workspace: join(closed, 'inner', 'workspace') })).rejects.toThrow(`${closed} (mode 700) is not searchable`);
    // where the install scripts put OpenClaw, Node 24 and Hermes (~/.cache/agentplane) when the worker is root
    if ((statSync('/root').mode & 0o001) === 0) {
      await expect(provider.prepare({ ...sessionDirs('sesn_closed'), mounts: ['/root/.cache/agentplane/openclaw'] })).rejects.toThrow(/\/root \(mode \d+\) is not searchable/);
    }
    await expect(provider.prepare({ ...sessionDirs('sesn_closed'), mounts: ['/usr'] })).rejects.toThrow('may not cover');
    await expect(provider.prepare({ ...sessionDirs('sesn_closed'), mounts: ['/'] })).rejects.toThrow('may not cover');
  });

  it('the runtimes\' own binaries start inside from read-only mounts (OpenCode, the Claude Code binary)', async () => {
    const modules = join(process.cwd(), 'node_modules');
    const { realpathSync } = await import('node:fs');
    const opencode = realpathSync(join(modules, 'opencode-linux-x64', 'bin'));
    const claude = realpathSync(join(modules, '@anthropic-ai', 'claude-agent-sdk-linux-x64'));
    const sandbox = await provider.prepare({ ...sessionDirs('sesn_binaries'), mounts: [opencode, claude] });
    try {
      const out = await probe(sandbox, `${opencode}/opencode --version; ${claude}/claude --version;  ( : > ${opencode}/x ) 2>/dev/null || echo "mount read-only"`);
      expect(out).toMatch(/^\d+\.\d+\.\d+\n\d+\.\d+\.\d+ \(Claude Code\)\n/);
      expect(out).toContain('mount read-only');
    } finally {
      await sandbox.teardown();
    }
  });

  it('the seccomp tables match this machine\'s kernel headers (x86_64 and the asm-generic numbers aarch64 uses)', () => {
    const headers: Array<[string, 'x64' | 'arm64']> = [
      ['/usr/include/x86_64-linux-gnu/asm/unistd_64.h', 'x64'],
      ['/usr/include/asm-generic/unistd.h', 'arm64'],
    ];
    for (const [file, arch] of headers) {
      if (!existsSync(file)) continue;
      const text = readFileSync(file, 'utf8');
      for (const [name, nr] of Object.entries(refusedNumbers(arch))) {
        const match = new RegExp(`#define __NR(?:3264)?_${name}\\s+(\\d+)`).exec(text);
        expect(match?.[1], `${arch} ${name}`).toBe(String(nr));
      }
    }
  });
});

describe('configuration and the none provider', () => {
  it('AGENTPLANE_SANDBOX=none builds the none provider, and says so loudly', () => {
    const warnings: string[] = [];
    const chosen = createSandboxProvider(parseEnv(sandboxEnv, { AGENTPLANE_SANDBOX: 'none' }), { info() {}, warn: (m) => warnings.push(m) });
    expect(chosen.kind).toBe('none');
    expect(warnings.join('\n')).toContain('SANDBOX DISABLED');
  });

  it('the none provider warns when it is created, says what it is, and runs commands in the session\'s workspace', async () => {
    const warnings: string[] = [];
    const none = createNoneProvider({ logger: { warn: (m) => warnings.push(m) } });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('SANDBOX DISABLED');
    const sandbox = await none.prepare(sessionDirs('sesn_none'));
    try {
      expect(sandbox.kind).toBe('none');
      const exit = await sandbox.spawn('/bin/sh', ['-c', 'pwd; echo "$HOME"'], { capture: true }).exited;
      expect(exit.stdout).toBe(`${sandbox.paths.workspace}\n${sandbox.paths.state}\n`);
    } finally {
      await sandbox.teardown();
    }
  });
});
