/**
 * One registry, one folder per runtime (runtimes/registry.ts, runtimes/<kind>/): a runtime exists in exactly one
 * folder, every folder is registered, each descriptor says what its `runtime.config` may hold, and the API process
 * loads descriptors only, never an adapter or a runtime SDK.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { fromZodError } from '../api/errors';
import { AgentDefinitionSchema } from '../api/schemas/agent.schema';
import { descriptorOf, RUNTIME_KINDS, RUNTIMES } from '../runtimes/registry';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const RUNTIMES_DIR = join(REPO, 'runtimes');
const folders = () =>
  readdirSync(RUNTIMES_DIR, { withFileTypes: true })
    .filter((e) => e.isDirectory() && e.name !== 'kit')
    .map((e) => e.name);

describe('the runtime registry', () => {
  it('lists every runtimes/*/ folder and only those: adding a runtime is one folder and one registry line', () => {
    expect(folders().sort()).toEqual([...RUNTIME_KINDS].sort());
    expect(new Set(RUNTIME_KINDS).size).toBe(RUNTIME_KINDS.length);
  });

  it('takes each descriptor from its own folder, and no adapter lives outside its folder', async () => {
    for (const descriptor of RUNTIMES) {
      const module = (await import(pathToFileURL(join(RUNTIMES_DIR, descriptor.kind, 'descriptor.ts')).href)) as { descriptor: unknown };
      expect(module.descriptor, descriptor.kind).toBe(descriptor);
    }
    // nothing of a runtime at the top of runtimes/ (only the contract and the registry), nor in the kit
    expect(readdirSync(RUNTIMES_DIR).filter((name) => name.endsWith('.ts')).sort()).toEqual(['registry.ts', 'runtime-adapter.ts']);
    expect(readdirSync(join(RUNTIMES_DIR, 'kit'), { recursive: true }).filter((name) => String(name).endsWith('.adapter.ts'))).toEqual([]);
    // a runtime's descriptor creates its adapter from its own folder
    for (const kind of folders()) {
      const source = readFileSync(join(RUNTIMES_DIR, kind, 'descriptor.ts'), 'utf8');
      for (const [, specifier] of source.matchAll(/import\(['"]([^'"]+)['"]\)/g)) expect(specifier, kind).toMatch(/^\.\/[^/]+$/);
    }
  });

  it('has a conformance file for every registered runtime', () => {
    for (const kind of RUNTIME_KINDS) expect(existsSync(join(REPO, 'test', 'conformance', `${kind}.test.ts`)), kind).toBe(true);
  });
});

/** The agent definition as POST /v1/agents parses it: null when valid, else the fields its 400 names. */
function refused(runtime: unknown): string[] | null {
  const parsed = AgentDefinitionSchema.safeParse({ name: 'a', model: 'm', runtime });
  return parsed.success ? null : (fromZodError(parsed.error, 'body').invalidParams ?? []).map((p) => p.name);
}

describe("each runtime's runtime.config, as its descriptor declares it", () => {
  it('a developer cannot price their own sessions on any runtime: runtime.config.cost is refused, naming the field', () => {
    for (const kind of RUNTIME_KINDS) {
      const config = { ...(kind === 'acp' ? { agent: 'opencode' } : {}), cost: { input: 0, output: 0 } };
      expect(refused({ type: kind, config }), kind).toEqual(['body.runtime.config.cost']);
    }
  });

  it('a setting a runtime does not read is refused where the runtime says so, so a policy-looking key is never silently ignored', () => {
    expect(refused({ type: 'claude-code', config: { permissionMode: 'bypassPermissions' } })).toEqual(['body.runtime.config.permissionMode']);
    expect(refused({ type: 'cursor', config: { repos: [{ url: 'https://github.com/acme/app' }], autoMerge: true } })).toEqual(['body.runtime.config.autoMerge']);
    expect(refused({ type: 'openclaw', config: { tools: { allow: ['*'] } } })).toEqual(['body.runtime.config.tools']);
    expect(refused({ type: 'managed-agents', config: { agent_ids: 'x' } })).toEqual(['body.runtime.config.agent_ids']);
    for (const kind of ['deepagents', 'hermes'] as const) expect(refused({ type: kind, config: { anything: 1 } }), kind).toEqual(['body.runtime.config.anything']);
    // the runtimes that always kept unknown keys still do
    for (const config of [{ foo: 1 }, { agent: 'opencode', foo: 1 }]) expect(refused({ type: 'acp', config })).toEqual(config.agent ? null : ['body.runtime.config.agent']);
    expect(refused({ type: 'opencode', config: { foo: { bar: 1 } } })).toBeNull();
    expect(refused({ type: 'scripted', config: { say: '{not opencode}' } })).toBeNull();
  });

  it('a setting a runtime reads must have its type: a string token limit or an unknown Cursor mode is refused, naming it', () => {
    expect(refused({ type: 'opencode', config: { contextLimit: '1e9' } })).toEqual(['body.runtime.config.contextLimit']);
    expect(refused({ type: 'claude-code', config: { maxTurns: -1 } })).toEqual(['body.runtime.config.maxTurns']);
    expect(refused({ type: 'cursor', config: { mode: 'yolo' } })).toEqual(['body.runtime.config.mode']);
    expect(refused({ type: 'openclaw', config: { api: '{env:X}' } })).toEqual(['body.runtime.config.api']);
    expect(refused({ type: 'opencode', config: { contextLimit: 100_000, outputLimit: 8_000, mcp: { github: {} } } })).toBeNull();
    expect(refused({ type: 'managed-agents', config: { agent: { runtime: { type: 'scripted' } }, environment_id: 'env_1' } })).toBeNull();
  });

  it('an acp agent names a worker-side agent, never a command line, and OpenCode behind it gets no "{"', () => {
    expect(refused({ type: 'acp', config: {} })).toEqual(['body.runtime.config.agent']);
    expect(refused({ type: 'acp', config: { agent: '../../bin/sh' } })).toEqual(['body.runtime.config.agent']);
    expect(refused({ type: 'acp', config: { agent: 'opencode', command: '/bin/sh', args: ['-c', 'id'] } })).toEqual(['body.runtime.config.command', 'body.runtime.config.args']);
    expect(refused({ type: 'acp', config: { agent: 'opencode', x: { y: '{env:AGENTPLANE_MASTER_KEY}' } } })).toEqual(['body.runtime.config.x.y']);
  });

  it('every descriptor has a schema, and an empty config passes wherever nothing is required', () => {
    for (const kind of RUNTIME_KINDS) expect(descriptorOf(kind).configSchema.safeParse({}).success, kind).toBe(kind !== 'acp');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// What the API process loads

const HOOKS = pathToFileURL(join(REPO, 'test', 'support', 'module-log.hooks.mjs')).href;

/** Every module a fresh `node --import tsx` process loads when it imports `entries` (repo paths), as URLs. */
async function loadedBy(entries: string[]): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'agentplane-imports-'));
  try {
    const file = join(dir, 'loaded.txt');
    const setup = `import { register } from 'node:module'; register(${JSON.stringify(HOOKS)}, { data: { file: ${JSON.stringify(file)} } });`;
    const script = entries.map((entry) => `await import(${JSON.stringify(pathToFileURL(join(REPO, entry)).href)});`).join('\n');
    await promisify(execFile)(process.execPath, ['--import', 'tsx', '--import', `data:text/javascript,${encodeURIComponent(setup)}`, '--input-type=module', '-e', script], {
      cwd: REPO,
      // the modules are imported, not run: nothing connects anywhere, but config readers must not fail on a bare env
      env: { PATH: process.env.PATH ?? '', HOME: dir },
      timeout: 120_000,
    });
    return (await readFile(file, 'utf8')).split('\n').filter(Boolean);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The module specifiers api/main.ts imports: the process's whole graph, without running main (which connects). */
function apiMainImports(): string[] {
  const source = readFileSync(join(REPO, 'api', 'main.ts'), 'utf8');
  return [...source.matchAll(/^import .* from '(\.[^']+)';$/gm)].map(([, specifier]) => join('api', `${specifier}.ts`));
}

/** Packages the adapters import (a runtime's SDK and clients), plus the one DeepAgents loads by a computed name. */
function runtimePackages(): string[] {
  const packages = new Set(['deepagents']);
  for (const kind of folders()) {
    for (const name of readdirSync(join(RUNTIMES_DIR, kind)).filter((n) => n.endsWith('.ts') && n !== 'descriptor.ts')) {
      const source = readFileSync(join(RUNTIMES_DIR, kind, name), 'utf8');
      for (const [, specifier] of source.matchAll(/^import [^;]*? from '([^.'][^']*)';$/gm)) {
        if (specifier!.startsWith('node:')) continue;
        packages.add(specifier!.startsWith('@') ? specifier!.split('/').slice(0, 2).join('/') : specifier!.split('/')[0]!);
      }
    }
  }
  return [...packages];
}

/** What of `urls` the API must not load: a runtime's file other than its descriptor, or a runtime's package. */
function violations(urls: string[]): string[] {
  const packages = runtimePackages();
  return urls.filter((url) => {
    if (!url.startsWith('file:')) return false;
    const path = fileURLToPath(url);
    const inRuntime = /\/runtimes\/(?!kit\/)[^/]+\/(?!descriptor\.ts$)[^/]+/.test(path.slice(REPO.length - 1));
    const inPackage = packages.some((pkg) => path.includes(`/node_modules/${pkg}/`));
    return (path.startsWith(REPO) && !path.includes('/node_modules/') && inRuntime) || inPackage;
  });
}

describe('what the API process loads', () => {
  it('the API process loads runtime descriptors only: no adapter, no runtime SDK (LangChain, the Claude Agent SDK, the ACP SDK, ws)', { timeout: 180_000 }, async () => {
    const packages = runtimePackages();
    for (const sdk of ['@anthropic-ai/claude-agent-sdk', '@agentclientprotocol/sdk', '@langchain/core', 'ws', 'deepagents']) expect(packages).toContain(sdk);
    const loaded = await loadedBy(apiMainImports());
    // the probe saw the graph: the app, the registry and every descriptor
    for (const path of ['api/create-app.ts', 'runtimes/registry.ts', ...RUNTIME_KINDS.map((kind) => `runtimes/${kind}/descriptor.ts`)]) {
      expect(loaded, path).toContain(pathToFileURL(join(REPO, path)).href);
    }
    expect(violations(loaded)).toEqual([]);
  });

  it('the probe catches a violation: a graph that reaches an adapter names the adapter and its SDK', { timeout: 180_000 }, async () => {
    const loaded = await loadedBy([...apiMainImports(), 'runtimes/acp/acp.adapter.ts']);
    const found = violations(loaded);
    expect(found).toContain(pathToFileURL(join(REPO, 'runtimes', 'acp', 'acp.adapter.ts')).href);
    expect(found).toContain(pathToFileURL(join(REPO, 'runtimes', 'opencode', 'config.ts')).href);
    expect(found.some((url) => url.includes('/node_modules/@agentclientprotocol/sdk/'))).toBe(true);
  });
});
