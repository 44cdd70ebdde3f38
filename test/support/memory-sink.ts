/**
 * What the turn activity's sink does, in memory, for adapter-level tests: dedupe by sourceId, record each decision
 * as an `agent.tool_use` event once, abort on demand.
 */
import type { Decision, PermissionRequest, RuntimeEvent, TurnSink } from '../../runtimes/runtime-adapter';

export class MemorySink implements TurnSink {
  readonly events: RuntimeEvent[] = [];
  readonly checkpoints: Array<Record<string, unknown>> = [];
  readonly requests: PermissionRequest[] = [];
  private readonly controller = new AbortController();
  readonly signal = this.controller.signal;
  private readonly recorded = new Map<string, Decision>();

  constructor(private readonly policy: (request: PermissionRequest) => 'allow' | 'deny' | 'ask' = () => 'allow') {}

  async emit(events: RuntimeEvent[]): Promise<void> {
    for (const e of events) if (!this.events.some((x) => x.sourceId === e.sourceId)) this.events.push(e);
  }

  async checkpoint(state: Record<string, unknown>): Promise<void> {
    this.checkpoints.push(structuredClone(state));
  }

  async decide(request: PermissionRequest): Promise<Decision> {
    this.requests.push(request);
    const seen = this.recorded.get(request.callId);
    if (seen) return seen;
    const action = this.policy(request);
    const decision: Decision = action === 'ask' ? { action, toolUseId: `tu_${request.callId}` } : { action, message: action === 'deny' ? 'denied by test policy: no bash here' : undefined };
    this.recorded.set(request.callId, decision);
    await this.emit([{ type: 'agent.tool_use', tool_use_id: request.callId, name: request.tool, input: request.input, evaluated_permission: action, sourceId: `tool:${request.callId}` }]);
    return decision;
  }

  abort(): void {
    this.controller.abort(new Error('interrupted by the test'));
  }

  of<T extends RuntimeEvent['type']>(type: T): Array<Extract<RuntimeEvent, { type: T }>> {
    return this.events.filter((e): e is Extract<RuntimeEvent, { type: T }> => e.type === type);
  }
}
