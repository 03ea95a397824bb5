"""A turn's events into the contract's `RunTurnEvent`s.

Each event is written into an empty proto event in place, inside the outgoing message
(`fill_event`): building a proto per event and copying it in costs about twice as much.
"""

from __future__ import annotations

from typing import Any, assert_never, cast

from agent_worker.domain import FinishReason
from agent_worker.errors import TurnError
from agent_worker.events import (
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    ToolRunFinished,
    ToolRunStarted,
    TurnEvent,
    TurnFinished,
    TurnStarted,
)
from agent_worker.proto_mapping import tool_call_to_proto
from clawgate.agent.v1 import agent_service_pb2 as pb

_FINISH_REASONS = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
}


def _fill_logprobs(target: Any, logprobs: tuple[TokenLogprob, ...]) -> None:
    for logprob in logprobs:
        entry = target.add()
        entry.token = logprob.token
        entry.logprob = logprob.logprob
        entry.token_bytes = logprob.token_bytes
        if logprob.top_logprobs:
            _fill_logprobs(entry.top_logprobs, logprob.top_logprobs)


def fill_event(target: pb.RunTurnEvent, event: TurnEvent | TurnError) -> None:
    """Writes a domain event (or the error that ends a turn) into an empty proto event."""
    match event:
        case TextDelta():
            delta = target.delta
            delta.text = event.text
            if event.logprobs:
                _fill_logprobs(delta.logprobs, event.logprobs)
        case ReasoningDelta():
            target.reasoning.text = event.text
        case ToolCallDelta():
            call = target.tool_call
            call.index = event.index
            call.id = event.id
            call.name = event.name
            call.arguments = event.arguments
        case TurnStarted():
            started = target.started
            started.run_id = event.run_id
            started.model = event.model
        case ToolRunStarted():
            started_tool = target.tool_started
            started_tool.SetInParent()  # set even when every field is empty
            started_tool.call_id = event.call_id
            started_tool.name = event.name
            started_tool.arguments = event.arguments
        case ToolRunFinished():
            finished_tool = target.tool_finished
            finished_tool.call_id = event.call_id
            finished_tool.name = event.name
            finished_tool.summary = event.summary
            finished_tool.duration_ms = event.duration_ms
            finished_tool.is_error = event.is_error
            finished_tool.SetInParent()
        case TurnError():
            error = target.error
            error.status = cast(pb.ErrorCode, event.code.value[0])  # ErrorCode numbers are gRPC's
            error.message = event.message
            if event.retry_after is not None:
                error.retry_after_seconds = event.retry_after
            if event.from_store:
                error.source = pb.ERROR_SOURCE_SESSION_STORE
            elif event.over_budget:
                error.source = pb.ERROR_SOURCE_BUDGET
        case TurnFinished():
            finished = target.finished
            finished.finish_reason = _FINISH_REASONS[event.finish_reason]
            usage = event.usage
            finished.usage.prompt_tokens = usage.prompt_tokens
            finished.usage.completion_tokens = usage.completion_tokens
            finished.usage.total_tokens = usage.total_tokens
            finished.usage.cached_tokens = usage.cache_read_tokens
            finished.usage.cache_write_tokens = usage.cache_write_tokens
            for tool_call in event.tool_calls:
                finished.tool_calls.append(tool_call_to_proto(tool_call))
            finished.spent.tokens = event.spent.tokens
            finished.spent.cost_usd = event.spent.cost_usd
        case _:
            assert_never(event)
