"""The body of a Messages API request (`POST {baseUrl}/v1/messages`) from a provider request.

The system prompt goes top-level, same-role messages merge, tool results become `tool_result`
blocks of the next user message, signed thinking goes back with the assistant turn it came in,
and cache breakpoints mark the prompt's stable prefix (docs/providers.md).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson
import yarl

from agent_worker.domain import ChatMessage
from agent_worker.providers.base import ProviderRequest, parameters_schema
from services.provider_config import ModelEntry

_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}

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
        if thought.signature and not thought.item_id  # an OpenAI item means nothing here
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
        entry: dict[str, Any] = {"name": tool.name, "input_schema": parameters_schema(tool)}
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
            return not message.tool_calls or any(
                t.signature and not t.item_id for t in message.reasoning
            )
    return True


def messages_body(
    request: ProviderRequest, entry: ModelEntry | None, max_tokens: int, thinking_budget: int
) -> dict[str, Any]:
    """The request body (a dict: tests validate it against the `anthropic` SDK's types).
    `max_tokens` is the provider's default; `entry` the model's catalog entry, if any."""
    sampling = request.sampling
    max_tokens = sampling.max_tokens or (entry and entry.max_tokens) or max_tokens
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
        and max_tokens > thinking_budget
        and not request.tool_choice.forces_a_call  # Anthropic refuses thinking then
        and _thinking_can_continue(request.messages)
    )
    if thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": thinking_budget}
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
