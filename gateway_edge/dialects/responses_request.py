"""Pydantic models of a `/v1/responses` request, validated in its own shape so that a 400
names the field and item the client sent (responses_turn.py makes the turn of it)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StrictStr, Tag, ValidationError

from gateway_edge.dialects.chat_request import FunctionName, Lenient
from gateway_edge.errors import bad_request


class InputText(Lenient):
    type: Literal["input_text", "output_text", "text"]
    text: StrictStr


class Source(Lenient):
    """OpenClaw's form of an image or file: inline base64 or a URL."""

    type: Literal["base64", "url"]
    media_type: StrictStr | None = None
    data: StrictStr | None = None
    url: StrictStr | None = None
    filename: StrictStr | None = None


class InputImage(Lenient):
    type: Literal["input_image"]
    image_url: StrictStr | None = None  # OpenAI's form: a data: URI or a URL
    source: Source | None = None  # OpenClaw's


class InputFile(Lenient):
    type: Literal["input_file"]
    file_data: StrictStr | None = None  # OpenAI's form: base64 or a data: URL
    file_url: StrictStr | None = None
    file_id: StrictStr | None = None
    filename: StrictStr | None = None
    source: Source | None = None  # OpenClaw's


ContentPart = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]


class MessageItem(Lenient):
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[ContentPart]


class FunctionCallItem(Lenient):
    type: Literal["function_call"]
    call_id: StrictStr
    name: StrictStr
    arguments: StrictStr


class FunctionCallOutputItem(Lenient):
    type: Literal["function_call_output"]
    call_id: StrictStr
    output: StrictStr | list[InputText]


class IgnoredItem(Lenient):
    type: Literal["reasoning", "item_reference"]


def _item_kind(item: Any) -> str:
    """An item without `type` is a message (the "easy" form: role and content only)."""
    kind = item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", "")
    return "ignored" if kind in ("reasoning", "item_reference") else str(kind)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[IgnoredItem, Tag("ignored")],
    Discriminator(_item_kind),
]


class FunctionTool(Lenient):
    type: Literal["function"]
    name: FunctionName
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunctionChoice(Lenient):
    type: Literal["function"]
    name: StrictStr


class ResponsesRequest(Lenient):
    input: StrictStr | list[InputItem]
    model: StrictStr | None = None
    instructions: StrictStr | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunctionChoice | None = None
    max_output_tokens: Annotated[int, Field(gt=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    user: StrictStr | None = None
    previous_response_id: StrictStr | None = None
    stream: bool | None = None
    parallel_tool_calls: bool | None = None
    # accepted and not used
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    truncation: Any = None
    max_tool_calls: int | None = None
    reasoning: Any = None


def _item_to_items(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in {"str", "function-after"} or part.startswith(("list[", "literal[")):
            continue
        elif path and part in {"message", "function_call", "function_call_output", "ignored"}:
            continue  # a discriminator's tag, not a field
        else:
            path += f".{part}" if path else part
    return path


def parse_responses_request(document: Any) -> ResponsesRequest:
    if not isinstance(document, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        return ResponsesRequest.model_validate(document)
    except ValidationError as error:
        issue = max(error.errors(include_url=False), key=lambda issue: len(issue["loc"]))
        param = _item_to_items(issue["loc"])
        raise bad_request(f"Invalid '{param}': {issue['msg']}.", param) from None
