"""`POST /tools/invoke`: one of an agent's own (MCP) tools, called without a model turn, as
OpenClaw's gateway serves it. An operator surface: it needs `operator.admin` (token and
password callers have it), the agent's tools.allow / tools.deny, and `gateway.tools` over a
built-in deny list. The worker that holds the agent's servers runs the call, with a turn's
timeouts, result limits, log line and metrics. Answers `{ok: true, result}` or
`{ok: false, error: {type, message}}`."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import grpc
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.agent_resolution import resolve_agent
from gateway_edge.asgi import read_json_object
from gateway_edge.errors import ApiError, api_error_from_call, bad_request
from gateway_edge.json_responses import json_response
from gateway_edge.principal import ADMIN
from gateway_edge.state import Admitted, EdgeState, admitted
from gateway_edge.turn_setup import CONTEXT_HEADERS
from gateway_edge.worker_calls import ask
from services.mcp_config import TOOL_NAME_SEPARATOR, matches_any

router = APIRouter()
MAX_BODY_BYTES = 2 << 20  # OpenClaw's default for this endpoint
# Refused over HTTP whatever an agent's policy says (OpenClaw's list: command execution, file
# mutation, session orchestration, control planes); `gateway.tools.allow` lifts entries.
HTTP_DENIED = (
    "exec",
    "spawn",
    "shell",
    "fs_write",
    "fs_delete",
    "fs_move",
    "apply_patch",
    "sessions_spawn",
    "sessions_send",
    "cron",
    "gateway",
    "nodes",
)
# Longer than any tool's own timeout is left to the worker, which bounds each call.
CALL_SECONDS = 3600.0
_FAILED_STATUS = {"error": 500, "timeout": 500, "unavailable": 500}


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = json_response(body, headers)
    response.status_code = status
    return response


def _failure(error: ApiError) -> Response:
    kind = "not_found" if error.status == 404 else error.type
    return _answer(
        error.status,
        {"ok": False, "error": {"type": kind, "message": error.message}},
        error.headers,
    )


def _not_available(tool: str) -> ApiError:
    return ApiError(404, f"Tool {tool!r} is not available.", "not_found")


def _worker_refusal(code: grpc.StatusCode, details: str | None) -> ApiError:
    if code == grpc.StatusCode.NOT_FOUND:
        return ApiError(404, details or "Tool not available.", "not_found")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return bad_request(details or "Invalid tool input.", "args")
    return api_error_from_call(code, details)


def _field(document: dict[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if value is not None and not isinstance(value, kind):
        raise bad_request(f"Invalid '{name}': expected {kind.__name__}.", name)
    return value


def _denied(tool: str, allow: list[str], deny: list[str]) -> bool:
    names = [tool, tool.split(TOOL_NAME_SEPARATOR, 1)[-1]]  # `<server>__<tool>` or its tool
    built_in = any(name in HTTP_DENIED and not matches_any(name, allow) for name in names)
    return built_in or any(matches_any(name, deny) for name in names)


@router.post("/tools/invoke")
async def invoke_tool(request: Request, call: Annotated[Admitted, Depends(admitted)]) -> Response:
    state, principal, headers = call
    try:
        principal.require(ADMIN)
        document = await read_json_object(request.receive, headers, MAX_BODY_BYTES)
        tool = _field(document, "name", str) or _field(document, "tool", str)
        if not tool:
            raise bad_request("Missing required parameter: 'tool' (or 'name').", "tool")
        args = _field(document, "args", dict) or {}
        action = _field(document, "action", str)
        session_key = _field(document, "sessionKey", str) or ""
        agent_field = _field(document, "agentId", str)
        idempotency_key = _field(document, "idempotencyKey", str)
        _field(document, "dryRun", bool)  # reserved, as in OpenClaw: checked, then ignored
        agent_id = _agent_of(state, request, agent_field, session_key)
        gateway_tools = state.config.gateway.tools
        if _denied(tool, gateway_tools.allow, gateway_tools.deny):
            raise _not_available(tool)
        if action is not None and "action" not in args:
            args = {**args, "action": action}
        call_id = (
            "call_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
            if idempotency_key
            else ""
        )
        context = {
            name: value
            for name in map(bytes.decode, CONTEXT_HEADERS)
            if (value := request.headers.get(name))
        }
        # A tool call spends no tokens: its requests and places count, its budgets do not.
        admission = await state.limits.admit(principal.counted_as, agent_id, spends=False)
        try:
            answer = await ask(
                state.workers,
                "InvokeTool",
                pb.InvokeToolRequest(
                    agent_id=agent_id,
                    tool=tool,
                    arguments_json=orjson.dumps(args).decode(),
                    call_id=call_id,
                    session_key=session_key,
                    caller=principal.caller(),
                    context=context,
                ),
                session_key,
                CALL_SECONDS,
                _worker_refusal,
            )
        finally:
            await admission.release()
    except ApiError as error:
        return _failure(error)
    limit_headers = {name.decode(): value.decode() for name, value in admission.headers}
    if answer.outcome == "ok":
        return _answer(200, {"ok": True, "result": _result_of(answer.result)}, limit_headers)
    status = _FAILED_STATUS.get(answer.outcome, 500)
    kind = "tool_error" if answer.outcome == "error" else answer.outcome
    failed = {"ok": False, "error": {"type": kind, "message": answer.result}}
    return _answer(status, failed, limit_headers)


def _result_of(text: str) -> Any:
    """A tool's text as JSON when it is JSON (most MCP tools answer so), else the text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _agent_of(state: EdgeState, request: Request, agent_field: str | None, session_key: str) -> str:
    """`agentId`, else the agent a session key names (`agent:<id>:…`), else the header's or
    the default agent; 400 when `agentId` and the session key disagree."""
    known = state.workers.agents.ids
    default = state.workers.agents.default_id
    from_key = None
    if session_key.startswith("agent:"):
        from_key = session_key.split(":", 2)[1]
    if agent_field and from_key and agent_field.lower() != from_key:
        raise bad_request(
            f"agentId {agent_field!r} conflicts with sessionKey {session_key!r}.", "agentId"
        )
    header = request.headers.get("x-openclaw-agent-id")
    return resolve_agent(None, agent_field or from_key or header, known, default)
