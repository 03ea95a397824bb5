"""A `/v1/responses` request, validated in its own shape (so a 400 names the Responses field),
then said again as a chat completion request: the turn that runs is the same either way.

`input` items map to chat messages: `message` (system and developer join the instructions),
`function_call` items become the assistant's tool calls, `function_call_output` items tool
messages; `reasoning` and `item_reference` are accepted and left out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StrictStr, Tag, ValidationError

from gateway_edge.dialects.chat_request import ChatCompletionRequest, Lenient, parse_chat_request
from gateway_edge.errors import ApiError, bad_request


class InputText(Lenient):
    type: Literal["input_text", "output_text", "text"]
    text: StrictStr


class InputImage(Lenient):
    type: Literal["input_image"]
    image_url: StrictStr | None = None


ContentPart = Annotated[InputText | InputImage, Field(discriminator="type")]


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
    name: StrictStr
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


def _text_of(content: str | list[InputText]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


def _chat_content(item: MessageItem) -> str | list[dict[str, Any]]:
    if isinstance(item.content, str):
        return item.content
    if item.role == "assistant":  # output_text parts; the calls that follow join this message
        return "".join(part.text for part in item.content if isinstance(part, InputText))
    parts: list[dict[str, Any]] = []
    for part in item.content:
        if isinstance(part, InputText):
            parts.append({"type": "text", "text": part.text})
        else:
            parts.append({"type": "image_url", "image_url": {"url": part.image_url or ""}})
    return parts


def as_chat_request(request: ResponsesRequest) -> ChatCompletionRequest:
    """The same turn as a chat completion request (validated as one: images, tool rules)."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    items = (
        [{"type": "message", "role": "user", "content": request.input}]
        if isinstance(request.input, str)
        else request.input
    )
    for item in items:
        if isinstance(item, dict):
            messages.append({"role": "user", "content": item["content"]})
        elif isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": _chat_content(item)})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif (
                last is not None
                and last["role"] == "assistant"
                and isinstance(last["content"], str)
            ):
                last["tool_calls"] = [call]  # the commentary that came with the calls
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append(
                {"role": "tool", "tool_call_id": item.call_id, "content": _text_of(item.output)}
            )
    document: dict[str, Any] = {"messages": messages, "model": request.model}
    if request.tools:
        document["tools"] = [
            {
                "type": "function",
                "function": {
                    key: value
                    for key, value in (
                        ("name", tool.name),
                        ("description", tool.description),
                        ("parameters", tool.parameters),
                    )
                    if value is not None
                },
            }
            for tool in request.tools
        ]
    choice = request.tool_choice
    if isinstance(choice, NamedFunctionChoice):
        document["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        document["tool_choice"] = choice
    for name, value in (
        ("max_tokens", request.max_output_tokens),
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("user", request.user),
        ("parallel_tool_calls", request.parallel_tool_calls),
        ("stream", request.stream),
    ):
        if value is not None:
            document[name] = value
    try:
        return parse_chat_request(document)
    except ApiError as error:
        if error.param is None or not error.param.startswith("messages"):
            raise
        # Its messages are the input's items (after the instructions, when given).
        raise bad_request(error.message.replace("messages", "input"), "input") from None
