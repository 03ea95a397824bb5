"""Pydantic models of the Chat Completions request, in OpenAI's field order.

Only what clawgate reads is modelled strictly; unknown fields are ignored, as OpenAI clients send
many. Responses are written as pre-shaped dicts/bytes on the hot path, not through models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from gateway_edge.errors import ApiError, bad_request


class Lenient(BaseModel):
    """A request model that ignores fields it does not know (OpenAI's APIs grow)."""

    model_config = ConfigDict(extra="ignore")


class TextPart(Lenient):
    type: Literal["text", "input_text"]
    text: StrictStr


class ImageUrl(Lenient):
    url: StrictStr
    detail: StrictStr | None = None


class ImagePart(Lenient):
    type: Literal["image_url"]
    image_url: ImageUrl


class FileData(Lenient):
    file_data: StrictStr | None = None  # base64, or a data: URL naming its type
    file_id: StrictStr | None = None  # OpenAI's uploaded files: none are kept here
    filename: StrictStr | None = None


class FilePart(Lenient):
    type: Literal["file"]
    file: FileData


ContentPart = Annotated[TextPart | ImagePart | FilePart, Field(discriminator="type")]


FunctionName = Annotated[StrictStr, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class FunctionCall(Lenient):
    name: StrictStr
    arguments: StrictStr  # a JSON object, serialized


class ToolCall(Lenient):
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's calls
    tool_call_id: StrictStr | None = None  # a tool result's call
    function_call: FunctionCall | None = None  # legacy: an assistant's one call


class FunctionDefinition(Lenient):
    name: FunctionName
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class ToolDefinition(Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Lenient):
    name: StrictStr


class NamedToolChoice(Lenient):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(Lenient):
    include_usage: StrictBool | None = None


class JsonSchemaFormat(Lenient):
    name: StrictStr
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None
    description: StrictStr | None = None


class ResponseFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


Probability = Annotated[StrictFloat, Field(ge=0, le=1)]
Temperature = Annotated[StrictFloat, Field(ge=0, le=2)]
Penalty = Annotated[StrictFloat, Field(ge=-2, le=2)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class ChatCompletionRequest(Lenient):
    messages: list[ChatMessage] = Field(min_length=1)
    model: StrictStr | None = None
    frequency_penalty: Penalty | None = None
    logprobs: StrictBool | None = None
    max_completion_tokens: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    n: StrictInt | None = None
    presence_penalty: Penalty | None = None
    response_format: ResponseFormat | None = None
    seed: StrictInt | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    top_p: Probability | None = None
    user: StrictStr | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[FunctionDefinition] | None = None  # legacy `tools`
    function_call: Literal["auto", "none"] | NamedFunction | None = None  # legacy `tool_choice`


def _param_path(location: tuple[int | str, ...]) -> str:
    """('messages', 0, 'content', 'list[...]', 0, 'text', 'text') → 'messages[0].content[0].text'.

    Pydantic puts union branch names and the discriminator's tag into the location; they are
    not fields, so they are dropped.
    """
    path = ""
    previous: tuple[int | str, ...] = ()
    for part in location:
        is_tag = len(previous) >= 3 and previous[-3] == "content" and isinstance(previous[-1], int)
        previous = (*previous, part)
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "str" or part.startswith(("list[", "constrained-", "function-")) or is_tag:
            continue
        else:
            path += f".{part}" if path else part
    return path


def _check_tool_choice_kind(document: dict[str, Any]) -> None:
    """`allowed_tools` and `custom` choices get their own words, not a union's error."""
    choice = document.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") != "function":
        raise bad_request(
            f"tool_choice of type {choice.get('type')!r} is not supported: use 'auto', 'none',"
            " 'required' or {'type': 'function', 'function': {'name': ...}}.",
            "tool_choice",
        )


def _check_tool_results(request: ChatCompletionRequest) -> None:
    for index, message in enumerate(request.messages):
        if message.role == "tool" and message.tool_call_id is None:
            raise bad_request(
                f"messages[{index}] is a tool message without tool_call_id.",
                f"messages[{index}].tool_call_id",
            )


def parse_chat_request(document: Any) -> ChatCompletionRequest:
    if not isinstance(document, dict):
        raise bad_request("The request body must be a JSON object.")
    _check_tool_choice_kind(document)
    try:
        request = ChatCompletionRequest.model_validate(document)
    except ValidationError as error:
        raise validation_error(error) from None
    _check_tool_results(request)
    if request.n is not None and request.n != 1:
        raise bad_request("Only n=1 is supported.", "n")
    if request.top_logprobs is not None and not request.logprobs:
        raise bad_request("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    if request.stream_options is not None and not request.stream:
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    return request


def validation_error(error: ValidationError) -> ApiError:
    # In a union the deepest error is the one that says what is wrong (not "should be a string").
    first = max(
        error.errors(include_url=False),
        key=lambda issue: (len(issue["loc"]), issue["type"] != "string_type"),
    )
    param = _param_path(tuple(first["loc"]))
    message = first["msg"]
    if first["type"] == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param)
    return bad_request(f"Invalid value for '{param}': {message}.", param)
