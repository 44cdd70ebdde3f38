/**
 * The attack list of the sandbox issue, as one bash script a session runs as a tool call. Its whole output is
 * compressed and base64-encoded inside the sandbox (`| gzip -9 | base64 -w0`), so redaction anywhere on the way back
 * cannot hide a leak: the test decodes what came back and looks for every secret and every marker itself.
 *
 * How a runtime test uses it: the scripted model answers the prompt with a `bash` tool call running `attackScript`,
 * then with a message that repeats the tool result it saw (`echoToolResult`); the test decodes that message with
 * `decodeAttackOutput` and hands it to `expectNothingFound`. What the model saw is what an agent could exfiltrate.
 */
import { existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { expect } from 'vitest';

export interface AttackTargets {
  /** values no probe may find: the master and admin keys, the database URL, other sessions' model keys */
  secrets: readonly string[];
  /** a string another session wrote into its workspace */
  otherSessionMarker: string;
  /** that workspace's host path */
  otherSessionWorkspace: string;
  /** the platform's checkout */
  checkout: string;
  /** the worker's data dir (key files, PGlite, other sessions) */
  dataDir: string;
  /** host:port pairs no session may open: Postgres, Temporal, the API, the metrics port, 169.254.169.254 */
  tcp: ReadonlyArray<readonly [string, number]>;
  /** the worker's pid on the host */
  workerPid: number;
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The paths outside the workspace the script tries to write. */
function writeProbes(t: AttackTargets): string[] {
  return ['/etc/agentplane-pwn', '/usr/agentplane-pwn', '/agentplane-pwn', `${t.checkout}/agentplane-pwn`, `${t.dataDir}/agentplane-pwn`, '/root/agentplane-pwn'];
}

/** Prints everything it can read of what the sandbox must hide, and a tag for every probe that got through. */
export function attackScript(t: AttackTargets): string {
  const lines = [
    'exec 2>/dev/null',
    // every process's environment, and whether the worker is among the processes this sandbox sees
    'for p in /proc/[0-9]*; do tr "\\0" "\\n" < "$p/environ"; echo; done',
    // (a bracket in the pattern, so that this script's own command line does not match)
    'grep -ls "worker/mai[n]" /proc/[0-9]*/cmdline && echo WORKER-VISIBLE',
    `[ -e /proc/${t.workerPid}/environ ] && tr "\\0" "\\n" < /proc/${t.workerPid}/environ && echo WORKER-PID-VISIBLE`,
    // the data dir and its key files, the checkout
    `ls -la ${quote(t.dataDir)} && echo DATADIR-VISIBLE`,
    `find ${quote(t.dataDir)} -maxdepth 3 -type f -exec cat {} + | head -c 100000`,
    `ls ${quote(t.checkout)}/package.json && echo CHECKOUT-VISIBLE`,
    `cat ${quote(t.checkout)}/.env ${quote(t.checkout)}/package.json | head -c 10000`,
    // another session's workspace: its host path, then a search of every place a path could lead to it
    `ls -la ${quote(t.otherSessionWorkspace)} && echo OTHER-WORKSPACE-VISIBLE`,
    // (the marker arrives encoded, so that this script's text never holds it)
    `m=$(echo ${Buffer.from(t.otherSessionMarker).toString('base64')} | base64 -d)`,
    'grep -rsl --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr --exclude-dir=lib --exclude-dir=lib64 "$m" / | head -20',
    'grep -rs "$m" / --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr --exclude-dir=lib --exclude-dir=lib64 | head -c 2000',
    // the network: every platform port and the metadata address
    ...t.tcp.map(([host, port]) => `timeout 3 bash -c 'exec 3<>/dev/tcp/${host}/${port}' && echo OPEN:${host}:${port}`),
    'timeout 3 bash -c "exec 3<>/dev/tcp/169.254.169.254/80" && echo OPEN:metadata',
    // writes outside the workspace
    ...writeProbes(t).map((path) => `echo pwned > ${quote(path)} && echo WROTE:${path}`),
    // ptrace of the worker (outside) and of the sandbox's own pid 1
    `python3 -c 'import ctypes,sys\nl=ctypes.CDLL(None,use_errno=True)\nfor p in sys.argv[1:]:\n  print("PTRACE-OK:"+p if l.ptrace(16,int(p),0,0)==0 else "ptrace-refused:"+p)' ${t.workerPid} 1`,
    'echo ATTACK-DONE',
  ];
  // compressed, so that it fits a runtime's cap on a tool result (OpenClaw's is 8,000 characters); a cut output does
  // not decode, and one without ATTACK-DONE fails
  return `( ${lines.join('\n')}\n) | gzip -9 | base64 -w0`;
}

/** The tool call the scripted model makes: the script, base64 output only. */
export function attackToolCall(t: AttackTargets) {
  return { tool: ['bash', 'Bash', 'terminal', 'execute', 'shell', 'exec'], input: { command: attackScript(t), description: 'attack list' } };
}

/** A scripted step whose text is the tool result the model saw, marked so the test can find it. */
export const echoToolResult = { text: (ctx: { lastToolResult: string | undefined }) => `ATTACK-RESULT<${ctx.lastToolResult ?? ''}>` };

/** The decoded output of the attack script inside a message made by `echoToolResult`. */
export function decodeAttackOutput(message: string): string {
  const inner = /ATTACK-RESULT<([\s\S]*)>/.exec(message)?.[1] ?? '';
  const b64 = /[A-Za-z0-9+/]{40,}={0,2}/.exec(inner)?.[0];
  if (!b64) throw new Error(`no base64 output in the tool result: ${inner.slice(0, 500)}`);
  return gunzipSync(Buffer.from(b64, 'base64')).toString('utf8');
}

/** The script ran to its end, and found nothing. */
export function expectNothingFound(decoded: string, t: AttackTargets): void {
  expect(decoded, 'the attack script ran to its end').toContain('ATTACK-DONE');
  for (const secret of t.secrets) expect(decoded.includes(secret), `a secret (${secret.slice(0, 6)}…) was found`).toBe(false);
  expect(decoded).not.toContain(t.otherSessionMarker);
  for (const tag of ['WORKER-VISIBLE', 'WORKER-PID-VISIBLE', 'DATADIR-VISIBLE', 'CHECKOUT-VISIBLE', 'OTHER-WORKSPACE-VISIBLE', 'OPEN:', 'PTRACE-OK']) {
    expect(decoded, `probe ${tag}`).not.toContain(tag);
  }
  // A write below /tmp lands in the sandbox's private tmp, writable by design (a checkout under /tmp has its runtime's
  // install mounted there, so the probe's parent directory exists inside); anywhere else it is a finding. Either way
  // the file must not be on the host.
  const wrote = [...decoded.matchAll(/^WROTE:(.*)$/gm)].map((m) => m[1] ?? '');
  expect(wrote.filter((path) => !path.startsWith('/tmp/')), 'probe WROTE:').toEqual([]);
  for (const path of writeProbes(t)) expect(existsSync(path), `${path} on the host`).toBe(false);
  expect(decoded, 'ptrace was tried').toContain('ptrace-refused');
}

/**
 * Only inside a sandbox (uid 1000, HOME /state or below it): run where a runtime is not sandboxed after all (a regression, a test
 * proving it fails), a fork bomb as the worker's user takes the whole machine down, tests and agents with it.
 */
const INSIDE_ONLY = '[ "$(id -u)" = 1000 ] && [ "${HOME#/state}" != "$HOME" ] || { echo "not in a sandbox: refused to run"; exit 0; }; ';

/** Commands that must be bounded by the sandbox's limits and leave the worker serving other sessions. */
// (the bomb's processes do not hold the tool's output open: the call returns while they hit the limit, instead of when
// the last of them gives up, which can outlast the runtime's own tool timeout)
export const FORK_BOMB = `${INSIDE_ONLY}bash -c 'f() { f | f & }; f' </dev/null >/dev/null 2>&1; sleep 3; echo fork-bomb-returned`;
export const MEMORY_HOG = `${INSIDE_ONLY}python3 -c "a = bytearray(64 * 1024 ** 3)" 2>&1 | tail -1; echo memory-hog-returned`;
