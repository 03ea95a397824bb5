"""The gRPC face of the worker. Both turn RPCs send what a `TurnOutbox` queues: Exchange many
turns per stream (exchange.py), RunTurn one turn per call. The session RPCs' work is in
session_calls.py, the tool, embedding and usage RPCs' in direct_calls.py; a TurnError any of
them raises is the call's status, mapped in one place (`_answered`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import aclosing
from typing import TypeVar

import grpc

from agent_worker.agent_tools import AgentTools
from agent_worker.agents import AgentRegistry
from agent_worker.direct_calls import DirectCalls
from agent_worker.errors import InvalidTurnError, TurnError
from agent_worker.event_mapping import fill_event
from agent_worker.events import TurnEvent
from agent_worker.exchange import DRAINING, ExchangeCall
from agent_worker.light_prompts import LIGHT_TO_ESTIMATE
from agent_worker.proto_mapping import turn_request_from_proto
from agent_worker.runs import Runs
from agent_worker.session_calls import SessionCalls
from agent_worker.sessions.store import SessionStore
from agent_worker.turn_outbox import OpenTurns, RunTurn, batches_of_one_turn
from agent_worker.turn_runner import Flushed, TurnRunner
from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from services import tracing
from services.spans import NO_SPAN, Span

AnswerT = TypeVar("AnswerT")
log = logging.getLogger("clawgate.worker.servicer")


def served_span(context: grpc.aio.ServicerContext, method: str) -> Span:
    """The server span of a short call, a child of the caller's (from the metadata)."""
    if not tracing.active():
        return NO_SPAN
    service = tracing.AGENT_SERVICE
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    return tracing.span(f"{service}/{method}", "server", attributes, traceparent_of(context))


def traceparent_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's trace context from the call's metadata ('' when it sent none)."""
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent":
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(
        self,
        runner: TurnRunner,
        agents: AgentRegistry,
        store: SessionStore,
        sessions_shared: bool = False,
        logprob_agents: frozenset[str] = frozenset(),
        providers: tuple[str, ...] = (),
        tools: AgentTools | None = None,
        max_turn_messages: int = 10_000,
        runs: Runs | None = None,
    ) -> None:
        self._runner = runner
        self._max_turn_messages = max_turn_messages
        self._agents = agents
        self._sessions_shared = sessions_shared
        self._logprob_agents = logprob_agents
        self._providers = providers
        self._tools = tools
        self._sessions = SessionCalls(store, runner, agents)
        self._direct = DirectCalls(store, runner, agents, tools)
        self.runs = runs or Runs(runner, store, agents)
        self.open_turns = OpenTurns()

    def drain(self) -> None:
        """New turns are refused from now on (as UNAVAILABLE)."""
        self.open_turns.draining = True

    async def wait_idle(self) -> None:
        await self.open_turns.wait_idle()

    def _start_turn(self, request: pb.RunTurnRequest) -> RunTurn:
        messages = len(request.context) + 1
        if messages > self._max_turn_messages:  # before reading them: that alone takes long
            error = InvalidTurnError(
                f"the turn holds {messages} messages; this worker takes at most"
                f" {self._max_turn_messages} (worker.maxTurnMessages)"
            )
            return lambda flushed: _refused(error)
        if messages > LIGHT_TO_ESTIMATE[0]:  # read on a thread: the loop carries everyone's turns
            return lambda flushed: self._read_then_run(request, flushed)
        try:
            turn = turn_request_from_proto(request)
        except TurnError as error:  # a value this worker cannot read: refused, not guessed
            unreadable = error
            return lambda flushed: _refused(unreadable)
        return lambda flushed: self._runner.run(turn, flushed)

    async def _read_then_run(
        self, request: pb.RunTurnRequest, flushed: Flushed
    ) -> AsyncGenerator[TurnEvent, None]:
        turn = await self._runner.off_loop.run(False, turn_request_from_proto, request)
        async with aclosing(self._runner.run(turn, flushed)) as events:
            async for event in events:
                yield event

    async def Exchange(  # noqa: N802 - gRPC method name
        self,
        requests: AsyncIterator[pb.ExchangeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ExchangeResponse]:
        async for response in ExchangeCall(self._start_turn, self.open_turns).responses(requests):
            yield response

    async def RunTurn(  # noqa: N802 - gRPC method name
        self, request: pb.RunTurnRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunTurnResponse]:
        """A turn refused before it starts is the call's status; later errors are events."""
        if self.open_turns.draining:
            await context.abort(DRAINING.code, DRAINING.message)
        # Closed on abort too, so the turn is no longer counted open: SIGTERM's drain would
        # otherwise wait out its whole grace period for it.
        with self.open_turns.holding():
            if not request.traceparent and (parent := traceparent_of(context)):
                request.traceparent = parent
            run = self._start_turn(request)
            alone = self.open_turns.alone
            async with aclosing(batches_of_one_turn(run, request.request_id, alone)) as batches:
                started = False
                async for batch in batches:
                    head = batch[0]
                    if not started and isinstance(head, TurnError):
                        await context.abort(head.code, head.message)
                    started = True
                    response = pb.RunTurnResponse()
                    for event in batch:
                        fill_event(response.events.add(), event)
                    yield response

    async def ListAgents(  # noqa: N802
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        return pb.ListAgentsResponse(
            agents=[
                pb.Agent(
                    id=agent.id,
                    name=agent.name,
                    model=agent.model_ref,
                    is_default=agent.is_default,
                    gives_logprobs=agent.id in self._logprob_agents,
                    tools=self._tools.known_for(agent) if self._tools else (),
                    context_window=self._runner.windows.window(
                        agent.provider, agent.model, agent.context_tokens
                    )
                    or 0,
                )
                for agent in self._agents
            ],
            sessions_shared=self._sessions_shared,
            providers=self._providers,
            tool_servers=[
                pb.ToolServer(
                    name=server.name,
                    state=server.state,
                    problem=server.problem,
                    tools=len(server.tools),
                )
                for server in (self._tools.servers if self._tools else ())
            ],
        )

    async def GetSession(  # noqa: N802
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        return await _answered(context, self._sessions.get(request))

    async def CompactSession(  # noqa: N802
        self, request: pb.CompactSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompactSessionResponse:
        return await _answered(context, self._sessions.compact(request), "CompactSession")

    async def DeleteSession(  # noqa: N802
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        return await _answered(context, self._sessions.delete(request))

    async def FindResponse(  # noqa: N802
        self, request: pb.FindResponseRequest, context: grpc.aio.ServicerContext
    ) -> pb.FindResponseResponse:
        return await _answered(context, self._sessions.find_response(request))

    async def ListSessions(  # noqa: N802
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        return await _answered(context, self._sessions.list(request))

    async def InvokeTool(  # noqa: N802
        self, request: pb.InvokeToolRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeToolResponse:
        return await _answered(context, self._direct.invoke_tool(request), "InvokeTool")

    async def Embed(  # noqa: N802
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        return await _answered(context, self._direct.embed(request), "Embed")

    async def GetUsage(  # noqa: N802
        self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageResponse:
        return await _answered(context, self._direct.usage(request))

    async def StartRun(  # noqa: N802
        self, request: pb.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartRunResponse:
        if self.open_turns.draining:
            await context.abort(DRAINING.code, DRAINING.message)
        return await _answered(context, self.runs.start(request), "StartRun")

    async def GetRun(  # noqa: N802
        self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRunResponse:
        return await _answered(context, self.runs.get(request))

    async def QueueEvent(  # noqa: N802
        self, request: pb.QueueEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueueEventResponse:
        return await _answered(context, self.runs.queue_event(request))

    async def ListRuns(  # noqa: N802
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        return await _answered(context, self.runs.list(request))


async def _answered(
    context: grpc.aio.ServicerContext, call: Awaitable[AnswerT], traced_as: str | None = None
) -> AnswerT:
    """A short call's answer; its TurnError is the call's status. `traced_as`: the call is
    a server span of that method, a child of the caller's."""
    try:
        with served_span(context, traced_as) if traced_as else NO_SPAN:
            return await call
    except TurnError as error:
        await context.abort(error.code, error.message)
        raise AssertionError("abort raises") from None


async def _refused(error: TurnError) -> AsyncGenerator[TurnEvent, None]:
    raise error
    yield  # an async generator, as a turn is
