"""A `/v1/responses` request as the turn it asks for.

`instructions` and `system`/`developer` message items join the instructions; `user` and
`assistant` items are messages; `function_call` items are the assistant's tool calls (joining
the assistant message just before them), `function_call_output` items tool results;
`reasoning` and `item_reference` items are accepted and left out; images and files go to
`InputSources` (in OpenAI's and OpenClaw's forms). Every refusal names `input[<index>]` as the
client numbered its items.
"""

from __future__ import annotations

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.dialects.responses_request import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputFile,
    InputImage,
    InputText,
    MessageItem,
    NamedFunctionChoice,
    ResponsesRequest,
)
from gateway_edge.errors import bad_request
from gateway_edge.input_sources import InputSources
from gateway_edge.turn_input import Conversation, TurnInput, offered_tools, tool_of

_ROLES = {"user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT}


def responses_turn(request: ResponsesRequest, sources: InputSources) -> TurnInput:
    turn_input, context, instructions = _conversation(request, sources).split()
    if request.instructions:
        instructions.insert(0, request.instructions)
    sampling = pb.SamplingOptions(
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_output_tokens,
    )
    tools, tool_choice = _tools(request)
    return TurnInput(
        input=turn_input,
        context=context,
        instructions=instructions,
        sampling=sampling,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        model=request.model,
        user=request.user,
        sources=sources if sources.pending else None,
    )


def _conversation(request: ResponsesRequest, sources: InputSources) -> Conversation:
    conversation = Conversation("input")
    if isinstance(request.input, str):
        conversation.add(0, pb.Message(role=pb.ROLE_USER, text=request.input))
        return conversation
    for index, item in enumerate(request.input):
        if isinstance(item, MessageItem):
            proto = pb.Message(role=_ROLES.get(item.role, pb.ROLE_USER))
            proto.text = _content(item, index, sources, proto)
            if item.role in ("system", "developer"):
                conversation.instruct(index, proto.text)
            else:
                conversation.add(index, proto)
        elif isinstance(item, FunctionCallItem):
            last = conversation.last()
            if last is None or last.role != pb.ROLE_ASSISTANT:
                last = pb.Message(role=pb.ROLE_ASSISTANT)
                conversation.add(index, last)
            last.tool_calls.add(id=item.call_id, name=item.name, arguments=item.arguments)
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output
            text = output if isinstance(output, str) else "".join(part.text for part in output)
            conversation.add(
                index, pb.Message(role=pb.ROLE_TOOL, text=text, tool_call_id=item.call_id)
            )
    return conversation


def _content(item: MessageItem, index: int, sources: InputSources, proto: pb.Message) -> str:
    """The item's text; its images go into `proto`, its files to `sources`."""
    if isinstance(item.content, str):
        return item.content
    texts: list[str] = []
    for part_index, part in enumerate(item.content):
        param = f"input[{index}].content[{part_index}]"
        if isinstance(part, InputText):
            texts.append(part.text)
        elif isinstance(part, InputImage):
            _image(part, param, sources, proto)
        else:
            _file(part, param, sources)
    # An assistant's output_text parts are one reply cut in pieces; a user's parts are apart.
    return ("" if item.role == "assistant" else "\n").join(texts)


def _image(part: InputImage, param: str, sources: InputSources, proto: pb.Message) -> None:
    source = part.source
    if source is None:
        sources.image(proto, part.image_url or "", f"{param}.image_url")
    elif source.type == "url":
        sources.image(proto, source.url or "", f"{param}.source.url")
    else:
        media_type = source.media_type or ""
        sources.image(proto, f"data:{media_type};base64,{source.data or ''}", f"{param}.source")


def _file(part: InputFile, param: str, sources: InputSources) -> None:
    source = part.source
    if source is not None:
        if source.type == "url":
            sources.file(
                f"{param}.source.url",
                url=source.url or "",
                media_type=source.media_type,
                filename=source.filename,
            )
        else:
            sources.file(
                f"{param}.source.data",
                data=source.data or "",
                media_type=source.media_type,
                filename=source.filename,
            )
    elif part.file_url is not None:
        sources.file(f"{param}.file_url", url=part.file_url, filename=part.filename)
    elif part.file_data is not None:
        sources.file(f"{param}.file_data", data=part.file_data, filename=part.filename)
    elif part.file_id is not None:
        raise bad_request(
            "file_id is not supported (this gateway keeps no uploaded files): send file_data"
            " or file_url.",
            f"{param}.file_id",
        )
    else:
        raise bad_request("An input_file needs file_data, file_url or a source.", param)


def _tools(request: ResponsesRequest) -> tuple[list[pb.Tool], pb.ToolChoice | None]:
    tools = [tool_of(t.name, t.description, t.parameters) for t in request.tools or ()]
    choice = request.tool_choice
    if isinstance(choice, NamedFunctionChoice):
        return offered_tools(tools, None, choice.name)
    return offered_tools(tools, choice)
