"""A chat completion request as the turn it asks for: `messages` become the input, its
context and instructions; `tools`/`functions` the tools offered; the sampling fields the
sampling options."""

from __future__ import annotations

import orjson

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.dialects.chat_request import (
    ChatCompletionRequest,
    ChatMessage,
    FilePart,
    ImagePart,
    NamedFunction,
    NamedToolChoice,
)
from gateway_edge.errors import bad_request
from gateway_edge.input_sources import InputSources
from gateway_edge.turn_input import Conversation, TurnInput, offered_tools, tool_of

_INSTRUCTION_ROLES = ("system", "developer")
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


def chat_turn(request: ChatCompletionRequest, sources: InputSources) -> TurnInput:
    conversation = _conversation(request.messages, sources)
    turn_input, context, instructions = conversation.split()
    tools, tool_choice = _tools(request)
    return TurnInput(
        input=turn_input,
        context=context,
        instructions=instructions,
        sampling=_sampling(request),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        model=request.model,
        user=request.user,
        logprobs=bool(request.logprobs),
        sources=sources if sources.pending else None,
    )


def _conversation(messages: list[ChatMessage], sources: InputSources) -> Conversation:
    conversation = Conversation("messages")
    last_call = ""  # the last legacy function_call's id, which a `function` message answers
    for index, message in enumerate(messages):
        proto = pb.Message(role=_ROLES.get(message.role, pb.ROLE_USER))
        proto.text = _content(message, index, sources, proto)
        if message.role in _INSTRUCTION_ROLES:
            conversation.instruct(index, proto.text)
            continue
        _structure(message, index, proto, last_call)
        if message.function_call is not None:
            last_call = _legacy_call_id(index)
        conversation.add(index, proto)
    return conversation


def _content(message: ChatMessage, index: int, sources: InputSources, proto: pb.Message) -> str:
    """The message's text; its images go into `proto`, its files to `sources`."""
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts: list[str] = []
    for part_index, part in enumerate(content):
        param = f"messages[{index}].content[{part_index}]"
        if isinstance(part, ImagePart):
            sources.image(proto, part.image_url.url, f"{param}.image_url.url")
        elif isinstance(part, FilePart):
            file = part.file
            if file.file_data is None and file.file_id is not None:
                raise bad_request(
                    "file_id is not supported (this gateway keeps no uploaded files): send"
                    " file_data.",
                    f"{param}.file.file_id",
                )
            sources.file(f"{param}.file", data=file.file_data, filename=file.filename)
        else:
            texts.append(part.text)
    return "\n".join(texts)


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


def _tools(request: ChatCompletionRequest) -> tuple[list[pb.Tool], pb.ToolChoice | None]:
    """`tools` and `tool_choice`, or their legacy forms `functions` and `function_call`."""
    functions = [tool.function for tool in request.tools or ()] + list(request.functions or ())
    tools = [tool_of(f.name, f.description, f.parameters) for f in functions]
    choice: str | NamedToolChoice | NamedFunction | None = request.tool_choice
    param = "tool_choice"
    if choice is None and request.function_call is not None:
        choice, param = request.function_call, "function_call"
    if choice is None or isinstance(choice, str):
        return offered_tools(tools, choice, param=param)
    name = choice.function.name if isinstance(choice, NamedToolChoice) else choice.name
    return offered_tools(tools, None, name, param)
