/**
 * What each runtime can do, as its adapter declares it. The API serves this and the README table is generated
 * from it, so the two cannot drift from the adapters.
 */
import type { RuntimeCapabilities, RuntimeKind } from './runtime-adapter';
import { ACP_CAPABILITIES } from './acp/descriptor';
import { CLAUDE_CODE_CAPABILITIES } from './claude-code/descriptor';
import { CURSOR_CAPABILITIES } from './cursor/descriptor';
import { DEEPAGENTS_CAPABILITIES } from './deepagents/descriptor';
import { HERMES_CAPABILITIES } from './hermes/descriptor';
import { MANAGED_AGENTS_CAPABILITIES } from './managed-agents/descriptor';
import { OPENCLAW_CAPABILITIES } from './openclaw/descriptor';
import { OPENCODE_CAPABILITIES } from './opencode/descriptor';
import { SCRIPTED_CAPABILITIES } from './scripted/descriptor';

export const RUNTIME_CAPABILITIES: Record<RuntimeKind, RuntimeCapabilities> = {
  opencode: OPENCODE_CAPABILITIES,
  'claude-code': CLAUDE_CODE_CAPABILITIES,
  scripted: SCRIPTED_CAPABILITIES,
  'managed-agents': MANAGED_AGENTS_CAPABILITIES,
  cursor: CURSOR_CAPABILITIES,
  deepagents: DEEPAGENTS_CAPABILITIES,
  acp: ACP_CAPABILITIES,
  hermes: HERMES_CAPABILITIES,
  openclaw: OPENCLAW_CAPABILITIES,
};
