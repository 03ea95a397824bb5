"""The sessions API (for the chat page and operators): list, read and delete stored sessions,
served by the workers' stores through the gRPC contract. Same auth as the API; reading needs
operator.read, deleting and compacting operator.write, and a caller without operator.admin
reaches only their own sessions (the workers check it too)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.agent_resolution import resolve_agent
from gateway_edge.errors import ApiError, bad_request
from gateway_edge.json_responses import json_response
from gateway_edge.principal import READ, WRITE
from gateway_edge.sessions import user_of
from gateway_edge.state import Admitted, admitted
from gateway_edge.worker_calls import ask

router = APIRouter()
# A summary by a slow local model over a long session takes a while.
COMPACT_TIMEOUT_SECONDS = 300.0
_ROLES = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant", pb.ROLE_TOOL: "tool"}


def _not_found(key: str) -> ApiError:
    return ApiError(404, f"No session {key!r} is stored.", "invalid_request_error", "key")


def _includes_one_off(include: str) -> bool:
    wanted = {part.strip() for part in include.split(",") if part.strip()}
    unknown = wanted - {"one-off"}
    if unknown:
        raise bad_request(
            f"Invalid 'include': {', '.join(sorted(unknown))!r}; the one value is 'one-off'.",
            "include",
        )
    return bool(wanted)


@router.get("/v1/sessions")
async def list_sessions(
    call: Annotated[Admitted, Depends(admitted)],
    agent: str = "",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str = "",
    mine: bool = False,
    include: str = "",
) -> Response:
    """`mine`: only the caller's own sessions (an admin reaches everyone's otherwise).
    `include=one-off`: also the calls made without `user` or a session key."""
    state, principal, _ = call
    principal.require(READ)
    page = await ask(
        state.workers,
        "ListSessions",
        pb.ListSessionsRequest(
            agent_id=agent,
            limit=limit,
            after=after,
            caller=principal.caller(),
            only_own=mine,
            include_one_off=_includes_one_off(include),
        ),
    )
    return json_response(
        {
            "object": "list",
            "data": [
                {
                    "key": summary.session_key,
                    "agent": summary.agent_id or None,
                    "title": summary.title,
                    "turns": summary.turns,
                    "updated_at": summary.updated_at,
                    "owner": summary.owner or None,  # None: the gateway's owner
                    # The `user` that continues it, for its owner (else None).
                    "user": user_of(summary.session_key, summary.agent_id, principal.identity),
                }
                for summary in page.sessions
            ],
            "has_more": bool(page.next_cursor),
            "next_cursor": page.next_cursor or None,
        }
    )


@router.get("/v1/sessions/{key:path}")
async def get_session(key: str, call: Annotated[Admitted, Depends(admitted)]) -> Response:
    state, principal, _ = call
    principal.require(READ)
    asked = pb.GetSessionRequest(session_key=key, caller=principal.caller())
    stored = await ask(state.workers, "GetSession", asked, key)
    if not stored.messages:
        raise _not_found(key)
    return json_response(
        {
            "key": key,
            "messages": [_message(m) for m in stored.messages],
            "compactions": [_compaction(c) for c in stored.compactions],
        }
    )


@router.post("/v1/sessions/{key:path}/compact")
async def compact_session(
    key: str,
    request: Request,
    call: Annotated[Admitted, Depends(admitted)],
    x_openclaw_agent_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Summarises the session's older messages now (optional body: {"instructions": "…"})."""
    state, principal, _ = call
    principal.require(WRITE)
    body = await request.body()
    try:
        options = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise bad_request("The body is not valid JSON.") from None
    if not isinstance(options, dict):
        raise bad_request("The body must be a JSON object.")
    instructions, model = options.get("instructions", ""), options.get("model")
    if not isinstance(instructions, str):
        raise bad_request("instructions must be a string.", param="instructions")
    agents = state.workers.agents
    named = model if isinstance(model, str) else None
    if named is None and x_openclaw_agent_id is None:
        # Summarised by its own agent's model, not the default agent's.
        x_openclaw_agent_id = _agent_in_key(key, agents.ids)
    agent_id = resolve_agent(named, x_openclaw_agent_id, agents.ids, agents.default_id)
    answer = await ask(
        state.workers,
        "CompactSession",
        pb.CompactSessionRequest(
            session_key=key,
            agent_id=agent_id,
            instructions=instructions,
            caller=principal.caller(),
        ),
        key,
        call_seconds=COMPACT_TIMEOUT_SECONDS,
    )
    if not answer.found:
        raise _not_found(key)
    compacted = answer.HasField("compaction")
    return json_response(
        {
            "key": key,
            "compacted": compacted,
            "compaction": _compaction(answer.compaction) if compacted else None,
        }
    )


@router.delete("/v1/sessions/{key:path}")
async def delete_session(key: str, call: Annotated[Admitted, Depends(admitted)]) -> Response:
    state, principal, _ = call
    principal.require(WRITE)
    asked = pb.DeleteSessionRequest(session_key=key, caller=principal.caller())
    answer = await ask(state.workers, "DeleteSession", asked, key)
    if not answer.deleted:
        raise _not_found(key)
    return json_response({"key": key, "deleted": True})


def _compaction(compaction: pb.Compaction) -> dict[str, Any]:
    return {
        "object": "session.compaction",
        "covers": compaction.covers,  # the session's first `covers` messages
        "summary": compaction.summary,
        "tokens_before": compaction.tokens_before,
        "tokens_after": compaction.tokens_after,
        "created_at": compaction.created_at,
    }


def _message(message: pb.Message) -> dict[str, Any]:
    shown: dict[str, Any] = {"role": _ROLES.get(message.role, "user"), "content": message.text}
    if message.tool_calls:
        shown["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        shown["tool_call_id"] = message.tool_call_id
    if message.name:
        shown["name"] = message.name
    return shown


def _agent_in_key(key: str, agent_ids: Collection[str]) -> str | None:
    """The agent an OpenClaw-shaped session key names (`agent:<id>:…`), when it is one."""
    kind, _, rest = key.partition(":")
    agent_id = rest.partition(":")[0]
    return agent_id if kind == "agent" and agent_id in agent_ids else None
