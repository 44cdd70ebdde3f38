/**
 * Claude Code sessions in their sandboxes, attacked from inside: the shared suite (test/support/sandbox-suite.ts) with
 * Claude Code's Bash tool; then the transcript the worker reads from the sandbox-writable state, which must not lead it
 * out of that state.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClaudeCodeAdapter, readTranscript } from '../runtimes/claude-code/claude-code.adapter';
import { describeSandboxAttacks } from './support/sandbox-suite';

describeSandboxAttacks({
  kind: 'claude-code',
  model: 'claude-sonnet-4-5',
  // the Anthropic Messages protocol
  modelUrl: (model) => model.url,
  adapter: (stack) => ({ 'claude-code': createClaudeCodeAdapter({ dataDir: stack.dataDir, sandboxes: stack.sandboxes }) }),
  // Claude Code's shell shadows grep and find with the ugrep and bfs built into its binary, and that ugrep reads
  // /dev/random forever in a recursive search of /: the probes use the system's tools, as the list means them to
  shell: { tool: ['Bash'], input: (command) => ({ command: `unset -f grep find; ${command}`, description: 'shell' }) },
});

describe('the transcript the worker reads from a session\'s sandbox-writable state', () => {
  let root: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'agentplane-claude-transcript-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('a link planted in the state to another session\'s transcript (or a linked projects directory) is not read, so it is never replayed as this session\'s events', async () => {
    const victim = join(root, 'victim', 'config', 'projects', '-workspace');
    await mkdir(victim, { recursive: true });
    const secret = join(victim, 'other.jsonl');
    await writeFile(secret, `${JSON.stringify({ type: 'assistant', message: { id: 'm1', content: [{ type: 'text', text: 'the other session\'s words' }] } })}\n`);

    const state = join(root, 'attacker');
    const projects = join(state, 'config', 'projects');
    await mkdir(join(projects, '-workspace'), { recursive: true });
    // the final name a link
    await symlink(secret, join(projects, '-workspace', 'mine.jsonl'));
    expect(await readTranscript(join(projects, '-workspace', 'mine.jsonl'), state)).toBeNull();
    // a directory on the way a link
    await symlink(victim, join(projects, 'linked'));
    expect(await readTranscript(join(projects, 'linked', 'other.jsonl'), state)).toBeNull();
    // the session's own transcript is read
    await writeFile(join(projects, '-workspace', 'own.jsonl'), '{"type":"user"}\n');
    expect(await readTranscript(join(projects, '-workspace', 'own.jsonl'), state)).toBe('{"type":"user"}\n');
  });
});
