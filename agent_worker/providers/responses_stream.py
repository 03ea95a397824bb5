"""A Responses API event stream, parsed a network read at a time into clawgate's events, and
its failures (`response.failed`, `error`) as the worker's errors."""

from __future__ import annotations

from typing import Any

from agent_worker.domain import FinishReason, Reasoning, Usage
from agent_worker.errors import (
    ProviderFailedError,
    ProviderOverloadedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    TurnError,
)
from agent_worker.events import ReasoningDelta, ToolCallDelta, TurnFinished
from agent_worker.providers.http_provider import EventStream, MidAnswerError, Piece, flush_texts
from agent_worker.providers.overflow import overflow_error

_INCOMPLETE_REASONS = {
    "max_output_tokens": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
}
_RETRYABLE_CODES = frozenset({"server_error", "server_is_overloaded", "slow_down"})


def error_of(code: str, message: str) -> TurnError:
    """A failed response's `error` (or an `error` event) as the worker's errors."""
    text = f"provider failed mid-answer ({code or 'error'}): {message}"
    if code == "rate_limit_exceeded":
        return ProviderRateLimitedError(f"provider rate limit: {message}")
    if code in _RETRYABLE_CODES:
        return ProviderOverloadedError(text)
    if overflow := overflow_error(f"{code} {message}", text):
        return overflow
    if code.startswith("invalid") or code.startswith("unsupported"):
        return ProviderRejectedError(text)
    return ProviderFailedError(text)


class ResponsesStream(EventStream):
    """A Responses API event stream, a network read at a time.

    Text that arrived in one read goes on as one delta; a `function_call` item becomes a tool
    call (its id and name when the item is added, its argument deltas as pieces); reasoning
    summaries (and raw reasoning text, where a server sends it) go on as reasoning pieces, and
    each reasoning item is kept whole with its encrypted content for the stored turn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.finish_reason = FinishReason.STOP
        self.usage: Usage | None = None
        self.reasoning: list[Reasoning] = []
        self._calls: dict[str, int] = {}  # function_call item id → tool call index
        self._streamed: set[int] = set()  # calls whose arguments came in deltas
        self._refused = False

    def finished(self) -> TurnFinished:
        usage = self.usage or Usage(0, 0, estimated=True)
        return TurnFinished(self.finish_reason, usage, reasoning=tuple(self.reasoning))

    def handle(self, events: list[Any]) -> list[Piece]:
        out: list[Piece] = []
        texts: list[str] = []
        for event in events:
            kind = event["type"]
            if kind == "response.output_text.delta":
                texts.append(event["delta"])
            elif kind == "response.function_call_arguments.delta":
                index = self._calls[event["item_id"]]
                self._streamed.add(index)
                out += flush_texts(texts)
                out.append(ToolCallDelta(index, "", "", event["delta"]))
            elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
                out += flush_texts(texts)
                out.append(ReasoningDelta(event["delta"]))
            elif kind == "response.reasoning_summary_part.added" and event["summary_index"]:
                out += flush_texts(texts)
                out.append(ReasoningDelta("\n\n"))  # parts of one summary read as paragraphs
            elif kind == "response.refusal.delta":
                self._refused = True
                texts.append(event["delta"])
            elif kind == "response.output_item.added":
                item = event["item"]
                if item["type"] == "function_call":
                    index = self._calls[item["id"]] = len(self._calls)
                    out += flush_texts(texts)
                    out.append(ToolCallDelta(index, item["call_id"], item["name"], ""))
            elif kind == "response.output_item.done":
                item = event["item"]
                if item["type"] == "reasoning":
                    self.reasoning.append(_reasoning_of(item))
                elif item["type"] == "function_call":
                    index = self._calls[item["id"]]
                    if index not in self._streamed and item.get("arguments"):
                        out += flush_texts(texts)  # a server that sends the arguments whole
                        out.append(ToolCallDelta(index, "", "", item["arguments"]))
            elif kind in ("response.completed", "response.incomplete"):
                self._end(event["response"])
                break
            elif kind == "response.failed":
                failure = event["response"].get("error") or {}
                out += flush_texts(texts)
                raise MidAnswerError(
                    out, error_of(failure.get("code") or "", failure.get("message", ""))
                )
            elif kind == "error":
                out += flush_texts(texts)
                raise MidAnswerError(
                    out, error_of(event.get("code") or "", event.get("message", ""))
                )
            # created, in_progress, content parts, the `.done` events and kinds added later
            # carry nothing the deltas did not
        out += flush_texts(texts)
        return out

    def _end(self, response: dict[str, Any]) -> None:
        self.done = True
        counts = response.get("usage")
        if counts:
            details = counts.get("input_tokens_details") or {}
            self.usage = Usage(
                counts.get("input_tokens") or 0,
                counts.get("output_tokens") or 0,
                details.get("cached_tokens") or 0,
                details.get("cache_write_tokens") or 0,
            )
        if response.get("status") == "incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason") or ""
            self.finish_reason = _INCOMPLETE_REASONS.get(reason, FinishReason.LENGTH)
        elif self._refused:
            self.finish_reason = FinishReason.CONTENT_FILTER
        elif self._calls:
            self.finish_reason = FinishReason.TOOL_CALLS


def _reasoning_of(item: dict[str, Any]) -> Reasoning:
    summary = "\n\n".join(part["text"] for part in item.get("summary") or ())
    return Reasoning(summary, item.get("encrypted_content") or "", item_id=item["id"])
