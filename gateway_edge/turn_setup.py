"""What both turn endpoints (chat completions, responses) do once the request is read: the
agent, the session, the turn request for the worker."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.agent_resolution import resolve_agent
from gateway_edge.errors import ApiError, bad_request
from gateway_edge.observability import RequestRecord, record_of
from gateway_edge.principal import ADMIN, Principal
from gateway_edge.sessions import SESSION_KEY_HEADER, Session, header_text, session_for
from gateway_edge.state import EdgeState
from gateway_edge.turn_input import TurnInput, turn_request_for
from services.logging import request_id_var

SESSION_KEY_HEADER_BYTES = SESSION_KEY_HEADER.encode()


@dataclass(slots=True)
class PreparedTurn:
    request: pb.RunTurnRequest
    session: Session
    record: RequestRecord


# OpenClaw's context headers: passed to the worker with the turn (and with /tools/invoke).
CONTEXT_HEADERS = (
    b"x-openclaw-message-channel",
    b"x-openclaw-account-id",
    b"x-openclaw-message-to",
    b"x-openclaw-thread-id",
)


def prepare_turn(
    state: EdgeState,
    scope: Scope,
    headers: dict[bytes, bytes],
    turn: TurnInput,
    principal: Principal,
    continues: pb.FindResponseResponse | None = None,
) -> PreparedTurn:
    """`continues`: the stored response this request follows (previous_response_id), whose
    session it continues; it must be the same agent's. The turn runs for `principal`: a
    `user` names one of their conversations."""
    agents = state.workers.known_agents()
    agent_id = resolve_agent(
        turn.model,
        header_value(headers, b"x-openclaw-agent-id", b"x-openclaw-agent"),
        agents.ids,
        agents.default_id,
    )
    if turn.logprobs and agent_id not in agents.logprob_ids:
        raise bad_request(
            f"Agent {agent_id!r}'s model does not return logprobs.", "logprobs", "unsupported"
        )
    header_key = header_value(headers, SESSION_KEY_HEADER_BYTES)
    if header_key is not None and not principal.admin:
        # OpenClaw's answer: the session is hidden, not said to exist.
        shown = header_text(header_key).strip()
        raise ApiError(
            403, f"Session {shown!r} was not found.", "forbidden", SESSION_KEY_HEADER, "forbidden"
        )
    if continues is None:
        session = session_for(agent_id, turn.user, header_key, principal.identity)
    else:
        session = _continued(continues, agent_id, header_key)
    record = record_of(scope)
    record.agent, record.session_key = agent_id, session.key
    turn_request = turn_request_for(turn, agent_id, session, request_id_var.get())
    if (caller := principal.caller()) is not None:
        turn_request.caller.CopyFrom(caller)
    for name in CONTEXT_HEADERS:
        if (value := headers.get(name)) is not None:
            turn_request.channel_context[name.decode()] = value.decode("latin-1")
    if (model := header_value(headers, b"x-openclaw-model")) is not None:
        principal.require(ADMIN)
        turn_request.model = configured_model(model, agents.providers)
    return PreparedTurn(turn_request, session, record)


def header_value(headers: dict[bytes, bytes], *names: bytes) -> str | None:
    """The first of `names` the request has (its first value), as text."""
    for name in names:
        value = headers.get(name)
        if value is not None:
            return value.decode("latin-1")
    return None


def configured_model(model: str, providers: frozenset[str]) -> str:
    """`x-openclaw-model`: "provider/model" of a configured provider, else 404."""
    provider, slash, name = model.partition("/")
    if not slash or not name or provider not in providers:
        raise ApiError(
            404,
            f"The model '{model}' does not exist: x-openclaw-model takes provider/model of a"
            f" configured provider ({', '.join(sorted(providers)) or 'none'}).",
            "invalid_request_error",
            "model",
            "model_not_found",
        )
    return model


def _continued(stored: pb.FindResponseResponse, agent_id: str, header_key: str | None) -> Session:
    if stored.agent_id != agent_id:
        raise bad_request(
            f"previous_response_id belongs to agent {stored.agent_id!r}, not {agent_id!r}.",
            "previous_response_id",
        )
    if header_key is not None and header_key.strip() != stored.session_key:
        raise bad_request(
            "previous_response_id belongs to another session than x-openclaw-session-key.",
            "previous_response_id",
        )
    return Session(stored.session_key, named=True)
