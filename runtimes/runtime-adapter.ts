/**
 * The one contract every runtime sits behind.
 *
 * A turn is driven by the `runTurn` activity: it opens (or reattaches to) the runtime session, sends one user
 * message, and streams canonical events into a sink until the turn ends or a tool call needs a person.
 *
 * What must stay true for every adapter:
 * - Reattach, never redo. Before anything is sent, the adapter records (through `sink.checkpoint`) what it is
 *   about to send and where its stream stands. A retried activity gets that state back in `ref.state` and must
 *   resume the stream instead of sending the prompt again.
 * - Every event carries a `sourceId` that is stable across replays of the same runtime event, so the event log
 *   can drop duplicates.
 * - `tool_use_id` on `agent.tool_use` / `agent.tool_result` is the runtime's own call id (PermissionRequest.callId);
 *   the sink maps it to the public `agent.tool_use` event id, so the same call has one id everywhere.
 * - Tool calls that the runtime lets us gate go through `sink.decide`. `allow`/`deny` are answered on the spot;
 *   `ask` makes the adapter return `requires_action` with the runtime still blocked on that call. The workflow
 *   then waits for a person and calls `runTurn` again with `{ kind: 'resume', decisions }`.
 * - `sink.signal` aborts when the turn is cancelled (interrupt, budget): the adapter interrupts the runtime and
 *   returns `{ status: 'interrupted' }`.
 * - Secrets arrive in `TurnContext.secrets` only; they are never put in `ref.state`, events or errors.
 */
import type { z } from 'zod';
import type { DenySupport } from '../governance/enforceability';
import type { AgentSnapshot, CanonicalTool, RuntimeKind } from '../governance/types';
import type { AcpAgentSpec } from './acp/descriptor';
import type { Networking } from '../governance/networking';
import type { EgressGuard } from './kit/egress';
import type { SessionSandboxes } from './kit/session-sandbox';

export type { RuntimeKind } from '../governance/types';

export interface RuntimeCapabilities {
  /** tool calls can be held for a decision (allow / deny / ask a person) */
  approvals: boolean;
  /** an in-flight turn can be stopped */
  interrupt: boolean;
  /** a retried activity resumes the runtime's stream without re-sending */
  reattach: boolean;
  /** where the price of a turn comes from */
  cost: 'reported' | 'priced' | 'none';
  /** events arrive while the turn runs, not only at its end */
  streaming: boolean;
  /** which deny rules the runtime can enforce (governance/enforceability.ts); sessions are refused past it */
  denies: DenySupport;
  /** for `whole-tool`: the canonical tools it can deny whole; its other tools cannot be denied */
  denyTools?: readonly CanonicalTool[];
  /**
   * where the processes of a session run: `session` in the session's own sandbox (runtimes/kit/sandbox/), `remote` at
   * the vendor (nothing runs on the worker), `no-process` nowhere (the runtime starts none), `none` on the worker
   * without a sandbox (its sessions are marked `sandbox: none`)
   */
  sandbox: 'session' | 'remote' | 'no-process' | 'none';
  /**
   * its model requests go through the worker's model gateway (gateway/): the runtime is given the gateway's address in
   * its sandbox and a session token, never the provider's key
   */
  gateway: boolean;
  /**
   * how a session moves to another worker (its own died, or was drained): `snapshot` its runtime's state and workspace
   * are snapshotted at every turn stop (snapshots/) and restored by the next worker; `remote` the vendor keeps the
   * session; `stateless` nothing of it is on the worker; `no` it continues only on the worker that holds its files
   */
  portable: 'snapshot' | 'remote' | 'stateless' | 'no';
}

export interface TurnContext {
  sessionId: string;
  agent: AgentSnapshot;
  /** a folder owned by this session (workspace, runtime state) under the worker's data directory */
  workdir: string;
  /** decrypted credential values, by purpose; never persisted */
  secrets: { modelApiKey?: string };
  /**
   * what the session's sandbox may reach this turn (its environment's `config.networking`, read at every turn); absent
   * (a test building its own context): `DEFAULT_NETWORKING`
   */
  networking?: Networking;
}

/** What the adapter needs to find its runtime session again. JSON only, no secrets. */
export interface RuntimeSessionRef {
  sessionId: string;
  runtimeSessionId: string;
  state: Record<string, unknown>;
}

export type TurnInput =
  /** `messageId` is deterministic per turn: the adapter uses it to tell "already sent" from "not yet sent". */
  | { kind: 'message'; turnId: string; messageId: string; text: string }
  | { kind: 'resume'; turnId: string; decisions: PermissionDecision[] };

export interface ModelUsage {
  input_tokens: number;
  output_tokens: number;
  cache_read_input_tokens: number;
  cache_creation_input_tokens: number;
}

/** Canonical events, named after the Managed Agents vocabulary. `raw` may carry the native payload. */
export type CanonicalEventBody =
  | { type: 'agent.message'; content: Array<{ type: 'text'; text: string }> }
  | { type: 'agent.thinking'; content: Array<{ type: 'text'; text: string }> }
  | { type: 'agent.tool_use'; tool_use_id: string; name: CanonicalTool; input: Record<string, unknown>; evaluated_permission?: 'allow' | 'ask' | 'deny' }
  | { type: 'agent.tool_result'; tool_use_id: string; content: Array<{ type: 'text'; text: string }>; is_error: boolean }
  | { type: 'span.model_request_end'; model: string; model_usage: ModelUsage; cost_usd?: number; is_error: boolean }
  | { type: 'session.error'; error: { type: string; message: string } };

export type RuntimeEvent = CanonicalEventBody & {
  /** stable id of the native event this came from: the event log's dedupe key */
  sourceId: string;
  raw?: unknown;
};

export interface PermissionRequest {
  /** the runtime's own id for the pending request (used to answer it) */
  requestId: string;
  /** the runtime's id for the tool call */
  callId: string;
  tool: CanonicalTool;
  input: Record<string, unknown>;
  /**
   * the `agent.tool_use` id of a call a person approved that never ran: its runtime was lost while the call waited, and
   * the agent, told so, made the same call again. The sink allows this one call on that approval (once; the same tool
   * and input; a deny rule still wins) instead of asking again.
   */
  approvedAs?: string;
}

export interface PermissionDecision {
  requestId: string;
  behavior: 'allow' | 'deny';
  message?: string;
}

export type Decision =
  | { action: 'allow' | 'deny'; message?: string }
  | { action: 'ask'; toolUseId: string };

export interface TurnSink {
  /** persist events (deduplicated by sourceId) before returning */
  emit(events: RuntimeEvent[]): Promise<void>;
  /** record adapter state (stream cursor, what was sent) so a retry can reattach; replaces the whole state */
  checkpoint(state: Record<string, unknown>): Promise<void>;
  /** decide a gated tool call; the sink records the `agent.tool_use` event with the decision */
  decide(request: PermissionRequest): Promise<Decision>;
  /** aborted when the turn must stop (interrupt, budget, activity cancellation) */
  signal: AbortSignal;
}

export type TurnResult =
  | { status: 'end_turn' }
  | { status: 'requires_action'; pending: Array<{ requestId: string; toolUseId: string }> }
  | { status: 'interrupted' }
  | { status: 'error'; message: string; retryable: boolean };

export interface RuntimeAdapter {
  readonly kind: RuntimeKind;
  readonly capabilities: RuntimeCapabilities;
  /** start the runtime session, or reattach to `previous` when one was recorded */
  open(ctx: TurnContext, previous: RuntimeSessionRef | null): Promise<RuntimeSessionRef>;
  runTurn(ctx: TurnContext, ref: RuntimeSessionRef, input: TurnInput, sink: TurnSink): Promise<TurnResult>;
  close(ref: RuntimeSessionRef): Promise<void>;
  /**
   * With `portable: 'snapshot'`: the host directory of what the session's runtime needs to continue (its state, besides
   * the workspace) and what in it is not state (picomatch patterns relative to it: caches, logs, files it rebuilds).
   * The runtime is idle whenever it is read (a turn stopped) or written (before `open`).
   */
  sessionState?(sessionId: string): { path: string; ignore: readonly string[] };
}

/**
 * Thrown by an adapter for a turn that no retry can fix (say, a tenant value the runtime would misread): the activity
 * fails the turn without retrying, with this message.
 */
export class RuntimeRefusedError extends Error {
  readonly code = 'runtime.refused';
}

/** Adapters log through this (the worker passes a structured logger); silent when absent. */
export interface AdapterLogger {
  debug?(msg: string, meta?: Record<string, unknown>): void;
  info(msg: string, meta?: Record<string, unknown>): void;
  warn(msg: string, meta?: Record<string, unknown>): void;
}

export type RuntimeRegistry = Partial<Record<RuntimeKind, RuntimeAdapter>>;

/** What a worker builds its runtimes with (worker/main.ts, from its configuration); each runtime takes what it needs. */
export interface RuntimeOptions {
  /** runtime state lives under it, one folder per runtime and session */
  dataDir: string;
  /** the `opencode` binary (opencode, and acp's built-in agent) */
  opencodeBin?: string;
  /** the ACP agents this worker allows besides the built-in `opencode` (AGENTPLANE_ACP_AGENTS) */
  acpAgents?: Record<string, AcpAgentSpec>;
  /** the Node 24 and OpenClaw binaries the openclaw runtime needs */
  openclaw?: { nodeBin: string; openclawBin: string };
  /** the `hermes` binary of a virtualenv (HERMES_BIN) */
  hermesBin?: string;
  /** the scripted runtime appends one JSON line per prompt it "sends" here (chaos runs count them across worker processes) */
  scriptedPromptLog?: string;
  /** the worker's structured log, with the runtime named on every line */
  logger?: AdapterLogger;
  /** the connections adapters open themselves (remote runtimes, DeepAgents' model) go through it */
  egress?: EgressGuard;
  /**
   * Each session's sandbox (runtimes/kit/session-sandbox.ts): every process a runtime starts for a session, and every
   * tool it runs, goes in it: the only way a runtime starts a process (the `none` provider, behind its loud setting,
   * is the one way to run without isolation).
   */
  sandboxes: SessionSandboxes;
}

/**
 * A runtime as the platform knows it before running one: `runtimes/<kind>/descriptor.ts`, listed once in
 * runtimes/registry.ts. Everything but `create` is plain data, so the API imports descriptors and never an adapter
 * or an SDK; `create` imports the adapter module (and the SDK behind it) only when a worker builds the runtime.
 */
export interface RuntimeDescriptor<Kind extends string = string> {
  readonly kind: Kind;
  readonly capabilities: RuntimeCapabilities;
  /** an agent's `runtime.config` for this runtime (runtimes/kit/config.ts): checked when the agent is saved, 400 naming the field */
  readonly configSchema: z.ZodType<Record<string, unknown>, Record<string, unknown>>;
  create(opts: RuntimeOptions): Promise<RuntimeAdapter>;
}
