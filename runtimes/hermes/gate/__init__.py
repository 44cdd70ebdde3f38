"""agentplane gate: every tool call asks the Hermes approval gate first.

Hermes asks a person only for dangerous terminal commands. agentplane governs every tool call by the agent's tool
policy, so this plugin escalates each call (a ``pre_tool_call`` hook answering ``approve``). The API server then emits
``approval.request`` on the run's event stream and waits for ``POST /v1/runs/{id}/approval``; agentplane answers
``once`` or ``deny``. ``rule_key`` is the call id, so no answer ever widens to other calls.

What must stay true:
- The policy and the person deciding see the call whole. The description carries the call (tool, call id, arguments)
  as hex-encoded JSON after a fixed marker: Hermes masks anything secret-shaped in an approval's description, and hex
  gives its masking nothing to match, so the arguments arrive byte for byte. Arguments above ``MAX_ARGS_BYTES`` are
  not cut: the call goes to agentplane without them, marked too long, and is refused there.
- The gate fails closed: a call it cannot describe is blocked, never run unasked (Hermes runs a call whose hook raised).
- Loading the plugin is visible from outside: it registers the toolset ``agentplane_gate`` (one tool that is never
  available to the model), which ``GET /v1/toolsets`` lists, so agentplane can tell a gated server from one without.
"""
import json

MARKER = "agentplane-gate:"
# the version of the description's format, after the marker
FORMAT = "v2:"
# UTF-8 bytes of the arguments' JSON; far above what a model writes in one call, and under what one SSE line carries
MAX_ARGS_BYTES = 1024 * 1024
TOOLSET = "agentplane_gate"


def _describe(tool_name, tool_call_id, args):
    encoded = json.dumps(args, default=str, ensure_ascii=False).encode("utf-8")
    call = {"tool": tool_name, "call_id": tool_call_id}
    if len(encoded) > MAX_ARGS_BYTES:
        call.update({"args_bytes": len(encoded), "max_args_bytes": MAX_ARGS_BYTES})
    else:
        call["args"] = args
    return MARKER + FORMAT + json.dumps(call, default=str, ensure_ascii=False).encode("utf-8").hex()


def _gate(tool_name="", args=None, tool_call_id="", **_):
    try:
        description = _describe(tool_name, tool_call_id, args if isinstance(args, dict) else {})
    except Exception as exc:  # noqa: BLE001 - anything that stops the description must stop the call
        return {"action": "block", "message": f"BLOCKED: the agentplane gate could not describe this call ({type(exc).__name__})"}
    return {"action": "approve", "message": description, "rule_key": f"agentplane:{tool_call_id or tool_name}"}


def _never_available():
    return False


def _probe(*_args, **_kwargs):
    return json.dumps({"error": "the agentplane gate probe is not a tool"})


def register(ctx):
    ctx.register_hook("pre_tool_call", _gate)
    ctx.register_tool(
        name="agentplane_gate_probe",
        toolset=TOOLSET,
        schema={"name": "agentplane_gate_probe", "description": "agentplane gate marker; never offered", "parameters": {"type": "object", "properties": {}}},
        handler=_probe,
        check_fn=_never_available,
        description="Marks the agentplane gate as loaded",
    )
