"""What Anthropic's Messages API refuses of a request body (`check_body`), as its published
protocol and the `anthropic` SDK's request types say; used by the stand-in (anthropic_standin.py)
and by the provider's tests. The stand-in signs the thinking it gives (`signature_of`), and a
tool loop with thinking on must send that signed block back."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from anthropic.types import MessageParam, ToolParam
from anthropic.types.message_create_params import MessageCreateParamsStreaming
from pydantic import TypeAdapter, ValidationError

_SIGNING_KEY = b"clawgate-standin"
_TOP_LEVEL: TypeAdapter[MessageCreateParamsStreaming] = TypeAdapter(MessageCreateParamsStreaming)
_MESSAGE: TypeAdapter[MessageParam] = TypeAdapter(MessageParam)
_TOOL: TypeAdapter[ToolParam] = TypeAdapter(ToolParam)
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] = []) -> None:  # noqa: B006
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def signature_of(thinking: str) -> str:
    return hashlib.sha256(_SIGNING_KEY + thinking.encode()).hexdigest()


def blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def check_body(body: Any) -> None:
    """Raises Refused (400) for what the Messages API refuses."""
    if not isinstance(body, dict):
        raise Refused(400, "body: expected an object")
    for required in ("model", "max_tokens", "messages"):
        if required not in body:
            raise Refused(400, f"{required}: Field required")
    try:
        _TOP_LEVEL.validate_python(body)
        for message in body["messages"]:
            validated = _MESSAGE.validate_python(message)
            if not isinstance(validated["content"], str):
                list(validated["content"])  # the SDK types check content lazily
        for tool in body.get("tools") or ():
            _TOOL.validate_python(tool)
    except ValidationError as error:
        raise Refused(400, f"the anthropic SDK's types refuse the body: {error}") from None
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        raise Refused(400, "max_tokens: must be a positive integer")
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        raise Refused(400, "temperature: range: 0..1")
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens", 0)
        if budget < 1024 or budget >= body["max_tokens"]:
            raise Refused(400, "thinking.budget_tokens: must be ≥ 1024 and less than max_tokens")
        if temperature is not None and temperature != 1:
            raise Refused(400, "temperature may only be set to 1 when thinking is enabled")
        if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
            raise Refused(400, "Thinking may not be enabled when tool_choice forces tool use.")
    messages = body["messages"]
    if not messages:
        raise Refused(400, "messages: at least one message is required")
    open_calls: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise Refused(
                400,
                f'messages.{index}.role: Input should be "user" or "assistant" (a system prompt'
                " goes in the top-level system parameter)",
            )
        if index == 0 and role != "user":
            raise Refused(400, "messages.0.role: the first message must use the user role")
        blocks = blocks_of(message)
        kinds = [block.get("type") for block in blocks]
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                raise Refused(400, f"messages.{index}: text content blocks must be non-empty")
            if block.get("type") == "image":
                source = block.get("source") or {}
                if source.get("media_type") not in _IMAGE_TYPES:
                    raise Refused(400, f"messages.{index}: image media_type not supported")
                base64.b64decode(source.get("data", ""), validate=True)
        if role == "user":
            results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
            for tool_use_id in results:
                if tool_use_id not in open_calls:
                    raise Refused(
                        400,
                        f"messages.{index}.content: unexpected `tool_use_id` found in"
                        f" `tool_result` blocks: {tool_use_id}. Each `tool_result` block must"
                        " have a corresponding `tool_use` block in the previous message.",
                    )
            if open_calls - set(results):
                raise Refused(
                    400,
                    f"messages.{index}: `tool_use` ids were found without `tool_result` blocks"
                    f" immediately after: {', '.join(sorted(open_calls - set(results)))}",
                )
            if results and kinds[: len(results)] != ["tool_result"] * len(results):
                raise Refused(400, f"messages.{index}: tool_result blocks must come first")
            open_calls = set()
        else:
            open_calls = {b["id"] for b in blocks if b.get("type") == "tool_use"}
            if open_calls and thinking.get("type") == "enabled":
                first = blocks[0]
                if first.get("type") == "redacted_thinking":
                    continue
                if first.get("type") != "thinking":
                    raise Refused(
                        400,
                        f"messages.{index}.content.0.type: Expected `thinking` or"
                        f" `redacted_thinking`, but found `{first.get('type')}`. When thinking"
                        " is enabled, a final assistant message must start with a thinking block",
                    )
                if first.get("signature") != signature_of(first.get("thinking", "")):
                    raise Refused(400, f"messages.{index}.content.0: invalid thinking signature")
    if open_calls:
        raise Refused(400, "the last message's tool_use blocks have no tool_result after them")
