"""`anthropic-messages`: Anthropic's Messages API, spoken natively (`POST {baseUrl}/v1/messages`).

It uses the same lean HTTP client as `openai-compatible` (`http_client`: one request head built
once, httptools' parser): the two providers then cost the worker the same per turn (measured in
docs/performance.md), which the `anthropic` SDK's httpx stack does not. What maps to what is
in docs/providers.md: the system prompt goes top-level, same-role messages merge, tool results
become `tool_result` blocks of the next user message, and thinking is never answer text.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

import orjson
import yarl

from agent_worker.domain import (
    ChatMessage,
    FinishReason,
    Reasoning,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    TurnFinished,
    Usage,
)
from agent_worker.errors import (
    ProviderFailedError,
    ProviderOverloadedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    TurnError,
)
from agent_worker.providers.base import ProviderEvent, ProviderRequest
from agent_worker.providers.http_provider import HttpProvider, sse_data
from agent_worker.providers.overflow import overflow_error
from services.provider_config import AnthropicProviderConfig, ModelEntry

# What one read of the stream gives the turn.
Piece = TextDelta | ReasoningDelta | ToolCallDelta
_STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}
_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
log = logging.getLogger("clawgate.worker.providers")


def _finish_reason(stop_reason: str) -> FinishReason:
    """Anthropic's stop reason as a finish reason; one this code does not know yet (a newer
    API) ends the answer as "stop", said in the log rather than silently."""
    known = _STOP_REASONS.get(stop_reason)
    if known is None:
        log.warning("anthropic-messages: unknown stop_reason %r, finished as 'stop'", stop_reason)
        return FinishReason.STOP
    return known


# Anthropic's sampling temperature runs 0–1 where OpenAI's runs 0–2.
_MAX_TEMPERATURE = 1.0


def messages_url(base_url: str) -> yarl.URL:
    """`{baseUrl}/v1/messages`; a baseUrl that already ends in /v1 (as OpenAI-style ones do) is
    taken as the API root."""
    root = base_url.rstrip("/")
    return yarl.URL(root + ("/messages" if root.endswith("/v1") else "/v1/messages"))


def _arguments_object(arguments: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    # tool_use.input must be an object: a model's malformed arguments are kept, not dropped.
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def _user_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for image in message.images:
        data = base64.b64encode(image.data).decode()
        blocks.append(
            {
                "type": "image",
                "source": {"type": "base64", "media_type": image.media_type, "data": data},
            }
        )
    if message.text:  # Anthropic refuses empty text blocks
        blocks.append({"type": "text", "text": message.text})
    return blocks


def _assistant_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "redacted_thinking", "data": thought.signature}
        if thought.redacted
        else {"type": "thinking", "thinking": thought.text, "signature": thought.signature}
        for thought in message.reasoning
        if thought.signature
    ]
    if message.text:
        blocks.append({"type": "text", "text": message.text})
    blocks += [
        {
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": _arguments_object(call.arguments),
        }
        for call in message.tool_calls
    ]
    return blocks


def conversation(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """The system text and Anthropic's `messages`: user and assistant only, alternating, the
    first a user's; tool results as `tool_result` blocks answering the assistant's `tool_use`."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    open_calls: set[str] = set()  # tool_use ids of the last assistant message
    for message in messages:
        role = message.role
        if role == "system":
            if message.text:
                system.append(message.text)
            continue
        if role == "tool":
            role = "user"
            if message.tool_call_id in open_calls:
                blocks = [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.tool_call_id,
                        "content": message.text,
                    }
                ]
            else:  # its call was trimmed from the history: the result stays as words
                named = f" {message.name}" if message.name else ""
                blocks = [{"type": "text", "text": f"(tool{named} result) {message.text}"}]
        elif role == "assistant":
            blocks = _assistant_blocks(message)
            open_calls = {call.id for call in message.tool_calls}
        else:
            blocks = _user_blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    if not turns or turns[0]["role"] != "user":
        # A history that starts with the assistant (cut by historyLimit): the API wants a user.
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "(continued)"}]})
    # Tool results go first in their user message, as the API requires.
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return "\n\n".join(system), turns


def _tools(request: ProviderRequest) -> dict[str, Any]:
    if not request.tools:
        return {}
    tools = []
    for tool in request.tools:
        schema = orjson.loads(tool.parameters_json) if tool.parameters_json else None
        entry: dict[str, Any] = {
            "name": tool.name,
            "input_schema": schema or {"type": "object", "properties": {}},
        }
        if tool.description:
            entry["description"] = tool.description
        tools.append(entry)
    choice = request.tool_choice
    tool_choice: dict[str, Any] = (
        {"type": "tool", "name": choice.function_name}
        if choice.mode == "function"
        else {"type": _TOOL_CHOICES[choice.mode]}
    )
    if request.parallel_tool_calls is False and tool_choice["type"] != "none":
        tool_choice["disable_parallel_tool_use"] = True
    return {"tools": tools, "tool_choice": tool_choice}


def _cache_marker(retention: str | None) -> dict[str, str] | None:
    """Anthropic's `cache_control` for a retention: 5 minutes ("short") or an hour ("long")."""
    if retention == "short":
        return {"type": "ephemeral"}
    if retention == "long":
        return {"type": "ephemeral", "ttl": "1h"}
    return None  # "none", or nothing asked


def _mark_cached_prefix(body: dict[str, Any], marker: dict[str, str]) -> None:
    """Breakpoints where Anthropic caches the prompt's prefix (three of its four): after the
    tools, after the system prompt, and after the latest user message or tool results. The
    last one moves on with every turn and tool-loop step; Anthropic finds the earlier prefix
    again by looking back from it, so what was cached is read, not written anew."""
    tools = body.get("tools")
    if tools:
        tools[-1] = {**tools[-1], "cache_control": marker}
    system = body.get("system")
    if system:
        body["system"] = [{"type": "text", "text": system, "cache_control": marker}]
    for turn in reversed(body["messages"]):
        if turn["role"] == "user":
            turn["content"][-1] = {**turn["content"][-1], "cache_control": marker}
            return


def _thinking_can_continue(messages: Sequence[ChatMessage]) -> bool:
    """With thinking on, Anthropic wants the last assistant turn's thinking back when it called
    tools. A client's own tool loop over the OpenAI API cannot send it (it never saw it): such a
    request goes without thinking rather than be refused."""
    for message in reversed(messages):
        if message.role == "assistant":
            return not message.tool_calls or any(t.signature for t in message.reasoning)
    return True


def error_of(kind: str, message: str, retry_after: float | None = None) -> TurnError:
    """An `error` event of a stream (its `error.type`) as the worker's errors."""
    text = f"provider failed mid-answer ({kind}): {message}"
    if kind == "overloaded_error" or kind == "api_error":
        return ProviderOverloadedError(text, retry_after)
    if kind == "rate_limit_error":
        return ProviderRateLimitedError(f"provider rate limit: {message}", retry_after)
    if kind == "invalid_request_error":
        return overflow_error(message, text) or ProviderRejectedError(text)
    return ProviderFailedError(text)


class MessagesStream:
    """A Messages API event stream, parsed a network read at a time into clawgate's events.

    Text that arrived in one read goes on as one delta; a `tool_use` block becomes a tool call
    (its start carries id and name, each `input_json_delta` a piece of the arguments); thinking
    goes on as reasoning pieces, and is collected whole with its signature for the stored turn.
    """

    def __init__(self) -> None:
        self.finish_reason = FinishReason.STOP
        self.prompt_tokens = 0  # cached ones included, as OpenAI counts them
        self.completion_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.done = False  # message_stop arrived
        self.events = 0
        # [text, signature, redacted] per thinking block, in order
        self.thinking: list[list[Any]] = []
        self._pending = b""
        self._calls: dict[int, int] = {}  # content block index → tool call index
        self._thinking_blocks: dict[int, list[Any]] = {}

    def feed(self, block: bytes) -> list[Piece]:
        payloads, self._pending = sse_data(self._pending + block if self._pending else block)
        if not payloads:
            return []
        try:
            # One parse for the whole read, as the OpenAI-compatible provider does.
            events = orjson.loads(b"[%s]" % b",".join(payloads))
        except orjson.JSONDecodeError as error:
            raise ProviderFailedError(f"provider sent malformed JSON: {error}") from None
        try:
            return self._handle(events)
        except (AttributeError, LookupError, TypeError, ValueError) as error:
            raise ProviderFailedError(f"provider sent a malformed event: {error!r}") from None

    def _handle(self, events: list[Any]) -> list[Piece]:
        self.events += len(events)
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
                    out += self._flush(texts)
                    out.append(ToolCallDelta(index, "", "", delta["partial_json"]))
                elif delta_kind == "thinking_delta":
                    self._thinking_blocks[event["index"]][0] += delta["thinking"]
                    out += self._flush(texts)
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
                    out += self._flush(texts)
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
                out += self._flush(texts)
                raise _MidAnswerError(
                    out, error_of(failure.get("type", ""), failure.get("message", ""))
                )
            # ping, content_block_stop and kinds added later need nothing
        out += self._flush(texts)
        return out

    @staticmethod
    def _flush(texts: list[str]) -> list[TextDelta]:
        if not texts:
            return []
        text = "".join(texts)
        texts.clear()
        return [TextDelta(text)]


class _MidAnswerError(Exception):
    """An `error` event: the events before it in the same read still go out first."""

    def __init__(self, before: list[Piece], error: TurnError) -> None:
        self.before = before
        self.error = error


class AnthropicMessagesProvider(HttpProvider):
    gives_logprobs = False  # the Messages API has none

    def __init__(self, config: AnthropicProviderConfig) -> None:
        headers = {"anthropic-version": config.anthropic_version}
        if config.api_key:
            headers["x-api-key"] = config.api_key
        super().__init__(
            config, messages_url(config.base_url) if config.base_url else None, headers
        )
        self._max_tokens = config.max_tokens
        self._thinking_budget = config.thinking_budget_tokens
        self._entries: dict[str, ModelEntry] = {entry.id: entry for entry in config.models}

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        """The request body (a dict: tests validate it against the `anthropic` SDK's types)."""
        entry = self._entries.get(request.model)
        sampling = request.sampling
        max_tokens = sampling.max_tokens or (entry and entry.max_tokens) or self._max_tokens
        system, messages = conversation(request.messages)
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": max_tokens,
            "messages": messages,
            "stream": True,
        }
        if system:
            body["system"] = system
        thinking = (
            entry is not None
            and entry.reasoning
            and max_tokens > self._thinking_budget
            and not request.tool_choice.forces_a_call  # Anthropic refuses thinking then
            and _thinking_can_continue(request.messages)
        )
        if thinking:
            body["thinking"] = {"type": "enabled", "budget_tokens": self._thinking_budget}
        else:  # with thinking on, Anthropic allows no temperature or top_p of one's own
            if sampling.temperature is not None:
                body["temperature"] = min(sampling.temperature, _MAX_TEMPERATURE)
            if sampling.top_p is not None:
                body["top_p"] = sampling.top_p
        if sampling.stop:
            body["stop_sequences"] = list(sampling.stop)
        body.update(_tools(request))
        marker = _cache_marker(request.cache_retention)
        if marker is not None:
            _mark_cached_prefix(body, marker)
        return body

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        parsed = MessagesStream()
        encoded = await self.encoded(request, lambda asked: orjson.dumps(self.body(asked)))
        async with aclosing(self.exchange(encoded)) as blocks:
            async for block in blocks:
                try:
                    events = parsed.feed(block)
                except _MidAnswerError as failure:
                    for event in failure.before:
                        yield event
                    raise failure.error from None
                for event in events:
                    yield event
                if parsed.done:
                    break
        if not parsed.done:
            raise ProviderFailedError(
                "provider's answer ended before message_stop: is baseUrl Anthropic's API?"
                if not parsed.events
                else "provider broke off its answer before message_stop"
            )
        thinking = tuple(Reasoning(*block) for block in parsed.thinking)
        usage = Usage(
            parsed.prompt_tokens,
            parsed.completion_tokens,
            parsed.cache_read_tokens,
            parsed.cache_write_tokens,
        )
        yield TurnFinished(parsed.finish_reason, usage, reasoning=thinking)
