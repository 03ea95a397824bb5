"""A turn's session: what the model sees of it before the turn, the turn stored after it, and
the store calls traced as spans."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent_worker.agents import Agent
from agent_worker.compaction import Summarizer
from agent_worker.context_window import ContextWindows
from agent_worker.domain import ChatMessage, StoredContext, TurnRequest, Usage
from agent_worker.errors import NotYourSessionError
from agent_worker.metrics import WorkerMetrics
from agent_worker.sessions.store import SessionStore, TurnOrigin
from agent_worker.turn_context import TurnContext
from services import tracing
from services.off_loop import OffLoop
from services.spans import NO_SPAN, Span

NO_HISTORY = StoredContext([])


@dataclass(frozen=True, slots=True)
class ContextParts:
    """What a turn's context uses besides the session: the worker's shared parts, and where
    the usage of its summaries is recorded."""

    windows: ContextWindows
    summarizer: Summarizer
    metrics: WorkerMetrics
    off_loop: OffLoop
    record_usage: Callable[[str, str, Usage], None]


def system_prompt_for(agent: Agent, extra: str) -> str:
    return "\n\n".join(part for part in (agent.system_prompt, extra) if part)


def messages_after_last_assistant(context: Sequence[ChatMessage]) -> list[ChatMessage]:
    for index in range(len(context) - 1, -1, -1):
        if context[index].role == "assistant":
            return list(context[index + 1 :])
    return list(context)


async def open_context(
    request: TurnRequest, agent: Agent, store: SessionStore, parts: ContextParts
) -> tuple[TurnContext, list[ChatMessage]]:
    """What the model sees of the session, and the client's messages new to it; refuses a
    caller who may not reach the session."""
    caller = request.caller
    if caller is not None and not caller.admin:
        # Checked even for a key said to be new: a gRPC client could name anyone's.
        with store_span(store, "session owner", "owner_of"):
            owner = await store.owner_of(request.session_key)
        if not caller.reaches(owner):
            raise NotYourSessionError(request.session_key)
    stored = NO_HISTORY
    if not request.new_session:
        with store_span(store, "session read", "load_context") as reading:
            stored = await store.load_context(request.session_key, agent.history_limit)
            stored = stored.cut_in_steps(agent.history_limit)
            reading.set("clawgate.messages", len(stored.messages))
    new_context = (
        messages_after_last_assistant(request.context) if stored.exists else list(request.context)
    )
    context = TurnContext(
        agent,
        system_prompt_for(agent, request.extra_system_prompt),
        stored,
        new_context,
        request.input,
        parts.windows,
        parts.summarizer,
        parts.metrics,
        request.session_key,
        parts.off_loop,
        parts.record_usage,
    )
    return context, new_context


async def store_turn(
    store: SessionStore, session_key: str, turn: list[ChatMessage], origin: TurnOrigin
) -> None:
    # Shielded: once the reply is complete, a late cancel must not leave the write half-done.
    with store_span(store, "session write", "append_turn"):
        await asyncio.shield(store.append_turn(session_key, turn, origin))


def store_span(store: SessionStore, name: str, operation: str) -> Span:
    if not tracing.active():
        return NO_SPAN
    attributes = {"db.system.name": store.system, "db.operation.name": operation}
    in_process = store.system == "sqlite"
    return tracing.span(name, "internal" if in_process else "client", attributes)
