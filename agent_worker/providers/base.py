"""The one interface every provider implements."""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

from agent_worker.domain import ChatMessage, Sampling, Tool, ToolChoice
from agent_worker.events import ReasoningDelta, TextDelta, TokenLogprob, ToolCallDelta, TurnFinished


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """A full prompt: the system message first (when any), the turn's input last."""

    model: str
    messages: tuple[ChatMessage, ...]
    sampling: Sampling
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool | None = None
    # How long the provider should cache the prompt's prefix ("none", "short", "long"); None:
    # nothing asked (Anthropic then caches nothing, OpenAI as it always does).
    cache_retention: str | None = None
    # The session's cache routing key (OpenAI's prompt_cache_key): a digest, never the key.
    cache_key: str = ""
    # The auth profile whose key the call uses ("": the provider's own key; set by the chain).
    auth_profile: str = ""


# Text, thinking and tool-call pieces, then one TurnFinished (whose tool_calls the runner fills in).
ProviderEvent = TextDelta | ReasoningDelta | ToolCallDelta | TurnFinished


def token_logprob(entry: dict[str, Any]) -> TokenLogprob:
    """One `logprobs.content[]` entry of a chunk, in OpenAI's shape (llama-cpp-python's chat
    chunks use it too)."""
    return TokenLogprob(
        entry["token"],
        float(entry["logprob"]),
        bytes(entry.get("bytes") or ()),
        tuple(map(token_logprob, entry.get("top_logprobs") or ())),
    )


def sampling_arguments(sampling: Sampling) -> dict[str, Any]:
    """The options a request set, as OpenAI's chat completion arguments."""
    arguments: dict[str, Any] = {}
    for name in (
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    ):
        value = getattr(sampling, name)
        if value is not None:
            arguments[name] = value
    if sampling.stop:
        arguments["stop"] = list(sampling.stop)
    if sampling.logprobs:
        arguments["logprobs"] = True
        if sampling.top_logprobs is not None:
            arguments["top_logprobs"] = sampling.top_logprobs
    if sampling.response_format == "json_schema" and sampling.json_schema:
        json_schema = orjson.loads(sampling.json_schema)
        arguments["response_format"] = {"type": "json_schema", "json_schema": json_schema}
    elif sampling.response_format:
        arguments["response_format"] = {"type": sampling.response_format}
    return arguments


def message_payload(message: ChatMessage) -> dict[str, Any]:
    """A message in OpenAI's chat shape: images as data-URI parts, tool calls and results."""
    payload: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.images:
        parts: list[dict[str, Any]] = (
            [{"type": "text", "text": message.text}] if message.text else []
        )
        for image in message.images:
            url = f"data:{image.media_type};base64,{base64.b64encode(image.data).decode()}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        payload["content"] = parts
    if message.tool_calls:
        payload["content"] = message.text or None
        payload["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.role == "tool":
        payload["tool_call_id"] = message.tool_call_id
        if message.name:
            payload["name"] = message.name
    return payload


def parameters_schema(tool: Tool) -> dict[str, Any]:
    """A tool's arguments schema; an object of no properties where it gave none (the APIs
    that require one: Anthropic's, OpenAI's Responses)."""
    schema = orjson.loads(tool.parameters_json) if tool.parameters_json else None
    return schema or {"type": "object", "properties": {}}


def tool_arguments(request: ProviderRequest) -> dict[str, Any]:
    """The request's tools and tool choice, as OpenAI's chat completion arguments."""
    if not request.tools:
        return {}
    tools = []
    for tool in request.tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        if tool.parameters_json:
            function["parameters"] = orjson.loads(tool.parameters_json)
        tools.append({"type": "function", "function": function})
    choice = request.tool_choice
    arguments: dict[str, Any] = {
        "tools": tools,
        "tool_choice": (
            {"type": "function", "function": {"name": choice.function_name}}
            if choice.mode == "function"
            else choice.mode
        ),
    }
    if request.parallel_tool_calls is not None:
        arguments["parallel_tool_calls"] = request.parallel_tool_calls
    return arguments


class Provider(Protocol):
    """Streams the reply to one prompt: text deltas, then exactly one TurnFinished.

    Cancelling the iteration (closing it, or cancelling the task that drives it) must abort the
    work behind it, such as an HTTP request or a generation thread. Failures raise the errors of
    `agent_worker.errors`.
    """

    supports_images: bool
    supports_tools: bool  # honours ProviderRequest.tools / tool_choice with ToolCallDelta events
    gives_logprobs: bool  # honours Sampling.logprobs / top_logprobs

    async def start(self) -> None:
        """Loads models or opens connections; called once before the worker serves."""

    async def close(self) -> None:
        """Releases what start() took."""

    def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]: ...


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]  # one per input, in order
    prompt_tokens: int


@runtime_checkable
class Embedder(Protocol):
    """A provider that also embeds texts (`POST /v1/embeddings`)."""

    async def embed(self, model: str, inputs: Sequence[str], dimensions: int | None) -> Embeddings:
        """Raises InvalidTurnError for inputs or dimensions the model cannot take."""


def unit_length(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else vector
