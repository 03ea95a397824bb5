"""From OpenAI `messages` to an agent turn: instructions, the input, its context, images and
sampling."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import orjson

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.dialects.chat_request import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionDefinition,
    ImagePart,
    NamedToolChoice,
)
from gateway_edge.errors import bad_request
from gateway_edge.sessions import Session

IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_IMAGES = 8
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MISSING_USER_MESSAGE = "Missing user message in messages."
_INSTRUCTION_ROLES = ("system", "developer")
_INPUT_ROLES = ("user", "tool", "function")
_ROLES = {
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
    "function": pb.ROLE_TOOL,
}
_RESPONSE_FORMATS = {
    "text": pb.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}


class _ImageBudget:
    def __init__(self) -> None:
        self.count = 0
        self.total_bytes = 0

    def decode(self, part: ImagePart, param: str) -> pb.Image:
        url = part.image_url.url
        header, comma, payload = url.partition(",")
        if not url.startswith("data:") or not comma or not header.endswith(";base64"):
            raise bad_request(
                "Only base64 data: URIs are accepted for images (data:image/png;base64,...).", param
            )
        media_type = header.removeprefix("data:").removesuffix(";base64").lower()
        if media_type not in IMAGE_MEDIA_TYPES:
            raise bad_request(
                f"Unsupported image type {media_type!r}; allowed: {', '.join(IMAGE_MEDIA_TYPES)}.",
                param,
            )
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("The image's base64 data is invalid.", param) from None
        self.count += 1
        self.total_bytes += len(data)
        if self.count > MAX_IMAGES:
            raise bad_request(f"At most {MAX_IMAGES} images are allowed per request.", param)
        if self.total_bytes > MAX_IMAGE_BYTES:
            raise bad_request(
                f"Images may total at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB per request.",
                param,
            )
        return pb.Image(media_type=media_type, data=data)


def _text_and_images(
    message: ChatMessage, index: int, images: _ImageBudget
) -> tuple[str, list[pb.Image]]:
    content = message.content
    if content is None or isinstance(content, str):
        return content or "", []
    texts: list[str] = []
    decoded: list[pb.Image] = []
    for part_index, part in enumerate(content):
        if isinstance(part, ImagePart):
            decoded.append(
                images.decode(part, f"messages[{index}].content[{part_index}].image_url.url")
            )
        else:
            texts.append(part.text)
    return "\n".join(texts), decoded


def _sampling(request: ChatCompletionRequest) -> pb.SamplingOptions:
    sampling = pb.SamplingOptions(
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_completion_tokens or request.max_tokens,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs,
    )
    if request.stop is not None:
        sampling.stop.extend([request.stop] if isinstance(request.stop, str) else request.stop)
    if request.response_format is not None:
        sampling.response_format = _RESPONSE_FORMATS[request.response_format.type]
        schema = request.response_format.json_schema
        if schema is not None:
            sampling.json_schema = orjson.dumps(
                schema.model_dump(by_alias=True, exclude_none=True)
            ).decode()
    return sampling


def _tool(function: FunctionDefinition) -> pb.Tool:
    return pb.Tool(
        name=function.name,
        description=function.description or "",
        parameters_json=orjson.dumps(function.parameters).decode() if function.parameters else "",
    )


def _tools(request: ChatCompletionRequest) -> tuple[list[pb.Tool], pb.ToolChoice | None]:
    """`tools` and `tool_choice`, or their legacy forms `functions` and `function_call`."""
    functions = [tool.function for tool in request.tools or ()] + list(request.functions or ())
    choice = request.tool_choice if request.tool_choice is not None else request.function_call
    if not functions:
        return [], None
    if choice is None or choice == "auto":
        return [_tool(function) for function in functions], None
    if isinstance(choice, str):
        mode = {"none": pb.TOOL_CHOICE_MODE_NONE, "required": pb.TOOL_CHOICE_MODE_REQUIRED}
        return [_tool(function) for function in functions], pb.ToolChoice(mode=mode[choice])
    name = choice.function.name if isinstance(choice, NamedToolChoice) else choice.name
    # A pinned function narrows what the model is offered to that one.
    pinned = [_tool(function) for function in functions if function.name == name]
    return pinned, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_FUNCTION, function_name=name)


def _legacy_call_id(index: int) -> str:
    return f"call_legacy_{index}"


def _structure(message: ChatMessage, index: int, proto: pb.Message, last_call: str) -> None:
    """Tool calls and tool results, in their current or legacy (`function_call`) forms."""
    for call in message.tool_calls or ():
        proto.tool_calls.add(id=call.id, name=call.function.name, arguments=call.function.arguments)
    if message.function_call is not None and not message.tool_calls:
        function = message.function_call
        proto.tool_calls.add(
            id=_legacy_call_id(index), name=function.name, arguments=function.arguments
        )
    if message.role == "tool":
        proto.tool_call_id = message.tool_call_id or ""
        proto.name = message.name or ""
    elif message.role == "function":  # legacy: answers the last function_call by its name
        proto.tool_call_id = last_call
        proto.name = message.name or ""


def _input_index(messages: Sequence[ChatMessage]) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role in _INPUT_ROLES:
            break
    else:
        raise bad_request(MISSING_USER_MESSAGE, "messages")
    for later in range(index + 1, len(messages)):
        if messages[later].role == "assistant":  # dropping it would answer another question
            raise bad_request(
                f"messages[{later}] is an assistant message after the last user or tool message;"
                " this gateway cannot continue a partial assistant reply: end with a user or"
                " tool message.",
                "messages",
            )
    return index


def turn_request_for(
    request: ChatCompletionRequest, agent_id: str, session: Session, request_id: str
) -> pb.RunTurnRequest:
    images = _ImageBudget()
    messages = request.messages
    input_index = _input_index(messages)
    instructions: list[str] = []
    context: list[pb.Message] = []
    turn_input: pb.Message | None = None
    last_call = ""  # the last legacy function_call's id, which a `function` message answers
    for index, message in enumerate(messages[: input_index + 1]):
        text, decoded = _text_and_images(message, index, images)
        if message.role in _INSTRUCTION_ROLES:
            if text.strip():
                instructions.append(text)
            continue
        proto = pb.Message(role=_ROLES[message.role], text=text, images=decoded)
        _structure(message, index, proto, last_call)
        if message.function_call is not None:
            last_call = _legacy_call_id(index)
        if index == input_index:
            turn_input = proto
        else:
            context.append(proto)
    assert turn_input is not None
    is_result = turn_input.role == pb.ROLE_TOOL  # an empty result still completes its call
    if not is_result and not turn_input.text.strip() and not turn_input.images:
        raise bad_request(MISSING_USER_MESSAGE, "messages")
    tools, tool_choice = _tools(request)
    return pb.RunTurnRequest(
        agent_id=agent_id,
        session_key=session.key,
        new_session=not session.named,
        input=turn_input,
        context=context,
        extra_system_prompt="\n\n".join(instructions),
        sampling=_sampling(request),
        request_id=request_id,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
    )
