"""The RPCs that run no turn and touch no session: a tool invoked by name, texts embedded, and
the usage records read back. Each call that spends is a usage record of its own."""

from __future__ import annotations

import logging
import time

from agent_worker.agent_tools import AgentTools, argument_problem
from agent_worker.agents import AgentRegistry
from agent_worker.domain import ToolCall, Usage, identity_of
from agent_worker.errors import InvalidTurnError, NotFoundError, TurnError, UnknownAgentError
from agent_worker.proto_mapping import (
    caller_from_proto,
    usage_query_from_proto,
    usage_sums_to_proto,
)
from agent_worker.providers.base import Embedder
from agent_worker.sessions.store import SessionStore
from agent_worker.turn_runner import TurnRunner
from agent_worker.usage import TOOL_PROVIDER, ModelUsage
from clawgate.agent.v1 import agent_service_pb2 as pb
from services.ids import random_hex

log = logging.getLogger("clawgate.worker.servicer")


class DirectCalls:
    def __init__(
        self,
        store: SessionStore,
        runner: TurnRunner,
        agents: AgentRegistry,
        tools: AgentTools | None,
    ) -> None:
        self._store = store
        self._runner = runner
        self._agents = agents
        self._tools = tools

    async def invoke_tool(self, request: pb.InvokeToolRequest) -> pb.InvokeToolResponse:
        agent = self._agents.get(request.agent_id)
        tools = self._tools
        schema = await tools.input_schema(agent, request.tool) if tools is not None else None
        if tools is None or schema is None:
            raise NotFoundError(f"Tool {request.tool!r} is not available to agent {agent.id!r}.")
        problem = argument_problem(request.arguments_json, schema)
        if problem is not None:
            raise InvalidTurnError(problem)
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

    async def embed(self, request: pb.EmbedRequest) -> pb.EmbedResponse:
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
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=vector) for vector in embedded.vectors],
            prompt_tokens=embedded.prompt_tokens,
            model=ref,
            cost_usd=call.cost_usd or 0.0,
        )

    async def usage(self, request: pb.GetUsageRequest) -> pb.GetUsageResponse:
        sums = await self._store.usage(usage_query_from_proto(request))
        return pb.GetUsageResponse(rows=[usage_sums_to_proto(row) for row in sums])
