"""agentplane gate: every tool call asks the Hermes approval gate first.

Hermes asks a person only for dangerous terminal commands. agentplane governs every tool call by the agent's tool
policy, so this plugin escalates each call (a ``pre_tool_call`` hook answering ``approve``). The API server then emits
``approval.request`` on the run's event stream and waits for ``POST /v1/runs/{id}/approval``; agentplane answers
``once`` or ``deny``. The description carries the call as JSON after a fixed marker so the adapter can name the tool,
its arguments and the call id. ``rule_key`` is the call id, so no answer ever widens to other calls.
"""
import json

MARKER = "agentplane-gate:"
MAX_TEXT = 4000


def _clip(value):
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "..."
    if isinstance(value, dict):
        return {str(k): _clip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v) for v in value[:100]]
    return value


def _gate(tool_name="", args=None, tool_call_id="", **_):
    call = {"tool": tool_name, "call_id": tool_call_id, "args": _clip(args if isinstance(args, dict) else {})}
    return {"action": "approve", "message": MARKER + json.dumps(call, default=str), "rule_key": f"agentplane:{tool_call_id or tool_name}"}


def register(ctx):
    ctx.register_hook("pre_tool_call", _gate)
