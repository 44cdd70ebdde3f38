/**
 * The model gateway against the provider called directly and against LiteLLM's proxy, in one run.
 *
 * Three OS processes serve: the provider (bench/processes/model-upstream.ts: byte-exact OpenAI chat completions),
 * agentplane's gateway in front of it (bench/processes/gateway.ts: token checked, key injected, usage metered), and
 * LiteLLM's proxy in front of the same provider (`litellm[proxy]==1.80.17`, scripts/ensure-litellm.sh; its master key
 * checked, no database). The load comes from two more: autocannon (bench/processes/load-generator.ts) for whole
 * answers, and this process for streams (the time until the first byte of the body).
 *
 * At 1, 10 and 100 concurrent requests, each figure is the median of `--runs` runs (default 3), the targets taken in
 * turn within each run so a change of load falls on all alike:
 * - a whole chat completion: p50 and p99, and what the gateway or LiteLLM adds to the direct call's;
 * - a streamed one: the time to its first body byte, p50 and p99, and what each adds;
 * - requests/s (whole answers; the highest of the three levels is the saturation figure);
 * - the resident memory of each server process after the run.
 *
 * All of it shares 2 cores here: the figures are for comparing the three paths, not for sizing a machine.
 *
 *   npx tsx bench/gateway.ts [--runs 3] [--duration 3]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { freePort } from '../runtimes/kit/ports';
import type { LoadOrder, LoadReport } from './processes/load-generator';
import { flags, ms, printMachine, printTable, summarize } from './support';

const opts = flags({ runs: 3, duration: 3 });
const LEVELS = [1, 10, 100];
printMachine(`model gateway: direct, agentplane's gateway and LiteLLM's proxy in front of one provider (${opts.runs} runs, ${opts.duration} s per figure, concurrency ${LEVELS.join(', ')})`);

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const children: ChildProcess[] = [];
let stopping = false;
const work = mkdtempSync(join(tmpdir(), 'agentplane-bench-gateway-'));

/** Starts a process and waits for its `READY …` line (or, with `health`, for that URL to answer). */
async function start(command: string, args: string[], health?: string, env: NodeJS.ProcessEnv = process.env): Promise<{ child: ChildProcess; words: string[] }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  children.push(child);
  const failed = new Promise<never>((_, reject) => child.once('error', reject));
  failed.catch(() => {});
  let log = '';
  child.stderr!.on('data', (d) => (log = (log + String(d)).slice(-4000)));
  const ready = new Promise<string[]>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += String(d);
      const line = /^READY (.*)$/m.exec(out);
      if (line && !health) resolve(line[1]!.split(' '));
    });
    child.once('exit', (code) => reject(new Error(`${command} exited with ${code}: ${log}`)));
  });
  child.once('exit', (code, signal) => {
    if (!stopping) console.error(`${command} ${args.join(' ')} exited (${code ?? signal}) during the benchmark: ${log}`);
  });
  if (!health) return { child, words: await Promise.race([ready, failed]) };
  ready.catch(() => {});
  await Promise.race([failed, new Promise((r) => setTimeout(r, 100))]);
  const until = Date.now() + 180_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${command} exited with ${child.exitCode}: ${log}`);
    const ok = await fetch(health).then((r) => r.ok, () => false);
    if (ok) return { child, words: [] };
    if (Date.now() > until) throw new Error(`${command} did not answer ${health} within 180 s: ${log}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Resident memory of a process and its children, in MiB. */
function rssMiB(pid: number): number {
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) {
    const kids = readFileSync(`/proc/${tree[i]}/task/${tree[i]}/children`, 'utf8').trim();
    if (kids) tree.push(...kids.split(/\s+/).map(Number));
  }
  let kb = 0;
  for (const p of tree) kb += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
  return kb / 1024;
}

interface Target {
  name: string;
  url: string;
  auth: string;
  pid: number | null;
}

const provider = await start(process.execPath, ['--import', 'tsx', here('./processes/model-upstream.ts')]);
const providerUrl = provider.words[0]!;
const gw = await start(process.execPath, ['--import', 'tsx', here('./processes/gateway.ts'), providerUrl]);
const targets: Target[] = [
  { name: 'direct to the provider', url: providerUrl, auth: 'Bearer sk-bench-provider-key', pid: null },
  { name: "agentplane's gateway", url: gw.words[0]!, auth: `Bearer ${gw.words[1]}`, pid: gw.child.pid! },
];

let litellmWhy: string | null = null;
try {
  const bin = process.env.AGENTPLANE_LITELLM_BIN ?? execFileSync('bash', [here('../scripts/ensure-litellm.sh')], { stdio: ['ignore', 'pipe', 'inherit'] }).toString().trim().split('\n').at(-1)!;
  const config = join(work, 'litellm.yaml');
  writeFileSync(
    config,
    [
      'model_list:',
      '  - model_name: bench-model',
      '    litellm_params:',
      '      model: openai/bench-model',
      `      api_base: ${providerUrl}/v1`,
      '      api_key: sk-bench-provider-key',
      'general_settings:',
      '  master_key: sk-litellm-bench-master',
      'litellm_settings:',
      '  telemetry: false',
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const env = { ...process.env, LITELLM_LOG: 'ERROR', LITELLM_LOCAL_MODEL_COST_MAP: 'True', LITELLM_TELEMETRY: 'False', NO_DOCS: 'True' };
  const litellm = await start(bin, ['--config', config, '--host', '127.0.0.1', '--port', String(port), '--num_workers', '1'], `http://127.0.0.1:${port}/health/liveliness`, env);
  targets.push({ name: "LiteLLM's proxy", url: `http://127.0.0.1:${port}`, auth: 'Bearer sk-litellm-bench-master', pid: litellm.child.pid! });
} catch (err) {
  litellmWhy = (err as Error).message.split('\n')[0]!;
  console.log(`LiteLLM's proxy is not measured: ${litellmWhy}`);
}

const generator = spawn(process.execPath, ['--import', 'tsx', here('./processes/load-generator.ts')], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
children.push(generator);
function load(order: LoadOrder): Promise<LoadReport> {
  return new Promise((resolve, reject) => {
    generator.once('message', (m: LoadReport | { error: string }) => ('error' in m ? reject(new Error(m.error)) : resolve(m)));
    generator.send(order);
  });
}

const body = (stream: boolean) => JSON.stringify({ model: 'bench-model', stream, messages: [{ role: 'user', content: 'hi' }] });

/** Streams for `seconds` with `concurrency` at once; the time to each answer's first body byte. */
async function ttfb(target: Target, concurrency: number, seconds: number): Promise<number[]> {
  const pool = new Pool(target.url, { connections: concurrency, pipelining: 1 });
  const samples: number[] = [];
  const until = performance.now() + seconds * 1000;
  const one = async () => {
    const t0 = performance.now();
    const res = await pool.request({ path: '/v1/chat/completions', method: 'POST', headers: { authorization: target.auth, 'content-type': 'application/json' }, body: body(true) });
    let first = true;
    for await (const _chunk of res.body) {
      if (first) {
        if (res.statusCode === 200) samples.push(performance.now() - t0);
        first = false;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < until) await one();
  }));
  await pool.close();
  return samples;
}

interface Figures {
  p50: number;
  p99: number;
  rps: number;
  ttfb50: number;
  ttfb99: number;
  errors: number;
}
const runs = new Map<string, Figures[]>();
const key = (t: Target, c: number) => `${t.name}@${c}`;

for (let run = 1; run <= opts.runs; run++) {
  for (const c of LEVELS) {
    for (const target of targets) {
      // a short warm-up at this level, then the figures
      await load({ url: `${target.url}/v1/chat/completions`, requests: [{ method: 'POST', headers: { authorization: target.auth, 'content-type': 'application/json' }, body: body(false) }], connections: c, duration: 1 });
      const whole = await load({ url: `${target.url}/v1/chat/completions`, requests: [{ method: 'POST', headers: { authorization: target.auth, 'content-type': 'application/json' }, body: body(false) }], connections: c, duration: opts.duration });
      const lat = summarize(whole.samples);
      const first = summarize(await ttfb(target, c, opts.duration));
      const list = runs.get(key(target, c)) ?? [];
      list.push({ p50: lat.p50, p99: lat.p99, rps: whole.rps, ttfb50: first.p50, ttfb99: first.p99, errors: whole.errors + whole.non2xx });
      runs.set(key(target, c), list);
    }
  }
  console.log(`run ${run} of ${opts.runs} done`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fig = (t: Target, c: number, f: keyof Figures) => median(runs.get(key(t, c))!.map((x) => x[f]));
const direct = targets[0]!;
const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)} ms`;

for (const c of LEVELS) {
  console.log(`\n## ${c} concurrent (medians of ${opts.runs} runs)`);
  printTable(
    ['path', 'p50', 'p99', 'added p50', 'added p99', 'stream TTFB p50', 'TTFB p99', 'added TTFB p50', 'req/s', 'errors'],
    targets.map((t) => [
      t.name,
      ms(fig(t, c, 'p50')),
      ms(fig(t, c, 'p99')),
      t === direct ? '–' : signed(fig(t, c, 'p50') - fig(direct, c, 'p50')),
      t === direct ? '–' : signed(fig(t, c, 'p99') - fig(direct, c, 'p99')),
      ms(fig(t, c, 'ttfb50')),
      ms(fig(t, c, 'ttfb99')),
      t === direct ? '–' : signed(fig(t, c, 'ttfb50') - fig(direct, c, 'ttfb50')),
      fig(t, c, 'rps').toFixed(0),
      fig(t, c, 'errors'),
    ]),
  );
}

const saturation = (t: Target) => Math.max(...LEVELS.map((c) => fig(t, c, 'rps')));
console.log('\n## saturation and memory');
printTable(
  ['path', 'req/s at saturation (best level)', 'vs LiteLLM', 'RSS after the run'],
  targets.map((t) => {
    const lite = targets.find((x) => x.name === "LiteLLM's proxy");
    return [t.name, saturation(t).toFixed(0), lite ? `${(saturation(t) / saturation(lite)).toFixed(1)}×` : '–', t.pid ? `${rssMiB(t.pid).toFixed(0)} MiB` : '–'];
  }),
);
if (litellmWhy) console.log(`\nLiteLLM's proxy was not measured: ${litellmWhy}`);

stopping = true;
for (const child of children) child.kill('SIGTERM');
rmSync(work, { recursive: true, force: true });
process.exit(0);
