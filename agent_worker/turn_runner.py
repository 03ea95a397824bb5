"""Runs one agent turn: capacity, session lock, prompt from history, provider stream, storage.

Turns of one session run one after another in this process (the store's lock adds the order
across processes). A turn that waits for its session does not take a running slot: fifty turns
queued on one conversation must not refuse everyone else's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack, aclosing
from typing import TypeVar

from agent_worker.agents import Agent, AgentRegistry
from agent_worker.deadline import ProviderDeadline
from agent_worker.domain import (
    ChatMessage,
    FinishReason,
    Sampling,
    TextDelta,
    ToolCallDelta,
    ToolChoice,
    TurnEvent,
    TurnFinished,
    TurnRequest,
    TurnStarted,
)
from agent_worker.errors import (
    InvalidTurnError,
    ProviderFailedError,
    TurnError,
    UnknownAgentError,
    WorkerAtCapacityError,
)
from agent_worker.metrics import WorkerMetrics
from agent_worker.providers.base import Provider, ProviderRequest
from agent_worker.sessions.locks import SessionLocks
from agent_worker.sessions.store import SessionStore
from agent_worker.tool_calls import ToolCalls
from services.ids import random_hex
from services.logging import fingerprint

log = logging.getLogger("clawgate.worker.turns")
T = TypeVar("T")
# The message a turn's task is cancelled with when the stream it was running for broke: its
# outcome in the metrics is then "stream_broken", not "cancelled".
STREAM_BROKEN = "stream_broken"


# The transport's word that the turn's text so far has been written to its caller.
Flushed = Callable[[], Awaitable[None]]


async def _nothing_to_flush() -> None:
    return None


@dataclasses.dataclass(slots=True)
class _Reply:
    calls: ToolCalls
    parts: list[str] = dataclasses.field(default_factory=list)
    finished: TurnFinished | None = None


def messages_after_last_assistant(context: Sequence[ChatMessage]) -> list[ChatMessage]:
    for index in range(len(context) - 1, -1, -1):
        if context[index].role == "assistant":
            return list(context[index + 1 :])
    return list(context)


_SAMPLING_FIELDS = tuple(field.name for field in dataclasses.fields(Sampling))


def merged_sampling(agent_defaults: Sampling, requested: Sampling) -> Sampling:
    """The request's values win; the agent's defaults fill what the request left unset."""
    changes = {
        name: default
        for name in _SAMPLING_FIELDS
        if (default := getattr(agent_defaults, name)) is not None
        and getattr(requested, name) is None
    }
    return dataclasses.replace(requested, **changes) if changes else requested


def system_prompt_for(agent: Agent, extra: str) -> str:
    return "\n\n".join(part for part in (agent.system_prompt, extra) if part)


class TurnRunner:
    def __init__(
        self,
        agents: AgentRegistry,
        providers: Mapping[str, Provider],
        store: SessionStore,
        *,
        max_concurrent_turns: int,
        session_wait_timeout: float,
        max_queued_turns: int = 256,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._agents = agents
        self._providers = providers
        self._store = store
        self._sessions = SessionLocks()
        self._max_concurrent_turns = max_concurrent_turns
        self._max_queued_turns = max_queued_turns
        self._session_wait_timeout = session_wait_timeout
        self.turns_in_flight = 0  # turns that hold their session (or will at once)
        self.turns_queued = 0  # turns waiting for their session
        self.metrics = metrics or WorkerMetrics()
        self.metrics.turns_in_flight.set_function(lambda: self.turns_in_flight)

    def _admit(self, session_key: str) -> bool:
        """Takes a running slot, or a place in the queue when the session is busy (returns
        True then); raises WorkerAtCapacityError when neither is free."""
        if self._sessions.busy(session_key):
            if self.turns_queued >= self._max_queued_turns:
                raise WorkerAtCapacityError(
                    f"worker is at capacity ({self.turns_queued} turns wait for their session)"
                )
            self.turns_queued += 1
            return True
        if self.turns_in_flight >= self._max_concurrent_turns:
            raise WorkerAtCapacityError(
                f"worker is at capacity ({self._max_concurrent_turns} turns in flight)"
            )
        self.turns_in_flight += 1
        return False

    async def run(
        self, request: TurnRequest, flushed: Flushed = _nothing_to_flush
    ) -> AsyncGenerator[TurnEvent, None]:
        """The turn's events; before the session write it awaits `flushed`, the transport's
        word that the text so far has been written to the caller."""
        agent = self._agents.get(request.agent_id)
        if request.model:  # this turn runs another configured model
            agent = self._with_model(agent, request.model)
        provider = self._providers[agent.provider]
        self._check(request, provider)
        queued = self._admit(request.session_key)  # else it holds a running slot
        started = time.monotonic()
        outcome = "cancelled"
        wait = self._session_wait_timeout
        try:
            async with AsyncExitStack() as session:
                with self.metrics.sessions_waiting.track_inprogress():
                    await session.enter_async_context(
                        self._sessions.hold(request.session_key, wait)
                    )
                    if queued:
                        self.turns_queued -= 1
                        self.turns_in_flight += 1
                        queued = False
                    await session.enter_async_context(
                        self._store.session_lock(request.session_key, wait)
                    )
                async for event in self._run_locked(request, agent, provider, flushed):
                    yield event
            outcome = "ok"
        except TurnError as error:
            outcome = error.code.name.lower()
            raise
        except asyncio.CancelledError as cancelled:
            if cancelled.args == (STREAM_BROKEN,):
                outcome = STREAM_BROKEN
            raise
        finally:
            if queued:
                self.turns_queued -= 1
            else:
                self.turns_in_flight -= 1
            self.metrics.turns_by(agent.id, outcome).inc()
            self.metrics.turn_seconds_by(agent.id).observe(time.monotonic() - started)

    def _with_model(self, agent: Agent, model_ref: str) -> Agent:
        provider, _, model = model_ref.partition("/")
        if provider not in self._providers or not model:
            known = ", ".join(sorted(self._providers))
            raise UnknownAgentError(
                f"unknown model {model_ref!r}: use provider/model with a configured provider"
                f" ({known})"
            )
        return dataclasses.replace(agent, provider=provider, model=model)

    @staticmethod
    def _check(request: TurnRequest, provider: Provider) -> None:
        if not request.session_key.strip():
            raise InvalidTurnError("session_key must not be empty")
        turn_input = request.input
        if not turn_input.text and not turn_input.images and turn_input.role != "tool":
            raise InvalidTurnError("the turn's input has no text and no image")
        if request.tools and not provider.supports_tools:
            raise InvalidTurnError("this agent's model does not call tools")
        has_images = any(message.images for message in (*request.context, request.input))
        if request.sampling.logprobs and not provider.gives_logprobs:
            raise InvalidTurnError("this agent's model does not return logprobs")
        if has_images and not provider.supports_images:
            raise InvalidTurnError("this agent's model does not accept images")

    async def _run_locked(
        self, request: TurnRequest, agent: Agent, provider: Provider, flushed: Flushed
    ) -> AsyncIterator[TurnEvent]:
        prompt, new_context = await self._prompt_for(request, agent)
        run_id = random_hex()
        if log.isEnabledFor(logging.INFO):  # the session's fingerprint costs a hash
            log.info(
                "turn %s started: agent=%s model=%s session=%s history=%d",
                run_id,
                agent.id,
                agent.model_ref,
                fingerprint(request.session_key),
                len(prompt) - 1,
            )
        yield TurnStarted(run_id, agent.model_ref)
        reply = _Reply(ToolCalls(prompt))
        provider_request = ProviderRequest(
            agent.model,
            prompt,
            merged_sampling(agent.sampling, request.sampling),
            request.tools,
            request.tool_choice,
            request.parallel_tool_calls,
        )
        # A forced tool choice holds the answer back until the call is confirmed: text that
        # went out could not be taken back when the model did not call the tool.
        held: list[TextDelta | ToolCallDelta] | None = (
            [] if request.tool_choice.forces_a_call else None
        )
        async for event in self._provider_answer(agent, provider, provider_request, reply):
            if held is None:
                yield event
            else:
                held.append(event)
        if reply.finished is None:
            raise ProviderFailedError("the provider ended its answer without finishing it")
        calls = reply.calls.whole()
        if not request.tool_choice.satisfied_by(calls):
            raise ProviderFailedError(_unmet(request.tool_choice))
        for event in held or ():
            yield event
        finished = reply.finished
        if calls:
            finished = TurnFinished(FinishReason.TOOL_CALLS, finished.usage, calls)
        await flushed()  # the text is with the caller: it never waits for the session write
        answer = ChatMessage("assistant", "".join(reply.parts), tool_calls=calls)
        turn = [*new_context, request.input, answer]
        # Shielded: once the reply is complete, a late cancel must not leave the write half-done.
        await asyncio.shield(self._store.append_turn(request.session_key, turn))
        log.info(
            "turn %s finished: %s, %d tokens",
            run_id,
            finished.finish_reason.value,
            finished.usage.completion_tokens,
        )
        yield finished

    async def _prompt_for(
        self, request: TurnRequest, agent: Agent
    ) -> tuple[tuple[ChatMessage, ...], list[ChatMessage]]:
        """The provider's messages, and the client's messages new to the session."""
        stored = (
            []
            if request.new_session
            else await self._store.load(request.session_key, agent.history_limit)
        )
        new_context = (
            messages_after_last_assistant(request.context) if stored else list(request.context)
        )
        system = system_prompt_for(agent, request.extra_system_prompt)
        prompt = (
            *([ChatMessage("system", system)] if system else []),
            *stored,
            *new_context,
            request.input,
        )
        return prompt, new_context

    async def _provider_answer(
        self, agent: Agent, provider: Provider, request: ProviderRequest, reply: _Reply
    ) -> AsyncIterator[TextDelta | ToolCallDelta]:
        """The provider's text and tool-call pieces as they come; `reply` collects them and
        the finish."""
        deadline = ProviderDeadline(agent.turn_timeout)
        asked = time.monotonic()
        try:
            async with aclosing(provider.stream(request)) as events:
                while (event := await deadline.wait_for(anext(events, None))) is not None:
                    if isinstance(event, TextDelta):
                        if not reply.parts:
                            self.metrics.provider_first_token_seconds_by(agent.provider).observe(
                                time.monotonic() - asked
                            )
                        reply.parts.append(event.text)
                        yield event
                    elif isinstance(event, ToolCallDelta):
                        yield reply.calls.add(event)
                    else:
                        reply.finished = event
        finally:
            deadline.cancel()
        self.metrics.provider_seconds_by(agent.provider).observe(time.monotonic() - asked)


def _unmet(choice: ToolChoice) -> str:
    if choice.mode == "function":
        return f"the model did not call the required tool {choice.function_name!r}"
    return "the model did not call a tool, and tool_choice is 'required'"
