"""What OpenAI's Responses API refuses of a request body (`check_body`), as its published
protocol and the `openai` SDK's request types say; used by the stand-in (responses_standin.py)
and by the provider's tests. The stand-in encrypts the reasoning it gives (`encrypted_of`), and
a later request may send a reasoning item back only with that content, as OpenAI's stateless
mode requires."""

from __future__ import annotations

import hashlib
from typing import Any

from openai.types.responses import FunctionToolParam, ResponseInputItemParam
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from pydantic import TypeAdapter, ValidationError

from devkit.anthropic_rules import Refused

_SEALING_KEY = b"clawgate-responses-standin"
_TOP_LEVEL: TypeAdapter[ResponseCreateParamsStreaming] = TypeAdapter(ResponseCreateParamsStreaming)
_ITEM: TypeAdapter[ResponseInputItemParam] = TypeAdapter(ResponseInputItemParam)
_TOOL: TypeAdapter[FunctionToolParam] = TypeAdapter(FunctionToolParam)
MIN_OUTPUT_TOKENS = 16


def encrypted_of(item_id: str, summary: str) -> str:
    """The stand-in's "encrypted" reasoning: a seal over the item's id and summary."""
    return hashlib.sha256(_SEALING_KEY + item_id.encode() + summary.encode()).hexdigest()


def is_reasoning_model(model: str) -> bool:
    """The stand-in's reasoning models, as o-series and gpt-5 models are OpenAI's."""
    return model.startswith("reasoning")


def _param(path: str, message: str) -> Refused:
    return Refused(400, f"{message} (param: {path})")


def check_body(body: Any) -> None:
    """Raises Refused (400) for what the Responses API refuses."""
    if not isinstance(body, dict):
        raise Refused(400, "body: expected an object")
    if "model" not in body:
        raise _param("model", "Missing required parameter: 'model'.")
    try:
        _TOP_LEVEL.validate_python(body)
        items = body.get("input")
        for item in items if isinstance(items, list) else ():
            _ITEM.validate_python(item)
        for tool in body.get("tools") or ():
            _TOOL.validate_python(tool)
    except ValidationError as error:
        raise Refused(400, f"the openai SDK's types refuse the body: {error}") from None
    model = str(body["model"])
    limit = body.get("max_output_tokens")
    if limit is not None and limit < MIN_OUTPUT_TOKENS:
        raise _param(
            "max_output_tokens",
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >="
            f" {MIN_OUTPUT_TOKENS}, but got {limit} instead.",
        )
    if is_reasoning_model(model):
        for name in ("temperature", "top_p"):
            if body.get(name) is not None:
                raise _param(
                    name, f"Unsupported parameter: '{name}' is not supported with this model."
                )
    if "previous_response_id" in body and body.get("store") is False:
        raise _param("previous_response_id", "Previous response cannot be used with store=false.")
    _check_items(body.get("input"), stored=body.get("store") is not False)


def _check_items(items: Any, stored: bool) -> None:
    if not isinstance(items, list):
        return
    calls: set[str] = set()
    for index, item in enumerate(items):
        kind = item.get("type") or "message"
        if kind == "reasoning":
            following = items[index + 1] if index + 1 < len(items) else {"type": None}
            if (following.get("type", "message")) not in ("message", "function_call"):
                raise _param(
                    f"input[{index}]",
                    f"Item '{item['id']}' of type 'reasoning' was provided without its required"
                    " following item.",
                )
            sealed = item.get("encrypted_content")
            if not sealed and not stored:
                raise _param(
                    f"input[{index}]",
                    f"Item with id '{item['id']}' not found. Items are not persisted when `store`"
                    " is set to false. Try again with `store` set to true, or remove this item"
                    " from your input.",
                )
            summary = "\n\n".join(part["text"] for part in item.get("summary") or ())
            if sealed and sealed != encrypted_of(item["id"], summary):
                raise _param(
                    f"input[{index}].encrypted_content",
                    "The encrypted content for item could not be verified.",
                )
        elif kind == "function_call":
            calls.add(item["call_id"])
        elif kind == "function_call_output" and item["call_id"] not in calls:
            raise _param(
                f"input[{index}]",
                f"No tool call found for function call output with call_id {item['call_id']}.",
            )
        elif kind == "message":
            content = item.get("content")
            for part in content if isinstance(content, list) else ():
                if part.get("type") == "input_image" and not str(
                    part.get("image_url") or ""
                ).startswith(("data:image/", "https://")):
                    raise _param(f"input[{index}].content", "Invalid image URL.")
