"""Runs one agent turn: capacity and the session lock; agent_turn.py runs the turn itself.

Turns of one session run one after another in this process (the store's lock adds the order
across processes). A turn that waits for its session does not take a running slot: fifty turns
queued on one conversation must not refuse everyone else's. When every running slot is taken,
a turn waits for one (at most `maxQueuedTurns` wait), and freed slots go round the waiting
identities one turn each (fair_slots.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager

from agent_worker.agent_tools import AgentTools
from agent_worker.agent_turn import AgentTurn, Flushed, nothing_to_flush
from agent_worker.agents import Agent, AgentRegistry
from agent_worker.auth_rotation import AuthRotation
from agent_worker.cache_trace import CacheTrace
from agent_worker.compaction import Summarizer
from agent_worker.context_window import ContextWindows
from agent_worker.domain import Compaction, StoredContext, TurnRequest, identity_of
from agent_worker.errors import (
    InvalidTurnError,
    TurnError,
    UnknownAgentError,
    WorkerAtCapacityError,
)
from agent_worker.events import TurnEvent
from agent_worker.fair_slots import FairSlots
from agent_worker.metrics import WorkerMetrics
from agent_worker.model_chain import ModelChain, ModelTarget
from agent_worker.providers.base import Provider
from agent_worker.sessions.locks import SessionLocks
from agent_worker.sessions.store import SessionStore
from agent_worker.turn_context import TurnContext
from agent_worker.usage import TurnUsage, UsageMeter
from services import tracing
from services.ids import random_hex
from services.logging import fingerprint
from services.off_loop import OffLoop
from services.spans import AttributeValue, Span

__all__ = ["Flushed", "STREAM_BROKEN", "TurnRunner"]
log = logging.getLogger("clawgate.worker.turns")
# The message a turn's task is cancelled with when the stream it was running for broke: its
# outcome in the metrics is then "stream_broken", not "cancelled".
STREAM_BROKEN = "stream_broken"


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
        tools: AgentTools | None = None,
        windows: ContextWindows | None = None,
        cache_trace: CacheTrace | None = None,
        auth_profiles: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """`auth_profiles`: the ids of each provider's auth profiles, in order (its keys are
        the provider's own)."""
        self.windows = windows or ContextWindows({})
        self._cache_trace = cache_trace
        self.off_loop = OffLoop(name="prompt")
        self._summarizer = Summarizer(providers, self.windows, self.off_loop)
        self._agents = agents
        self._tools = tools
        self._providers = providers
        self._store = store
        self._sessions = SessionLocks()
        self._chains: dict[tuple[str, tuple[str, ...]], ModelChain] = {}
        self._max_queued_turns = max_queued_turns
        self._session_wait_timeout = session_wait_timeout
        # Running slots: when all are taken, turns wait for one, served fairly by identity.
        self._waiting_for_session = 0
        self._slots = FairSlots(
            max_concurrent_turns, max_queued_turns, lambda: self._waiting_for_session
        )
        self.metrics = metrics or WorkerMetrics()
        self.meter = UsageMeter(self.windows.catalog, self.metrics)
        self.metrics.turns_in_flight.set_function(lambda: self.turns_in_flight)
        self._rotations = {
            provider: AuthRotation(provider, profiles, self.metrics)
            for provider, profiles in (auth_profiles or {}).items()
            if profiles
        }

    @property
    def turns_in_flight(self) -> int:
        """Turns that hold a running slot."""
        return self._slots.running

    @property
    def turns_queued(self) -> int:
        """Turns waiting for their session or for a running slot."""
        return self._waiting_for_session + self._slots.waiting

    def run(
        self, request: TurnRequest, flushed: Flushed = nothing_to_flush
    ) -> AsyncGenerator[TurnEvent, None]:
        """The turn's events; before the session write it awaits `flushed`, the transport's
        word that the text so far has been written to the caller."""
        if tracing.active():
            return self._traced(request, flushed)
        return self._run(request, flushed)  # no extra step per event while not tracing

    async def _traced(
        self, request: TurnRequest, flushed: Flushed
    ) -> AsyncGenerator[TurnEvent, None]:
        with _turn_span(request):
            async with aclosing(self._run(request, flushed)) as events:
                async for event in events:
                    yield event

    async def _run(self, request: TurnRequest, flushed: Flushed) -> AsyncGenerator[TurnEvent, None]:
        agent = self._agents.get(request.agent_id)
        if request.model:  # this turn runs another configured model
            agent = self._with_model(agent, request.model)
        models = self._models_of(agent)
        provider = models.primary
        images = self.windows.limits(agent.provider, agent.model).images
        self._check(request, provider, provider.supports_images if images is None else images)
        # A busy session's turn waits for it without taking a running slot: fifty turns queued
        # on one conversation must not take everyone else's.
        queued = self._sessions.busy(request.session_key)
        if queued and self.turns_queued >= self._max_queued_turns:
            raise WorkerAtCapacityError(
                f"worker is at capacity ({self.turns_queued} turns wait for their session)"
            )
        self._waiting_for_session += queued
        holds_slot = False
        started = time.monotonic()
        outcome = "cancelled"
        wait = self._session_wait_timeout
        try:
            async with AsyncExitStack() as session:
                waited_for_session = queued
                with self.metrics.sessions_waiting.track_inprogress():
                    await session.enter_async_context(
                        self._sessions.hold(request.session_key, wait)
                    )
                    if queued:
                        self._waiting_for_session -= 1
                        queued = False
                    await self._slots.acquire(identity_of(request.caller))
                    holds_slot = True
                    await session.enter_async_context(
                        self._store.session_lock(request.session_key, wait)
                    )
                if tracing.active():  # on the turn's span: a span of its own cost as much
                    tracing.set_current("clawgate.session.queued", waited_for_session)
                    tracing.set_current("clawgate.session.wait_seconds", time.monotonic() - started)
                turn = AgentTurn(
                    request,
                    agent,
                    models,
                    self._store,
                    self._tools,
                    self.metrics,
                    self.windows,
                    self._summarizer,
                    self.off_loop,
                    self.meter,
                    self._cache_trace,
                )
                async for event in turn.events(flushed):
                    yield event
            outcome = "ok"
        except TurnError as error:
            outcome = error.code.name.lower()
            raise
        except asyncio.CancelledError as cancelled:
            if cancelled.args == (STREAM_BROKEN,):
                outcome = STREAM_BROKEN
            log.info("turn cancelled (%s): agent=%s, nothing stored", outcome, agent.id)
            raise
        finally:
            if queued:
                self._waiting_for_session -= 1
            if holds_slot:
                self._slots.release()
            self.metrics.turns_by(agent.id, outcome).inc()
            self.metrics.turn_seconds_by(agent.id).observe(time.monotonic() - started)

    @asynccontextmanager
    async def session_held(self, session_key: str) -> AsyncIterator[None]:
        """Holds a session between its turns (here and across workers sharing the store)."""
        wait = self._session_wait_timeout
        async with (
            self._sessions.hold(session_key, wait),
            self._store.session_lock(session_key, wait),
        ):
            yield

    async def compact(
        self, session_key: str, agent_id: str, instructions: str, identity: str = ""
    ) -> tuple[bool, Compaction | None]:
        """Compacts a session now (between its turns), for `identity`: whether the session is
        stored, and the compaction (None when it has too little to compact). Its summary calls
        are stored as a usage record once the compaction is."""
        agent = self._agents.get(agent_id)
        usage = TurnUsage(self.meter, agent.id)
        async with self.session_held(session_key):
            stored = await self._store.load_context(session_key, agent.history_limit)
            stored = stored.cut_in_steps(agent.history_limit)
            if not stored.messages:
                return stored.exists, None
            *history, last = stored.messages
            context = TurnContext(
                agent,
                agent.system_prompt,
                StoredContext(history, stored.first_position, stored.compaction),
                (),
                last,
                self.windows,
                self._summarizer,
                self.metrics,
                session_key,
                self.off_loop,
                usage.add,
            )
            compaction = await context.compact_now(instructions)
            if compaction is not None:
                compaction = dataclasses.replace(compaction, created_at=time.time())
                await self._store.add_compaction(session_key, compaction)
            if usage.calls:
                await self._store.record_usage(random_hex(), identity, agent.id, usage.calls)
            return True, compaction

    def provider(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def _with_model(self, agent: Agent, model_ref: str) -> Agent:
        provider, _, model = model_ref.partition("/")
        if provider not in self._providers or not model:
            known = ", ".join(sorted(self._providers))
            raise UnknownAgentError(
                f"unknown model {model_ref!r}: use provider/model with a configured provider"
                f" ({known})"
            )
        # The model asked for, and no other: its fallbacks are the agent's own model's.
        return dataclasses.replace(agent, provider=provider, model=model, fallbacks=())

    def _models_of(self, agent: Agent) -> ModelChain:
        key = (agent.model_ref, agent.fallbacks)
        chain = self._chains.get(key)
        if chain is None:
            targets = []
            for ref in (agent.model_ref, *agent.fallbacks):
                provider, _, model = ref.partition("/")
                rotation = self._rotations.get(provider)
                targets.append(ModelTarget(provider, model, self._providers[provider], rotation))
            chain = self._chains[key] = ModelChain(targets, self.metrics)
        return chain

    @staticmethod
    def _check(request: TurnRequest, provider: Provider, accepts_images: bool) -> None:
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
        if has_images and not accepts_images:
            raise InvalidTurnError("this agent's model does not accept images")


def _turn_span(request: TurnRequest) -> Span:
    """The turn's server span, in the caller's trace (a new one when it sent none)."""
    attributes: dict[str, AttributeValue] = {
        "rpc.system": "grpc",
        "rpc.service": tracing.AGENT_SERVICE,
        "rpc.method": "RunTurn",
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": request.agent_id,
        "clawgate.session": fingerprint(request.session_key),
    }
    if request.request_id:
        attributes["clawgate.request_id"] = request.request_id
    return tracing.span(tracing.RUN_TURN_SPAN, "server", attributes, request.traceparent)
