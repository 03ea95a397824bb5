"""The gRPC face of the worker: each RPC converts with `proto_mapping` and hands over to the
runner or the store. Both turn RPCs send what a `TurnOutbox` queues: Exchange many turns per stream
(exchange.py), RunTurn one turn per call."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import grpc

from agent_worker.agent_tools import AgentTools, argument_problem
from agent_worker.agents import AgentRegistry
from agent_worker.domain import ToolCall, TurnEvent, Usage, identity_of
from agent_worker.errors import InvalidTurnError, TurnError, UnknownAgentError
from agent_worker.exchange import DRAINING, ExchangeCall
from agent_worker.light_prompts import LIGHT_TO_ESTIMATE
from agent_worker.proto_mapping import (
    caller_from_proto,
    compaction_to_proto,
    fill_event,
    message_to_proto,
    turn_request_from_proto,
    usage_query_from_proto,
    usage_sums_to_proto,
)
from agent_worker.providers.base import Embedder
from agent_worker.sessions.store import SessionStore
from agent_worker.turn_outbox import OpenTurns, RunTurn, batches_of_one_turn
from agent_worker.turn_runner import Flushed, TurnRunner
from agent_worker.usage import TOOL_PROVIDER, ModelUsage
from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from services import tracing
from services.ids import random_hex

log = logging.getLogger("clawgate.worker.servicer")


def served_span(context: grpc.aio.ServicerContext, method: str) -> tracing.Span:
    """The server span of a short call, a child of the caller's (from the metadata)."""
    if not tracing.active():
        return tracing.NO_SPAN
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
    ) -> None:
        self._runner = runner
        self._max_turn_messages = max_turn_messages
        self._agents = agents
        self._store = store
        self._sessions_shared = sessions_shared
        self._logprob_agents = logprob_agents
        self._providers = providers
        self._tools = tools
        self.open_turns = OpenTurns()

    def drain(self) -> None:
        """New turns are refused from now on (as UNAVAILABLE)."""
        self.open_turns.draining = True

    async def wait_idle(self) -> None:
        await self.open_turns.wait_idle()

    def _start_turn(self, request: pb.RunTurnRequest) -> RunTurn:
        messages = len(request.context) + 1
        if messages > self._max_turn_messages:  # before reading them: 400,000 took seconds
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
        # Closed on abort too, so the turn is no longer counted open (a turn that stayed
        # counted held SIGTERM's drain to its whole grace period).
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

    async def _reaches(self, request: SessionCall) -> bool:
        """Whether the request's caller may see or change its session (another's is not
        there for them)."""
        caller = caller_from_proto(request)
        if caller is None or caller.admin:
            return True
        return caller.reaches(await self._store.owner_of(request.session_key))

    async def GetSession(  # noqa: N802
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        if not await self._reaches(request):
            return pb.GetSessionResponse(session_key=request.session_key)
        messages = await self._store.load(request.session_key)
        compactions = await self._store.compactions(request.session_key) if messages else []
        return pb.GetSessionResponse(
            session_key=request.session_key,
            messages=[message_to_proto(m) for m in messages],
            compactions=[compaction_to_proto(c) for c in compactions],
        )

    async def CompactSession(  # noqa: N802
        self, request: pb.CompactSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompactSessionResponse:
        if not await self._reaches(request):
            return pb.CompactSessionResponse(found=False)
        default = next((agent.id for agent in self._agents if agent.is_default), "")
        agent_id = request.agent_id or default  # no agent at all: NOT_FOUND below
        try:
            with served_span(context, "CompactSession"):
                found, made = await self._runner.compact(
                    request.session_key,
                    agent_id,
                    request.instructions,
                    identity_of(caller_from_proto(request)),
                )
        except TurnError as error:
            await context.abort(error.code, error.message)
            raise AssertionError("abort raises") from None
        if made is None:
            return pb.CompactSessionResponse(found=found)
        return pb.CompactSessionResponse(compaction=compaction_to_proto(made), found=found)

    async def InvokeTool(  # noqa: N802
        self, request: pb.InvokeToolRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeToolResponse:
        with served_span(context, "InvokeTool"):
            return await self._invoke_tool(request, context)

    async def _invoke_tool(
        self, request: pb.InvokeToolRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeToolResponse:
        try:
            agent = self._agents.get(request.agent_id)
        except TurnError as error:
            await context.abort(error.code, error.message)
            raise AssertionError("abort raises") from None
        tools = self._tools
        schema = await tools.input_schema(agent, request.tool) if tools is not None else None
        if tools is None or schema is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Tool {request.tool!r} is not available to agent {agent.id!r}.",
            )
            raise AssertionError("abort raises")
        problem = argument_problem(request.arguments_json, schema)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        started = time.monotonic()
        call = ToolCall(
            request.call_id or f"call_{random_hex()}", request.tool, request.arguments_json
        )
        outcome, result = await tools.invoke(call)
        await self._record_tool_call(request, agent.id)
        return pb.InvokeToolResponse(
            outcome=outcome,
            result=result.text,
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    async def _record_tool_call(self, request: pb.InvokeToolRequest, agent_id: str) -> None:
        """A tool invocation is a usage record of its own: model `tool/<name>`, no tokens. The
        tool has run by now: a store that fails loses the record, not the result."""
        call = ModelUsage(TOOL_PROVIDER, request.tool, Usage(), None)
        identity = identity_of(caller_from_proto(request))
        try:
            await self._store.record_usage(random_hex(), identity, agent_id, (call,))
        except TurnError as error:
            log.warning("a tool invocation's usage record was not stored: %s", error.message)

    async def Embed(  # noqa: N802
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        with served_span(context, "Embed"):
            return await self._embed(request, context)

    async def _embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        try:
            agent = self._agents.get(request.agent_id)
            ref = request.model or agent.embedding_model or agent.model_ref
            provider_name, _, model = ref.partition("/")
            provider = self._runner.provider(provider_name)
            if not isinstance(provider, Embedder):
                raise UnknownAgentError(f"Model {ref!r} does not embed texts.")
            if not request.inputs:
                raise InvalidTurnError("Invalid 'input': nothing to embed.")
            embedded = await provider.embed(model, request.inputs, request.dimensions or None)
            used = Usage(embedded.prompt_tokens, estimated=not embedded.prompt_tokens)
            call = self._runner.meter.record(agent.id, provider_name, model, used)
            identity = identity_of(caller_from_proto(request))
            await self._store.record_usage(random_hex(), identity, agent.id, (call,))
        except TurnError as error:
            await context.abort(error.code, error.message)
            raise AssertionError("abort raises") from None
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=vector) for vector in embedded.vectors],
            prompt_tokens=embedded.prompt_tokens,
            model=ref,
            cost_usd=call.cost_usd or 0.0,
        )

    async def GetUsage(  # noqa: N802
        self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageResponse:
        try:
            query = usage_query_from_proto(request)
            sums = await self._store.usage(query)
        except TurnError as error:
            await context.abort(error.code, error.message)
            raise AssertionError("abort raises") from None
        return pb.GetUsageResponse(rows=[usage_sums_to_proto(row) for row in sums])

    async def DeleteSession(  # noqa: N802
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        if not await self._reaches(request):
            return pb.DeleteSessionResponse(deleted=False)
        return pb.DeleteSessionResponse(deleted=await self._store.delete(request.session_key))

    async def FindResponse(  # noqa: N802
        self, request: pb.FindResponseRequest, context: grpc.aio.ServicerContext
    ) -> pb.FindResponseResponse:
        found = await self._store.find_response(request.response_id)
        caller = caller_from_proto(request)
        if found is not None and (caller is None or caller.reaches(found.owner)):
            return pb.FindResponseResponse(session_key=found.session_key, agent_id=found.agent_id)
        await context.abort(grpc.StatusCode.NOT_FOUND, "no stored response has that id")
        raise AssertionError("abort raises")

    async def ListSessions(  # noqa: N802
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        limit = min(request.limit or DEFAULT_PAGE, MAX_PAGE)
        try:
            after = cursor_position(request.after) if request.after else None
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "after: not a cursor")
            raise AssertionError("abort raises") from None
        caller = caller_from_proto(request)
        identity = identity_of(caller)
        reaches_all = caller is None or caller.admin
        owner = None if reaches_all and not request.only_own else identity
        found = await self._store.list_sessions(
            request.agent_id, limit + 1, after, owner, request.include_one_off
        )
        page = found[:limit]
        last = page[-1] if len(found) > limit else None
        return pb.ListSessionsResponse(
            sessions=[
                pb.SessionSummary(
                    session_key=summary.session_key,
                    agent_id=summary.agent_id,
                    title=summary.title,
                    turns=summary.turns,
                    updated_at=summary.updated_at,
                    owner=summary.owner,
                )
                for summary in page
            ],
            next_cursor=cursor_of(last.updated_at, last.session_key) if last else "",
        )


DEFAULT_PAGE, MAX_PAGE = 20, 100
SessionCall = pb.GetSessionRequest | pb.CompactSessionRequest | pb.DeleteSessionRequest


def cursor_of(updated_at: float, session_key: str) -> str:
    """An opaque page cursor: where the last listed session stands in the order."""
    raw = f"{updated_at!r}\n{session_key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_position(cursor: str) -> tuple[float, str]:
    """Raises ValueError for anything cursor_of did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise ValueError(str(error)) from None
    updated_at, newline, session_key = raw.partition("\n")
    if not newline:
        raise ValueError("no position")
    return float(updated_at), session_key


async def _refused(error: TurnError) -> AsyncGenerator[TurnEvent, None]:
    raise error
    yield  # an async generator, as a turn is
