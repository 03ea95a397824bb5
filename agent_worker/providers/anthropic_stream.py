"""A Messages API event stream, parsed a network read at a time into clawgate's events, and
its `error` events as the worker's errors."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from agent_worker.domain import FinishReason, Reasoning, Usage
from agent_worker.errors import (
    ProviderAuthError,
    ProviderFailedError,
    ProviderOverloadedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    TurnError,
)
from agent_worker.events import ReasoningDelta, ToolCallDelta, TurnFinished
from agent_worker.providers.http_provider import EventStream, MidAnswerError, Piece, flush_texts
from agent_worker.providers.overflow import overflow_error

_STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}
log = logging.getLogger("clawgate.worker.providers")


def _finish_reason(stop_reason: str) -> FinishReason:
    """Anthropic's stop reason as a finish reason; one this code does not know yet (a newer
    API) ends the answer as "stop", said in the log rather than silently."""
    known = _STOP_REASONS.get(stop_reason)
    if known is None:
        log.warning("anthropic-messages: unknown stop_reason %r, finished as 'stop'", stop_reason)
        return FinishReason.STOP
    return known


def error_of(kind: str, message: str, retry_after: float | None = None) -> TurnError:
    """An `error` event of a stream (its `error.type`) as the worker's errors."""
    text = f"provider failed mid-answer ({kind}): {message}"
    if kind == "overloaded_error" or kind == "api_error":
        return ProviderOverloadedError(text, retry_after)
    if kind == "rate_limit_error":
        return ProviderRateLimitedError(f"provider rate limit: {message}", retry_after)
    if kind in ("authentication_error", "permission_error"):
        return ProviderAuthError(text)
    if kind == "invalid_request_error":
        return overflow_error(message, text) or ProviderRejectedError(text)
    return ProviderFailedError(text)


class MessagesStream(EventStream):
    """A Messages API event stream, parsed a network read at a time into clawgate's events.

    Text that arrived in one read goes on as one delta; a `tool_use` block becomes a tool call
    (its start carries id and name, each `input_json_delta` a piece of the arguments); thinking
    goes on as reasoning pieces, and is collected whole with its signature for the stored turn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.finish_reason = FinishReason.STOP
        self.prompt_tokens = 0  # cached ones included, as OpenAI counts them
        self.completion_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        # [text, signature, redacted] per thinking block, in order
        self.thinking: list[list[Any]] = []
        self._calls: dict[int, int] = {}  # content block index → tool call index
        self._thinking_blocks: dict[int, list[Any]] = {}

    def finished(self) -> TurnFinished:
        usage = Usage(
            self.prompt_tokens,
            self.completion_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
        )
        thinking = tuple(Reasoning(*block) for block in self.thinking)
        return TurnFinished(self.finish_reason, usage, reasoning=thinking)

    def handle(self, events: list[Any]) -> list[Piece]:
        out: list[Piece] = []
        texts: list[str] = []
        for event in events:
            kind = event["type"]
            if kind == "content_block_delta":
                delta = event["delta"]
                delta_kind = delta["type"]
                if delta_kind == "text_delta":
                    texts.append(delta["text"])
                elif delta_kind == "input_json_delta":
                    index = self._calls[event["index"]]
                    out += flush_texts(texts)
                    out.append(ToolCallDelta(index, "", "", delta["partial_json"]))
                elif delta_kind == "thinking_delta":
                    self._thinking_blocks[event["index"]][0] += delta["thinking"]
                    out += flush_texts(texts)
                    out.append(ReasoningDelta(delta["thinking"]))
                elif delta_kind == "signature_delta":
                    self._thinking_blocks[event["index"]][1] += delta["signature"]
            elif kind == "content_block_start":
                content = event["content_block"]
                content_kind = content["type"]
                if content_kind == "text" and content.get("text"):
                    texts.append(content["text"])
                elif content_kind == "tool_use":
                    index = self._calls[event["index"]] = len(self._calls)
                    out += flush_texts(texts)
                    out.append(ToolCallDelta(index, content["id"], content["name"], ""))
                    if content.get("input"):  # servers may send the input whole here
                        arguments = orjson.dumps(content["input"]).decode()
                        out.append(ToolCallDelta(index, "", "", arguments))
                elif content_kind == "thinking":
                    piece = [content.get("thinking", ""), content.get("signature", ""), False]
                    self._thinking_blocks[event["index"]] = piece
                    self.thinking.append(piece)
                elif content_kind == "redacted_thinking":  # kept to be sent back, never shown
                    self.thinking.append(["", content.get("data", ""), True])
            elif kind == "message_start":
                usage = event["message"].get("usage") or {}
                self.cache_read_tokens = usage.get("cache_read_input_tokens") or 0
                self.cache_write_tokens = usage.get("cache_creation_input_tokens") or 0
                self.prompt_tokens = (
                    usage.get("input_tokens", 0) + self.cache_read_tokens + self.cache_write_tokens
                )
                self.completion_tokens = usage.get("output_tokens", 0)
            elif kind == "message_delta":
                reason = event["delta"].get("stop_reason")
                if reason:
                    self.finish_reason = _finish_reason(reason)
                if usage := event.get("usage"):
                    self.completion_tokens = usage.get("output_tokens", self.completion_tokens)
            elif kind == "message_stop":
                self.done = True
                break
            elif kind == "error":
                failure = event.get("error") or {}
                out += flush_texts(texts)
                raise MidAnswerError(
                    out, error_of(failure.get("type", ""), failure.get("message", ""))
                )
            # ping, content_block_stop and kinds added later need nothing
        out += flush_texts(texts)
        return out
