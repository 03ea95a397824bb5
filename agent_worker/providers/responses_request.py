"""The body of a Responses API request (`POST {baseUrl}/responses`) from a provider request.

Stateless, as OpenClaw calls OpenAI: `store: false` and the whole conversation as `input` each
time. System messages become `instructions`; an assistant turn's reasoning items go back before
its text and calls, with their encrypted content (asked for with `include` on reasoning
models), as OpenAI requires when nothing is stored; tool results become `function_call_output`
items. What maps to what is in docs/providers.md.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson
import yarl

from agent_worker.domain import ChatMessage, Sampling
from agent_worker.providers.base import ProviderRequest, parameters_schema
from agent_worker.providers.openai_compatible import cache_arguments
from services.provider_config import ModelEntry

# OpenAI refuses a smaller max_output_tokens ("below minimum value"): a smaller limit is raised.
MIN_OUTPUT_TOKENS = 16


def responses_url(base_url: str) -> yarl.URL:
    return yarl.URL(base_url.rstrip("/") + "/responses")


def _user_item(message: ChatMessage) -> dict[str, Any]:
    if not message.images:
        return {"role": "user", "content": message.text}
    parts: list[dict[str, Any]] = (
        [{"type": "input_text", "text": message.text}] if message.text else []
    )
    for image in message.images:
        url = f"data:{image.media_type};base64,{base64.b64encode(image.data).decode()}"
        parts.append({"type": "input_image", "image_url": url, "detail": "auto"})
    return {"role": "user", "content": parts}


def _assistant_items(message: ChatMessage) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if message.text:
        items.append({"role": "assistant", "content": message.text})
    items += [
        {
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments or "{}",
        }
        for call in message.tool_calls
    ]
    if not items:  # a reasoning item must be followed by what it led to
        return []
    reasoning = [
        {
            "type": "reasoning",
            "id": thought.item_id,
            "summary": [{"type": "summary_text", "text": thought.text}] if thought.text else [],
            "encrypted_content": thought.signature,
        }
        # Only OpenAI's own items, and only those it can read back without a store.
        for thought in message.reasoning
        if thought.item_id and thought.signature
    ]
    return reasoning + items


def input_items(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """The instructions (every system message's text) and the `input` items."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    open_calls: set[str] = set()  # call ids of the last assistant message
    for message in messages:
        role = message.role
        if role == "system":
            if message.text:
                instructions.append(message.text)
        elif role == "assistant":
            items += _assistant_items(message)
            open_calls = {call.id for call in message.tool_calls}
        elif role == "tool":
            if message.tool_call_id in open_calls:
                items.append(
                    {
                        "type": "function_call_output",
                        "call_id": message.tool_call_id,
                        "output": message.text,
                    }
                )
            else:  # its call was trimmed from the history: OpenAI refuses an orphan output
                named = f" {message.name}" if message.name else ""
                items.append({"role": "user", "content": f"(tool{named} result) {message.text}"})
        else:
            items.append(_user_item(message))
    return "\n\n".join(instructions), items


def _tools(request: ProviderRequest) -> dict[str, Any]:
    if not request.tools:
        return {}
    tools = []
    for tool in request.tools:
        tools.append(
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description or None,
                "parameters": parameters_schema(tool),
                # Responses functions are strict unless told: Chat's are not, and a client's
                # schema written for Chat is often not a strict one.
                "strict": False,
            }
        )
    choice = request.tool_choice
    arguments: dict[str, Any] = {
        "tools": tools,
        "tool_choice": (
            {"type": "function", "name": choice.function_name}
            if choice.mode == "function"
            else choice.mode
        ),
    }
    if request.parallel_tool_calls is not None:
        arguments["parallel_tool_calls"] = request.parallel_tool_calls
    return arguments


def _text_format(sampling: Sampling) -> dict[str, Any]:
    """Chat's `response_format` as Responses' `text.format` (the schema's fields flattened)."""
    if sampling.response_format == "json_schema" and sampling.json_schema:
        schema = orjson.loads(sampling.json_schema)
        return {"text": {"format": {"type": "json_schema", **schema}}}
    if sampling.response_format:
        return {"text": {"format": {"type": sampling.response_format}}}
    return {}


def responses_body(
    request: ProviderRequest, entry: ModelEntry | None, official: bool
) -> dict[str, Any]:
    """The request body (a dict: tests validate it against the `openai` SDK's types).
    `entry` is the model's catalog entry, if any; `official`: the upstream is OpenAI's host.
    Chat's `stop`, `seed`, penalties and logprobs have no Responses equivalent: not sent."""
    sampling = request.sampling
    instructions, items = input_items(request.messages)
    body: dict[str, Any] = {
        "model": request.model,
        "input": items,
        "stream": True,
        "store": False,
    }
    if instructions:
        body["instructions"] = instructions
    limit = sampling.max_tokens or (entry and entry.max_tokens)
    if limit:
        body["max_output_tokens"] = max(limit, MIN_OUTPUT_TOKENS)
    if entry is not None and entry.reasoning:
        # Reasoning models take no sampling temperature; their reasoning comes back encrypted,
        # to be sent back on the next call (nothing is stored upstream).
        body["reasoning"] = {"summary": "auto"}
        body["include"] = ["reasoning.encrypted_content"]
    else:
        if sampling.temperature is not None:
            body["temperature"] = sampling.temperature
        if sampling.top_p is not None:
            body["top_p"] = sampling.top_p
    body.update(_text_format(sampling))
    body.update(_tools(request))
    body.update(cache_arguments(request, entry.compat if entry else {}, official))
    return body
