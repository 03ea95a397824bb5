"""The gRPC face of the worker: translates proto messages to domain objects and back. Both turn
RPCs run on ExchangeCall (which turns domain errors into error events); RunTurn is an Exchange
of one turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, Literal, cast

import grpc

from agent_worker.agents import AgentRegistry
from agent_worker.domain import (
    ChatMessage,
    FinishReason,
    Image,
    Role,
    Sampling,
    TextDelta,
    TokenLogprob,
    TurnEvent,
    TurnRequest,
    TurnStarted,
)
from agent_worker.errors import TurnError
from agent_worker.exchange import ExchangeCall
from agent_worker.sessions.store import SessionStore
from agent_worker.turn_runner import TurnRunner
from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from services.grpc_status import STATUS_BY_NUMBER

_ROLES: dict[int, Role] = {
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_TOOL: "tool",
}
_ROLE_NUMBERS = {role: number for number, role in _ROLES.items()}
_FINISH_REASONS = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
}
_RESPONSE_FORMATS: dict[int, Literal["text", "json_object", "json_schema"]] = {
    pb.RESPONSE_FORMAT_TYPE_TEXT: "text",
    pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT: "json_object",
    pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}


def message_from_proto(message: pb.Message) -> ChatMessage:
    images = message.images
    return ChatMessage(
        role=_ROLES.get(message.role, "user"),
        text=message.text,
        images=tuple(Image(image.media_type, image.data) for image in images) if images else (),
    )


def message_to_proto(message: ChatMessage) -> pb.Message:
    role = cast(pb.Role, _ROLE_NUMBERS.get(message.role, pb.ROLE_USER))
    return pb.Message(role=role, text=message.text)


_UNSET_SAMPLING = Sampling()


def sampling_from_proto(sampling: pb.SamplingOptions) -> Sampling:
    # ListFields names only the fields that are set (optional ones even when 0): one call
    # instead of a HasField per option, and most requests set none.
    fields = sampling.ListFields()
    if not fields:
        return _UNSET_SAMPLING
    values: dict[str, Any] = {descriptor.name: value for descriptor, value in fields}
    return Sampling(
        temperature=values.get("temperature"),
        top_p=values.get("top_p"),
        max_tokens=values.get("max_tokens"),
        stop=tuple(values.get("stop", ())),
        seed=values.get("seed"),
        presence_penalty=values.get("presence_penalty"),
        frequency_penalty=values.get("frequency_penalty"),
        response_format=_RESPONSE_FORMATS.get(values.get("response_format", 0)),
        json_schema=values.get("json_schema", ""),
        logprobs=values.get("logprobs", False),
        top_logprobs=values.get("top_logprobs"),
    )


def turn_request_from_proto(request: pb.RunTurnRequest) -> TurnRequest:
    return TurnRequest(
        agent_id=request.agent_id,
        session_key=request.session_key,
        input=message_from_proto(request.input),
        context=tuple(map(message_from_proto, request.context)),
        extra_system_prompt=request.extra_system_prompt,
        sampling=sampling_from_proto(request.sampling),
        request_id=request.request_id,
        new_session=request.new_session,
        stream=request.stream,
    )


async def _only(request: pb.RunTurnRequest) -> AsyncIterator[pb.ExchangeRequest]:
    yield pb.ExchangeRequest(opens=[pb.TurnOpen(turn_id=1, request=request)])


def _fill_logprobs(target: Any, logprobs: tuple[TokenLogprob, ...]) -> None:
    for logprob in logprobs:
        entry = target.add()
        entry.token = logprob.token
        entry.logprob = logprob.logprob
        entry.token_bytes = logprob.token_bytes
        if logprob.top_logprobs:
            _fill_logprobs(entry.top_logprobs, logprob.top_logprobs)


def fill_event(target: pb.RunTurnEvent, event: TurnEvent | TurnError) -> None:
    """Writes a domain event (or the error that ends a turn) into an empty proto event, in
    place: no message to copy."""
    if isinstance(event, TextDelta):
        delta = target.delta
        delta.text = event.text
        if event.logprobs:
            _fill_logprobs(delta.logprobs, event.logprobs)
    elif isinstance(event, TurnStarted):
        started = target.started
        started.run_id = event.run_id
        started.model = event.model
    elif isinstance(event, TurnError):
        error = target.error
        error.code = event.code.value[0]
        error.message = event.message
        if event.from_store:
            error.source = pb.ERROR_SOURCE_SESSION_STORE
    else:
        finished = target.finished
        finished.finish_reason = _FINISH_REASONS[event.finish_reason]
        usage = event.usage
        finished.usage.prompt_tokens = usage.prompt_tokens
        finished.usage.completion_tokens = usage.completion_tokens
        finished.usage.total_tokens = usage.total_tokens


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(
        self,
        runner: TurnRunner,
        agents: AgentRegistry,
        store: SessionStore,
        sessions_shared: bool = False,
        logprob_agents: frozenset[str] = frozenset(),
    ) -> None:
        self._runner = runner
        self._agents = agents
        self._store = store
        self._sessions_shared = sessions_shared
        self._logprob_agents = logprob_agents
        self._open_turns = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    def _turn_opened(self) -> None:
        self._open_turns += 1
        self._idle.clear()

    def _turn_closed(self) -> None:
        self._open_turns -= 1
        if not self._open_turns:
            self._idle.set()

    def drain(self) -> None:
        """New turns are refused from now on (Exchange answers them UNAVAILABLE)."""
        self._draining = True

    def _run_turn(self, request: pb.RunTurnRequest) -> AsyncGenerator[TurnEvent, None]:
        return self._runner.run(turn_request_from_proto(request))

    def _exchange(self) -> ExchangeCall:
        return ExchangeCall(
            self._run_turn,
            fill_event,
            draining=lambda: self._draining,
            on_turn_open=self._turn_opened,
            on_turn_closed=self._turn_closed,
        )

    async def Exchange(  # noqa: N802 - gRPC method name
        self,
        requests: AsyncIterator[pb.ExchangeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ExchangeResponse]:
        async for response in self._exchange().responses(requests):
            yield response

    async def RunTurn(  # noqa: N802 - gRPC method name
        self, request: pb.RunTurnRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunTurnResponse]:
        """One turn as an Exchange of one; a turn refused before it starts is the call's status."""
        sent_any = False
        # Closed on abort too: the exchange then counts the turn as ended (a turn that stayed
        # counted held SIGTERM's drain to its whole grace period).
        async with aclosing(self._exchange().responses(_only(request))) as responses:
            async for response in responses:
                for turn in response.turns:
                    events = turn.events
                    if not sent_any and len(events) == 1 and events[0].HasField("error"):
                        error = events[0].error
                        await context.abort(STATUS_BY_NUMBER[error.code], error.message)
                    yield pb.RunTurnResponse(events=events)
                    sent_any = True

    async def wait_idle(self) -> None:
        """Returns once no turn is open (its last message written)."""
        await self._idle.wait()

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
                )
                for agent in self._agents
            ],
            sessions_shared=self._sessions_shared,
        )

    async def GetSession(  # noqa: N802
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        messages = await self._store.load(request.session_key)
        return pb.GetSessionResponse(
            session_key=request.session_key, messages=[message_to_proto(m) for m in messages]
        )

    async def DeleteSession(  # noqa: N802
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        return pb.DeleteSessionResponse(deleted=await self._store.delete(request.session_key))
